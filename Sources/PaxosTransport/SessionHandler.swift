import Logging
import MultiPaxos
import NIOCore
import NIOSSL

/// What a handshake established: who is on the other end.
public struct SessionInfo: Hashable, Sendable {
    /// The remote side: for an initiator, always `.peer(acceptorID)` (the node it reached, be it a
    /// replica's peer port or its client port); for an acceptor, what the initiator proved to be.
    public var remote: ConnectionRole
}

/// A decoded frame after the handshake.
enum SessionMessage: Sendable {
    case envelope(Envelope)
    case request(ClientRequestFrame)
    case response(ClientResponseFrame)
}

/// Which end of a connection a `SessionHandler` is, and what it accepts.
struct SessionConfiguration: Sendable {
    enum Side: Sendable {
        /// Opens the connection as `role`; if `expectedAcceptor` is set, the acceptor must be that node.
        case initiator(role: ConnectionRole, expectedAcceptor: NodeID?)
        /// Listens as node `nodeID`. `peers` is the set of node ids allowed to connect as peers
        /// (nil: no peers); `clients` says whether clients may connect.
        case acceptor(nodeID: NodeID, peers: Set<NodeID>?, clients: Bool)
    }

    var side: Side
    var cluster: String
    /// The shared secret, if any. Kept as bytes: swift-crypto's SymmetricKey is not Sendable.
    var key: [UInt8]?
    var handshakeTimeout: TimeAmount = .seconds(5)
    /// The connection runs over TLS and the remote replica's certificate must name the node id
    /// it speaks as (``TLSCredentials``): set on peer connections with TLS.
    var bindsCertificateToNode = false
    /// The version an initiator offers in its `hello` and requires its `welcome` to echo; nil:
    /// its role's (``WireVersion/expected(for:)``). A client offers an older one to a server that
    /// refused its own.
    var offeredVersion: UInt16? = nil

    /// The version an initiator speaks as `role`.
    func version(for role: ConnectionRole) -> UInt16 {
        offeredVersion ?? WireVersion.expected(for: role)
    }
}

/// The per-connection protocol handler: runs the handshake, then decodes frame bodies into
/// `SessionMessage`s, checking that each frame kind is allowed on this connection.
///
/// It is also where every malformed input ends up (frame errors from `FrameDecoder` and body
/// errors from the codecs alike), so the counting, the one log line and the close happen in one
/// place. Nothing after it in the pipeline sees an unauthenticated or undecodable frame.
final class SessionHandler: ChannelInboundHandler {
    typealias InboundIn = InboundFrame
    typealias InboundOut = SessionMessage
    typealias OutboundOut = OutboundFrame

    private enum State {
        case idle
        case awaitingWelcome(nonce: [UInt8])
        case awaitingReady(remote: ConnectionRole)
        case awaitingHello
        case awaitingAuth(transcript: [UInt8], remote: ConnectionRole)
        case established(remote: ConnectionRole)
        case closed
    }

    private let configuration: SessionConfiguration
    private let counters: TransportCounters
    private var logger: Logger
    private let established: EventLoopPromise<SessionInfo>?
    private var state: State = .idle
    private var timeout: Scheduled<Void>?
    /// Why the handshake failed, once it has: the close that follows must not report a mere
    /// "connection closed" in its place.
    private var failure: TransportError?

    init(configuration: SessionConfiguration, counters: TransportCounters, logger: Logger, established: EventLoopPromise<SessionInfo>?) {
        self.configuration = configuration
        self.counters = counters
        self.logger = logger
        self.established = established
    }

    private var localID: NodeID {
        switch configuration.side {
        case .initiator(let role, _): return role.wireNodeID
        case .acceptor(let nodeID, _, _): return nodeID
        }
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        if case .established = state {} else {
            established?.fail(failure ?? TransportError(.connectionClosed, "connection closed during the handshake"))
        }
        state = .closed
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timeout?.cancel()
        established?.fail(TransportError(.connectionClosed, "handler removed"))
    }

