import MultiPaxos

/// Why a ``PaxosClient`` call failed, after whatever retrying it did: what it did to the log, the
/// identity to retry an append with, and the failure behind it.
///
/// An append that fails says whether its records were appended (``outcome``):
/// ``ClientError/Outcome/notAppended`` means no attempt can have been proposed (or every server
/// said so), so a fresh append cannot duplicate; ``ClientError/Outcome/unknown`` means some
/// attempt may have been chosen: retry with ``proposalID`` (``PaxosClient/append(_:id:)``), which
/// answers the first attempt's positions if it was, or read the log.
public struct PaxosClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong. An open set: new codes do not break callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: UInt8
        /// The call's deadline (``PaxosClientConfiguration/requestTimeout``) passed while it
        /// tried; ``PaxosClientError/cause`` has the last attempt's failure.
        public static let timeout = Code(raw: 1)
        /// A replica refused the request as asked (invalid, or reading compacted positions):
        /// sending it again fails the same way. ``PaxosClientError/serverError`` has its answer.
        public static let rejected = Code(raw: 2)
        /// Every address refused the handshake (another cluster, secret, TLS or protocol
        /// version), or the replica that must answer speaks a client protocol version older
        /// than the request (``PaxosClient/members()`` on a server of an older build): a
        /// configuration error, not retried.
        public static let refused = Code(raw: 3)
        /// The client was closed (before or during the call).
        public static let closed = Code(raw: 4)
        /// A redirect was not followed (``PaxosClientConfiguration/maxRedirects`` is 0).
        public static let redirect = Code(raw: 5)
        /// The server answered with something that does not fit the request.
        public static let unexpectedResponse = Code(raw: 6)
        /// The replica could not be reached, or the connection failed (``PaxosClient/status()``,
        /// which asks one replica and does not retry elsewhere).
        public static let unavailable = Code(raw: 7)
        /// The calling task was cancelled; an append sent before is of unknown outcome.
        public static let cancelled = Code(raw: 8)

        public var description: String {
            switch self {
            case .timeout: return "timeout"
            case .rejected: return "rejected"
            case .refused: return "refused"
            case .closed: return "closed"
            case .redirect: return "redirect"
            case .unexpectedResponse: return "unexpected response"
            case .unavailable: return "unavailable"
            case .cancelled: return "cancelled"
            default: return "client error \(raw)"
            }
        }
    }

    public typealias Outcome = ClientError.Outcome

    public var code: Code
    public var message: String
    /// For an append: whether its records were appended. Nil for reads, barriers and status.
    public var outcome: Outcome?
    /// For an append: the identity of its first record (record `i` has
    /// `proposalID.advanced(by: i)`); retry with it to never append twice.
    public var proposalID: ProposalID?
    /// The failure of the last attempt (a connection error, an attempt's timeout, or the
    /// server's answer in ``TransportError/serverError``), if there was one.
    public var cause: TransportError?
    /// Requests sent and connections tried during the call.
    public var attempts: Int

    public init(_ code: Code, _ message: String, outcome: Outcome? = nil, proposalID: ProposalID? = nil, cause: TransportError? = nil, attempts: Int = 0) {
        self.code = code
        self.message = message
        self.outcome = outcome
        self.proposalID = proposalID
        self.cause = cause
        self.attempts = attempts
    }

    /// The server's error, when the last attempt was answered with one.
    public var serverError: ClientError? { cause?.serverError }

    public var description: String {
        var text = "\(code): \(message)"
        if let outcome { text += " (\(outcome))" }
        if let proposalID { text += "; identity \(proposalID)" }
        if let cause { text += "; last: \(cause)" }
        return text
    }
}
