import DequeModule
import Dispatch
import Logging
import Metrics
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import PaxosTransport
import SegmentLog

/// Runs one ``PaxosCore`` on one event loop: feeds it messages, ticks and proposals, and carries
/// out its ``Ready`` effects in the order the durability contract demands.
///
/// Every mutable property is confined to `loop` (hence `@unchecked Sendable`): inputs from other
/// threads hop onto it, and storage completions come back to it. Effects of many inputs are
/// drained together, so a burst of messages costs one `takeReady()` and one storage append.
final class ReplicaDriver: @unchecked Sendable {
    let loop: any EventLoop
    let store: SegmentStore
    let configuration: PaxosLog.Configuration
    let logger: Logger
    var core: PaxosCore
    var transport: PeerTransport?

    /// Client appends waiting for their slot to be chosen, and their deadlines in slot order.
    private var waiters: [Slot: Waiter] = [:]
    private var deadlines: Deque<(slot: Slot, deadline: NIODeadline)> = []
    /// Appends the core holds while it campaigns, in the order offered (the order the core
    /// reports their fate in); the first `heldExpired` already failed with a timeout.
    private var heldAppends: Deque<(bytes: [UInt8], batch: AppendBatch, index: Int, start: NIODeadline, deadline: NIODeadline)> = []
    private var heldExpired = 0
    /// Votes (Promises, Accepteds) held until the records they vouch for are durable.
    private var held: Deque<(seq: RecordSequence, messages: [Envelope])> = []
    /// Chosen slots whose records are not yet durable locally: readers must not see them yet.
    private var pendingReadable: Deque<(seq: RecordSequence, through: Slot)> = []
    private var readWaiters: [(after: Slot, continuation: CheckedContinuation<Slot?, Never>)] = []
    private var leadershipWaiters: [CheckedContinuation<Void, Never>] = []
    private var durable: RecordSequence = 0
    private var drainScheduled = false
    /// Appends offered by other threads and not yet taken by the loop (``propose(_:batch:)``).
    private let inbox = NIOLockedValueBox(Inbox())
    /// The inbox's previous array, emptied, kept for its capacity. Confined to `loop`.
    private var spareProposals: [(records: [[UInt8]], batch: AppendBatch)] = []
    /// Appends answered whose callers have not appended again yet, and until when appends from
    /// other threads wait for them (`Configuration.appendHold`).
    private var awaitedReturns = 0
    private var holdUntil = NIODeadline.distantPast
    /// Appends from other threads held for the awaited ones, in the order offered.
    private var heldForReturns: [(records: [[UInt8]], batch: AppendBatch)] = []
    private var holdTimer: Scheduled<Void>?
    private var ticker: RepeatedTask?
    var failure: PaxosLogError?
    var isClosed = false

    /// Chosen and durable on this replica: what readers may see.
    private(set) var readableThrough: Slot
    private(set) var leadership = Leadership(leader: nil, ballot: .zero, isLeader: false)

    /// Snapshot transfers in both directions and local compactions; confined to `loop`.
    let snapshots = SnapshotTransfers()
    /// Serial queue for snapshot file I/O, so chunks are read, written and sent in order and
    /// never block the event loop.
    let snapshotIO = DispatchQueue(label: "paxoslog.snapshot-io")

    private let appendsCounter = Counter(label: "paxoslog_appends_total")
    private let chosenCounter = Counter(label: "paxoslog_chosen_total")
    private let leaderChanges = Counter(label: "paxoslog_leader_changes_total")
    private let batchRecords = Recorder(label: "paxoslog_storage_batch_records")
    private let appendLatency = Metrics.Timer(label: "paxoslog_append_latency")

    private struct Inbox {
        var proposals: [(records: [[UInt8]], batch: AppendBatch)] = []
        /// A `takeProposals` is queued on the loop and will see what is appended now.
        var scheduled = false
    }

    struct Waiter {
        let bytes: [UInt8]
        /// The ballot the value was proposed under: what tells our value from identical bytes.
        let ballot: Ballot
        let batch: AppendBatch
        let index: Int
        let start: NIODeadline
    }

