import DequeModule
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// How a ``PeerTransport`` connects its replica to the others.
public struct PeerTransportConfiguration: Sendable {
    /// This replica's id; must be a key of ``members``.
    public var nodeID: NodeID
    /// Every replica of the cluster, this one included: where each listens for peers.
    public var members: [NodeID: PeerAddress]
    /// Connections from another cluster are refused, even with the right secret.
    public var clusterName: String
    /// When set, every connection proves knowledge of it (HMAC-SHA256 challenge–response) before
    /// anything else is accepted. Without it, anyone who can reach the port can join as a
    /// member id: the port must then not be exposed beyond a trusted network.
    public var secret: [UInt8]?
    /// Where to listen; defaults to this replica's entry in ``members``.
    public var listenAddress: PeerAddress?
    /// Frames longer than this are refused (and the connection closed).
    public var maxFrameSize: Int = FrameFormat.defaultMaxFrameSize
    /// Envelopes waiting per peer while it is unreachable or slow. When full, the oldest is
    /// dropped: Paxos tolerates loss, and new messages supersede old ones.
    public var outboundQueueLimit: Int = 4096
    /// First reconnect delay; doubles per failed attempt up to ``maxBackoff``, with jitter.
    public var initialBackoff: TimeAmount = .milliseconds(20)
    public var maxBackoff: TimeAmount = .seconds(1)
    public var connectTimeout: TimeAmount = .seconds(2)
    public var handshakeTimeout: TimeAmount = .seconds(5)
    /// Mutual TLS 1.3 on every peer connection, each side's certificate bound to its node id
    /// (``TLSCredentials``); nil: plain TCP. Works with or without ``secret``. Default nil.
    public var tls: TLSCredentials?

    public init(nodeID: NodeID, members: [NodeID: PeerAddress], clusterName: String, secret: [UInt8]? = nil) {
        self.nodeID = nodeID
        self.members = members
        self.clusterName = clusterName
        self.secret = secret
    }
}

/// The TCP transport between replicas.
///
/// It listens on this replica's address and keeps one outbound connection to every other member,
/// reconnecting with exponential backoff and jitter. Each direction of a pair of replicas uses the
/// connection its sender opened, so there is never a race over which of two connections to keep.
/// ``send(_:)`` never blocks and never fails: envelopes wait in a bounded per-peer queue, are
/// written while the connection is writable (back-pressure from TCP), and the oldest is dropped
/// (and counted) when the queue is full.
///
/// Wiring, as a facade would do it:
///
/// ```swift
/// let (inbound, continuation) = AsyncStream.makeStream(of: Envelope.self)
/// let transport = try PeerTransport(configuration: config, group: group, logger: logger) {
///     continuation.yield($0)   // called on an event-loop thread: hand over, do not block
/// }
/// try await transport.start()
/// for effect in ready.messages { transport.send(effect) }   // after the storage writes they depend on
/// for await envelope in inbound { core.step(envelope) }
/// await transport.shutdown()
/// ```
public final class PeerTransport: Sendable {
    public let configuration: PeerTransportConfiguration
    /// Counters for malformed frames, refusals, drops, traffic.
    public let counters = TransportCounters()

    private let group: any EventLoopGroup
    private let logger: Logger
    private let onReceive: @Sendable (Envelope) -> Void
    private let links: [NodeID: PeerLink]
    private let localLoop: any EventLoop
    private let key: [UInt8]?
    private let state = NIOLockedValueBox(ServerState())
    private let inbound = AcceptedChannels()

    private struct ServerState {
        var started = false
        var shutDown = false
        var server: (any Channel)?
    }

