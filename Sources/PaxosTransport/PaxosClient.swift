import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// How a ``PaxosClient`` reaches a cluster.
public struct PaxosClientConfiguration: Sendable {
    /// Client ports of some or all replicas; tried in order until one completes the handshake.
    public var addresses: [PeerAddress]
    /// Must match the servers' cluster name, or they refuse the connection.
    public var clusterName: String
    /// Must match the servers' secret when they have one (and be nil when they do not).
    public var secret: [UInt8]?
    /// Larger responses close the connection (reads are bounded by `maxCount` to stay below it).
    public var maxFrameSize: Int = FrameFormat.defaultMaxFrameSize
    /// Per address.
    public var connectTimeout: TimeAmount = .seconds(2)
    public var handshakeTimeout: TimeAmount = .seconds(5)
    /// How many redirects one call follows before giving up.
    public var maxRedirects: Int = 5
    /// Append requests this client keeps in flight. Appends made while they are all out wait and
    /// go out together as the next request. With one, each round of replication carries one
    /// proposal and costs one sync per replica; requests sent side by side each cost their own,
    /// and each extra sync is another chance to meet a slow one (Benchmarks/README.md has the
    /// measurements). More can pay over a link whose round trip is long against a replica's sync.
    public var appendRequestsInFlight: Int = 1

    /// TLS 1.3 to the client ports: the server's certificate must be signed by the credentials'
    /// CA, and the client presents its own certificate (which servers may require). nil: plain
    /// TCP. Default nil.
    public var tls: TLSCredentials?

    public init(addresses: [PeerAddress], clusterName: String, secret: [UInt8]? = nil) {
        self.addresses = addresses
        self.clusterName = clusterName
        self.secret = secret
    }
}

/// One connection to one replica's client port, with pipelined requests.
///
/// Any number of tasks may call ``send(_:)`` at once; each request gets an id and its own
/// continuation, and responses are matched by id in whatever order they arrive.
public final class ClientConnection: Sendable {
    /// The node the handshake reached.
    public let nodeID: NodeID
    public let address: PeerAddress
    let channel: any Channel

    init(nodeID: NodeID, address: PeerAddress, channel: any Channel) {
        self.nodeID = nodeID
        self.address = address
        self.channel = channel
    }

    /// Opens a connection and completes the handshake.
    /// - Throws: ``TransportError``: `.connectFailed`, `.refused` (with the reason), `.handshakeTimeout`.
    public static func connect(to address: PeerAddress, configuration: PaxosClientConfiguration, group: any EventLoopGroup, logger: Logger, counters: TransportCounters = TransportCounters()) async throws(TransportError) -> ClientConnection {
        let loop = group.next()
        let established = loop.makePromise(of: SessionInfo.self)
        let session = SessionConfiguration(
            side: .initiator(role: .client, expectedAcceptor: nil), cluster: configuration.clusterName,
            key: configuration.secret, handshakeTimeout: configuration.handshakeTimeout)
        let maxFrameSize = configuration.maxFrameSize
        let tls = configuration.tls
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(configuration.connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if let tls { try sync.addHandler(NIOSSLClientHandler(context: tls.clientContext, serverHostname: nil)) }
                        try sync.addHandler(MessageToByteHandler(FrameEncoder()))
                        try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: maxFrameSize)))
                        try sync.addHandler(SessionHandler(configuration: session, counters: counters, logger: logger, established: established))
                        try sync.addHandler(ClientConnectionHandler())
                    }
                }
                .connect(host: address.host, port: address.port)
                .get()
        } catch {
            established.fail(error)
            throw TransportError(.connectFailed, "cannot connect to \(address): \(error)")
        }
        do {
            let info = try await established.futureResult.get()
            return ClientConnection(nodeID: info.remote.wireNodeID, address: address, channel: channel)
        } catch {
            channel.close(promise: nil)
            if let error = error as? TransportError { throw error }
            throw TransportError(.connectFailed, "handshake with \(address) failed: \(error)")
        }
    }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    /// Sends one request and waits for its response. Safe to call concurrently (pipelining).
    /// - Throws: ``TransportError`` `.connectionClosed` if the connection closes first (the
    ///   outcome of an append is then unknown).
    public func send(_ request: ClientRequest) async throws(TransportError) -> ClientResponse {
        let promise = channel.eventLoop.makePromise(of: ClientResponse.self)
        channel.writeAndFlush(ClientCall(request: request, promise: promise)).whenFailure { error in
            promise.fail(TransportError(.connectionClosed, "cannot send to \(self.address): \(error)"))
        }
        do {
            return try await promise.futureResult.get()
        } catch let error as TransportError {
            throw error
        } catch {
            throw TransportError(.connectionClosed, "\(error)")
        }
    }

    /// Sends one request and reports its response to `completion`, on the connection's event loop.
    ///
    /// Called on that loop (as from an earlier completion), the request is written at once,
    /// without a hop. `completion` runs exactly once; it fails with `.connectionClosed` if the
    /// connection closes first.
    func send(_ request: ClientRequest, completion: @escaping @Sendable (Result<ClientResponse, TransportError>) -> Void) {
        let promise = channel.eventLoop.makePromise(of: ClientResponse.self)
        promise.futureResult.whenComplete { result in
            completion(result.mapError { $0 as? TransportError ?? TransportError(.connectionClosed, "\($0)") })
        }
        channel.writeAndFlush(ClientCall(request: request, promise: promise)).whenFailure { error in
            promise.fail(TransportError(.connectionClosed, "cannot send to \(self.address): \(error)"))
        }
    }

    /// Closes the connection; requests in flight fail with `.connectionClosed`.
    public func close() async {
        try? await channel.close()
    }
}