    init(configuration: PaxosLog.Configuration, store: SegmentStore, restoring state: DurableState, loop: any EventLoop) {
        self.configuration = configuration
        self.store = store
        self.loop = loop
        self.logger = configuration.logger
        self.core = PaxosCore(configuration: configuration.coreConfiguration, restoring: state)
        self.readableThrough = core.chosenThrough
    }

    // MARK: - Lifecycle (call on any thread)

    func start(transport: PeerTransport?) -> EventLoopFuture<Void> {
        loop.submit {
            self.transport = transport
            let tick = self.configuration.tickInterval
            self.ticker = self.loop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in self.onTick() }
            // A lone replica need not wait out an election timeout to lead itself.
            if self.configuration.members.count == 1 { self.core.campaign() }
            self.drain()
        }
    }

    /// Stops ticking, fails everything waiting with `closed`, and refuses new work.
    func shutdown() -> EventLoopFuture<Void> {
        loop.submit {
            guard !self.isClosed else { return }
            // Storage closes after this and writes what is queued: let that include the chosen
            // watermark, so offline tools see every slot this replica knew chosen.
            self.core.recordChosenWatermark()
            self.drain()
            self.isClosed = true
            self.ticker?.cancel()
            self.failAll(PaxosLogError(.closed, "the log was closed"))
            for w in self.readWaiters { w.continuation.resume(returning: nil) }
            self.readWaiters = []
            for w in self.leadershipWaiters { w.resume() }
            self.leadershipWaiters = []
        }
    }

    /// A message from a peer (any thread).
    func receive(_ envelope: Envelope) {
        if loop.inEventLoop {
            onReceive(envelope)
        } else {
            loop.execute { self.onReceive(envelope) }
        }
    }

    private func onReceive(_ envelope: Envelope) {
        guard !isClosed, failure == nil else { return }
        switch envelope.message {
        case .snapshotOffer(let offer): return onSnapshotOffer(from: envelope.from, offer)
        case .snapshotChunk(let chunk): return onSnapshotChunk(from: envelope.from, chunk)
        case .snapshotAck(let ack): return onSnapshotAck(from: envelope.from, ack)
        default: break
        }
        core.step(envelope)
        scheduleDrain()
    }

    // MARK: - Appends

    /// Proposes `records` in order; completes `batch` when all are chosen (or one fails).
    ///
    /// Any thread. Appends from other threads queue in `inbox` and one hop onto the loop takes all
    /// that queued meanwhile: under load that pays for the hop (a closure allocation and NIO's two
    /// task-queue locks and its wake-up check) once per burst of appends instead of once per
    /// append. Right after an answer, appends from other threads may be held a little longer, for
    /// the answered callers to come back (`Configuration.appendHold`). Appends made on the loop
    /// itself are proposed at once. `batch` may fail before this returns (the replica failed or
    /// closed, or is not the leader).
    func propose(_ records: [[UInt8]], batch: AppendBatch) {
        if loop.inEventLoop {
            // Already on the loop (a client connection of this loop): no inbox, no hop. Nothing
            // of this thread can wait in the inbox, so this keeps its order. The drain is still
            // deferred, so the appends of one socket read share it.
            let now = NIODeadline.now()
            let proposed = offer(records, batch: batch, now: now, deadline: now + configuration.appendTimeout)
            if proposed > 0 { appendsCounter.increment(by: Int64(proposed)) }
            // A caller just answered may be back on the loop: it counts towards the awaited ones.
            if awaitedReturns > 0 {
                awaitedReturns -= 1
                if awaitedReturns == 0 { releaseHeld() }
            }
            return scheduleDrain()
        }
        let schedule = inbox.withLockedValue { inbox -> Bool in
            inbox.proposals.append((records, batch))
            guard !inbox.scheduled else { return false }
            inbox.scheduled = true
            return true
        }
        if schedule { loop.execute { self.takeProposals() } }
    }

    /// Proposes everything in `inbox`, in the order it was offered. On the loop.
    private func takeProposals() {
        // Trade the previous round's emptied array for the inbox's, so that neither side
        // allocates per round: swaps, not copies, keep each buffer uniquely referenced.
        var proposals: [(records: [[UInt8]], batch: AppendBatch)] = []
        swap(&proposals, &spareProposals)
        inbox.withLockedValue { inbox in
            inbox.scheduled = false
            swap(&inbox.proposals, &proposals)
        }
        defer {
            proposals.removeAll(keepingCapacity: true)
            spareProposals = proposals
        }
        if awaitedReturns > 0 {
            // Callers just answered are coming back: from Swift's global executor a few at a
            // time, each arrival a hop of its own. Proposed as they came, every few would make a
            // round of their own, with its own sync on every replica (measured in
            // Benchmarks/README.md, session 7).
            awaitedReturns = Swift.max(0, awaitedReturns - proposals.count)
            if awaitedReturns > 0 && NIODeadline.now() < holdUntil {
                heldForReturns.append(contentsOf: proposals)
                if holdTimer == nil {
                    holdTimer = loop.scheduleTask(deadline: holdUntil) {
                        self.holdTimer = nil
                        self.releaseHeld()
                    }
                }
                return
            }
        }
        releaseHeld()
        offerAll(proposals)
    }

    /// The awaited callers are back, or were waited for long enough: proposes what was held.
    private func releaseHeld() {
        awaitedReturns = 0
        holdTimer?.cancel()
        holdTimer = nil
        guard !heldForReturns.isEmpty else { return }
        var held: [(records: [[UInt8]], batch: AppendBatch)] = []
        swap(&held, &heldForReturns)
        offerAll(held)
    }

    private func offerAll(_ proposals: [(records: [[UInt8]], batch: AppendBatch)]) {
        let now = NIODeadline.now()
        let deadline = now + configuration.appendTimeout
        var proposed = 0
        for (records, batch) in proposals {
            proposed += offer(records, batch: batch, now: now, deadline: deadline)
        }
        if proposed > 0 { appendsCounter.increment(by: Int64(proposed)) }
        scheduleDrain()
    }

    /// Offers one request's records to the core unless this replica failed or closed.
    /// - Returns: how many it proposed or held.
    private func offer(_ records: [[UInt8]], batch: AppendBatch, now: NIODeadline, deadline: NIODeadline) -> Int {
        if let failure { batch.fail(failure); return 0 }
        if isClosed { batch.fail(PaxosLogError(.closed, "the log is closed")); return 0 }
        return propose(records, batch: batch, now: now, deadline: deadline)
    }

    /// Offers one request's records to the core. - Returns: how many it proposed or held.
    private func propose(_ records: [[UInt8]], batch: AppendBatch, now: NIODeadline, deadline: NIODeadline) -> Int {
        for (i, bytes) in records.enumerated() {
            switch core.propose(.data(bytes)) {
            case .proposed(let slot):
                // A new proposal is in the core's current ballot (read in place, see `PaxosCore.ballot`).
                wait(for: slot, Waiter(bytes: bytes, ballot: core.ballot, batch: batch, index: i, start: now), until: deadline)
            case .held:
                heldAppends.append((bytes, batch, i, now, deadline))
            case .notLeader(let leader):
                let known = leader.map { "node \($0)" } ?? "unknown"
                batch.fail(PaxosLogError(.notLeader, "node \(configuration.nodeID) is not the leader (leader: \(known))\(Self.partial(i))", leader: leader))
                return i
            case .overloaded:
                batch.fail(PaxosLogError(.overloaded, "too many appends in flight\(Self.partial(i))"))
                return i
            }
        }
        return records.count
    }

    private func wait(for slot: Slot, _ waiter: Waiter, until deadline: NIODeadline) {
        if let old = waiters.updateValue(waiter, forKey: slot) {
            // A new leadership of ours found no vote for the slot in a majority, yet a minority
            // may hold the old value and a later leader may still choose it.
            old.batch.fail(PaxosLogError(.timeout, "slot \(slot) was reassigned by a new leadership; the record may still be appended"))
        }
        // Held appends get their slot late, behind later deadlines: keep the queue sorted.
        var at = deadlines.endIndex
        while at > deadlines.startIndex, deadlines[at - 1].deadline > deadline { at -= 1 }
        deadlines.insert((slot, deadline), at: at)
    }

    /// The core's election ended for appends it held: register the proposed, fail the dropped.
    private func resolveHeld(_ outcomes: [HeldProposal]) {
        for outcome in outcomes {
            let h = heldAppends.removeFirst()
            if heldExpired > 0 { heldExpired -= 1 }
            switch outcome {
            case .proposed(let slot, let ballot):
                wait(for: slot, Waiter(bytes: h.bytes, ballot: ballot, batch: h.batch, index: h.index, start: h.start), until: h.deadline)
            case .dropped(let leader):
                let known = leader.map { "node \($0)" } ?? "unknown"
                h.batch.fail(PaxosLogError(.notLeader, "node \(configuration.nodeID) lost its election (leader: \(known)); the record was not appended", leader: leader))
            }
        }
    }

    private static func partial(_ proposed: Int) -> String {
        proposed == 0 ? "" : "; the first \(proposed) records of this request were proposed and may still be appended"
    }

    // MARK: - Reads

    /// Waits until a slot above `after` is readable; returns the readable watermark, or nil once closed.
    func waitReadable(after slot: Slot) async -> Slot? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Slot?, Never>) in
            loop.execute {
                if self.isClosed { return continuation.resume(returning: nil) }
                if self.readableThrough > slot { return continuation.resume(returning: self.readableThrough) }
                self.readWaiters.append((slot, continuation))
            }
        }
    }

    /// Returns once this replica leads (or is closed). A one-member log waits for this in `open`,
    /// so its first append does not race its own (instant) election.
    func waitUntilLeading() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            loop.execute {
                if self.isClosed || self.leadership.isLeader { return continuation.resume() }
                self.leadershipWaiters.append(continuation)
            }
        }
    }

    /// A consistent view of this replica for status requests.
    func status() -> EventLoopFuture<PaxosLog.Status> {
        loop.submit {
            PaxosLog.Status(
                nodeID: self.configuration.nodeID,
                leader: self.leadership.leader,
                isLeader: self.leadership.isLeader,
                ballot: self.leadership.ballot,
                chosenThrough: self.readableThrough,
                lastAccepted: self.core.lastAcceptedSlot,
                failure: self.failure?.description
            )
        }
    }

    // MARK: - The Ready loop

    private func onTick() {
        guard !isClosed, failure == nil else { return }
        core.tick()
        tickSnapshotTransfers()
        expireAppends()
        trimMemory()
        drain()
    }

    func scheduleDrain() {
        guard !drainScheduled else { return }
        drainScheduled = true
        loop.execute { self.drain() }
    }

    private func drain() {
        drainScheduled = false
        guard !isClosed, failure == nil else { return }
        let ready = core.takeReady()
        let seq = ready.persistThrough
        // 1. Records, in order after earlier ones.
        if !ready.records.isEmpty {
            var records: [LogRecord] = []
            records.reserveCapacity(ready.records.count)
            var entries = 0
            for r in ready.records {
                let mapped = LogRecord(r)
                if case .accepted(let es) = mapped { entries += es.count }
                records.append(mapped)
            }
            if entries > 0 { batchRecords.record(entries) }
            store.append(records) { result in
                self.loop.execute { self.persistCompleted(seq, result) }
            }
        }
        // 2. Messages that vouch for nothing unsynced: at once, overlapping the write.
        for envelope in ready.messages { transport?.send(envelope) }
        // 3. Votes: only once their records are durable.
        if !ready.messagesAfterPersist.isEmpty {
            if durable >= seq {
                for envelope in ready.messagesAfterPersist { transport?.send(envelope) }
            } else {
                held.append((seq, ready.messagesAfterPersist))
            }
        }
        if !ready.heldProposals.isEmpty { resolveHeld(ready.heldProposals) }
        // 5. Chosen: answer appenders now (chosen = durable on a majority); readers once local records are durable.
        if let last = ready.chosen.last {
            chosenCounter.increment(by: Int64(ready.chosen.count))
            if !waiters.isEmpty { answer(ready.chosen) }
            if durable >= seq { advanceReadable(to: last.slot) } else { pendingReadable.append((seq, last.slot)) }
        }
        if let change = ready.leadership { leadershipChanged(change) }
        for request in ready.snapshotRequests { serveFromStorage(request) }
    }

    /// A peer needs chosen slots the core no longer holds in memory: read them from storage.
    /// Only slots readable here (chosen and durable) are sent, and at most one batch per request:
    /// the peer asks again for the rest.
    private func serveFromStorage(_ request: SnapshotRequest) {
        guard let transport, request.fromSlot <= readableThrough else { return }
        if let snapshot = store.state.snapshotSlot, request.fromSlot <= snapshot {
            // Compacted here too: only the snapshot (then the log after it) can help the peer.
            return startSnapshotTransfer(to: request.peer)
        }
        let through = Swift.min(readableThrough, request.fromSlot + Slot(Self.catchUpBatch) - 1)
        let chosen = core.chosenThrough
        let me = configuration.nodeID
        let store = self.store
        let logger = self.logger
        // Storage reads block: do them off the event loop.
        DispatchQueue.global().async {
            do {
                let entries = try store.entries(from: request.fromSlot, through: through).map(Entry.init)
                guard entries.first?.slot == request.fromSlot else { return }
                transport.send(Envelope(from: me, to: request.peer, message: .catchUpReply(CatchUpReply(entries: entries, chosenThrough: chosen))))
            } catch let error as SegmentLogError where error.isCompacted {
                // Compacted between the check and the read.
                self.loop.execute { self.startSnapshotTransfer(to: request.peer) }
            } catch {
                logger.warning("cannot serve catch-up from storage", metadata: [
                    "peer": "\(request.peer)", "from_slot": "\(request.fromSlot)", "error": "\(error)",
                ])
            }
        }
    }

    static let catchUpBatch = 1024

    /// Chosen entries the core keeps in memory: enough for followers a little behind; older
    /// ones are served from storage.
    static let retainedSlots: Slot = 65_536

    /// Forgets chosen entries far below the readable watermark (they stay on disk).
    private func trimMemory() {
        guard readableThrough > core.firstHeldSlot + Self.retainedSlots + Self.retainedSlots / 4 else { return }
        core.compact(through: readableThrough - Self.retainedSlots)
    }

    private func persistCompleted(_ seq: RecordSequence, _ result: Result<Void, SegmentLogError>) {
        switch result {
        case .failure(let error):
            // fsync failure is fatal: the kernel may have dropped the pages. Stop voting entirely.
            let failure = PaxosLogError(.storage, "storage failed, replica stopped: \(error)")
            logger.error("\(failure)")
            self.failure = failure
            ticker?.cancel()
            failAll(failure)
        case .success:
            guard seq > durable, failure == nil else { return }
            durable = seq
            while let h = held.first, h.seq <= durable {
                held.removeFirst()
                for envelope in h.messages { transport?.send(envelope) }
            }
            while let p = pendingReadable.first, p.seq <= durable {
                pendingReadable.removeFirst()
                advanceReadable(to: p.through)
            }
            core.persisted(through: seq)
            scheduleDrain()
        }
    }

    private func answer(_ chosen: [ChosenEntry]) {
        let now = NIODeadline.now()
        var answered = 0
        for c in chosen {
            guard let w = waiters.removeValue(forKey: c.slot) else { continue }
            switch AppendOutcome.of(proposed: w.bytes, under: w.ballot, chosen: c) {
            case .appended:
                appendLatency.recordNanoseconds(Int64((now - w.start).nanoseconds))
                if w.batch.complete(index: w.index, slot: c.slot) { answered += 1 }
            case .superseded:
                w.batch.fail(PaxosLogError(.superseded, "another value was chosen at slot \(c.slot) after a leader change; the record was not appended"))
            case .unknown:
                w.batch.fail(PaxosLogError(.timeout, "a record with the same bytes was chosen at slot \(c.slot) in ballot \(c.ballot), not in ballot \(w.ballot) this append was proposed in; it may be this record or another client's, so the outcome is unknown"))
            }
        }
        if answered > 0 && configuration.appendHold > .zero {
            awaitedReturns += answered
            holdUntil = now + configuration.appendHold
        }
    }

    func advanceReadable(to slot: Slot) {
        guard slot > readableThrough else { return }
        readableThrough = slot
        guard !readWaiters.isEmpty else { return }
        var still: [(after: Slot, continuation: CheckedContinuation<Slot?, Never>)] = []
        for w in readWaiters {
            if slot > w.after { w.continuation.resume(returning: slot) } else { still.append(w) }
        }
        readWaiters = still
    }

    private func leadershipChanged(_ change: Leadership) {
        let before = leadership
        leadership = change
        if change.isLeader, !leadershipWaiters.isEmpty {
            for w in leadershipWaiters { w.resume() }
            leadershipWaiters = []
        }
        if before.leader != change.leader || before.isLeader != change.isLeader {
            leaderChanges.increment()
            logger.info("leadership changed", metadata: [
                "node": "\(configuration.nodeID)", "leader": "\(change.leader.map(String.init) ?? "none")",
                "ballot": "\(change.ballot)", "self": "\(change.isLeader)",
            ])
        }
    }

    private func expireAppends() {
        let now = NIODeadline.now()
        // Held appends stay queued (the core may still propose them); only their clients give up.
        while heldExpired < heldAppends.count, heldAppends[heldExpired].deadline <= now {
            heldAppends[heldExpired].batch.fail(PaxosLogError(.timeout, "no leader elected within \(configuration.appendTimeout); the record may still be appended"))
            heldExpired += 1
        }
        guard let first = deadlines.first, first.deadline <= now else { return }
        while let d = deadlines.first, d.deadline <= now {
            deadlines.removeFirst()
            if let w = waiters.removeValue(forKey: d.slot) {
                w.batch.fail(PaxosLogError(.timeout, "slot \(d.slot) not chosen within \(configuration.appendTimeout); the record may still be appended"))
            }
        }
    }

    private func failAll(_ error: PaxosLogError) {
        for (_, w) in waiters { w.batch.fail(error) }
        waiters = [:]
        deadlines = []
        for h in heldAppends { h.batch.fail(error) }
        heldAppends = []
        heldExpired = 0
        for h in heldForReturns { h.batch.fail(error) }
        heldForReturns = []
        releaseHeld()  // nothing left to propose: ends the hold and its timer
    }
}

