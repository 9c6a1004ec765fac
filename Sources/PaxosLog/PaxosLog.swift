import Logging
import NIOConcurrencyHelpers
import MultiPaxos
import NIOCore
import NIOPosix
import PaxosTransport
import SegmentLog

/// A replicated write-ahead log: append records, read them back in one agreed order on every
/// replica, durable on a majority of disks.
///
/// ```swift
/// let log = try await PaxosLog.open(.local(dataDirectory: "/var/lib/app/wal"))
/// let position = try await log.append(Array("hello".utf8))     // chosen: durable on a majority
/// for try await entry in log.entries(from: 1) { apply(entry) }    // every replica, slot order
/// try await log.close()
/// ```
///
/// A one-member configuration is a local WAL with the same API and no network.
public final class PaxosLog: Sendable {
    /// A position in the log (a Paxos slot). Positions increase but are not dense: a new leader
    /// may fill holes with no-ops, which ``entries(from:)`` skips.
    public typealias Position = Slot

    public let configuration: Configuration
    let driver: ReplicaDriver
    private let transport: PeerTransport?
    private let forwarder: Forwarder?
    /// Asks the leader for read barriers when this replica follows (linearizable reads).
    let leaderLink: LeaderLink
    let metrics: ReplicaMetrics
    /// One compaction at a time.
    let compacting = NIOLockedValueBox(false)

    private init(configuration: Configuration, driver: ReplicaDriver, transport: PeerTransport?) {
        self.configuration = configuration
        self.driver = driver
        self.transport = transport
        self.forwarder = configuration.nonLeaderAppends == .forward ? Forwarder(configuration: configuration) : nil
        self.leaderLink = LeaderLink(configuration: configuration)
        self.metrics = ReplicaMetrics(driver: driver, transport: transport)
        metrics.start(interval: configuration.metricsInterval)
    }

    /// Opens (recovering if needed) this replica's data directory and joins the cluster.
    ///
    /// Recovery scans and verifies the log; a torn tail is cut, other damage fails the open.
    /// - Throws: ``PaxosLogError`` for an invalid configuration, a locked or corrupt directory,
    ///   or a peer port that cannot be bound.
    public static func open(_ configuration: Configuration) async throws -> PaxosLog {
        try configuration.validate()
        // Checks (or, for a one-member log, writes) the directory's identity before recovery.
        let store = try await NIOThreadPool.singleton.runIfActive { try ReplicaIdentity.openStore(configuration) }
        let state: DurableState
        do {
            state = try store.recoveredConsensusState()
        } catch {
            try? store.close()
            throw error
        }
        let group = MultiThreadedEventLoopGroup.singleton
        let driver = ReplicaDriver(configuration: configuration, store: store, restoring: state, loop: group.next())
        var transport: PeerTransport? = nil
        if configuration.members.count > 1 {
            var peers: [NodeID: PeerAddress] = [:]
            for m in configuration.members { peers[m.id] = m.peerAddress }
            var tc = PeerTransportConfiguration(nodeID: configuration.nodeID, members: peers, clusterName: configuration.clusterName, secret: configuration.secret)
            tc.listenAddress = peers[configuration.nodeID]
            tc.tls = configuration.tls
            let t: PeerTransport
            do {
                // The transport runs on the driver's own loop (an `EventLoop` is a group of one):
                // inbound envelopes then reach the core without a hop between threads, and the
                // core's sends reach the sockets without one, instead of a task, a wake-up and a
                // context switch per message when a connection lands on another loop.
                t = try PeerTransport(configuration: tc, group: driver.loop, logger: configuration.logger) { driver.receive($0) }
            } catch {
                try? store.close()
                throw PaxosLogError(.invalidConfiguration, "peer transport: \(error)")
            }
            do {
                try await t.start()
            } catch {
                await t.shutdown()
                try? store.close()
                throw PaxosLogError(.transport, "cannot listen on \(tc.listenAddress.map(\.description) ?? "?"): \(error)")
            }
            transport = t
        }
        try await driver.start(transport: transport).get()
        if configuration.members.count == 1 { await driver.waitUntilLeading() }
        configuration.logger.info("replica open", metadata: [
            "node": "\(configuration.nodeID)", "members": "\(configuration.members.count)",
            "chosen_through": "\(state.chosenThrough)", "directory": "\(configuration.dataDirectory)",
        ])
        return PaxosLog(configuration: configuration, driver: driver, transport: transport)
    }

    /// Appends one record and returns its position once it is chosen (durable on a majority).
    ///
    /// A replica in the middle of an election holds the record until the election ends: it is
    /// proposed if this replica wins, and fails with `notLeader` (never proposed) if it loses.
    /// - Throws: ``PaxosLogError``, whose ``PaxosLogError/outcome`` says whether the record was
    ///   appended (`notAppended`: retry freely; `unknown`: read the log first): `notLeader`
    ///   (naming the leader) on a follower configured to redirect, `overloaded`, `timeout` (not
    ///   chosen in time, or an identical record won the slot in another leader's ballot),
    ///   `superseded`, `closed`, `storage`, `invalidArgument`, `transport` (forwarding).
    public func append(_ record: [UInt8]) async throws -> Position {
        try await append(contentsOf: [record])[0]
    }

