import DequeModule
import Logging
import Metrics
import MultiPaxos
import NIOCore
import SegmentLog

/// One replica: a ``PaxosCore`` and everything around it that decides what is persisted, sent,
/// acknowledged and readable. Single-threaded and event-driven: every method runs on
/// `executor`; storage, network and time come through the seams in ReplicaWorld.swift.
///
/// Production runs it inside ``ReplicaDriver`` (SwiftNIO, `SegmentStore`); the simulator in
/// PaxosLogTesting runs the same type over a simulated network and a faulty simulated storage.
///
/// The durability contract (``Ready``): records are appended in order; votes
/// (`messagesAfterPersist`) leave only once the records through their sequence are durable;
/// appends are answered once their slot is chosen (durable on a majority), readers see a
/// chosen slot only once it is durable here too. A failed append is fatal: the replica stops
/// voting and answering for the rest of this incarnation.
package final class Replica: @unchecked Sendable {
    package let configuration: PaxosLog.Configuration
    let executor: any ReplicaExecutor
    package let storage: any ReplicaStorage
    let network: any ReplicaNetwork
    let logger: Logger
    /// A deliberately broken behaviour, for the simulation tests only.
    let bug: ReplicaBug?
    package internal(set) var core: PaxosCore

    private var proposals = ProposalTracker()
    /// Read barriers waiting for their round (Replica+ReadBarrier.swift).
    var barriers = ReadBarriers()
    /// Votes (Promises, Accepteds) waiting for the records they vouch for to be durable.
    private var votesAwaitingSync: Deque<(seq: RecordSequence, messages: [Envelope])> = []
    /// Chosen slots whose records are not yet durable here: readers must not see them yet.
    private var chosenAwaitingSync: Deque<(seq: RecordSequence, through: Slot)> = []
    /// The last record sequence handed to storage, and the last one storage reported durable.
    private var requested: RecordSequence = 0
    private(set) var durable: RecordSequence = 0
    private var readWaiters: [(after: Slot, callback: @Sendable (Slot?) -> Void)] = []
    private var leadershipWaiters: [@Sendable () -> Void] = []
    private var drainScheduled = false
    /// Sizes of the chosen values the core holds in memory, oldest first, and their sum
    /// (``PaxosLog/Configuration/retainedChosenBytes``).
    private var retained: Deque<(slot: Slot, bytes: Int)> = []
    private var retainedBytes = 0

    /// Set when storage failed: the replica has stopped for this incarnation.
    package private(set) var failure: PaxosLogError?
    package private(set) var isClosed = false
    /// Chosen and durable on this replica: what readers may see.
    package private(set) var readableThrough: Slot
    package private(set) var leadership = Leadership(leader: nil, ballot: .zero, isLeader: false)
    /// Told of what this replica learns, for the simulator's checks; decides nothing.
    package var observer: (any ReplicaObserver)?
    /// Appends this replica proposed (given a slot) and has not answered yet.
    package var proposedAppends: Int { proposals.proposedCount }
    /// Called with how many callers a drain answered (the driver's append hold waits for them).
    package var onAnswered: ((Int) -> Void)?
    /// Called with every change of leadership this replica sees (the driver's async sequence).
    package var onLeadership: ((Leadership) -> Void)?

    /// Snapshot transfers in both directions and local compactions.
    let snapshots = SnapshotTransfers()

    /// Every change of leader this replica sees (appends, chosen slots and commit sizes are
    /// published by ``ReplicaMetrics``, with this same `node` dimension).
    private let leaderChanges: Counter

    /// - Parameters:
    ///   - core: the consensus configuration (the simulator passes its own seeds and limits).
    ///   - state: what storage recovered; the replica starts from it.
    package init(configuration: PaxosLog.Configuration, core: MultiPaxos.Configuration, restoring state: DurableState,
                 storage: any ReplicaStorage, network: any ReplicaNetwork, executor: any ReplicaExecutor, bug: ReplicaBug? = nil) {
        self.configuration = configuration
        self.storage = storage
        self.network = network
        self.executor = executor
        self.logger = configuration.logger
        self.bug = bug
        self.core = PaxosCore(configuration: core, restoring: state)
        self.readableThrough = self.core.chosenThrough
        self.leaderChanges = Counter(label: "paxoslog_leader_changes_total", dimensions: [("node", "\(configuration.nodeID)")])
    }

    private func assertOnExecutor() {
        precondition(executor.inExecutor, "Replica used off its executor")
    }

    // MARK: - Inputs

    /// Starts the replica: a lone member need not wait out an election timeout to lead itself.
    package func start() {
        assertOnExecutor()
        if configuration.members.count == 1 { core.campaign() }
        drain()
    }

    /// Stops: records the chosen watermark, fails everything waiting with `closed`, refuses new work.
    package func shutdown() {
        assertOnExecutor()
        guard !isClosed else { return }
        // Storage closes after this and writes what is queued: let that include the chosen
        // watermark, so offline tools see every slot this replica knew chosen.
        if failure == nil {
            core.recordChosenWatermark()
            drain()
        }
        isClosed = true
        proposals.failAll(PaxosLogError(.closed, "the log was closed"))
        barriers.failAll(PaxosLogError(.closed, "the log was closed"))
        endWaiters()
    }

    /// A message from a peer.
    package func receive(_ envelope: Envelope) {
        assertOnExecutor()
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

    /// One tick of the replica's clock: timers of the core and of snapshot transfers, append
    /// deadlines, memory trimming.
    package func tick() {
        assertOnExecutor()
        guard !isClosed, failure == nil else { return }
        core.tick()
        tickSnapshotTransfers()
        proposals.expire(now: executor.now, timeout: configuration.appendTimeout)
        expireBarriers(now: executor.now)
        trimMemory()
        drain()
    }

    /// Offers one request's records to the core, in order; `batch` completes when all are chosen
    /// or fails at the first that cannot be.
    /// - Returns: how many records were proposed or queued (the rest were not appended).
    @discardableResult
    package func propose(_ records: [[UInt8]], batch: AppendBatch) -> Int {
        assertOnExecutor()
        if let failure { batch.fail(failure.with(.notAppended)); return 0 }
        if isClosed { batch.fail(PaxosLogError(.closed, "the log is closed", outcome: .notAppended)); return 0 }
        let deadline = executor.now + configuration.appendTimeout
        var offered = records.count
        for (i, bytes) in records.enumerated() {
            switch core.propose(.data(bytes)) {
            case .proposed(let slot):
                // A new proposal is in the core's current ballot (read in place, see `PaxosCore.ballot`).
                proposals.track(slot: slot, .init(bytes: bytes, ballot: core.ballot, batch: batch, index: i), until: deadline)
            case .held:
                proposals.queueWhileCampaigning(.init(bytes: bytes, batch: batch, index: i, deadline: deadline))
            case .notLeader(let leader):
                let known = leader.map { "node \($0)" } ?? "unknown"
                batch.fail(PaxosLogError(.notLeader, "node \(configuration.nodeID) is not the leader (leader: \(known))\(Self.partial(i))",
                                         leader: leader, outcome: Self.outcome(proposed: i)))
                offered = i
            case .overloaded:
                batch.fail(PaxosLogError(.overloaded, "too many appends in flight\(Self.partial(i))", outcome: Self.outcome(proposed: i)))
                offered = i
            }
            if offered < records.count { break }
        }
        scheduleDrain()
        return offered
    }

    /// A request refused part way: the records proposed before may still be appended.
    private static func outcome(proposed: Int) -> PaxosLogError.Outcome {
        proposed == 0 ? .notAppended : .unknown
    }

    private static func partial(_ proposed: Int) -> String {
        proposed == 0 ? "" : "; the first \(proposed) records of this request were proposed and may still be appended"
    }

    // MARK: - Waiting

    /// Calls `callback` once a slot above `after` is readable, with the readable watermark, or
    /// with nil once the replica closed or failed.
    package func waitReadable(after slot: Slot, _ callback: @escaping @Sendable (Slot?) -> Void) {
        assertOnExecutor()
        if isClosed || failure != nil { return callback(nil) }
        if readableThrough > slot { return callback(readableThrough) }
        readWaiters.append((slot, callback))
    }

    /// Calls `callback` once this replica leads (or is closed).
    package func waitUntilLeading(_ callback: @escaping @Sendable () -> Void) {
        assertOnExecutor()
        if isClosed || failure != nil || leadership.isLeader { return callback() }
        leadershipWaiters.append(callback)
    }

    private func endWaiters() {
        for w in readWaiters { w.callback(nil) }
        readWaiters = []
        for w in leadershipWaiters { w() }
        leadershipWaiters = []
    }

    // MARK: - The Ready loop

    /// Drains the core after the current event, so a burst of inputs costs one `takeReady()`
    /// and one storage append.
    func scheduleDrain() {
        guard !drainScheduled else { return }
        drainScheduled = true
        executor.execute { self.drain() }
    }

    /// Carries out the core's effects in the order of the durability contract (``Ready``).
    package func drain() {
        assertOnExecutor()
        drainScheduled = false
        guard !isClosed, failure == nil else { return }
        startBarrierRound()
        let ready = core.takeReady()
        let seq = ready.persistThrough
        // 1. Records, in order after earlier ones.
        if !ready.records.isEmpty {
            precondition(seq > requested, "record sequence went backwards: \(seq) after \(requested)")
            requested = seq
            var records: [LogRecord] = []
            records.reserveCapacity(ready.records.count)
            for r in ready.records { records.append(LogRecord(r)) }
            storage.append(records) { result in self.persistCompleted(seq, result) }
        }
        // 2. Messages that vouch for nothing unsynced: at once, overlapping the write.
        for envelope in ready.messages { network.send(envelope) }
        // 3. Votes: only once their records are durable.
        if !ready.messagesAfterPersist.isEmpty {
            if durable >= seq || bug == .voteBeforeDurable {
                for envelope in ready.messagesAfterPersist { network.send(envelope) }
            } else {
                votesAwaitingSync.append((seq, ready.messagesAfterPersist))
            }
        }
        if !ready.heldProposals.isEmpty { proposals.resolveCampaign(ready.heldProposals, node: configuration.nodeID) }
        // 4. Chosen: answer appenders now (chosen = durable on a majority); readers once local records are durable.
        if let last = ready.chosen.last {
            observer?.replica(configuration.nodeID, chose: ready.chosen)
            for c in ready.chosen {
                // A slot costs its payload plus the log's bookkeeping, so no-ops count too.
                let payload = if case .data(let b) = c.value { b.count } else { 0 }
                let bytes = Self.slotOverhead + payload
                retained.append((c.slot, bytes))
                retainedBytes += bytes
            }
            let answered = proposals.answer(ready.chosen, bug: bug)
            resolveBarrierRounds(ready.chosen)
            if answered > 0 { onAnswered?(answered) }
            if durable >= seq || bug == .readableBeforeDurable {
                advanceReadable(to: last.slot)
            } else {
                chosenAwaitingSync.append((seq, last.slot))
            }
        }
        if let change = ready.leadership { leadershipChanged(change) }
        for request in ready.snapshotRequests { serveCatchUp(request) }
    }

    private func persistCompleted(_ seq: RecordSequence, _ result: Result<Void, SegmentLogError>) {
        assertOnExecutor()
        switch result {
        case .failure(let error):
            fail(PaxosLogError(.storage, "storage failed, replica stopped: \(error)"))
        case .success:
            guard seq > durable, failure == nil else { return }
            precondition(seq <= requested, "storage reported record \(seq) durable, beyond the last appended \(requested)")
            durable = seq
            while let v = votesAwaitingSync.first, v.seq <= durable {
                votesAwaitingSync.removeFirst()
                for envelope in v.messages { network.send(envelope) }
            }
            while let c = chosenAwaitingSync.first, c.seq <= durable {
                chosenAwaitingSync.removeFirst()
                advanceReadable(to: c.through)
            }
            core.persisted(through: seq)
            scheduleDrain()
        }
    }

    /// Storage failed: an `fdatasync` failure may have dropped pages, so the replica stops voting
    /// for good (no retry) and fails everything waiting.
    func fail(_ failure: PaxosLogError) {
        guard self.failure == nil, !isClosed else { return }
        logger.error("\(failure)")
        self.failure = failure
        votesAwaitingSync = []
        proposals.failAll(failure)
        barriers.failAll(failure)
        endWaiters()
        observer?.replica(configuration.nodeID, failed: failure)
    }

    func advanceReadable(to slot: Slot) {
        guard slot > readableThrough else { return }
        readableThrough = slot
        guard !readWaiters.isEmpty else { return }
        var still: [(after: Slot, callback: @Sendable (Slot?) -> Void)] = []
        for w in readWaiters {
            if slot > w.after { w.callback(slot) } else { still.append(w) }
        }
        readWaiters = still
    }

    private func leadershipChanged(_ change: Leadership) {
        let before = leadership
        leadership = change
        if before.isLeader, !change.isLeader || change.ballot != before.ballot, bug != .keepAppendsAfterStepDown {
            // Honest step-down: the clients of a leader that lost its quorum or its ballot hear
            // at once, not at their deadline. Their values were sent, so a later leader may still
            // choose them: the outcome is unknown, and the error names the leader we believe in.
            let known = change.leader.map { "node \($0)" } ?? "unknown"
            proposals.failProposed(PaxosLogError(.timeout, "node \(configuration.nodeID) stopped leading (leader: \(known)); the record may still be appended", leader: change.leader))
            // A read barrier changes nothing: it fails as not led here, and is asked again.
            barriers.failAll(PaxosLogError(.notLeader, "node \(configuration.nodeID) stopped leading (leader: \(known)) during a read barrier", leader: change.leader))
        }
        observer?.replica(configuration.nodeID, leadership: change)
        onLeadership?(change)
        if change.isLeader, !leadershipWaiters.isEmpty {
            for w in leadershipWaiters { w() }
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

    /// What one chosen slot held in memory costs besides its payload (entry, ballot, index).
    static let slotOverhead = 64

    /// Forgets the oldest chosen values in memory (they stay in storage, and catch-up serves them
    /// from there) once they exceed ``PaxosLog/Configuration/retainedChosenBytes``; never a slot
    /// that is not yet readable (durable) here.
    private func trimMemory() {
        guard retainedBytes > configuration.retainedChosenBytes else { return }
        var through: Slot = 0
        while retainedBytes > configuration.retainedChosenBytes / 2, let first = retained.first, first.slot <= readableThrough {
            retained.removeFirst()
            retainedBytes -= first.bytes
            through = first.slot
        }
        if through >= core.firstHeldSlot { core.compact(through: through) }
    }

    /// Forgets the retained sizes of slots a snapshot now covers.
    func forgetRetained(through slot: Slot) {
        while let first = retained.first, first.slot <= slot {
            retained.removeFirst()
            retainedBytes -= first.bytes
        }
    }

    // MARK: - Status

    /// A consistent view of this replica.
    package var status: PaxosLog.Status {
        PaxosLog.Status(
            nodeID: configuration.nodeID,
            leader: leadership.leader,
            isLeader: leadership.isLeader,
            ballot: leadership.ballot,
            chosenThrough: readableThrough,
            lastAccepted: core.lastAcceptedSlot,
            failure: failure?.description
        )
    }
}

/// What the simulator is told as a replica runs. Observing decides nothing.
package protocol ReplicaObserver: AnyObject {
    /// The core reported `entries` chosen, contiguous, in slot order.
    func replica(_ node: NodeID, chose entries: [ChosenEntry])
    func replica(_ node: NodeID, leadership: Leadership)
    /// A snapshot through `slot` is installed (durable) and the core moved to it.
    func replica(_ node: NodeID, installedSnapshotThrough slot: Slot)
    func replica(_ node: NodeID, failed: PaxosLogError)
}

/// Deliberately broken behaviours of the replica; the simulation must catch every one.
package enum ReplicaBug: String, Sendable, Hashable, CaseIterable {
    /// Votes (Promises, Accepteds) leave before their records are durable; the core is untouched.
    case voteBeforeDurable
    /// Readers see chosen slots before this replica's records of them are durable.
    case readableBeforeDurable
    /// An append is acknowledged whatever value was chosen at its slot.
    case acknowledgeAnyValue
    /// A received snapshot is acted on before its commit (file and marker) is durable.
    case installBeforeCommit
    /// A leader that steps down (lost its quorum or its ballot) keeps the appends it proposed
    /// waiting until their deadline instead of failing them at once.
    case keepAppendsAfterStepDown
    /// A read barrier answers the local chosen watermark at once, without a replicated round:
    /// a deposed leader that still believes it leads answers a stale position.
    case readBarrierWithoutRound
}