/// A request on its way into the pipeline, with the promise its response completes.
struct ClientCall: Sendable {
    var request: ClientRequest
    var promise: EventLoopPromise<ClientResponse>
}

/// Assigns request ids, remembers whom to answer, and matches responses to them.
final class ClientConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = SessionMessage
    typealias OutboundIn = ClientCall
    typealias OutboundOut = OutboundFrame

    private var nextID: UInt64 = 1
    private var pending: [UInt64: EventLoopPromise<ClientResponse>] = [:]
    private var closed = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let call = unwrapOutboundIn(data)
        guard !closed else {
            call.promise.fail(TransportError(.connectionClosed, "the connection is closed"))
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let id = nextID
        nextID &+= 1
        pending[id] = call.promise
        context.write(wrapOutboundOut(.request(ClientRequestFrame(id: id, request: call.request))), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .response(let frame) = unwrapInboundIn(data) else { return }
        guard let promise = pending.removeValue(forKey: frame.id) else {
            // A response to nothing we asked: the server is confused; do not guess.
            context.fireErrorCaught(TransportError(.unexpectedResponse, "response to unknown request \(frame.id)"))
            context.close(promise: nil)
            return
        }
        promise.succeed(frame.response)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll()
    }

    private func failAll() {
        closed = true
        let pending = self.pending
        self.pending = [:]
        for promise in pending.values {
            promise.fail(TransportError(.connectionClosed, "the connection closed with the request in flight"))
        }
    }
}

/// A client of a PaxosLog cluster: connects to one of several replicas, pipelines requests, and
/// follows leader redirects.
///
/// ```swift
/// let client = try await PaxosClient.connect(configuration: .init(addresses: addrs, clusterName: "prod"), group: group, logger: logger)
/// let slots = try await client.append([Array("hello".utf8), Array("world".utf8)])
/// let page = try await client.read(from: 1, maxCount: 100)
/// await client.close()
/// ```
///
/// Calls are safe from many tasks at once; they share one connection. If the connection is lost
/// the next call reconnects (trying every address). An append whose connection drops while it is
/// in flight throws `.connectionClosed`: it may or may not have been chosen.
public final class PaxosClient: Sendable {
    public let configuration: PaxosClientConfiguration
    public let counters = TransportCounters()
    private let group: any EventLoopGroup
    private let logger: Logger
    private let current: NIOLockedValueBox<ClientConnection?>
    private let coalescer: AppendCoalescer

