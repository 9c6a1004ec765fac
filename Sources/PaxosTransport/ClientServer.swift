import DequeModule
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// How a ``ClientServer`` listens.
public struct ClientServerConfiguration: Sendable {
    /// This replica's id, told to clients in the handshake.
    public var nodeID: NodeID
    /// Clients of another cluster are refused.
    public var clusterName: String
    /// When set, clients must prove knowledge of it (see ``PeerTransportConfiguration/secret``).
    public var secret: [UInt8]?
    /// Where to listen for clients (port 0: any free port, see ``ClientServer/start()``).
    public var listenAddress: PeerAddress
    /// Larger frames close the connection; bounds the memory one client can make the server hold.
    public var maxFrameSize: Int = FrameFormat.defaultMaxFrameSize
    /// Requests per connection being handled at once. Beyond it the server stops reading from that
    /// connection (TCP back-pressure to the client) until a response goes out.
    public var maxInFlightPerConnection: Int = 1024
    /// Most bytes of partial frames all client connections may hold together; a connection whose
    /// partial frame (above 64 KiB) finds the total above it is closed.
    public var maxPartialFrameBytes: Int = 256 << 20
    /// A connection that has not completed the handshake by then is closed.
    public var handshakeTimeout: TimeAmount = .seconds(5)
    /// TLS 1.3 on every client connection; a client certificate is required when the
    /// credentials' ``TLSFiles/requireClientCertificates`` says so. nil: plain TCP. Default nil.
    public var tls: TLSCredentials?

    public init(nodeID: NodeID, clusterName: String, listenAddress: PeerAddress, secret: [UInt8]? = nil) {
        self.nodeID = nodeID
        self.clusterName = clusterName
        self.listenAddress = listenAddress
        self.secret = secret
    }
}

/// Serves the client protocol: decodes requests, runs the owner's handler for each one
/// concurrently, and writes each response as soon as it is ready (in any order; the request id
/// pairs them up).
///
/// An owner that can answer a request without a task of its own (it hands the request to its own
/// event loop and answers from there) passes a ``DirectHandler`` too: requests it takes skip the
/// task, and the two thread hops into and out of Swift's cooperative pool that a task costs.
///
/// ```swift
/// let server = ClientServer(configuration: config, group: group, logger: logger) { request in
///     switch request {
///     case .append(let records, let id, let isRetry): return await replica.append(records, id, isRetry)   // -> .appended / .redirect / .error
///     case .read(let from, let max, let consistency): return await replica.read(from, max, consistency)
///     case .barrier: return await replica.barrier()
///     case .status: return .status(replica.status)
///     case .members: return .members(replica.members)
///     case .transferLeadership(let to): return await replica.transferLeadership(to)
///     }
/// }
/// let address = try await server.start()
/// ...
/// await server.shutdown()   // closes connections, cancels and awaits handlers still running
/// ```
public final class ClientServer: Sendable {
    /// The owner's request handler. Runs in a child task per request; it is cancelled at shutdown.
    public typealias Handler = @Sendable (ClientRequest) async -> ClientResponse
    /// Takes a request on the connection's event loop, or declines it.
    ///
    /// Returns true when it took the request: it must then call `respond` exactly once, from any
    /// thread, at once or later; it must not block. Returns false to have ``Handler`` answer the
    /// request in a task instead. Unlike ``Handler``, work it started is not cancelled at shutdown:
    /// a response after shutdown is dropped.
    public typealias DirectHandler = @Sendable (_ request: ClientRequest, _ respond: @escaping @Sendable (ClientResponse) -> Void) -> Bool

    public let configuration: ClientServerConfiguration
    /// Malformed frames and refused handshakes on the client port.
    public let counters = TransportCounters()

    private let group: any EventLoopGroup
    private let logger: Logger
    private let handler: Handler
    private let direct: DirectHandler?
    private let key: [UInt8]?
    private let jobs: AsyncStream<Job>.Continuation
    private let jobStream: AsyncStream<Job>
    private let state = NIOLockedValueBox(ServerState())
    private let connections = AcceptedChannels()
    private let partialFrames: PartialFrameBudget