    /// Creates a transport; nothing happens on the network before ``start()``.
    ///
    /// - Parameters:
    ///   - configuration: identity, membership, secret, limits.
    ///   - group: the event loops to run on; the caller owns it and shuts it down after ``shutdown()``.
    ///   - logger: connection events at `debug`, refusals and malformed input at `info`.
    ///   - onReceive: called with each inbound envelope, on an event-loop thread, in the order the
    ///     sender sent them. It must not block; yield to a stream or a queue.
    /// - Throws: ``TransportError`` `.invalidConfiguration` if `nodeID` is not a member.
    public init(configuration: PeerTransportConfiguration, group: any EventLoopGroup, logger: Logger, onReceive: @escaping @Sendable (Envelope) -> Void) throws(TransportError) {
        guard configuration.members[configuration.nodeID] != nil || configuration.listenAddress != nil else {
            throw TransportError(.invalidConfiguration, "node \(configuration.nodeID) is not in the membership")
        }
        guard configuration.outboundQueueLimit > 0 else {
            throw TransportError(.invalidConfiguration, "outboundQueueLimit must be positive")
        }
        self.configuration = configuration
        self.group = group
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.nodeID)"
        self.logger = logger
        self.onReceive = onReceive
        self.localLoop = group.next()
        self.key = configuration.secret
        var links: [NodeID: PeerLink] = [:]
        for (id, address) in configuration.members where id != configuration.nodeID {
            links[id] = PeerLink(peerID: id, address: address, eventLoop: group.next(), limit: configuration.outboundQueueLimit)
        }
        self.links = links
    }

    /// Starts listening and connecting to every peer.
    ///
    /// - Returns: the address actually bound (useful when the configured port is 0).
    /// - Throws: ``TransportError`` `.bindFailed` if the port cannot be bound; `.shutDown`.
    @discardableResult
    public func start() async throws(TransportError) -> SocketAddress {
        let canStart = state.withLockedValue { state -> Bool in
            guard !state.started, !state.shutDown else { return false }
            state.started = true
            return true
        }
        guard canStart else { throw TransportError(.shutDown, "start() called twice or after shutdown()") }
        guard let listen = configuration.listenAddress ?? configuration.members[configuration.nodeID] else {
            throw TransportError(.invalidConfiguration, "no listen address")
        }
        let address = try await Listener.bind(listen, group: group, adopt: { server in
            state.withLockedValue { state -> Bool in
                if state.shutDown { return false }
                state.server = server
                return true
            }
        }, initializeChild: { [self] channel in try self.configureInbound(channel) })
        logger.debug("listening for peers", metadata: ["address": "\(address)"])
        for link in links.values {
            link.eventLoop.execute { self.connect(link) }
        }
        return address
    }

    /// Queues `envelope` for its destination and returns at once.
    ///
    /// Envelopes to one peer are written in order. One to this replica itself is delivered to
    /// `onReceive` asynchronously. One to an unknown node, or any after ``shutdown()``, is dropped
    /// and counted. Delivery is not guaranteed (the connection may be down or the queue full);
    /// the consensus core retries what matters.
    public func send(_ envelope: Envelope) {
        if envelope.to == configuration.nodeID {
            let onReceive = self.onReceive
            localLoop.execute { onReceive(envelope) }
            return
        }
        guard let link = links[envelope.to] else {
            TransportCounters.bump(counters.droppedEnvelopes)
            logger.debug("dropping an envelope to an unknown node", metadata: ["to": "\(envelope.to)"])
            return
        }
        link.enqueue(envelope, counters: counters)
    }

    /// Whether the outbound connection to `peer` has completed its handshake.
    public func isConnected(to peer: NodeID) -> Bool {
        links[peer]?.isConnected ?? false
    }

    /// Envelopes waiting for `peer` (not yet handed to its socket). A caller that wants to slow
    /// down rather than have old envelopes dropped can watch this against
    /// ``PeerTransportConfiguration/outboundQueueLimit``.
    public func queueDepth(to peer: NodeID) -> Int {
        links[peer]?.queueDepth ?? 0
    }

    /// Stops listening, closes every connection, cancels reconnects. Queued envelopes are dropped.
    /// Returns once every channel is closed; the event loop group may be shut down after it.
    public func shutdown() async {
        let server = state.withLockedValue { state -> (any Channel)? in
            state.shutDown = true
            return state.server
        }
        for link in links.values {
            await link.shutdown()
        }
        try? await server?.close()
        await inbound.closeAll()
    }

    // MARK: Pipelines

    private func configureInbound(_ channel: any Channel) throws {
        guard inbound.admit(channel) else { return }
        let session = SessionConfiguration(
            side: .acceptor(nodeID: configuration.nodeID, peers: Set(links.keys), clients: false),
            cluster: configuration.clusterName, key: key, handshakeTimeout: configuration.handshakeTimeout,
            bindsCertificateToNode: configuration.tls != nil)
        if let tls = configuration.tls {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: try tls.peerServerContext()))
        }
        try addHandlers(to: channel, session: session, link: nil, established: nil)
    }

    private func addHandlers(to channel: any Channel, session: SessionConfiguration, link: PeerLink?, established: EventLoopPromise<SessionInfo>?) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(MessageToByteHandler(FrameEncoder()))
        try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: configuration.maxFrameSize)))
        try sync.addHandler(SessionHandler(configuration: session, counters: counters, logger: logger, established: established))
        try sync.addHandler(PeerConnectionHandler(link: link, counters: counters, onReceive: onReceive))
    }

    // MARK: Outbound connections

    private func connect(_ link: PeerLink) {
        guard link.beginConnecting() else { return }
        let session = SessionConfiguration(
            side: .initiator(role: .peer(configuration.nodeID), expectedAcceptor: link.peerID),
            cluster: configuration.clusterName, key: key, handshakeTimeout: configuration.handshakeTimeout,
            bindsCertificateToNode: configuration.tls != nil)
        let established = link.eventLoop.makePromise(of: SessionInfo.self)
        let tls = configuration.tls
        let connected = ClientBootstrap(group: link.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls.clientContext, serverHostname: nil))
                    }
                    try self.addHandlers(to: channel, session: session, link: link, established: established)
                }
            }
            .connect(host: link.address.host, port: link.address.port)
        connected.whenFailure { established.fail($0) }
        let attempt = established.futureResult.and(connected)
        link.setAttempt(attempt.map { _ in () }.recover { _ in () })
        attempt.whenComplete { [self] result in
            switch result {
            case .success(let (_, channel)):
                if link.connected(channel) {
                    logger.debug("connected to peer", metadata: ["peer": "\(link.peerID)"])
                    link.drain(counters: counters)  // what was queued while disconnected
                    channel.closeFuture.whenComplete { [self] _ in
                        link.disconnected(channel)
                        TransportCounters.bump(counters.connectFailures)
                        logger.debug("connection to peer lost", metadata: ["peer": "\(link.peerID)"])
                        scheduleReconnect(link)
                    }
                } else {
                    channel.close(promise: nil)  // shut down meanwhile
                }
            case .failure(let error):
                link.connectFailed()
                TransportCounters.bump(counters.connectFailures)
                logger.debug("cannot connect to peer", metadata: ["peer": "\(link.peerID)", "error": "\(error)"])
                connected.whenSuccess { $0.close(promise: nil) }
                scheduleReconnect(link)
            }
        }
    }

    private func scheduleReconnect(_ link: PeerLink) {
        guard let attempt = link.nextAttempt() else { return }
        // Exponential backoff with "equal jitter": half fixed, half random, so that replicas that
        // lost a peer together do not retry in lockstep, yet never retry immediately.
        let base = configuration.initialBackoff.nanoseconds
        let cap = configuration.maxBackoff.nanoseconds
        let exponential = attempt >= 30 ? cap : min(cap, base << Int64(attempt))
        let delay = exponential / 2 + Int64.random(in: 0...max(exponential / 2, 0))
        link.schedule(in: .nanoseconds(delay)) { [self] in connect(link) }
    }
}