    /// Appends records in order, as one batch; returns their positions once all are chosen.
    public func append(contentsOf records: [[UInt8]]) async throws -> [Position] {
        try await append(contentsOf: records, id: nil, isRetry: false)
    }

    /// Appends records in order, as one batch, under the caller's identities: record `i` is
    /// `id.advanced(by: i)`. A client draws a random id once (top bit clear) and numbers its
    /// records; an identity is used for one request and its retries only.
    ///
    /// Retrying an append whose outcome was unknown with the same identities and `isRetry: true`
    /// answers the positions of the first attempt instead of appending again, across leader
    /// changes and restarts (``ClientSessions`` beside the replica says how). Past the sessions'
    /// bound, or when the first attempt is older than the leader's snapshot, the retry fails
    /// with ``PaxosLogError/Code/sessionExpired`` (outcome unknown) rather than append twice:
    /// read the log then (``Entry/id``).
    public func append(contentsOf records: [[UInt8]], id: ProposalID, isRetry: Bool = false) async throws -> [Position] {
        try await append(contentsOf: records, id: Optional(id), isRetry: isRetry)
    }

    private func append(contentsOf records: [[UInt8]], id: ProposalID?, isRetry: Bool) async throws -> [Position] {
        guard !records.isEmpty else { return [] }
        if let error = invalid(records, id) { throw error }
        let start = NIODeadline.now()
        do {
            let positions = try await appendOrForward(records, id: id, isRetry: isRetry)
            metrics.recordAppend(count: records.count, since: start, succeeded: true)
            return positions
        } catch {
            metrics.recordAppend(count: records.count, since: start, succeeded: false)
            throw error
        }
    }

    private func appendOrForward(_ records: [[UInt8]], id: ProposalID?, isRetry: Bool) async throws -> [Position] {
        do {
            let batch = AppendBatch(count: records.count)
            return try await withTaskCancellationHandler {
                // Unsafe rather than checked: AppendBatch resumes at most once (it drops the
                // continuation when it does), and the checked variant costs an allocation per append.
                try await withUnsafeThrowingContinuation { continuation in
                    batch.attach(.continuation(continuation))
                    // Cancelled before this began: the handler found nothing to fail yet.
                    guard !Task.isCancelled else {
                        return batch.fail(PaxosLogError(.cancelled, "the task was cancelled before the records were offered; nothing was appended", outcome: .notAppended))
                    }
                    driver.propose(records, id: id, isRetry: isRetry, batch: batch)
                }
            } onCancel: {
                // The replica may still choose them; its answer is then dropped.
                batch.fail(PaxosLogError(.cancelled, "the task was cancelled after the records were offered; they may still be appended (retry with their identity to settle it)", outcome: .unknown))
            }
        } catch let error as PaxosLogError where error.code == .notLeader && error.leader != nil && forwarder != nil {
            return try await forwarder!.append(records, id: id, isRetry: isRetry, to: error.leader!)
        }
    }

    /// Appends records in order, as one batch, and reports their positions (or the error) to
    /// `completion` instead of resuming a task: for callers that wait on an event loop, such as
    /// the client server, this saves the hops into and out of Swift's cooperative pool.
    ///
    /// Same outcomes as ``append(contentsOf:)``. `completion` runs exactly once: on this
    /// replica's event loop once the records are chosen or failed, on the calling thread for an
    /// argument error, or in a task when a follower forwards to the leader. It must not block.
    func append(contentsOf records: [[UInt8]], id: ProposalID? = nil, isRetry: Bool = false, completion: @escaping @Sendable (Result<[Position], PaxosLogError>) -> Void) {
        guard !records.isEmpty else { return completion(.success([])) }
        if let error = invalid(records, id) { return completion(.failure(error)) }
        let start = NIODeadline.now(), metrics = self.metrics, completion = { @Sendable (result: Result<[Position], PaxosLogError>) in
            if case .success = result { metrics.recordAppend(count: records.count, since: start, succeeded: true) }
            else { metrics.recordAppend(count: records.count, since: start, succeeded: false) }
            completion(result)
        }
        guard let forwarder else {
            return driver.propose(records, id: id, isRetry: isRetry, batch: AppendBatch(count: records.count, .callback(completion)))
        }
        driver.propose(records, id: id, isRetry: isRetry, batch: AppendBatch(count: records.count, .callback { result in
            guard case .failure(let error) = result, error.code == .notLeader, let leader = error.leader else { return completion(result) }
            Task {
                do {
                    completion(.success(try await forwarder.append(records, id: id, isRetry: isRetry, to: leader)))
                } catch {
                    completion(.failure(error as? PaxosLogError ?? PaxosLogError(.transport, "forwarding to leader \(leader) failed: \(error)", leader: leader)))
                }
            }
        }))
    }

