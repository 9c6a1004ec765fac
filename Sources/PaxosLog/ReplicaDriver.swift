import Dispatch
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import PaxosTransport
import SegmentLog

/// Runs one ``Replica`` in production: on one SwiftNIO event loop, over `SegmentStore` and the
/// ``PeerTransport``. It decides nothing the simulator would not see: it carries inputs onto the
/// loop (messages, ticks, appends from other threads), and offers the async API.
///
/// Every property of the replica is confined to `loop` (hence `@unchecked Sendable`).
final class ReplicaDriver: @unchecked Sendable {
    let loop: any EventLoop
    let store: SegmentStore
    let replica: Replica
    private let network: PeerNetwork
    private let admission: AppendAdmission
    private var ticker: RepeatedTask?
    /// Followers of ``leadershipChanges()``, by registration; confined to `loop`.
    private var leadershipStreams: [Int: AsyncStream<Leadership>.Continuation] = [:]
    private var nextStreamID = 0

    init(configuration: PaxosLog.Configuration, store: SegmentStore, restoring state: DurableState, loop: any EventLoop) {
        self.loop = loop
        self.store = store
        let network = PeerNetwork()
        self.network = network
        let storage = SegmentStoreStorage(store: store, loop: loop, receivedSnapshotSyncInterval: configuration.receivedSnapshotSyncInterval)
        replica = Replica(configuration: configuration, core: configuration.coreConfiguration, restoring: state,
                          storage: storage, network: network, executor: LoopExecutor(loop), localClient: .random(in: 1 ... .max))
        admission = AppendAdmission(replica: replica, loop: loop, hold: configuration.appendHold)
        replica.onAnswered = { [admission] in admission.answered($0) }
        replica.onLeadership = { [unowned self] change in
            for c in leadershipStreams.values { c.yield(change) }
        }
    }

    // MARK: - Lifecycle (call on any thread)

    func start(transport: PeerTransport?) -> EventLoopFuture<Void> {
        loop.submit {
            self.network.transport = transport
            let tick = self.replica.configuration.tickInterval
            self.ticker = self.loop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
                self.replica.tick()
                if self.replica.failure != nil { self.ticker?.cancel() }
            }
            self.replica.start()
        }
    }

    /// Stops ticking, fails everything waiting with `closed`, and refuses new work.
    func shutdown() -> EventLoopFuture<Void> {
        loop.submit {
            self.ticker?.cancel()
            self.replica.shutdown()
            self.admission.failAll(PaxosLogError(.closed, "the log was closed"))
            for c in self.leadershipStreams.values { c.finish() }
            self.leadershipStreams = [:]
        }
    }

    /// A message from a peer (any thread).
    func receive(_ envelope: Envelope) {
        if loop.inEventLoop {
            replica.receive(envelope)
        } else {
            loop.execute { self.replica.receive(envelope) }
        }
    }

    /// Proposes `records` in order, record `i` with identity `id.advanced(by: i)` (the replica's
    /// own when nil); completes `batch` when all are chosen (or one fails). Any thread.
    func propose(_ records: [[UInt8]], id: ProposalID? = nil, isRetry: Bool = false, batch: AppendBatch) {
        admission.offer(Proposal(records: records, id: id, isRetry: isRetry, batch: batch))
    }

    // MARK: - Waiting and status (any thread)

    /// Waits until a slot above `after` is readable; returns the readable watermark, or nil once
    /// closed.
    /// - Throws: the replica's storage failure: readers must not take it for the end of the log.
    func waitReadable(after slot: Slot) async throws -> Slot? {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Slot?, any Error>) in
            loop.execute {
                self.replica.waitReadable(after: slot) { readable in
                    // Called on the loop: the failure, if any, is already set.
                    if readable == nil, let failure = self.replica.failure { return continuation.resume(throwing: failure) }
                    continuation.resume(returning: readable)
                }
            }
        }
    }

    /// A position covering every append acknowledged before the call, readable here
    /// (``Replica/readBarrier(_:)``).
    func readBarrier() async throws -> Slot {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Slot, any Error>) in
            loop.execute { self.replica.readBarrier { continuation.resume(with: $0.mapError { $0 }) } }
        }
    }

    /// Moves leadership to `target` (``Replica/transferLeadership(to:_:)``).
    func transferLeadership(to target: NodeID) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            loop.execute { self.replica.transferLeadership(to: target) { continuation.resume(with: $0.mapError { $0 }) } }
        }
    }

    /// This replica's view of leadership now, then every change, until the log closes.
    func leadershipChanges() -> AsyncStream<Leadership> {
        // Only the latest matters to a follower of leadership: an old view is never worth queueing.
        AsyncStream(bufferingPolicy: .bufferingNewest(16)) { continuation in
            loop.execute {
                guard !self.replica.isClosed else { return continuation.finish() }
                let id = self.nextStreamID
                self.nextStreamID += 1
                self.leadershipStreams[id] = continuation
                continuation.yield(self.replica.leadership)
                continuation.onTermination = { _ in self.loop.execute { self.leadershipStreams[id] = nil } }
            }
        }
    }

    /// Returns once this replica leads (or is closed). A one-member log waits for this in `open`,
    /// so its first append does not race its own (instant) election.
    func waitUntilLeading() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            loop.execute { self.replica.waitUntilLeading { continuation.resume() } }
        }
    }

    /// A consistent view of this replica for status requests.
    func status() -> EventLoopFuture<PaxosLog.Status> {
        loop.submit { self.replica.status }
    }

    /// Each follower's replication as this replica sees it while it leads (empty otherwise).
    func followerProgress() -> EventLoopFuture<[PaxosCore.FollowerProgress]> {
        loop.submit { self.replica.core.followerProgress }
    }

    /// After a local snapshot through `slot` is durable: forget the slots in memory.
    /// - Returns: the slot below which segments may be deleted now.
    func sessionTable(through slot: Slot) -> EventLoopFuture<[UInt8]?> {
        loop.submit { self.replica.sessionTable(through: slot) }
    }

    func compacted(through slot: Slot) -> EventLoopFuture<Slot> {
        loop.submit { self.replica.compacted(through: slot) }
    }

    /// Whether `position` is chosen here, waiting until it is also durable (readable) here:
    /// what compaction may cover. An append returns once chosen, a moment before the local
    /// chosen record is synced.
    func chosenAndReadable(_ position: Slot) async throws -> Bool {
        let chosen = try await loop.submit { self.replica.core.chosenThrough }.get()
        guard position <= chosen else { return false }
        guard let readable = try await waitReadable(after: position - 1) else {
            throw PaxosLogError(.closed, "the log was closed")
        }
        return readable >= position
    }

    /// Counters of snapshot transfers (for tests and benchmarks).
    func snapshotCounters() -> EventLoopFuture<(sentBytes: UInt64, installed: Int, sending: Int)> {
        loop.submit { (self.replica.snapshots.sentBytes, self.replica.snapshots.installed, self.replica.snapshots.outgoing.count) }
    }
}

/// An event loop as a replica's executor and clock.
final class LoopExecutor: ReplicaExecutor {
    let loop: any EventLoop
    init(_ loop: any EventLoop) { self.loop = loop }
    var now: NIODeadline { .now() }
    var inExecutor: Bool { loop.inEventLoop }
    func execute(_ body: @escaping @Sendable () -> Void) { loop.execute(body) }
}

/// The peer transport as a replica's network. Set once, on the loop, before the replica starts.
final class PeerNetwork: ReplicaNetwork, @unchecked Sendable {
    var transport: PeerTransport?
    func send(_ envelope: Envelope) { transport?.send(envelope) }
}