/// One remote peer's outbound side: its queue, its connection, its reconnect state.
final class PeerLink: Sendable {
    let peerID: NodeID
    let address: PeerAddress
    /// The loop that connects and schedules reconnects for this peer (the channel runs on it too).
    let eventLoop: any EventLoop
    private let state = NIOLockedValueBox(LinkState())

    private struct LinkState {
        var queue = Deque<Envelope>()
        var channel: (any Channel)?
        var drainScheduled = false
        var connecting = false
        var shutDown = false
        var attempt = 0
        var reconnect: Scheduled<Void>?
        /// The connection attempt in progress, awaited by shutdown so none completes after it.
        var inFlightConnect: EventLoopFuture<Void>?
    }

    /// The queue bound (``PeerTransportConfiguration/outboundQueueLimit``).
    let limit: Int

    init(peerID: NodeID, address: PeerAddress, eventLoop: any EventLoop, limit: Int) {
        self.peerID = peerID
        self.address = address
        self.eventLoop = eventLoop
        self.limit = limit
    }

    var isConnected: Bool { state.withLockedValue { $0.channel != nil } }
    var queueDepth: Int { state.withLockedValue { $0.queue.count } }

    func enqueue(_ envelope: Envelope, counters: TransportCounters) {
        let (dropped, drain) = state.withLockedValue { state -> (Bool, Bool) in
            if state.shutDown { return (true, false) }
            var dropped = false
            if state.queue.count >= limit {
                state.queue.removeFirst()
                dropped = true
            }
            state.queue.append(envelope)
            let drain = state.channel != nil && !state.drainScheduled
            if drain { state.drainScheduled = true }
            return (dropped, drain)
        }
        if dropped { TransportCounters.bump(counters.droppedEnvelopes) }
        // One scheduled drain writes everything queued meanwhile, then flushes once.
        if drain { eventLoop.execute { self.drain(counters: counters) } }
    }

