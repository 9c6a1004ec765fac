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
    /// Which identities are chosen or in flight: a retry answers the first attempt's slot.
    var sessions: ClientSessions
    /// Chosen slots that repeat an identity chosen earlier: readers skip them.
    package let duplicates = DuplicateSlots()
    /// The identity of appends offered without one: a client id drawn by the host for this
    /// incarnation, and the last sequence number given.
    private let localClient: UInt64
    private var localSequence: UInt64 = 0
    /// Read barriers waiting for their round (Replica+ReadBarrier.swift).
    var barriers = ReadBarriers()
    /// Leadership transfers waiting for their target to lead (Replica+Transfer.swift).
    var transfers = LeadershipTransfers()
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
    ///   - localClient: the client id of appends offered without an identity (random per
    ///     incarnation: a restarted replica must not reuse its sequence numbers).
    package init(configuration: PaxosLog.Configuration, core: MultiPaxos.Configuration, restoring state: DurableState,
                 storage: any ReplicaStorage, network: any ReplicaNetwork, executor: any ReplicaExecutor,
                 localClient: UInt64, bug: ReplicaBug? = nil) {
        self.configuration = configuration
        self.storage = storage
        self.network = network
        self.executor = executor
        self.logger = configuration.logger
        self.bug = bug
        self.localClient = localClient
        self.core = PaxosCore(configuration: core, restoring: state)
        self.readableThrough = self.core.chosenThrough
        self.leaderChanges = Counter(label: "paxoslog_leader_changes_total", dimensions: [("node", "\(configuration.nodeID)")])
        self.sessions = ClientSessions(limits: configuration.sessionLimits, applied: storage.snapshotSlot ?? 0)
        if let snapshot = storage.snapshotSlot, let saved = savedSessions(snapshot: snapshot) { sessions = saved }
        do {
            try restoreSessions(through: state.chosenThrough)
        } catch {
            failure = PaxosLogError(.storage, "reading the chosen log to restore client sessions failed, replica stopped: \(error)")
        }
    }

    /// The client-session table as of `slot`, to save beside the snapshot through it, or nil
    /// when this replica has none that far (see ``ClientSessions/encoded(through:)``).
    package func sessionTable(through slot: Slot) -> [UInt8]? {
        assertOnExecutor()
        return sessions.encoded(through: slot)
    }

    /// Applies the chosen entries on disk to the session table, as if they had just been chosen.
    private func restoreSessions(through chosen: Slot) throws {
        var next = sessions.applied + 1
        while next <= chosen {
            let batch = try storage.entries(from: next, through: chosen, maxBytes: 4 << 20)
            guard let last = batch.last else { break }
            for e in batch where sessions.apply(slot: e.slot, value: Value(e)) != nil { duplicates.insert(e.slot) }
            next = last.slot + 1
        }
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
        transfers.failAll(PaxosLogError(.closed, "the log was closed"))
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
        settleTransfers()
        trimMemory()
        drain()
    }

    /// Offers one request's records, in order, as one batch: all are admitted or none.
    /// `batch` completes when all are chosen or fails at the first that cannot be.
    ///
    /// Record `i` carries the identity `id.advanced(by: i)`, or one of this replica's own when
    /// `id` is nil. A first attempt is proposed as it is: its identities are new. A retry is
    /// looked up (``ClientSessions``): an identity already chosen answers its slot, one in flight
    /// waits for its slot; neither is proposed again.
    /// - Returns: how many records were proposed, answered or held (0 or all).
    @discardableResult
    package func propose(_ records: [[UInt8]], id first: ProposalID? = nil, isRetry: Bool = false, batch: AppendBatch) -> Int {
        assertOnExecutor()
        if let failure { batch.fail(failure.with(.notAppended)); return 0 }
        if isClosed { batch.fail(PaxosLogError(.closed, "the log is closed", outcome: .notAppended)); return 0 }
        // A retry is looked up against every open slot: a Phase 1 that just ended may have
        // re-proposed values this replica has not taken from the core yet (drain notes them).
        if isRetry, drainScheduled { drain() }
        let first = first ?? nextLocalIdentities(records.count)
        let deadline = executor.now + configuration.appendTimeout
        if core.holdsProposals {
            // Held here, not in the core: looked up once Phase 1 has shown every open slot, or
            // failed as not appended once a handover ended with another leader.
            let limits = core.configuration
            let bytes = records.reduce(0) { $0 + $1.count }
            guard proposals.heldQueue.count + records.count <= limits.maxQueuedProposals,
                  proposals.heldQueue.isEmpty || proposals.heldQueueBytes + bytes <= limits.maxUncommittedBytes else {
                batch.fail(PaxosLogError(.overloaded, "too many appends waiting for the election; nothing was appended"))
                return 0
            }
            for (i, bytes) in records.enumerated() {
                proposals.hold(.init(id: first.advanced(by: i), isRetry: isRetry, bytes: bytes, batch: batch, index: i, deadline: deadline))
            }
            return records.count
        }
        guard core.isLeader else {
            let leader = leadership.leader
            batch.fail(PaxosLogError(.notLeader, "node \(configuration.nodeID) is not the leader (leader: \(leader.map { "node \($0)" } ?? "unknown"))", leader: leader))
            return 0
        }
        return offer(records, first: first, isRetry: isRetry, batch: batch, deadline: deadline)
    }

    @discardableResult
    func propose(_ p: Proposal) -> Int { propose(p.records, id: p.id, isRetry: p.isRetry, batch: p.batch) }

    /// The identity of the first of `count` records offered without one; the rest follow it.
    private func nextLocalIdentities(_ count: Int) -> ProposalID {
        defer { localSequence += UInt64(count) }
        return ProposalID(client: localClient | ProposalID.unretriedBit, sequence: localSequence + 1)
    }

    /// Proposes a request's records as the leader, all or none: answers retries from the session
    /// table, waits on identities in flight, proposes the rest.
    private func offer(_ records: [[UInt8]], first: ProposalID, isRetry: Bool, batch: AppendBatch, deadline: NIODeadline) -> Int {
        // Checked for the whole request before anything is proposed (two lookups per record
        // of a retry rather than an array of them per request).
        for i in records.indices where lookup(first.advanced(by: i), isRetry) == .expired {
            batch.fail(expired(first.advanced(by: i)))
            return 0
        }
        guard core.admits(records.indices.lazy.filter { self.lookup(first.advanced(by: $0), isRetry) == .absent }.map { records[$0].count }) else {
            batch.fail(PaxosLogError(.overloaded, "too many appends in flight; nothing was appended"))
            return 0
        }
        for (i, bytes) in records.enumerated() {
            let offered = offer(.init(id: first.advanced(by: i), isRetry: isRetry, bytes: bytes, batch: batch, index: i, deadline: deadline))
            precondition(offered, "the core refused a value it admitted")
        }
        scheduleDrain()
        return records.count
    }

    /// Offers one record as the leader. - Returns: false when the core refused it (overloaded).
    private func offer(_ r: ProposalTracker.Queued) -> Bool {
        let waiter = ProposalTracker.Waiter(id: r.id, batch: r.batch, index: r.index)
        switch lookup(r.id, r.isRetry) {
        case .chosen(let slot):
            _ = r.batch.complete(index: r.index, slot: slot)
        case .inFlight(let slot):
            proposals.share(slot: slot, waiter, until: r.deadline)
        case .expired:
            r.batch.fail(expired(r.id))
        case .absent:
            guard case .proposed(let slot) = core.propose(.identified(r.id, r.bytes)) else { return false }
            if r.id.isRetriable { sessions.noteProposed(r.id, at: slot, ballot: core.ballot) }
            proposals.track(slot: slot, waiter, until: r.deadline)
        }
        return true
    }

    private func lookup(_ id: ProposalID, _ isRetry: Bool) -> ClientSessions.Lookup {
        // A first attempt's identity is new: it cannot be chosen or in flight yet.
        guard isRetry, bug != .retryWithoutLookup else { return .absent }
        return sessions.lookup(id, leading: core.ballot)
    }

    private func expired(_ id: ProposalID) -> PaxosLogError {
        PaxosLogError(.sessionExpired, "\(id) is older than what the client sessions remember of its client: it is in the log at most once; read the log (entries carry their identity)",
                      outcome: .unknown)
    }

    /// The election or the handover ended for the held appends: offers them as the leader, or
    /// fails them as not appended (they were never sent), naming the leader to ask.
    private func settleHeldQueue() {
        guard !proposals.heldQueue.isEmpty, !core.holdsProposals else { return }
        guard core.isLeader else {
            let leader = leadership.leader ?? transfers.first?.target
            return proposals.failHeld(PaxosLogError(.notLeader, "node \(configuration.nodeID) is not leading (leader: \(leader.map { "node \($0)" } ?? "unknown")); the record was not appended", leader: leader))
        }
        // Once a batch failed, its later records are not offered: its caller was told.
        for q in proposals.takeHeldQueue() where !q.batch.isFinished && !offer(q) {
            // A batch admitted while campaigning may meet a full pipeline; its earlier records
            // may be proposed already.
            q.batch.fail(PaxosLogError(.overloaded, "too many appends in flight after the election", outcome: q.index == 0 ? .notAppended : .unknown))
        }
        scheduleDrain()
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
            for r in ready.records {
                records.append(LogRecord(r))
                // This leader's votes in its own ballot name every value it proposes, those
                // Phase 1 found included: the identities in flight (ClientSessions).
                if core.isLeader, case .accepted(let batch) = r, batch.ballot == core.ballot { noteProposed(batch) }
            }
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
        // 4. Chosen: answer appenders now (chosen = durable on a majority); readers once local records are durable.
        if let last = ready.chosen.last {
            observer?.replica(configuration.nodeID, chose: ready.chosen)
            for c in ready.chosen {
                // A slot costs its payload plus the log's bookkeeping, so no-ops count too.
                let bytes = Self.slotOverhead + c.value.byteCount
                retained.append((c.slot, bytes))
                retainedBytes += bytes
            }
            // Before the slots become readable: a reader must never see a repeat.
            var firstSlots: [Slot: Slot] = [:]
            for c in ready.chosen {
                guard let first = sessions.apply(slot: c.slot, value: c.value), bug != .deliverDuplicates else { continue }
                duplicates.insert(c.slot)
                firstSlots[c.slot] = first
            }
            let answered = proposals.answer(ready.chosen, firstSlots: firstSlots, bug: bug)
            resolveBarrierRounds(ready.chosen)
            if answered > 0 { onAnswered?(answered) }
            if durable >= seq || bug == .readableBeforeDurable {
                advanceReadable(to: last.slot)
            } else {
                chosenAwaitingSync.append((seq, last.slot))
            }
        }
        if let change = ready.leadership { leadershipChanged(change) }
        settleHeldQueue()
        for request in ready.snapshotRequests { serveCatchUp(request) }
    }

    private func noteProposed(_ batch: AcceptedBatch) {
        for (i, v) in batch.values.enumerated() {
            if let id = v.proposalID, id.isRetriable { sessions.noteProposed(id, at: batch.firstSlot + Slot(i), ballot: batch.ballot) }
        }
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
        transfers.failAll(failure)
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
        if !change.isLeader { sessions.forgetProposed() }
        // Phase 1 just ended: the slots it re-proposed are filled, nothing new yet beyond them
        // but what this drain proposed (a higher ceiling only delays a barrier's answer).
        if change.isLeader, !before.isLeader || change.ballot != before.ballot {
            barriers.phase1Ceiling = (change.ballot, core.lastAcceptedSlot)
        }
        settleTransfers()
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
    /// A retry is proposed again without looking up the client sessions, even when its identity
    /// is already chosen.
    case retryWithoutLookup
    /// An identity chosen at a second slot (a revived first attempt beside its retry) is read
    /// twice and acknowledged at the second slot.
    case deliverDuplicates
    /// A replica restarting from a snapshot ignores the client-session table saved beside it.
    case sessionsNotRestored
    /// A read barrier answers the chosen watermark its round started at, forgetting the slots
    /// its leadership's Phase 1 re-proposed (which may hold appends an older leader acknowledged).
    case barrierWithoutPhase1Ceiling
}