    private func start(context: ChannelHandlerContext) {
        guard case .idle = state else { return }
        if let address = context.channel.remoteAddress {
            logger[metadataKey: "remote"] = "\(address)"
        }
        let channel = context.channel
        let seconds = configuration.handshakeTimeout
        let established = self.established
        timeout = context.eventLoop.scheduleTask(in: seconds) {
            established?.fail(TransportError(.handshakeTimeout, "no handshake within \(seconds)"))
            channel.close(promise: nil)
        }
        switch configuration.side {
        case .initiator(let role, _):
            let nonce = HandshakeAuth.makeNonce()
            state = .awaitingWelcome(nonce: nonce)
            let hello = HandshakeMessage.Hello(version: configuration.version(for: role), cluster: configuration.cluster, role: role, nonce: nonce)
            context.writeAndFlush(wrapOutboundOut(.handshake(.hello(hello))), promise: nil)
        case .acceptor:
            state = .awaitingHello
        }
    }

    // MARK: Input

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        do {
            try handle(frame, context: context)
        } catch {
            malformed(error, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let wire = error as? WireError {
            malformed(wire, context: context)
        } else if error is NIOSSLError || error is BoringSSLError, !isClosed, !isEstablished {
            // A certificate from another CA, none where one is required, or not TLS at all: a
            // refused handshake, counted as one, even though TLS (not our handshake) refused it.
            TransportCounters.bump(counters.refusedHandshakes)
            logger.info("TLS handshake failed", metadata: ["error": "\(error)"])
            fail(TransportError(.refused, "TLS: \(error)", refusal: .certificateMismatch), context: context)
        } else if let decoder = error as? ByteToMessageDecoderError, case .leftoverDataWhenDone = decoder {
            // A partial frame at EOF: the peer closed mid-write. Not corruption.
            close(context: context)
        } else {
            logger.debug("connection error", metadata: ["error": "\(error)"])
            close(context: context)
        }
    }

    private func handle(_ frame: InboundFrame, context: ChannelHandlerContext) throws(WireError) {
        var payload = frame.payload
        switch state {
        case .established(let remote):
            switch frame.type {
            case .envelope:
                guard case .peer(let remoteID) = remote, case .peer = localRole else {
                    throw WireError(.unexpectedFrame, "envelope on a client connection")
                }
                let envelope = try MessageCodec.decode(&payload)
                // The handshake authenticated the sender: an envelope must not claim otherwise.
                guard envelope.from == remoteID, envelope.to == localID else {
                    throw WireError(.invalidValue, "envelope \(envelope.from)→\(envelope.to) on the connection \(remoteID)→\(localID)")
                }
                context.fireChannelRead(wrapInboundOut(.envelope(envelope)))
            case .request:
                guard case .acceptor = configuration.side, case .client = remote else {
                    throw WireError(.unexpectedFrame, "request from a non-client")
                }
                context.fireChannelRead(wrapInboundOut(.request(try ClientRequestFrame.decode(&payload))))
            case .response:
                guard case .initiator(.client, _) = configuration.side else {
                    throw WireError(.unexpectedFrame, "response to a non-client")
                }
                context.fireChannelRead(wrapInboundOut(.response(try ClientResponseFrame.decode(&payload))))
            case .hello, .welcome, .auth, .ready, .refuse:
                throw WireError(.unexpectedFrame, "\(frame.type) after the handshake")
            default:
                throw WireError(.unknownType, "\(frame.type)")
            }
        case .closed:
            return
        case .idle:
            throw WireError(.unexpectedFrame, "\(frame.type) before the connection started")
        case .awaitingWelcome, .awaitingReady, .awaitingHello, .awaitingAuth:
            guard [.hello, .welcome, .auth, .ready, .refuse].contains(frame.type) else {
                refuse(.protocolViolation, "\(frame.type) before the handshake finished", context: context)
                return
            }
            let message = try HandshakeMessage.decode(type: frame.type, body: &payload)
            handshake(message, context: context)
        }
    }

    /// This side's role as seen by the other: a replica is a peer even on the acceptor side.
    private var localRole: ConnectionRole {
        switch configuration.side {
        case .initiator(let role, _): return role
        case .acceptor(let nodeID, _, _): return .peer(nodeID)
        }
    }

    private func handshake(_ message: HandshakeMessage, context: ChannelHandlerContext) {
        switch (state, message) {
        case (_, .refuse(let reason, let text)):
            TransportCounters.bump(counters.refusedHandshakes)
            logger.info("handshake refused by the remote side", metadata: ["reason": "\(reason)", "message": "\(text)"])
            fail(TransportError(.refused, text, refusal: reason), context: context)

        // Acceptor: check who is calling.
        case (.awaitingHello, .hello(let hello)):
            guard case .acceptor(let nodeID, let peers, let clients) = configuration.side else { return }
            guard WireVersion.accepted(for: hello.role).contains(hello.version) else {
                return refuse(.badVersion, "version \(hello.version) is not supported; this node speaks version \(WireVersion.current) to peers and \(WireVersion.oldestClient)…\(WireVersion.client) to clients", context: context)
            }
            let version = hello.version
            guard hello.cluster == configuration.cluster else {
                return refuse(.wrongCluster, "cluster \"\(hello.cluster)\" is not this node's cluster", context: context)
            }
            switch hello.role {
            case .peer(let id):
                guard let peers else { return refuse(.wrongRole, "this port serves clients, not peers", context: context) }
                guard peers.contains(id), id != nodeID else {
                    return refuse(.unknownNode, "node \(id) is not a member", context: context)
                }
                if let mismatch = certificateMismatch(claimed: id, context: context) {
                    return refuse(.certificateMismatch, mismatch, context: context)
                }
            case .client:
                guard clients else { return refuse(.wrongRole, "this port serves peers, not clients", context: context) }
            }
            let nonce = HandshakeAuth.makeNonce()
            if let key = configuration.key {
                let acceptorTranscript = HandshakeAuth.transcript(label: "paxoslog acceptor", initiatorNonce: hello.nonce, acceptorNonce: nonce, cluster: hello.cluster, role: hello.role, acceptorID: nodeID)
                let initiatorTranscript = HandshakeAuth.transcript(label: "paxoslog initiator", initiatorNonce: hello.nonce, acceptorNonce: nonce, cluster: hello.cluster, role: hello.role, acceptorID: nodeID)
                state = .awaitingAuth(transcript: initiatorTranscript, remote: hello.role)
                let welcome = HandshakeMessage.Welcome(version: version, cluster: configuration.cluster, nodeID: nodeID, nonce: nonce, authRequired: true, proof: HandshakeAuth.proof(key: key, transcript: acceptorTranscript))
                context.writeAndFlush(wrapOutboundOut(.handshake(.welcome(welcome))), promise: nil)
            } else {
                let welcome = HandshakeMessage.Welcome(version: version, cluster: configuration.cluster, nodeID: nodeID, nonce: nonce, authRequired: false, proof: [])
                context.writeAndFlush(wrapOutboundOut(.handshake(.welcome(welcome))), promise: nil)
                succeed(remote: hello.role, context: context)
            }

        case (.awaitingAuth(let transcript, let remote), .auth(let proof)):
            guard let key = configuration.key, HandshakeAuth.verify(key: key, transcript: transcript, proof: proof) else {
                return refuse(.authenticationFailed, "the shared-secret proof is wrong", context: context)
            }
            context.writeAndFlush(wrapOutboundOut(.handshake(.ready)), promise: nil)
            succeed(remote: remote, context: context)

        // Initiator: check whom we reached, and prove ourselves if asked.
        case (.awaitingWelcome(let nonce), .welcome(let welcome)):
            guard case .initiator(let role, let expected) = configuration.side else { return }
            let version = configuration.version(for: role)
            guard welcome.version == version else {
                let what = role == .client ? "client protocol" : "wire"
                return refuse(.badVersion, "the remote side speaks \(what) version \(welcome.version); this node speaks \(version)", context: context)
            }
            guard welcome.cluster == configuration.cluster else {
                return refuse(.wrongCluster, "reached cluster \"\(welcome.cluster)\", wanted \"\(configuration.cluster)\"", context: context)
            }
            if let expected, expected != welcome.nodeID {
                return refuse(.unexpectedNode, "reached node \(welcome.nodeID), wanted node \(expected)", context: context)
            }
            if case .peer = role, let mismatch = certificateMismatch(claimed: welcome.nodeID, context: context) {
                return refuse(.certificateMismatch, mismatch, context: context)
            }
            switch (configuration.key, welcome.authRequired) {
            case (nil, false):
                succeed(remote: .peer(welcome.nodeID), context: context)
            case (nil, true):
                refuse(.authenticationFailed, "the remote side requires a shared secret and none is configured", context: context)
            case (.some, false):
                // Mutual proof is the point of a secret: a server that cannot prove it is not ours.
                refuse(.authenticationFailed, "a shared secret is configured but the remote side does not use one", context: context)
            case (.some(let key), true):
                let acceptorTranscript = HandshakeAuth.transcript(label: "paxoslog acceptor", initiatorNonce: nonce, acceptorNonce: welcome.nonce, cluster: configuration.cluster, role: role, acceptorID: welcome.nodeID)
                guard HandshakeAuth.verify(key: key, transcript: acceptorTranscript, proof: welcome.proof) else {
                    return refuse(.authenticationFailed, "the remote side's shared-secret proof is wrong", context: context)
                }
                let initiatorTranscript = HandshakeAuth.transcript(label: "paxoslog initiator", initiatorNonce: nonce, acceptorNonce: welcome.nonce, cluster: configuration.cluster, role: role, acceptorID: welcome.nodeID)
                state = .awaitingReady(remote: .peer(welcome.nodeID))
                context.writeAndFlush(wrapOutboundOut(.handshake(.auth(proof: HandshakeAuth.proof(key: key, transcript: initiatorTranscript)))), promise: nil)
            }

        case (.awaitingReady(let remote), .ready):
            succeed(remote: remote, context: context)

        default:
            refuse(.protocolViolation, "unexpected \(message.frameType) during the handshake", context: context)
        }
    }

    /// Why the remote replica's TLS certificate does not vouch for `claimed`, or nil when it
    /// does (or the connection does not bind certificates to node ids).
    private func certificateMismatch(claimed: NodeID, context: ChannelHandlerContext) -> String? {
        guard configuration.bindsCertificateToNode else { return nil }
        guard let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate() else {
            return "node \(claimed) presented no TLS certificate"
        }
        guard let named = TLSCredentials.nodeID(of: certificate) else {
            return "the TLS certificate of the remote side names no node (no \(TLSCredentials.nodeURIPrefix)ID URI), it claims node \(claimed)"
        }
        return named == claimed ? nil : "the TLS certificate names node \(named), the remote side claims node \(claimed)"
    }

    // MARK: Outcomes

    private func succeed(remote: ConnectionRole, context: ChannelHandlerContext) {
        timeout?.cancel()
        state = .established(remote: remote)
        logger[metadataKey: "remote-role"] = "\(remote)"
        TransportCounters.bump(counters.connectionsEstablished)
        logger.debug("handshake complete")
        established?.succeed(SessionInfo(remote: remote))
    }

    /// Tells the other side why, then closes. Counted once per connection.
    private func refuse(_ reason: RefusalReason, _ text: String, context: ChannelHandlerContext) {
        TransportCounters.bump(counters.refusedHandshakes)
        logger.info("handshake refused", metadata: ["reason": "\(reason)", "message": "\(text)"])
        let channel = context.channel
        let sendRefusal = reason != .unexpectedNode
        failure = TransportError(.refused, text, refusal: reason)
        state = .closed
        if sendRefusal {
            // Written before failing the handshake promise, whose owner may close the channel at
            // once; and the close waits for the write, so that the other side learns why.
            context.writeAndFlush(wrapOutboundOut(.handshake(.refuse(reason, text)))).whenComplete { _ in
                channel.close(promise: nil)
            }
        }
        fail(TransportError(.refused, text, refusal: reason), context: context, closeNow: !sendRefusal)
    }

    private func malformed(_ error: WireError, context: ChannelHandlerContext) {
        guard !isClosed else { return }
        TransportCounters.bump(counters.malformedFrames)
        // Logged once: the connection is closed right after, so it cannot repeat.
        logger.info("malformed input, closing the connection", metadata: ["error": "\(error)"])
        fail(TransportError(.malformed, "\(error)"), context: context)
    }

    private var isEstablished: Bool {
        if case .established = state { return true }
        return false
    }

    private var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    private func fail(_ error: TransportError, context: ChannelHandlerContext, closeNow: Bool = true) {
        timeout?.cancel()
        state = .closed
        established?.fail(error)
        if closeNow { context.close(promise: nil) }
    }

    private func close(context: ChannelHandlerContext) {
        state = .closed
        context.close(promise: nil)
    }
}