    private init(configuration: PaxosClientConfiguration, group: any EventLoopGroup, logger: Logger, connection: ClientConnection) {
        self.configuration = configuration
        self.coalescer = AppendCoalescer(maxInFlight: max(1, configuration.appendRequestsInFlight))
        self.group = group
        self.logger = logger
        self.current = NIOLockedValueBox(connection)
    }

    /// Connects to the first address (in order) that completes the handshake.
    /// - Throws: ``TransportError``: the last address's error if none works (a refusal, if any
    ///   address refused, since that is the more useful one).
    public static func connect(configuration: PaxosClientConfiguration, group: any EventLoopGroup, logger: Logger) async throws(TransportError) -> PaxosClient {
        let counters = TransportCounters()
        let connection = try await connectAny(configuration.addresses, configuration: configuration, group: group, logger: logger, counters: counters)
        return PaxosClient(configuration: configuration, group: group, logger: logger, connection: connection)
    }

    private static func connectAny(_ addresses: [PeerAddress], configuration: PaxosClientConfiguration, group: any EventLoopGroup, logger: Logger, counters: TransportCounters) async throws(TransportError) -> ClientConnection {
        var lastError = TransportError(.connectFailed, "no addresses configured")
        var refusal: TransportError?
        for address in addresses {
            do {
                return try await ClientConnection.connect(to: address, configuration: configuration, group: group, logger: logger, counters: counters)
            } catch {
                logger.debug("cannot use replica", metadata: ["address": "\(address)", "error": "\(error)"])
                if error.code == .refused { refusal = error }
                lastError = error
            }
        }
        throw refusal ?? lastError
    }

    /// The replica currently connected to, if the connection is open.
    public var connectedNodeID: NodeID? {
        current.withLockedValue { $0.flatMap { $0.isActive ? $0.nodeID : nil } }
    }

    /// Sends one request to the current replica (reconnecting first if the connection was lost).
    /// Does not follow redirects: the response is returned as is.
    public func send(_ request: ClientRequest) async throws(TransportError) -> ClientResponse {
        let connection = try await connection()
        return try await connection.send(request)
    }

    /// Appends records and returns their slots, in order, once chosen; follows redirects.
    /// - Throws: ``TransportError`` `.serverError` with the server's ``ClientError`` (e.g.
    ///   overloaded, noQuorum), `.redirect` when redirects cannot be followed, `.connectionClosed`.
    ///
    /// Concurrent calls share requests: while ``PaxosClientConfiguration/appendRequestsInFlight``
    /// requests are in flight, further appends wait and go out together in the next one (each
    /// caller still gets exactly its own slots). If that merged request fails, every append in it
    /// gets the error.
    public func append(_ records: [[UInt8]]) async throws(TransportError) -> [Slot] {
        try await coalescer.append(records) { [self] batch, completion in
            sendAppend(batch, completion: completion)
        }
    }

    /// Sends one (merged) append. On an open connection it goes out from the calling thread and is
    /// answered on the connection's loop; a lost connection, a redirect or a reconnect is handled
    /// in a task (``sendFollowingRedirects(_:after:)``).
    private func sendAppend(_ records: [[UInt8]], completion: @escaping @Sendable (Result<[Slot], TransportError>) -> Void) {
        let finish: @Sendable (ClientResponse) -> Void = { response in
            switch response {
            case .appended(let slots): completion(.success(slots))
            case .error(let error): completion(.failure(TransportError(.serverError, error.message, serverError: error)))
            case let other: completion(.failure(TransportError(.unexpectedResponse, "append answered with \(other)")))
            }
        }
        let request = ClientRequest.append(records)
        guard let connection = current.withLockedValue({ $0 }), connection.isActive else {
            Task {
                do throws(TransportError) { finish(try await sendFollowingRedirects(request)) } catch { completion(.failure(error)) }
            }
            return
        }
        connection.send(request) { [self] result in
            switch result {
            case .success(let response):
                guard case .redirect = response else { return finish(response) }
                // Not appended: follow the redirect (a reconnect) in a task.
                Task {
                    do throws(TransportError) {
                        finish(try await sendFollowingRedirects(request, after: (response, connection)))
                    } catch {
                        completion(.failure(error))
                    }
                }
            case .failure(let error): completion(.failure(error))
            }
        }
    }

