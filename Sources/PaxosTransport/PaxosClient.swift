import Atomics
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// How a ``PaxosClient`` reaches a cluster.
public struct PaxosClientConfiguration: Sendable {
    /// Client ports of some or all replicas; tried in order until one completes the handshake,
    /// and again, in order, whenever the replica in use fails or times out.
    public var addresses: [PeerAddress]
    /// Must match the servers' cluster name, or they refuse the connection.
    public var clusterName: String
    /// Must match the servers' secret when they have one (and be nil when they do not).
    public var secret: [UInt8]?
    /// Larger responses close the connection (reads are bounded by `maxCount` to stay below it).
    public var maxFrameSize: Int = FrameFormat.defaultMaxFrameSize
    /// Per address, within the attempt's and the call's time. Default 2 s.
    public var connectTimeout: TimeAmount = .seconds(2)
    /// Per connection, within the attempt's and the call's time. Default 5 s.
    public var handshakeTimeout: TimeAmount = .seconds(5)
    /// Redirects one call follows in a row; past them it pauses and starts again from
    /// ``addresses`` (a leader that changes while the call runs). 0: follow none; a redirect
    /// then fails the call with ``PaxosClientError/Code/redirect``. Default 5.
    public var maxRedirects: Int = 5
    /// Every call (``PaxosClient/append(_:)``, ``PaxosClient/read(from:maxCount:consistency:)``,
    /// ``PaxosClient/readBarrier()``, ``PaxosClient/status()``, ``PaxosClient/members()``,
    /// ``PaxosClient/transferLeadership(to:)``, ``PaxosClient/connect(configuration:group:logger:)``)
    /// ends within this: answered, or failed with ``PaxosClientError/Code/timeout`` saying
    /// whether an append may have been appended. Inside it, the call retries (an append with the
    /// same identity) at other addresses and after redirects. Default 10 s.
    public var requestTimeout: TimeAmount = .seconds(10)
    /// How long one attempt at one replica waits for its answer (and for a handshake) before the
    /// call gives up on that replica and tries the next address. Well above a healthy replica's
    /// answer time, well below ``requestTimeout``: with the defaults a call outlives a stopped
    /// leader (the attempt there times out after 3 s; the cluster elects another in about a
    /// second, which the next attempt finds). Default 3 s.
    public var attemptTimeout: TimeAmount = .seconds(3)
    /// The client part of the identities this client gives its appends' records (their sequence
    /// numbers count up from 1). nil: a random 63-bit id (top bit clear, as the replicas
    /// require) per ``PaxosClient``. Two clients must never use one id at once. Default nil.
    public var clientID: UInt64? = nil
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

    func validate() throws(TransportError) {
        guard !addresses.isEmpty else { throw TransportError(.invalidConfiguration, "no addresses configured") }
        guard requestTimeout > .zero, attemptTimeout > .zero, connectTimeout > .zero, handshakeTimeout > .zero else {
            throw TransportError(.invalidConfiguration, "timeouts must be positive")
        }
        guard maxRedirects >= 0, appendRequestsInFlight >= 1 else {
            throw TransportError(.invalidConfiguration, "maxRedirects must be ≥ 0 and appendRequestsInFlight ≥ 1")
        }
    }
}

/// One connection to one replica's client port, with pipelined requests.
///
/// Any number of tasks may call ``send(_:deadline:)`` at once; each request gets an id and its own
/// continuation, and responses are matched by id in whatever order they arrive.
public final class ClientConnection: Sendable {
    /// The node the handshake reached.
    public let nodeID: NodeID
    public let address: PeerAddress
    /// The client protocol version the connection speaks: ``WireVersion/client``, or an older
    /// one a server of an older build speaks (then requests newer than it fail without being sent).
    public let version: UInt16
    let channel: any Channel

    init(nodeID: NodeID, address: PeerAddress, version: UInt16 = WireVersion.client, channel: any Channel) {
        self.nodeID = nodeID
        self.address = address
        self.version = version
        self.channel = channel
    }

