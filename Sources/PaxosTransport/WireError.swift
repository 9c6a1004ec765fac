/// Why bytes from the network could not be decoded.
///
/// Every decoding path in this module throws `WireError` instead of trapping: input comes from
/// the network, so a bad length, checksum or tag is an expected event. A connection that produces
/// one is closed and counted (see ``TransportCounters``); the process carries on.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of malformation was found. An open set: new kinds do not break callers.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        let raw: UInt8
        /// The frame's length field was 0 or above the configured maximum frame size.
        public static let badLength = Kind(raw: 1)
        /// The frame's CRC32 did not match its bytes.
        public static let badChecksum = Kind(raw: 2)
        /// A frame-type, message-type or enum tag this version does not know.
        public static let unknownType = Kind(raw: 3)
        /// A field ran past the end of its frame.
        public static let truncated = Kind(raw: 4)
        /// Bytes were left over after the last field of a frame.
        public static let trailingBytes = Kind(raw: 5)
        /// A field decoded but holds an impossible value (bad UTF-8, a count that cannot fit, ...).
        public static let invalidValue = Kind(raw: 6)
        /// A well-formed frame that is not allowed at this point of the conversation.
        public static let unexpectedFrame = Kind(raw: 7)

        public var description: String {
            switch self {
            case .badLength: return "bad frame length"
            case .badChecksum: return "bad checksum"
            case .unknownType: return "unknown type"
            case .truncated: return "truncated field"
            case .trailingBytes: return "trailing bytes"
            case .invalidValue: return "invalid value"
            case .unexpectedFrame: return "unexpected frame"
            default: return "wire error \(raw)"
            }
        }
    }

    public var kind: Kind
    /// Human-readable detail: which field, which value.
    public var detail: String

    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public var description: String { "\(kind): \(detail)" }
}

/// An error from the transport's runtime: connecting, handshaking, sending, shutting down.
///
/// A struct with an open set of codes (rather than an enum) so that adding a code later does not
/// break callers that switch over it.
public struct TransportError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: UInt8
        /// The remote side refused the handshake; ``TransportError/refusal`` says why.
        public static let refused = Code(raw: 1)
        /// The connection closed before the operation finished (the outcome of a request in flight is unknown).
        public static let connectionClosed = Code(raw: 2)
        /// No address could be connected to.
        public static let connectFailed = Code(raw: 3)
        /// The handshake did not finish in time.
        public static let handshakeTimeout = Code(raw: 4)
        /// The remote side sent bytes that do not decode; ``TransportError/message`` has the ``WireError``.
        public static let malformed = Code(raw: 5)
        /// The object was shut down.
        public static let shutDown = Code(raw: 6)
        /// The server answered with ``ClientResponse/error(_:)``; ``TransportError/serverError`` has it.
        public static let serverError = Code(raw: 7)
        /// A redirect could not be followed (no address, or too many hops).
        public static let redirect = Code(raw: 8)
        /// The server answered with a response of the wrong kind for the request.
        public static let unexpectedResponse = Code(raw: 9)
        /// The configuration is unusable (e.g. an address that does not parse).
        public static let invalidConfiguration = Code(raw: 10)
        /// Binding a listening socket failed.
        public static let bindFailed = Code(raw: 11)
        /// No answer came in time (``PaxosClientConfiguration/attemptTimeout``); the outcome of
        /// the request is unknown.
        public static let timeout = Code(raw: 12)

        public var description: String {
            switch self {
            case .refused: return "refused"
            case .connectionClosed: return "connection closed"
            case .connectFailed: return "connect failed"
            case .handshakeTimeout: return "handshake timeout"
            case .malformed: return "malformed input"
            case .shutDown: return "shut down"
            case .serverError: return "server error"
            case .redirect: return "redirect"
            case .unexpectedResponse: return "unexpected response"
            case .invalidConfiguration: return "invalid configuration"
            case .bindFailed: return "bind failed"
            case .timeout: return "timeout"
            default: return "transport error \(raw)"
            }
        }
    }

    public var code: Code
    public var message: String
    /// Set when ``code`` is ``Code/refused``.
    public var refusal: RefusalReason?
    /// Set when ``code`` is ``Code/serverError``.
    public var serverError: ClientError?

    public init(_ code: Code, _ message: String, refusal: RefusalReason? = nil, serverError: ClientError? = nil) {
        self.code = code
        self.message = message
        self.refusal = refusal
        self.serverError = serverError
    }

    public var description: String {
        if let refusal { return "\(code) (\(refusal)): \(message)" }
        if let serverError { return "\(code): \(serverError)" }
        return "\(code): \(message)"
    }
}