    private struct ServerState {
        var started = false
        var shutDown = false
        var server: (any Channel)?
        var runner: Task<Void, Never>?
    }

    /// One request to run: the handler's answer goes to `respond`, on the connection's loop.
    struct Job: Sendable {
        var request: ClientRequest
        var respond: @Sendable (ClientResponse) -> Void
    }

    /// - Parameters:
    ///   - direct: offered every request first, on the connection's event loop (see ``DirectHandler``).
    ///   - handler: answers the requests `direct` declines; called concurrently, from tasks the server owns.
    public init(configuration: ClientServerConfiguration, group: any EventLoopGroup, logger: Logger, direct: DirectHandler? = nil, handler: @escaping Handler) {
        self.configuration = configuration
        self.partialFrames = PartialFrameBudget(limit: configuration.maxPartialFrameBytes)
        self.group = group
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.nodeID)"
        self.logger = logger
        self.handler = handler
        self.direct = direct
        self.key = configuration.secret
        (jobStream, jobs) = AsyncStream.makeStream(of: Job.self)
    }

    /// Starts listening.
    /// - Returns: the bound address (useful with port 0).
    /// - Throws: ``TransportError`` `.bindFailed`, or `.shutDown` if already started or stopped.
    @discardableResult
    public func start() async throws(TransportError) -> SocketAddress {
        let canStart = state.withLockedValue { state -> Bool in
            guard !state.started, !state.shutDown else { return false }
            state.started = true
            return true
        }
        guard canStart else { throw TransportError(.shutDown, "start() called twice or after shutdown()") }
        // Handlers run as children of one task, so shutdown can cancel and await them all.
        let (stream, handler) = (jobStream, self.handler)
        let runner = Task {
            await withDiscardingTaskGroup { group in
                for await job in stream {
                    group.addTask { job.respond(await handler(job.request)) }
                }
            }
        }
        state.withLockedValue { $0.runner = runner }
        let address = try await Listener.bind(configuration.listenAddress, group: group, adopt: { server in
            state.withLockedValue { state -> Bool in
                if state.shutDown { return false }
                state.server = server
                return true
            }
        }, initializeChild: { [self] channel in
            // Reads are issued by ClientServerHandler, which holds them back when too many
            // requests are in flight.
            try self.configure(channel)
        })
        logger.debug("listening for clients", metadata: ["address": "\(address)"])
        return address
    }

    /// Stops listening, closes every client connection, cancels the handlers still running and
    /// waits for them. Responses they return afterwards are dropped.
    public func shutdown() async {
        let (server, runner) = state.withLockedValue { state in
            state.shutDown = true
            return (state.server, state.runner)
        }
        try? await server?.close()
        await connections.closeAll()
        jobs.finish()
        runner?.cancel()
        await runner?.value
    }

    private func configure(_ channel: any Channel) throws {
        guard connections.admit(channel) else { return }
        let session = SessionConfiguration(
            side: .acceptor(nodeID: configuration.nodeID, peers: nil, clients: true),
            cluster: configuration.clusterName, key: key, handshakeTimeout: configuration.handshakeTimeout)
        let sync = channel.pipeline.syncOperations
        if let tls = configuration.tls { try sync.addHandler(NIOSSLServerHandler(context: try tls.clientPortServerContext())) }
        try sync.addHandler(MessageToByteHandler(FrameEncoder()))
        try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: configuration.maxFrameSize, budget: partialFrames)))
        try sync.addHandler(SessionHandler(configuration: session, counters: counters, logger: logger, established: nil))
        try sync.addHandler(ClientServerHandler(maxInFlight: configuration.maxInFlightPerConnection, direct: direct, jobs: jobs))
    }
}