    /// The error for the first record above `maxRecordSize`, or for a reserved client id, if
    /// any: then nothing is appended.
    private func invalid(_ records: [[UInt8]], _ id: ProposalID?) -> PaxosLogError? {
        if let id, !id.isRetriable {
            return PaxosLogError(.invalidArgument, "client id \(String(id.client, radix: 16)) has its top bit set, which is reserved for a replica's own appends; nothing was appended")
        }
        guard let i = records.firstIndex(where: { $0.count > configuration.maxRecordSize }) else { return nil }
        return PaxosLogError(.invalidArgument, "record \(i) has \(records[i].count) bytes, above the limit of \(configuration.maxRecordSize); nothing was appended")
    }

    /// The replica's own event loop as a task executor. Tasks that mostly append can prefer it:
    /// an append's answer then resumes them on the loop that chose it, with no hop through Swift's
    /// global executor (what that saves is measured in Benchmarks/README.md). Keep them light:
    /// they share the replica's thread.
    public var taskExecutor: EventLoopTaskExecutor { EventLoopTaskExecutor(driver.loop) }

    /// This replica's view of leadership now, then each change it sees (a new leader, this
    /// replica winning or losing, a leader it stopped hearing from), until the log closes: so an
    /// application can follow leadership without polling ``status()``. A slow consumer sees the
    /// latest 16 changes.
    public func leadershipChanges() -> AsyncStream<Leadership> {
        driver.leadershipChanges()
    }

    /// A read barrier: a position covering every append acknowledged before this call, by any
    /// replica; once it returns, ``read(from:maxCount:maxBytes:)`` and ``entries(from:)`` on this
    /// replica hold everything through it. Reading through it after the barrier is a
    /// linearizable read. Local reads without a barrier stay available on every replica and may
    /// be stale (a follower behind, or a leader deposed without knowing yet).
    ///
    /// The leader answers it after one replicated round (a no-op chosen in its ballot, proposed
    /// after the call; concurrent barriers share a round), so it costs a sync on a majority and
    /// a slot, no clock assumption. It answers the last position that round covers (its chosen
    /// watermark when the round began, or the end of what its election re-proposed), not the
    /// no-op's own: a follower asking for a barrier has usually learned that far already. The
    /// argument is beside `Replica.readBarrier`.
    /// - Throws: ``PaxosLogError``: `notLeader` (naming the leader, if known: ask it), `timeout`,
    ///   `overloaded`, `closed`, `storage`. Retrying is always safe.
    public func readBarrier() async throws -> Position {
        try await driver.readBarrier()
    }

    /// The chosen records from `position` on, in order, skipping no-ops; waits for new ones.
    /// Ends when the log is closed.
    public func entries(from position: Position = 1) -> Entries {
        Entries(driver: driver, from: Swift.max(position, 1))
    }

    /// Chosen records from `position` on that are available now (at most `maxCount` positions,
    /// and none after the one whose record brings the bytes read to `maxBytes`), without waiting.
    /// - Returns: the records and the position to continue from.
    public func read(from position: Position, maxCount: Int, maxBytes: Int = .max) async throws -> (entries: [Entry], next: Position) {
        let readable = try await driver.status().get().chosenThrough
        return try Entries.read(storage: driver.replica.storage, skipping: driver.replica.duplicates, from: Swift.max(position, 1), through: readable, maxCount: maxCount, maxBytes: maxBytes)
    }

    /// This replica's storage counters since open (appends, group commits, fdatasyncs, bytes
    /// written, compression): what benchmarks read the disk's work from.
    public var storageStatistics: SegmentStore.Statistics { driver.store.statistics }

    /// Samples this replica's state into swift-metrics now, rather than at the next
    /// ``Configuration/metricsInterval``: for an exporter about to be scraped.
    public func publishMetrics() async {
        await metrics.refresh()
    }

    /// This replica's view of the cluster.
    public func status() async throws -> Status {
        try await driver.status().get()
    }

    /// Stops the replica: fails waiting appends with `closed`, ends readers, closes sockets,
    /// then finishes in-flight syncs and releases the directory lock.
    public func close() async throws {
        await metrics.stop()
        try await driver.shutdown().get()
        await forwarder?.close()
        await leaderLink.close()
        await transport?.shutdown()
        try await NIOThreadPool.singleton.runIfActive { try self.driver.store.close() }
    }

    /// One chosen record.
    public struct Entry: Hashable, Sendable {
        public var position: Position
        public var bytes: [UInt8]
        /// The identity it was appended under: a client's id and sequence number, or a replica's
        /// own for appends made without one (``ProposalID/isRetriable`` false); nil for records
        /// written before identities. What tells a client whether an unsettled append landed.
        public var id: ProposalID?

        public init(position: Position, bytes: [UInt8], id: ProposalID? = nil) {
            self.position = position
            self.bytes = bytes
            self.id = id
        }
    }

    /// What a replica knows about itself and its leader.
    public struct Status: Hashable, Sendable {
        public var nodeID: NodeID
        public var leader: NodeID?
        public var isLeader: Bool
        public var ballot: Ballot
        /// Chosen and durable here: readable through this position.
        public var chosenThrough: Position
        public var lastAccepted: Position
        /// Set when storage failed and the replica stopped.
        public var failure: String?
    }
}