    /// Writes queued envelopes while the channel is writable. Runs on `eventLoop`.
    func drain(counters: TransportCounters) {
        let (channel, batch) = state.withLockedValue { state -> ((any Channel)?, Deque<Envelope>) in
            state.drainScheduled = false
            guard let channel = state.channel, channel.isWritable, !state.queue.isEmpty else { return (nil, []) }
            let batch = state.queue
            state.queue = Deque(minimumCapacity: 64)
            return (channel, batch)
        }
        guard let channel else { return }
        // Stop at the channel's high watermark (it turns unwritable as soon as a write crosses
        // it), so what sits in NIO's buffers is bounded in bytes, not just in envelopes; the rest
        // goes back to the front of the queue until `channelWritabilityChanged`.
        var remaining = batch[...]
        while let envelope = remaining.popFirst() {
            channel.write(OutboundFrame.envelope(envelope), promise: nil)
            if !channel.isWritable { break }
        }
        TransportCounters.bump(counters.sentEnvelopes, by: batch.count - remaining.count)
        if !remaining.isEmpty {
            // Requeued *before* the flush: flushing can make the channel writable again and run
            // a nested drain (via channelWritabilityChanged) that must see these.
            let dropped = state.withLockedValue { state -> Int in
                state.queue.insert(contentsOf: remaining, at: 0)
                let excess = max(0, state.queue.count - limit)
                state.queue.removeFirst(excess)
                return excess
            }
            if dropped > 0 { TransportCounters.bump(counters.droppedEnvelopes, by: dropped) }
        }
        channel.flush()
        // If the flush made room and something is still queued, no writability event may come
        // (it may already have fired, nested, above): drain again rather than wait for one.
        let again = state.withLockedValue { state -> Bool in
            guard let current = state.channel, current === channel, channel.isWritable,
                  !state.queue.isEmpty, !state.drainScheduled else { return false }
            state.drainScheduled = true
            return true
        }
        if again { eventLoop.execute { self.drain(counters: counters) } }
    }

    /// Called when the channel becomes writable again: write what piled up meanwhile.
    func writable(counters: TransportCounters) {
        drain(counters: counters)
    }

    func beginConnecting() -> Bool {
        state.withLockedValue { state in
            guard !state.shutDown, !state.connecting, state.channel == nil else { return false }
            state.connecting = true
            state.reconnect = nil
            return true
        }
    }

    /// - Returns: false if the link was shut down meanwhile (the caller closes the channel).
    func connected(_ channel: any Channel) -> Bool {
        state.withLockedValue { state in
            state.connecting = false
            guard !state.shutDown else { return false }
            state.channel = channel
            state.attempt = 0
            return true
        }
    }

    func setAttempt(_ attempt: EventLoopFuture<Void>) {
        state.withLockedValue { $0.inFlightConnect = attempt }
    }

    func connectFailed() {
        state.withLockedValue { $0.connecting = false }
    }

    func disconnected(_ channel: any Channel) {
        state.withLockedValue { state in
            if let current = state.channel, current === channel { state.channel = nil }
        }
    }

    /// - Returns: the attempt number for the backoff, or nil if shut down or already scheduled.
    func nextAttempt() -> Int? {
        state.withLockedValue { state in
            guard !state.shutDown, state.reconnect == nil, !state.connecting else { return nil }
            defer { state.attempt += 1 }
            return state.attempt
        }
    }

    func schedule(in delay: TimeAmount, _ task: @escaping @Sendable () -> Void) {
        let scheduled = eventLoop.scheduleTask(in: delay, task)
        let keep = state.withLockedValue { state -> Bool in
            guard !state.shutDown else { return false }
            state.reconnect = scheduled
            return true
        }
        if !keep { scheduled.cancel() }
    }

    func shutdown() async {
        let (channel, reconnect, attempt) = state.withLockedValue { state -> ((any Channel)?, Scheduled<Void>?, EventLoopFuture<Void>?) in
            state.shutDown = true
            state.queue.removeAll()
            defer { state.reconnect = nil; state.channel = nil; state.inFlightConnect = nil }
            return (state.channel, state.reconnect, state.inFlightConnect)
        }
        reconnect?.cancel()
        try? await attempt?.get()
        try? await channel?.close()
    }
}

/// The last handler of a peer connection: delivers envelopes, relays writability to the link.
final class PeerConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = SessionMessage

    private let link: PeerLink?
    private let counters: TransportCounters
    private let onReceive: @Sendable (Envelope) -> Void

    init(link: PeerLink?, counters: TransportCounters, onReceive: @escaping @Sendable (Envelope) -> Void) {
        self.link = link
        self.counters = counters
        self.onReceive = onReceive
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .envelope(let envelope) = unwrapInboundIn(data) {
            TransportCounters.bump(counters.receivedEnvelopes)
            onReceive(envelope)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { link?.writable(counters: counters) }
        context.fireChannelWritabilityChanged()
    }
}