    /// Opens a connection and completes the handshake. A server that refuses this client's
    /// version is asked again in the oldest version servers take (``WireVersion/oldestClient``):
    /// a server of an older build then serves the requests it knows.
    /// - Parameter deadline: connecting and the handshake end by then, whatever the
    ///   configuration's timeouts say.
    /// - Throws: ``TransportError``: `.connectFailed`, `.refused` (with the reason), `.handshakeTimeout`.
    public static func connect(to address: PeerAddress, configuration: PaxosClientConfiguration, group: any EventLoopGroup, logger: Logger, counters: TransportCounters = TransportCounters(), deadline: NIODeadline? = nil) async throws(TransportError) -> ClientConnection {
        do {
            return try await open(address, version: WireVersion.client, configuration: configuration, group: group, logger: logger, counters: counters, deadline: deadline)
        } catch let refusal where refusal.code == .refused && refusal.refusal == .badVersion && WireVersion.client > WireVersion.oldestClient {
            logger.debug("the server refused client version \(WireVersion.client); trying \(WireVersion.oldestClient)", metadata: ["address": "\(address)"])
            do {
                return try await open(address, version: WireVersion.oldestClient, configuration: configuration, group: group, logger: logger, counters: counters, deadline: deadline)
            } catch let error where error.code == .refused && error.refusal == .badVersion {
                // Neither version: the first refusal names the versions the server speaks.
                throw refusal
            }
        }
    }

