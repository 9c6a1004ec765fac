import Crypto
import MultiPaxos
import NIOCore

/// The version of everything after the `hello` frame. Both sides speak the same one: the
/// initiator's, when the acceptor takes it (``accepted(for:)``; else it refuses with
/// `badVersion`).
///
/// The peer port and the client port are versioned apart: a `hello` carries ``current`` from a
/// replica and ``client`` from a client, and an acceptor checks it against the version of the
/// role the `hello` names. A change to the consensus messages then does not lock clients out, nor
/// a change to the client protocol the peers (WIRE.md, "Versions").
public enum WireVersion {
    /// The peer protocol (handshake and consensus envelopes). Bump when a frame body changes
    /// incompatibly or a new message could reach an older peer.
    /// 2: pre-vote messages (`preVote`, `preVoteReply`), which a version-1 peer cannot decode.
    /// 3: values carry their proposal's identity (value tag 2), which a version-2 peer cannot decode.
    /// 4: a snapshot offer names the client-session table streamed after the snapshot's data.
    /// 5: leadership transfer (`timeoutNow`, and `prepare` says whether it follows one).
    public static let current: UInt16 = 5
    /// The client protocol (handshake and request/response frames). Versions 1 and 2 were the
    /// peers' numbers, shared. 3: appends carry a proposal identity, reads a consistency and
    /// entries a readThrough, the `barrier` request and response, errors an append outcome.
    /// (The peer protocol reached 3 at the same time, for its own reasons.) 4: the `members`
    /// and `transferLeadership` requests and their responses; nothing else changed.
    public static let client: UInt16 = 4
    /// The oldest client version a server still accepts: a version-4 server speaks version 3 to
    /// a version-3 client (whose requests are a subset of version 4's, and which is never sent
    /// a version-4 response), so clients need not be upgraded with the servers.
    public static let oldestClient: UInt16 = 3

    /// The version this side's `hello` carries as `role`.
    static func expected(for role: ConnectionRole) -> UInt16 {
        switch role {
        case .peer: return current
        case .client: return client
        }
    }

    /// The versions an acceptor takes in a `hello` from `role` (its `welcome` echoes the one taken).
    static func accepted(for role: ConnectionRole) -> ClosedRange<UInt16> {
        switch role {
        case .peer: return current...current
        case .client: return oldestClient...client
        }
    }
}

/// Who opens a connection: a replica (with its node id) or a client.
public enum ConnectionRole: Hashable, Sendable, CustomStringConvertible {
    case peer(NodeID)
    case client

    public var description: String {
        switch self {
        case .peer(let id): return "peer \(id)"
        case .client: return "client"
        }
    }

    var wireTag: UInt8 {
        switch self {
        case .peer: return 1
        case .client: return 2
        }
    }

    var wireNodeID: NodeID {
        switch self {
        case .peer(let id): return id
        case .client: return 0
        }
    }
}

/// Why a handshake was refused; sent in the `refuse` frame. An open set of codes.
public struct RefusalReason: Hashable, Sendable, CustomStringConvertible {
    public var code: UInt8
    public init(code: UInt8) { self.code = code }

    /// The initiator speaks another wire version.
    public static let badVersion = RefusalReason(code: 1)
    /// The initiator belongs to another cluster.
    public static let wrongCluster = RefusalReason(code: 2)
    /// The initiator's node id is not in the acceptor's membership (or is the acceptor's own).
    public static let unknownNode = RefusalReason(code: 3)
    /// A peer on the client port, or a client on the peer port.
    public static let wrongRole = RefusalReason(code: 4)
    /// The shared-secret proof was missing or wrong.
    public static let authenticationFailed = RefusalReason(code: 5)
    /// A frame that is not allowed at this point of the handshake.
    public static let protocolViolation = RefusalReason(code: 6)
    /// The acceptor is not the node the initiator wanted (initiator-side only; never sent).
    public static let unexpectedNode = RefusalReason(code: 7)
    /// The TLS certificate does not name the node id the handshake claims (or none), or TLS failed.
    public static let certificateMismatch = RefusalReason(code: 8)

    public var description: String {
        switch self {
        case .badVersion: return "bad version"
        case .wrongCluster: return "wrong cluster"
        case .unknownNode: return "unknown node"
        case .wrongRole: return "wrong role"
        case .authenticationFailed: return "authentication failed"
        case .protocolViolation: return "protocol violation"
        case .unexpectedNode: return "unexpected node"
        case .certificateMismatch: return "certificate mismatch"
        default: return "refusal \(code)"
        }
    }
}

/// The handshake frames. See WIRE.md for the sequence.
public enum HandshakeMessage: Hashable, Sendable {
    /// Initiator → acceptor, first frame: who I am and a fresh nonce.
    case hello(Hello)
    /// Acceptor → initiator: who I am, my nonce, whether a secret is required, and (if it is) my proof.
    case welcome(Welcome)
    /// Initiator → acceptor, only when a secret is required: the initiator's proof.
    case auth(proof: [UInt8])
    /// Acceptor → initiator, after a valid `auth`: the connection is open.
    case ready
    /// Either side: the handshake failed; the sender closes the connection after it.
    case refuse(RefusalReason, String)

    public struct Hello: Hashable, Sendable {
        public var version: UInt16
        public var cluster: String
        public var role: ConnectionRole
        public var nonce: [UInt8]
    }

