import MultiPaxos

/// Why a ``PaxosLog`` operation failed. A struct with an open set of codes, so new codes do not
/// break callers; `description` says what and where.
public struct PaxosLogError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// This replica is not the leader; ``PaxosLogError/leader`` names the one it knows, if any.
        public static let notLeader = Code(name: "not leader")
        /// Too much is in flight; retry later.
        public static let overloaded = Code(name: "overloaded")
        /// The append's outcome is unknown: it was not chosen in time, or its leader stopped
        /// leading first. It may be in the log (once): retry with the same identity and
        /// `isRetry: true` (``PaxosLog/append(contentsOf:id:isRetry:)``) to settle it.
        public static let timeout = Code(name: "timeout")
        /// Leadership changed and another value was chosen at the slot this append was given;
        /// the record was not appended (retrying is safe).
        public static let superseded = Code(name: "superseded")
        /// A retried append's identity is older than what the replicated client sessions remember
        /// of its client (``PaxosLog/Configuration/sessionLimits``): it is in the log at most
        /// once, but a retry cannot tell whether it is; the outcome is unknown. Read the log:
        /// entries carry their identity.
        public static let sessionExpired = Code(name: "session expired")
        /// The calling task was cancelled: not appended when that happened before the records
        /// were offered, unknown after (retry with the same identity to settle it).
        public static let cancelled = Code(name: "cancelled")
        /// The log is closed (or closing).
        public static let closed = Code(name: "closed")
        /// Storage failed; the replica refuses further writes (see the message).
        public static let storage = Code(name: "storage")
        /// The configuration is invalid.
        public static let invalidConfiguration = Code(name: "invalid configuration")
        /// The requested slots were compacted into a snapshot.
        public static let compacted = Code(name: "compacted")
        /// The request itself is invalid (the message says what), e.g. a record above the size
        /// limit or a compaction beyond the chosen watermark; nothing was changed.
        public static let invalidArgument = Code(name: "invalid argument")
        /// The network transport failed to start or to reach the leader.
        public static let transport = Code(name: "transport")
        /// The data directory belongs to another node or cluster (the message names both);
        /// nothing was changed.
        public static let wrongIdentity = Code(name: "wrong identity")
        /// A member of a multi-member cluster found no log and no identity and was not bootstrapped
        /// (``PaxosLog/bootstrap(_:clusterID:)``, `paxlog init`); nothing was changed.
        public static let notBootstrapped = Code(name: "not bootstrapped")
        /// The directory's acceptor state was lost or cut (a deleted log, tolerant recovery or a
        /// repair that cut records): it must rejoin as a learner before it votes, which is not yet
        /// available. The replica did not start.
        public static let needsRejoin = Code(name: "needs rejoin")
    }

    /// What a failed append did to the log.
    public enum Outcome: String, Hashable, Sendable {
        /// Definitely not appended, now or later: retrying cannot duplicate it.
        case notAppended = "not appended"
        /// May have been appended, or may still be: read the log before retrying.
        case unknown = "outcome unknown"
    }

    public var code: Code
    public var message: String
    /// For ``Code/notLeader``, and ``Code/timeout`` from a leader that stepped down: the leader
    /// this replica knows of (nil when it believes none leads).
    public var leader: NodeID?
    /// For an error of `append`: whether the record was appended. Nil for other operations.
    public var outcome: Outcome?

    /// - Parameter outcome: for append errors; by default what the code implies (`notLeader`,
    ///   `overloaded`, `superseded`, `invalidArgument`: not appended; `timeout`, `transport`:
    ///   unknown). `closed` and `storage` depend on when they struck, so their sites say.
    public init(_ code: Code, _ message: String, leader: NodeID? = nil, outcome: Outcome? = nil) {
        self.code = code
        self.message = message
        self.leader = leader
        self.outcome = outcome ?? Self.impliedOutcome(code)
    }

    static func impliedOutcome(_ code: Code) -> Outcome? {
        switch code {
        case .notLeader, .overloaded, .superseded, .invalidArgument: .notAppended
        case .timeout, .transport, .sessionExpired: .unknown
        default: nil
        }
    }

    /// The same error, saying what it did to an append.
    func with(_ outcome: Outcome) -> PaxosLogError {
        var e = self
        e.outcome = outcome
        return e
    }

    public var description: String { "\(code): \(message)" + (outcome.map { " (\($0.rawValue))" } ?? "") }
}