    private static func open(_ address: PeerAddress, version: UInt16, configuration: PaxosClientConfiguration, group: any EventLoopGroup, logger: Logger, counters: TransportCounters, deadline: NIODeadline?) async throws(TransportError) -> ClientConnection {
        let loop = group.next()
        let established = loop.makePromise(of: SessionInfo.self)
        let left = deadline.map { $0 - .now() } ?? configuration.handshakeTimeout
        let session = SessionConfiguration(
            side: .initiator(role: .client, expectedAcceptor: nil), cluster: configuration.clusterName,
            key: configuration.secret, handshakeTimeout: max(.milliseconds(1), min(configuration.handshakeTimeout, left)),
            offeredVersion: version)
        let maxFrameSize = configuration.maxFrameSize
        let tls = configuration.tls
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(max(.milliseconds(1), min(configuration.connectTimeout, left)))
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
            return ClientConnection(nodeID: info.remote.wireNodeID, address: address, version: version, channel: channel)
        } catch {
            channel.close(promise: nil)
            if let error = error as? TransportError { throw error }
            throw TransportError(.connectFailed, "handshake with \(address) failed: \(error)")
        }
    }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    /// Why `request` must not be sent on this connection (the server's client protocol version
    /// predates it: it would take the request for malformed input and close the connection
    /// without saying why), or nil.
    func cannotSend(_ request: ClientRequest) -> String? {
        guard version < request.clientVersion else { return nil }
        return "node \(nodeID) speaks client protocol version \(version), which has no \(request.kindName) request (version \(request.clientVersion)): upgrade it"
    }

    /// Sends one request and waits for its response. Safe to call concurrently (pipelining).
    /// - Parameter deadline: past it the request fails with `.timeout` (a late answer is dropped);
    ///   nil: no limit.
    /// - Throws: ``TransportError`` `.connectionClosed` if the connection closes first, `.timeout`
    ///   (the outcome of an append is then unknown).
    public func send(_ request: ClientRequest, deadline: NIODeadline? = nil) async throws(TransportError) -> ClientResponse {
        let promise = channel.eventLoop.makePromise(of: ClientResponse.self)
        channel.writeAndFlush(ClientCall(request: request, deadline: deadline, promise: promise)).whenFailure { error in
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
    /// connection closes first, with `.timeout` once `deadline` passes.
    func send(_ request: ClientRequest, deadline: NIODeadline?, completion: @escaping @Sendable (Result<ClientResponse, TransportError>) -> Void) {
        let promise = channel.eventLoop.makePromise(of: ClientResponse.self)
        promise.futureResult.whenComplete { result in
            completion(result.mapError { $0 as? TransportError ?? TransportError(.connectionClosed, "\($0)") })
        }
        channel.writeAndFlush(ClientCall(request: request, deadline: deadline, promise: promise)).whenFailure { error in
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
    /// When the request fails with `.timeout` if unanswered.
    var deadline: NIODeadline?
    var promise: EventLoopPromise<ClientResponse>
}

/// Assigns request ids, remembers whom to answer, matches responses to them, and fails requests
/// whose deadline passed.
final class ClientConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = SessionMessage
    typealias OutboundIn = ClientCall
    typealias OutboundOut = OutboundFrame

    /// Requests given up on (timed out) whose late answers are still expected: beyond this many,
    /// the server is too slow to be worth the memory, and the connection is closed.
    static let maxAbandoned = 4096

    private struct Pending {
        var promise: EventLoopPromise<ClientResponse>
        var timer: Scheduled<Void>?
    }

    private var nextID: UInt64 = 1
    private var pending: [UInt64: Pending] = [:]
    /// Ids of timed-out requests: their answers, if they come, are dropped, not taken for a
    /// confused server's.
    private var abandoned: Set<UInt64> = []
    private var closed = false
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let call = unwrapOutboundIn(data)
        guard !closed else {
            call.promise.fail(TransportError(.connectionClosed, "the connection is closed"))
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let id = nextID
        nextID &+= 1
        var timer: Scheduled<Void>? = nil
        if let deadline = call.deadline {
            let this = NIOLoopBound(self, eventLoop: context.eventLoop)
            timer = context.eventLoop.scheduleTask(deadline: deadline) { this.value.expire(id) }
        }
        pending[id] = Pending(promise: call.promise, timer: timer)
        context.write(wrapOutboundOut(.request(ClientRequestFrame(id: id, request: call.request))), promise: promise)
    }

    private func expire(_ id: UInt64) {
        guard let entry = pending.removeValue(forKey: id) else { return }
        abandoned.insert(id)
        entry.promise.fail(TransportError(.timeout, "no answer within the attempt's time"))
        if abandoned.count > Self.maxAbandoned { context?.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .response(let frame) = unwrapInboundIn(data) else { return }
        guard let entry = pending.removeValue(forKey: frame.id) else {
            // The late answer of a request that timed out: nobody waits for it any more.
            if abandoned.remove(frame.id) != nil { return }
            // A response to nothing we asked: the server is confused; do not guess.
            context.fireErrorCaught(TransportError(.unexpectedResponse, "response to unknown request \(frame.id)"))
            context.close(promise: nil)
            return
        }
        entry.timer?.cancel()
        entry.promise.succeed(frame.response)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll()
        self.context = nil
    }

    private func failAll() {
        closed = true
        let pending = self.pending
        self.pending = [:]
        abandoned = []
        for entry in pending.values {
            entry.timer?.cancel()
            entry.promise.fail(TransportError(.connectionClosed, "the connection closed with the request in flight"))
        }
    }
}

/// A client of a PaxosLog cluster: connects to one of several replicas, pipelines requests,
/// follows leader redirects, and retries: every call ends within
/// ``PaxosClientConfiguration/requestTimeout``.
///
/// ```swift
/// let client = try await PaxosClient.connect(configuration: .init(addresses: addrs, clusterName: "prod"), group: group, logger: logger)
/// let slots = try await client.append([Array("hello".utf8), Array("world".utf8)])
/// let page = try await client.read(from: 1, maxCount: 100, consistency: .linearizable)
/// await client.close()
/// ```
///
/// Calls are safe from many tasks at once; they share one connection. Each append's records get
/// identities (``clientID``, a sequence number counting up): when an attempt fails in a way that
/// leaves its outcome unknown (the connection drops with the request in flight, no answer within
/// ``PaxosClientConfiguration/attemptTimeout``, a server timeout), the call sends it again with the
/// same identities, to another replica if that one failed, and the cluster answers a retried
/// identity with the first attempt's positions (within its session bound) instead of appending
/// twice. When the call's time runs out, its ``PaxosClientError`` says whether the records may have
/// been appended and carries the identity to retry with (``append(_:id:)``).
///
/// A redirect to a leader that cannot be reached (an address the client cannot connect to) is not
/// the end of a call: it tries the address it saw that node answer on, then every configured
/// address.
public final class PaxosClient: Sendable {
    public let configuration: PaxosClientConfiguration
    public let counters = TransportCounters()
    /// The client part of the identities of this client's appends.
    public let clientID: UInt64
    /// The sequence number the next record gets.
    private let nextSequence = ManagedAtomic<UInt64>(1)
    private let group: any EventLoopGroup
    private let logger: Logger
    private let current: NIOLockedValueBox<ClientConnection?>
    /// Where this client reached each node (from handshakes): a redirect names a node, and the
    /// address its server advertises may not be one this client can use.
    private let reached = NIOLockedValueBox<[NodeID: PeerAddress]>([:])
    private let closed = ManagedAtomic(false)
    private let coalescer: AppendCoalescer

    private init(configuration: PaxosClientConfiguration, group: any EventLoopGroup, logger: Logger, connection: ClientConnection) {
        self.configuration = configuration
        // Top bit clear: the replicas keep ids with it set for their own appends.
        self.clientID = configuration.clientID ?? UInt64.random(in: 1...(UInt64.max >> 1))
        self.coalescer = AppendCoalescer(maxInFlight: max(1, configuration.appendRequestsInFlight))
        self.group = group
        self.logger = logger
        self.current = NIOLockedValueBox(connection)
        reached.withLockedValue { $0[connection.nodeID] = connection.address }
    }

    /// Connects to the first address (in order) that completes the handshake, within
    /// ``PaxosClientConfiguration/requestTimeout``.
    /// - Throws: ``TransportError``: the last address's error if none works (a refusal, if any
    ///   address refused, since that is the more useful one); `.invalidConfiguration`.
    public static func connect(configuration: PaxosClientConfiguration, group: any EventLoopGroup, logger: Logger) async throws(TransportError) -> PaxosClient {
        try configuration.validate()
        let counters = TransportCounters()
        let deadline = NIODeadline.now() + configuration.requestTimeout
        var lastError = TransportError(.connectFailed, "no addresses configured")
        var refusal: TransportError?
        for address in configuration.addresses {
            guard NIODeadline.now() < deadline else {
                lastError = TransportError(.timeout, "no replica answered within \(configuration.requestTimeout) (last: \(lastError))")
                break
            }
            do {
                let connection = try await ClientConnection.connect(to: address, configuration: configuration, group: group, logger: logger, counters: counters,
                                                                    deadline: min(deadline, .now() + configuration.attemptTimeout))
                return PaxosClient(configuration: configuration, group: group, logger: logger, connection: connection)
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

    /// Sends one request to the current replica (reconnecting first if the connection was lost),
    /// within ``PaxosClientConfiguration/requestTimeout``. Does not follow redirects or retry: the
    /// response is returned as is.
    /// - Throws: ``TransportError``; `.timeout` when the time ran out; `.refused` (`badVersion`)
    ///   for a request the replica's client protocol version does not have.
    public func send(_ request: ClientRequest) async throws(TransportError) -> ClientResponse {
        let deadline = NIODeadline.now() + configuration.requestTimeout
        let connection: ClientConnection
        if let c = current.withLockedValue({ $0 }), c.isActive {
            connection = c
        } else {
            var call = Call(request: request, deadline: deadline)
            guard let c = await self.connection(for: .any, call: &call) else {
                throw call.cause ?? TransportError(.connectFailed, "no replica could be reached")
            }
            connection = c
        }
        if let why = connection.cannotSend(request) { throw TransportError(.refused, why, refusal: .badVersion) }
        return try await connection.send(request, deadline: deadline)
    }

    /// Appends records and returns their positions, in order, once chosen; follows redirects and
    /// retries (with the records' identities) until ``PaxosClientConfiguration/requestTimeout``.
    /// - Throws: ``PaxosClientError`` with the ``PaxosClientError/outcome`` (`notAppended`: a new
    ///   append cannot duplicate; `unknown`: retry with ``PaxosClientError/proposalID`` through
    ///   ``append(_:id:)``) and the last attempt's failure.
    ///
    /// Concurrent calls share requests: while ``PaxosClientConfiguration/appendRequestsInFlight``
    /// requests are in flight, further appends wait and go out together in the next one (each
    /// caller still gets exactly its own slots, and its own records' identities in a failure). If
    /// that merged request fails, every append in it gets the error.
    public func append(_ records: [[UInt8]]) async throws(PaxosClientError) -> [Slot] {
        guard !records.isEmpty else { return [] }
        // The deadline runs from now: time spent waiting for a place behind requests in flight
        // counts.
        let deadline = NIODeadline.now() + configuration.requestTimeout
        return try await coalescer.append(records, deadline: deadline) { [self] batch, deadline, completion in
            sendAppend(batch, id: nil, isRetry: false, deadline: deadline, completion: completion)
        }
    }

    /// Appends records under the given identities (record `i` gets `id.advanced(by: i)`), as one
    /// request of its own: to retry an append whose outcome was unknown (pass the failure's
    /// ``PaxosClientError/proposalID`` and the same records), or for identities the caller keeps
    /// (a client id of its own: never one a live ``PaxosClient`` uses).
    /// - Throws: as ``append(_:)``.
    /// - Parameter isRetry: whether an earlier request may have carried these identities (the
    ///   replicas then look them up before appending); default true.
    public func append(_ records: [[UInt8]], id: ProposalID, isRetry: Bool = true) async throws(PaxosClientError) -> [Slot] {
        guard !records.isEmpty else { return [] }
        let result = await withUnsafeContinuation { (continuation: UnsafeContinuation<Result<[Slot], PaxosClientError>, Never>) in
            sendAppend(records, id: id, isRetry: isRetry, deadline: nil) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Identities for `count` records of this client.
    private func identities(_ count: Int) -> ProposalID {
        ProposalID(client: clientID, sequence: nextSequence.loadThenWrappingIncrement(by: UInt64(count), ordering: .relaxed))
    }

    /// Sends one (merged) append. On an open connection it goes out from the calling thread and is
    /// answered on the connection's loop; anything but its positions (a redirect, an error, a lost
    /// connection, a timeout) is handled in a task (``perform(_:deadline:first:)``).
    /// - Parameter deadline: nil: ``PaxosClientConfiguration/requestTimeout`` from now.
    private func sendAppend(_ records: [[UInt8]], id: ProposalID?, isRetry: Bool, deadline: NIODeadline?, completion: @escaping @Sendable (Result<[Slot], PaxosClientError>) -> Void) {
        let id = id ?? identities(records.count)
        let request = ClientRequest.append(records, id: id, isRetry: isRetry)
        let deadline = deadline ?? NIODeadline.now() + configuration.requestTimeout
        let finish: @Sendable (Result<ClientResponse, PaxosClientError>) -> Void = { result in
            switch result {
            case .success(.appended(let slots)): completion(.success(slots))
            case .success(let other):
                completion(.failure(PaxosClientError(.unexpectedResponse, "append answered with \(other)", outcome: .unknown, proposalID: id)))
            case .failure(let error): completion(.failure(error))
            }
        }
        guard !closed.load(ordering: .relaxed), let connection = current.withLockedValue({ $0 }), connection.isActive else {
            Task { finish(await perform(request, deadline: deadline, first: nil)) }
            return
        }
        connection.send(request, deadline: min(deadline, .now() + configuration.attemptTimeout)) { [self] result in
            if case .success(.appended(let slots)) = result, slots.count == records.count { return completion(.success(slots)) }
            Task { finish(await perform(request, deadline: deadline, first: (connection, result))) }
        }
    }

    /// Reads chosen entries from `slot` on (at most `maxCount`); no-ops are skipped.
    ///
    /// A `.linearizable` read reflects every append acknowledged before it started (the replica
    /// asks the leader for a read barrier first, and waits until it has applied through it); a
    /// `.local` one is what the replica connected to has, possibly stale. Both retry at other
    /// replicas until ``PaxosClientConfiguration/requestTimeout``.
    /// - Throws: ``PaxosClientError`` (`.rejected` with `compacted` for positions compacted away).
    public func read(from slot: Slot, maxCount: UInt32, consistency: ReadConsistency = .local) async throws(PaxosClientError) -> ReadResult {
        let deadline = NIODeadline.now() + configuration.requestTimeout
        switch await perform(.read(fromSlot: slot, maxCount: maxCount, consistency: consistency), deadline: deadline, first: nil) {
        case .success(.entries(let result)): return result
        case .success(let other): throw PaxosClientError(.unexpectedResponse, "read answered with \(other)")
        case .failure(let error): throw error
        }
    }

    /// A read-barrier position from the leader: every append acknowledged before the call is at
    /// or below it.
    /// - Throws: ``PaxosClientError``.
    public func readBarrier() async throws(PaxosClientError) -> Slot {
        let deadline = NIODeadline.now() + configuration.requestTimeout
        switch await perform(.barrier, deadline: deadline, first: nil) {
        case .success(.barrier(let position)): return position
        case .success(let other): throw PaxosClientError(.unexpectedResponse, "barrier answered with \(other)")
        case .failure(let error): throw error
        }
    }

    /// The member list as the leader sees it: each member's addresses, role, and (from the leader)
    /// how far it has acknowledged and learned the log. Asked of the replica connected to; a
    /// follower redirects to the leader, and while no leader is known a replica answers its own
    /// list without positions. Retried at other replicas until
    /// ``PaxosClientConfiguration/requestTimeout``.
    /// - Throws: ``PaxosClientError`` (`.refused` by a server older than client version 4).
    public func members() async throws(PaxosClientError) -> [MemberStatus] {
        let deadline = NIODeadline.now() + configuration.requestTimeout
        switch await perform(.members, deadline: deadline, first: nil) {
        case .success(.members(let members)): return members
        case .success(let other): throw PaxosClientError(.unexpectedResponse, "members answered with \(other)")
        case .failure(let error): throw error
        }
    }

    /// Asks the leader to hand leadership to the voter `target` (for a rolling restart), following
    /// redirects to the leader; returns the node that leads once the transfer is done, as the
    /// former leader sees it. Meanwhile the leader refuses new appends (they are redirected).
    /// - Throws: ``PaxosClientError``: `.rejected` with the server's error (`invalidRequest`:
    ///   `target` is not a member; `timeout`: it did not take over in time and the leader leads
    ///   on), `.timeout` (no leader answered within ``PaxosClientConfiguration/requestTimeout``),
    ///   `.refused` (a server older than client version 4).
    public func transferLeadership(to target: NodeID) async throws(PaxosClientError) -> NodeID {
        let deadline = NIODeadline.now() + configuration.requestTimeout
        switch await perform(.transferLeadership(to: target), deadline: deadline, first: nil) {
        case .success(.leadershipTransferred(let leader)): return leader
        case .success(let other): throw PaxosClientError(.unexpectedResponse, "transferLeadership answered with \(other)")
        case .failure(let error): throw error
        }
    }

    /// The connected replica's status (not redirected, not retried elsewhere: every replica
    /// answers for itself), within ``PaxosClientConfiguration/requestTimeout``.
    /// - Throws: ``PaxosClientError``.
    public func status() async throws(PaxosClientError) -> ClientStatus {
        let response: ClientResponse
        do {
            response = try await send(.status)
        } catch {
            throw PaxosClientError(error.code == .timeout ? .timeout : .unavailable, "status: \(error.message)", cause: error, attempts: 1)
        }
        switch response {
        case .status(let status): return status
        case .error(let error):
            throw PaxosClientError(.rejected, error.message, cause: TransportError(.serverError, error.message, serverError: error), attempts: 1)
        case let other: throw PaxosClientError(.unexpectedResponse, "status answered with \(other)", attempts: 1)
        }
    }

    /// Closes the connection; calls made afterwards fail with ``PaxosClientError/Code/closed``
    /// (appends: not appended).
    ///
    /// Close the client before shutting down the `EventLoopGroup` it was given: a call in progress
    /// may still reconnect on that group, and SwiftNIO treats work handed to a shut-down group as
    /// a programmer error.
    public func close() async {
        closed.store(true, ordering: .relaxed)
        let connection = current.withLockedValue { connection -> ClientConnection? in
            defer { connection = nil }
            return connection
        }
        await connection?.close()
    }

    // MARK: - Retrying

    /// Where a call's next attempt goes.
    private enum Target {
        /// The shared connection if it is usable, else the configured addresses in order.
        case any
        /// The same connection again (after a pause: the replica was overloaded).
        case same(ClientConnection)
        /// The node a redirect named: where this client reached it before, then the address the
        /// redirect gave, then ``any``.
        case leader(NodeID?, PeerAddress?)
    }

    /// What one attempt's result means for the call.
    private enum Verdict {
        case done(ClientResponse)
        case fail(PaxosClientError)
        case retry(Target, pause: Bool)
    }

    /// One call's attempts so far.
    private struct Call {
        /// What the next attempt sends (an append's after the first: marked as a retry).
        var request: ClientRequest
        let deadline: NIODeadline
        /// Sticky: once any attempt may have been proposed, the call's outcome is unknown,
        /// whatever later attempts are told.
        var outcome: ClientError.Outcome = .notAppended
        var cause: TransportError?
        var attempts = 0
        var redirects = 0
        /// Addresses that failed this round; skipped until every address has.
        var failed: Set<PeerAddress> = []
        /// Of them, how many refused the handshake for a reason retrying cannot fix.
        var refusals = 0
        var backoff: TimeAmount = .zero

        init(request: ClientRequest, deadline: NIODeadline) {
            self.request = request
            self.deadline = deadline
        }

        var isAppend: Bool {
            if case .append = request { return true } else { return false }
        }

        var isTransfer: Bool {
            if case .transferLeadership = request { return true } else { return false }
        }

        var proposalID: ProposalID? {
            if case .append(_, let id, _) = request { return id } else { return nil }
        }

        mutating func mayHaveAppended() {
            outcome = .unknown
        }

        func error(_ code: PaxosClientError.Code, _ message: String) -> PaxosClientError {
            PaxosClientError(code, message, outcome: isAppend ? outcome : nil, proposalID: proposalID, cause: cause, attempts: attempts)
        }
    }

    /// Runs `request` until it is answered, fails in a way retrying cannot mend, or `deadline`
    /// passes: follows redirects, moves to the next address after a failure or a timeout, pauses
    /// (20 ms doubling to 500 ms, jittered) when nobody leads or a replica is overloaded.
    /// - Parameter first: an attempt already made (the fast path of an append) and its result.
    private func perform(_ request: ClientRequest, deadline: NIODeadline, first: (ClientConnection, Result<ClientResponse, TransportError>)?) async -> Result<ClientResponse, PaxosClientError> {
        var call = Call(request: request, deadline: deadline)
        var target = Target.any
        // Every attempt after the first may find the identities taken by an earlier one.
        if case .append(let records, let id, false) = request, first != nil { call.request = .append(records, id: id, isRetry: true) }
        if let first {
            call.attempts = 1
            switch judge(first.1, from: first.0, call: &call) {
            case .done(let response): return .success(response)
            case .fail(let error): return .failure(error)
            case .retry(let next, let pause):
                target = next
                if pause { await self.pause(&call) }
            }
        }
        while true {
            if closed.load(ordering: .relaxed) { return .failure(call.error(.closed, "the client was closed")) }
            if Task.isCancelled { return .failure(call.error(.cancelled, "the calling task was cancelled")) }
            guard NIODeadline.now() < deadline else {
                return .failure(call.error(.timeout, "no answer within \(configuration.requestTimeout) after \(call.attempts) attempts"))
            }
            guard let connection = await connection(for: target, call: &call) else {
                if call.refusals > 0, call.refusals == call.failed.count, let cause = call.cause {
                    return .failure(call.error(.refused, "every address refused the connection: \(cause.message)"))
                }
                // Every address failed this round: try them all again after a pause.
                call.failed.removeAll()
                call.refusals = 0
                target = .any
                await pause(&call)
                continue
            }
            if let why = connection.cannotSend(call.request) { return .failure(call.error(.refused, why)) }
            call.attempts += 1
            let result: Result<ClientResponse, TransportError>
            let sent = call.request
            if case .append(let records, let id, false) = call.request { call.request = .append(records, id: id, isRetry: true) }
            do {
                result = .success(try await connection.send(sent, deadline: min(deadline, .now() + configuration.attemptTimeout)))
            } catch {
                result = .failure(error)
            }
            switch judge(result, from: connection, call: &call) {
            case .done(let response): return .success(response)
            case .fail(let error): return .failure(error)
            case .retry(let next, let pause):
                target = next
                if pause { await self.pause(&call) }
            }
        }
    }

    /// Classifies one attempt's result (and updates the call's outcome and cause).
    private func judge(_ result: Result<ClientResponse, TransportError>, from connection: ClientConnection, call: inout Call) -> Verdict {
        let response: ClientResponse
        switch result {
        case .failure(let error):
            // Sent (or maybe sent) and then lost: an append may have been proposed.
            call.cause = error
            if call.isAppend { call.mayHaveAppended() }
            call.failed.insert(connection.address)
            logger.debug("attempt failed; trying the next replica", metadata: ["address": "\(connection.address)", "error": "\(error)"])
            return .retry(.any, pause: false)
        case .success(let r):
            response = r
        }
        switch (call.request, response) {
        case (.append(let records, _, _), .appended(let slots)):
            guard slots.count == records.count else {
                call.mayHaveAppended()
                return .fail(call.error(.unexpectedResponse, "\(slots.count) positions for \(records.count) records"))
            }
            return .done(response)
        case (.read, .entries), (.barrier, .barrier), (.status, .status), (.members, .members), (.transferLeadership, .leadershipTransferred):
            return .done(response)
        case (_, .redirect(let leaderID, let address)):
            call.cause = TransportError(.redirect, "node \(connection.nodeID) redirected to \(leaderID.map { "node \($0)" } ?? "no leader")\(address.map { " at \($0)" } ?? "")")
            guard configuration.maxRedirects > 0 else {
                return .fail(call.error(.redirect, "node \(connection.nodeID) is not the leader (leader: \(leaderID.map { "\($0)" } ?? "unknown")) and redirects are not followed"))
            }
            // Not the replica to ask this round, whatever happens to the redirect: if its target
            // cannot be reached, the call goes on with the other addresses it was given.
            call.failed.insert(connection.address)
            guard leaderID != nil || address != nil, leaderID != connection.nodeID else {
                // Nobody leads (an election): another replica may know more; pause either way.
                return .retry(.any, pause: true)
            }
            call.redirects += 1
            if call.redirects > configuration.maxRedirects {
                call.redirects = 0
                return .retry(.any, pause: true)
            }
            return .retry(.leader(leaderID, address.flatMap { PeerAddress(parsing: $0) }), pause: false)
        case (_, .error(let error)):
            call.cause = TransportError(.serverError, error.message, serverError: error)
            if call.isAppend, (error.outcome ?? Self.impliedOutcome(error.code)) == .unknown { call.mayHaveAppended() }
            switch error.code {
            case .invalidRequest, .compacted, .sessionExpired:
                return .fail(call.error(.rejected, "node \(connection.nodeID): \(error)"))
            case .timeout where call.isTransfer:
                // The leader gave the target its time and leads on: asking again at once would
                // only repeat that; the caller decides.
                return .fail(call.error(.rejected, "node \(connection.nodeID): \(error)"))
            case .overloaded:
                return .retry(.same(connection), pause: true)
            case .superseded:
                return .retry(.same(connection), pause: false)
            default:
                // notLeader without a redirect, timeout, noQuorum, shuttingDown, internal, or a
                // code this version does not know: another replica may do better.
                call.failed.insert(connection.address)
                return .retry(.any, pause: true)
            }
        case (_, let other):
            if call.isAppend { call.mayHaveAppended() }
            return .fail(call.error(.unexpectedResponse, "\(call.request.kindName) answered with \(other)"))
        }
    }

    /// What an error code from a server that sent no outcome implies for an append.
    static func impliedOutcome(_ code: ClientErrorCode) -> ClientError.Outcome {
        switch code {
        case .overloaded, .notLeader, .invalidRequest, .superseded: return .notAppended
        default: return .unknown
        }
    }

    /// Sleeps the call's next backoff, within its deadline.
    private func pause(_ call: inout Call) async {
        call.backoff = min(max(call.backoff * 2, .milliseconds(20)), .milliseconds(500))
        let jittered = TimeAmount.nanoseconds(Int64(Double(call.backoff.nanoseconds) * Double.random(in: 0.5...1.0)))
        let left = call.deadline - .now()
        guard left > .zero else { return }
        try? await Task.sleep(nanoseconds: UInt64(max(0, min(jittered, left).nanoseconds)))
    }

    /// A connection for the call's next attempt, or nil when every candidate failed this round.
    private func connection(for target: Target, call: inout Call) async -> ClientConnection? {
        switch target {
        case .same(let connection) where connection.isActive:
            return connection
        case .leader(let id, let advertised):
            if let id, let c = current.withLockedValue({ $0 }), c.isActive, c.nodeID == id, !call.failed.contains(c.address) { return c }
            var candidates: [PeerAddress] = []
            if let id, let known = reached.withLockedValue({ $0[id] }) { candidates.append(known) }
            if let advertised, !candidates.contains(advertised) { candidates.append(advertised) }
            for address in candidates where !call.failed.contains(address) {
                if let c = await connect(address, call: &call, accept: { id == nil || $0.nodeID == id }) { return c }
            }
            // The leader is out of reach at every address known for it: any replica will do, and
            // will redirect again once it knows better.
            return await connection(for: .any, call: &call)
        case .any, .same:
            if let c = current.withLockedValue({ $0 }), c.isActive, !call.failed.contains(c.address) { return c }
            for address in configuration.addresses where !call.failed.contains(address) {
                let failed = call.failed
                if let c = await connect(address, call: &call, accept: { !failed.contains($0.address) }) { return c }
            }
            return nil
        }
    }

    /// Connects to `address` within the attempt's time and makes it the shared connection,
    /// unless another task installed a connection meanwhile that `accept`s: then that one is used.
    private func connect(_ address: PeerAddress, call: inout Call, accept: (ClientConnection) -> Bool) async -> ClientConnection? {
        guard NIODeadline.now() < call.deadline else { return nil }
        call.attempts += 1
        do {
            let fresh = try await ClientConnection.connect(to: address, configuration: configuration, group: group, logger: logger, counters: counters,
                                                           deadline: min(call.deadline, .now() + configuration.attemptTimeout))
            reached.withLockedValue { $0[fresh.nodeID] = address }
            return install(fresh, accept: accept)
        } catch {
            logger.debug("cannot use replica", metadata: ["address": "\(address)", "error": "\(error)"])
            call.cause = error
            call.failed.insert(address)
            if error.code == .refused, let reason = error.refusal, [.badVersion, .wrongCluster, .authenticationFailed, .certificateMismatch].contains(reason) {
                call.refusals += 1
            }
            return nil
        }
    }

    /// Makes `fresh` the shared connection, unless the current one is open and `accept`able:
    /// then `fresh` is closed and the current one used, so concurrent calls converge on one.
    private func install(_ fresh: ClientConnection, accept: (ClientConnection) -> Bool) -> ClientConnection {
        let (chosen, previous) = current.withLockedValue { current -> (ClientConnection, ClientConnection?) in
            if let existing = current, existing.isActive, accept(existing) { return (existing, nil) }
            defer { current = fresh }
            return (fresh, current)
        }
        if chosen !== fresh {
            fresh.channel.close(promise: nil)
            return chosen
        }
        if closed.load(ordering: .relaxed) {
            // Closed meanwhile: the connection must not outlive the client.
            current.withLockedValue { $0 = nil }
            fresh.channel.close(promise: nil)
        }
        if let previous, previous !== fresh {
            if previous.isActive {
                // Other calls may still await answers on it: let them finish (their attempts end
                // by then), then close it.
                let grace = max(.seconds(10), configuration.attemptTimeout + .seconds(1))
                previous.channel.eventLoop.scheduleTask(in: grace) { previous.channel.close(promise: nil) }
            } else {
                previous.channel.close(promise: nil)
            }
        }
        return fresh
    }
}

extension ClientRequest {
    /// The first client protocol version that has this request.
    var clientVersion: UInt16 {
        switch self {
        case .append, .read, .status, .barrier: return 3
        case .members, .transferLeadership: return 4
        }
    }

    var kindName: String {
        switch self {
        case .append: return "append"
        case .read: return "read"
        case .status: return "status"
        case .barrier: return "barrier"
        case .members: return "members"
        case .transferLeadership: return "transferLeadership"
        }
    }
}