    public struct Welcome: Hashable, Sendable {
        public var version: UInt16
        public var cluster: String
        public var nodeID: NodeID
        public var nonce: [UInt8]
        public var authRequired: Bool
        /// HMAC of the transcript under the secret; empty when `authRequired` is false.
        public var proof: [UInt8]
    }

    var frameType: FrameType {
        switch self {
        case .hello: return .hello
        case .welcome: return .welcome
        case .auth: return .auth
        case .ready: return .ready
        case .refuse: return .refuse
        }
    }

    func encodeBody(into buffer: inout ByteBuffer) {
        switch self {
        case .hello(let h):
            buffer.writeWire(h.version)  // first field of hello, frozen across versions
            buffer.writeWireString(h.cluster)
            buffer.writeWire(h.role.wireTag)
            buffer.writeWire(h.role.wireNodeID)
            buffer.writeShortBytes(h.nonce)
        case .welcome(let w):
            buffer.writeWire(w.version)
            buffer.writeWireString(w.cluster)
            buffer.writeWire(w.nodeID)
            buffer.writeShortBytes(w.nonce)
            buffer.writeBool(w.authRequired)
            buffer.writeShortBytes(w.proof)
        case .auth(let proof):
            buffer.writeShortBytes(proof)
        case .ready:
            break
        case .refuse(let reason, let message):
            buffer.writeWire(reason.code)
            buffer.writeWireString(message)
        }
    }

    /// Decodes a handshake frame's body.
    static func decode(type: FrameType, body: inout ByteBuffer) throws(WireError) -> HandshakeMessage {
        let message: HandshakeMessage
        switch type {
        case .hello:
            let version = try body.readWire(UInt16.self, "hello.version")
            if version != WireVersion.current && !WireVersion.accepted(for: .client).contains(version) {
                // Do not parse the rest: another version may lay it out differently. (The peer
                // and the client versions this node speaks share the layout.)
                return .hello(Hello(version: version, cluster: "", role: .client, nonce: []))
            }
            let cluster = try body.readWireString("hello.cluster")
            let tag = try body.readWire(UInt8.self, "hello.role")
            let id = try body.readWire(NodeID.self, "hello.nodeID")
            let role: ConnectionRole
            switch tag {
            case 1: role = .peer(id)
            case 2: role = .client
            default: throw WireError(.unknownType, "hello role \(tag)")
            }
            let nonce = try body.readShortBytes("hello.nonce")
            message = .hello(Hello(version: version, cluster: cluster, role: role, nonce: nonce))
        case .welcome:
            let version = try body.readWire(UInt16.self, "welcome.version")
            let cluster = try body.readWireString("welcome.cluster")
            let nodeID = try body.readWire(NodeID.self, "welcome.nodeID")
            let nonce = try body.readShortBytes("welcome.nonce")
            let authRequired = try body.readBool("welcome.authRequired")
            let proof = try body.readShortBytes("welcome.proof")
            message = .welcome(Welcome(version: version, cluster: cluster, nodeID: nodeID, nonce: nonce, authRequired: authRequired, proof: proof))
        case .auth:
            message = .auth(proof: try body.readShortBytes("auth.proof"))
        case .ready:
            message = .ready
        case .refuse:
            let code = try body.readWire(UInt8.self, "refuse.reason")
            message = .refuse(RefusalReason(code: code), try body.readWireString("refuse.message"))
        default:
            throw WireError(.unexpectedFrame, "\(type) during handshake")
        }
        try body.checkFullyRead("handshake frame")
        return message
    }
}

extension ByteBuffer {
    /// `u8` length + bytes: nonces and MACs, which are 32 bytes by construction. Longer input
    /// is cut to 255 bytes, its length written to match (never a length that disagrees with
    /// the bytes that follow, which would desynchronise the frame).
    mutating func writeShortBytes(_ bytes: [UInt8]) {
        let kept = bytes.prefix(Int(UInt8.max))
        writeInteger(UInt8(kept.count), as: UInt8.self)
        writeBytes(kept)
    }

    mutating func readShortBytes(_ field: StaticString) throws(WireError) -> [UInt8] {
        let count = Int(try readWire(UInt8.self, field))
        guard let bytes = readBytes(length: count) else { throw WireError(.truncated, "\(field)") }
        return bytes
    }
}

/// The shared-secret proofs of the handshake: HMAC-SHA256 over a transcript that names both
/// nonces, the cluster and both identities, with a different label per direction so that one
/// side's proof can never be replayed as the other's.
enum HandshakeAuth {
    static let nonceSize = 32

    static func makeNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<nonceSize).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    static func transcript(label: String, initiatorNonce: [UInt8], acceptorNonce: [UInt8], cluster: String, role: ConnectionRole, acceptorID: NodeID) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeWireString(label)
        buffer.writeShortBytes(initiatorNonce)
        buffer.writeShortBytes(acceptorNonce)
        buffer.writeWireString(cluster)
        buffer.writeWire(role.wireTag)
        buffer.writeWire(role.wireNodeID)
        buffer.writeWire(acceptorID)
        return Array(buffer.readableBytesView)
    }

    static func proof(key: [UInt8], transcript: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: transcript, using: SymmetricKey(data: key)))
    }

    /// Constant-time check (swift-crypto's comparison), so timing does not leak the expected MAC.
    static func verify(key: [UInt8], transcript: [UInt8], proof: [UInt8]) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: transcript, using: SymmetricKey(data: key))
    }
}