/// Turns decoded requests into jobs (or direct calls) and writes their responses back.
///
/// At most `maxInFlight` requests of one connection run at once, of them at most
/// `maxReadsInFlight` reads (whose answers can be megabytes), and none starts while the socket
/// does not take our output (a client that sends requests but never reads the answers must not
/// make us buffer them without bound). Requests decoded beyond that (one socket read can hold
/// many) wait here, and no further read is issued until they are started: memory per connection
/// stays bounded and TCP pushes back on the client.
final class ClientServerHandler: ChannelDuplexHandler {
    typealias InboundIn = SessionMessage
    typealias OutboundIn = OutboundFrame
    typealias OutboundOut = OutboundFrame

    static let maxReadsInFlight = 2
    private let maxInFlight: Int
    private let direct: ClientServer.DirectHandler?
    private let jobs: AsyncStream<ClientServer.Job>.Continuation
    private var inFlight = 0
    private var readsInFlight = 0
    private var readPending = false
    private var waiting = Deque<ClientRequestFrame>()
    /// `startWaiting` is on the stack: a direct handler may answer inside `start`, and that answer
    /// must not start the next request from within (the stack would grow with the queue).
    private var starting = false
    private var flushScheduled = false
    private var context: ChannelHandlerContext?

    init(maxInFlight: Int, direct: ClientServer.DirectHandler? = nil, jobs: AsyncStream<ClientServer.Job>.Continuation) {
        self.maxInFlight = max(1, maxInFlight)
        self.direct = direct
        self.jobs = jobs
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .request(let frame) = unwrapInboundIn(data) else { return }
        waiting.append(frame)
        startWaiting(context: context)
    }

    /// Starts waiting requests while there is room, then reads on if a read was held back.
    private func startWaiting(context: ChannelHandlerContext) {
        guard !starting else { return }
        starting = true
        while let next = waiting.first, canStart(context),
              readsInFlight < Self.maxReadsInFlight || !next.request.isRead {
            waiting.removeFirst()
            start(next, context: context)
        }
        starting = false
        if readPending, canStart(context), waiting.isEmpty {
            readPending = false
            context.read()
        }
    }

    private func start(_ frame: ClientRequestFrame, context: ChannelHandlerContext) {
        inFlight += 1
        let isRead = frame.request.isRead
        if isRead { readsInFlight += 1 }
        let loop = context.eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        let id = frame.id
        let respond: @Sendable (ClientResponse) -> Void = { response in
            // A direct handler may answer on this loop (at once, or from an owner on the same
            // loop): then without a hop.
            if loop.inEventLoop {
                this.value.respond(ClientResponseFrame(id: id, response: response), isRead: isRead)
            } else {
                loop.execute { this.value.respond(ClientResponseFrame(id: id, response: response), isRead: isRead) }
            }
        }
        if let direct, direct(frame.request, respond) { return }
        if case .terminated = jobs.yield(ClientServer.Job(request: frame.request, respond: respond)) {
            respond(.error(ClientError(code: .shuttingDown, message: "the server is shutting down")))
        }
    }

    private func respond(_ frame: ClientResponseFrame, isRead: Bool) {
        inFlight -= 1
        if isRead { readsInFlight -= 1 }
        guard let context else { return }
        context.write(wrapOutboundOut(.response(frame)), promise: nil)
        // Responses finishing in the same loop tick share one flush (one writev).
        if !flushScheduled {
            flushScheduled = true
            let this = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.execute {
                this.value.flushScheduled = false
                this.value.context?.flush()
            }
        }
        startWaiting(context: context)
    }

    private func canStart(_ context: ChannelHandlerContext) -> Bool {
        inFlight < maxInFlight && context.channel.isWritable
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { startWaiting(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if !canStart(context) || !waiting.isEmpty {
            readPending = true
        } else {
            context.read()
        }
    }
}

extension ClientRequest {
    var isRead: Bool {
        if case .read = self { return true } else { return false }
    }
}