/// The appends of one request: completes once every record is chosen, or fails on the first error.
/// Touched only on the driver's loop.
final class AppendBatch: @unchecked Sendable {
    /// Whom to tell: a task suspended in ``PaxosLog/append(contentsOf:)``, or a callback of a
    /// caller that waits on an event loop rather than in a task (``PaxosLog/append(contentsOf:completion:)``).
    enum Completion {
        case continuation(UnsafeContinuation<[Slot], any Error>)
        case callback(@Sendable (Result<[Slot], PaxosLogError>) -> Void)
    }

    private var slots: [Slot]
    private var remaining: Int
    private var completion: Completion?

    init(count: Int, _ completion: Completion) {
        self.slots = Array(repeating: 0, count: count)
        self.remaining = count
        self.completion = completion
    }

    /// - Returns: whether this finished the batch (its caller is answered).
    @discardableResult
    func complete(index: Int, slot: Slot) -> Bool {
        guard let completion else { return false }
        slots[index] = slot
        remaining -= 1
        guard remaining == 0 else { return false }
        self.completion = nil
        switch completion {
        case .continuation(let continuation): continuation.resume(returning: slots)
        case .callback(let callback): callback(.success(slots))
        }
        return true
    }

    /// Fails the batch once; later outcomes (a second failure) are dropped.
    func fail(_ error: PaxosLogError) {
        guard let completion else { return }
        self.completion = nil
        switch completion {
        case .continuation(let continuation): continuation.resume(throwing: error)
        case .callback(let callback): callback(.failure(error))
        }
    }
}
