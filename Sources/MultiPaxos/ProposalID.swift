/// Who proposed a record, so that a retry is recognised as the same proposal: a client's id and
/// the sequence number that client gave the record.
///
/// A client (a ``PaxosLog`` replica's own appends, or a remote client) draws a random 64-bit id
/// once and numbers its records from 1 upwards; a retry of an append reuses its identity.
public struct ProposalID: Hashable, Sendable, CustomStringConvertible {
    public var client: UInt64
    public var sequence: UInt64

    public init(client: UInt64, sequence: UInt64) {
        self.client = client
        self.sequence = sequence
    }

    /// The identity of the record `offset` places after this one in the same batch.
    @inlinable public func advanced(by offset: Int) -> ProposalID {
        ProposalID(client: client, sequence: sequence &+ UInt64(offset))
    }

    /// Client ids with the top bit set are a replica's own, for appends offered without an
    /// identity: their caller never retries them, so no session table remembers them (an append
    /// costs nothing there). Callers' ids have it clear.
    public static let unretriedBit: UInt64 = 1 << 63

    /// Whether a retry of this proposal may come: only then do client sessions remember it.
    @inlinable public var isRetriable: Bool { client & Self.unretriedBit == 0 }

    public var description: String { "\(String(client, radix: 16)):\(sequence)" }
}
