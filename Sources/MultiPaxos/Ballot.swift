/// A replica's identity within one cluster. Ids are small positive integers chosen by the operator.
public typealias NodeID = UInt32

/// A position in the replicated log. Slots start at 1; 0 means "none" (e.g. nothing chosen yet).
public typealias Slot = UInt64

/// A Paxos ballot (proposal number): `(round, node)`, ordered by round, then by node.
///
/// Every proposer draws from its own disjoint set of ballots because `node` breaks ties, so two
/// proposers never issue the same ballot. A proposer must never reuse a ballot across restarts:
/// it picks a round above every round it has seen (and persisted as a promise).
public struct Ballot: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var round: UInt64
    public var node: NodeID

    public init(round: UInt64, node: NodeID) {
        self.round = round
        self.node = node
    }

    /// Below every ballot a proposer can issue (rounds start at 1).
    public static let zero = Ballot(round: 0, node: 0)

    public static func < (lhs: Ballot, rhs: Ballot) -> Bool {
        (lhs.round, lhs.node) < (rhs.round, rhs.node)
    }

    public var description: String { "\(round).\(node)" }
}

/// What a slot holds: an application record, or a no-op a new leader uses to fill a hole.
public enum Value: Hashable, Sendable {
    case noop
    /// A record without an identity (logs written before identities, tools, tests).
    case data([UInt8])
    /// A record with the identity of the proposal that carried it: what decides an append's
    /// outcome and recognises a retry (the core itself never looks at it).
    case identified(ProposalID, [UInt8])

    /// Bytes of application payload (0 for a no-op); what byte caps count.
    @inlinable public var byteCount: Int {
        switch self {
        case .noop: return 0
        case .data(let bytes), .identified(_, let bytes): return bytes.count
        }
    }

    /// The application record, or nil for a no-op.
    @inlinable public var record: [UInt8]? {
        switch self {
        case .noop: return nil
        case .data(let bytes), .identified(_, let bytes): return bytes
        }
    }

    /// The proposal's identity, if it carries one.
    @inlinable public var proposalID: ProposalID? {
        if case .identified(let id, _) = self { return id }
        return nil
    }
}

/// An acceptor's vote: it accepted `value` for `slot` in `ballot`.
public struct Entry: Hashable, Sendable {
    public var slot: Slot
    public var ballot: Ballot
    public var value: Value

    public init(slot: Slot, ballot: Ballot, value: Value) {
        self.slot = slot
        self.ballot = ballot
        self.value = value
    }
}