    /// Reads chosen entries from `slot` on (at most `maxCount`); no-ops are skipped.
    public func read(from slot: Slot, maxCount: UInt32) async throws(TransportError) -> ReadResult {
        switch try await sendFollowingRedirects(.read(fromSlot: slot, maxCount: maxCount)) {
        case .entries(let result): return result
        case let other: throw TransportError(.unexpectedResponse, "read answered with \(other)")
        }
    }

    /// The connected replica's status (not redirected: every replica answers for itself).
    public func status() async throws(TransportError) -> ClientStatus {
        switch try await send(.status) {
        case .status(let status): return status
        case .error(let error): throw TransportError(.serverError, error.message, serverError: error)
        case let other: throw TransportError(.unexpectedResponse, "status answered with \(other)")
        }
    }

    /// Closes the connection.
    ///
    /// Close the client before shutting down the `EventLoopGroup` it was given. A call that finds
    /// its connection lost reconnects on that group, and SwiftNIO treats work handed to a
    /// shut-down group as a programmer error: the connect never completes (debug builds trap on
    /// the promise it leaks).
    public func close() async {
        let connection = current.withLockedValue { connection -> ClientConnection? in
            defer { connection = nil }
            return connection
        }
        await connection?.close()
    }

    /// Sends `request`, following redirects.
    /// - Parameter first: a response already received for `request` and the connection that gave
    ///   it, taken as the first attempt's answer instead of sending.
    private func sendFollowingRedirects(_ request: ClientRequest, after first: (response: ClientResponse, connection: ClientConnection)? = nil) async throws(TransportError) -> ClientResponse {
        var connection: ClientConnection
        var answered = first?.response
        if let first { connection = first.connection } else { connection = try await self.connection() }
        for _ in 0...configuration.maxRedirects {
            let response: ClientResponse
            if let a = answered {
                response = a
                answered = nil
            } else {
                response = try await connection.send(request)
            }
            switch response {
            case .error(let error):
                throw TransportError(.serverError, error.message, serverError: error)
            case .redirect(let leaderID, let leaderAddress):
                guard let leaderAddress, let address = PeerAddress(parsing: leaderAddress) else {
                    throw TransportError(.redirect, "node \(connection.nodeID) is not the leader and names no leader address (leader \(leaderID.map { "\($0)" } ?? "unknown"))")
                }
                logger.debug("following a redirect", metadata: ["from": "\(connection.nodeID)", "to": "\(address)"])
                connection = try await switchConnection(from: connection, to: address)
            case let response:
                return response
            }
        }
        throw TransportError(.redirect, "more than \(configuration.maxRedirects) redirects")
    }

    /// The current connection, reconnected (to any address) if it was lost.
    private func connection() async throws(TransportError) -> ClientConnection {
        if let connection = current.withLockedValue({ $0 }), connection.isActive { return connection }
        let fresh = try await Self.connectAny(configuration.addresses, configuration: configuration, group: group, logger: logger, counters: counters)
        return await install(fresh, replacing: nil)
    }

    private func switchConnection(from old: ClientConnection, to address: PeerAddress) async throws(TransportError) -> ClientConnection {
        let fresh = try await ClientConnection.connect(to: address, configuration: configuration, group: group, logger: logger, counters: counters)
        return await install(fresh, replacing: old)
    }

    /// Makes `fresh` the shared connection unless another task already replaced the one this task
    /// saw; then `fresh` is closed and the winner is used, so concurrent redirects converge.
    private func install(_ fresh: ClientConnection, replacing old: ClientConnection?) async -> ClientConnection {
        let (winner, loser) = current.withLockedValue { current -> (ClientConnection, ClientConnection?) in
            if let existing = current, existing !== old, existing.isActive {
                return (existing, fresh)
            }
            let previous = current
            current = fresh
            return (fresh, previous)
        }
        if let loser, loser !== winner {
            if loser.isActive {
                // Other tasks may still await responses on it (reads, redirects): let them finish.
                loser.channel.eventLoop.scheduleTask(in: .seconds(10)) { loser.channel.close(promise: nil) }
            } else {
                await loser.close()
            }
        }
        return winner
    }
}
