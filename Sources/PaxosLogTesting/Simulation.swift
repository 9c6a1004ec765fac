@_spi(Testing) import MultiPaxos
import NIOCore
import PaxosLog
import PaxosTransport
import SegmentLog

/// Knobs of one simulated run. Everything random is drawn from `seed`.
public struct SimulationOptions: Sendable {
    public var replicas: Int = 3
    public var seed: UInt64 = 1
    /// Ticks during which faults are injected; then the network heals and liveness is checked.
    public var faultTicks: Int = 250
    /// Ticks allowed after faults stop for every replica to learn every acknowledged proposal
    /// and for a fresh proposal to be chosen.
    public var livenessTicks: Int = 600
    /// Upper bound of the per-run loss rate (each run draws its own in `0 ... maxLossRate`).
    public var maxLossRate: Double = 0.30
    public var duplicateRate: Double = 0.05
    public var maxDelay: Int = 4
    public var crashes: Bool = true
    public var partitions: Bool = true
    /// Probability that a run also splits the cluster around its leader with a bridge replica
    /// (see `startBridgePartition`). Runs draw this, and everything about their bridges, from a
    /// random stream of their own.
    public var bridgeRunRate: Double = 0.3
    /// Probability, in a run with bridges, that a replica elected leader while no bridge is up
    /// gets one a few ticks later: while its quorum check still counts the votes of its election,
    /// so it leads as long as it can after the split.
    public var bridgeRate: Double = 0.5
    /// Probability per tick that clients propose (1–3 values, each its own append).
    public var proposeRate: Double = 0.5
    /// Probability that a run has clients asking for read barriers, and then per tick that one
    /// asks. Drawn from a stream of their own, and each barrier's round adds a no-op slot, so half
    /// the runs replay exactly as they did before barriers existed (the planted election bugs
    /// were tuned on those).
    public var readBarrierRunRate: Double = 0.5
    /// Share of runs whose clients retry unknown outcomes with the same identity. Under leader
    /// churn a retry can still be chosen beside its first attempt (a known issue, counted, see
    /// `InvariantChecker.clientsRetry`); the other runs check every identity is chosen once.
    public var retryRunRate: Double = 0.5
    public var readBarrierRate: Double = 0.2
    /// Upper bound of the probability per tick per replica that its storage syncs what is
    /// pending (each run draws its own in `syncRate/10 ... syncRate`; slow syncs widen the
    /// window in which a crash loses records).
    public var syncRate: Double = 0.8
    /// Also check the durability contract directly (votes and ballots durable before any message
    /// vouching for them leaves), not only its consequences.
    public var checkDurabilityContract = true
    /// Probability that a replica crashes right after it sent votes or changed role, before its
    /// storage synced: the moments where durability bugs bite.
    public var crashAfterVoteRate: Double = 0.05
    /// Probability per tick per live replica that its application compacts: a snapshot of its
    /// readable prefix and `compacted(through:)`. Lagging replicas then catch up through
    /// snapshot transfers.
    public var compactionRate: Double = 0.01
    /// Probability that a run injects storage faults (read corruption, EIO, misdirected writes,
    /// fsync failure, ENOSPC) at all; such runs draw their rates from the seed.
    public var storageFaultRunRate: Double = 0.5
    /// Probability that a run loses disks at all (Simulation+DiskLoss.swift), and then that a
    /// replica's disk loses its state when it crashes (while the disks lost for good stay a
    /// minority). Drawn from a stream of their own: other runs replay as they did before.
    public var diskLossRunRate: Double = 0.3
    public var diskLossRate: Double = 0.2
    /// Probability that a run transfers leadership at all (Simulation+Transfer.swift), and then
    /// per tick that the leader is asked to hand over to a random member. A stream of their own.
    public var transferRunRate: Double = 0.3
    public var transferRate: Double = 0.03
    /// Snapshot transfer chunk size and window: small, so a transfer takes several messages.
    public var snapshotChunkSize: Int = 400
    public var snapshotWindowBytes: UInt64 = 1600
    /// Chosen bytes a replica keeps in memory: small, so catch-up is also served from storage.
    public var retainedChosenBytes: Int = 600
    /// The core's `maxFollowerHeldBytes`: production's by default, which these small values
    /// never reach; `SimulationTests.laggingFollowersUnderAByteCap` sets a small one.
    public var maxFollowerHeldBytes: Int = 144 << 20
    /// Election guards (ELECTIONS.md), on as in production; off only to measure what they buy.
    public var preVote = true
    public var leaderStickiness = true
    /// `Configuration.maxCandidateLag` in slots: small, so the slots a crash or a partition
    /// costs a replica make it a far-behind candidate.
    public var maxCandidateLag: Slot = 8
    /// Most leader changes per fault (crash, partition, bridge, storage failure) while faults
    /// are injected, plus one for the first election. Message loss of up to 30% makes some
    /// elections of its own; a replica that disrupts its leader at every election timeout makes
    /// one every 10-20 ticks while a fault lasts.
    public var maxLeaderChangesPerFault = 3
    /// Most leader changes after faults stop, before progress: the election that settles it,
    /// and a few more when two replicas whose timers fire together both win their pre-votes
    /// and duel (pre-vote does not prevent that; backoff ends it).
    public var maxLivenessLeaderChanges = 4
    /// A deliberately broken core to run instead of the real one.
    @_spi(Testing) public var plantedBug: PlantedBug? = nil
    /// A deliberately broken replica (driver) to run instead of the real one.
    package var replicaBug: ReplicaBug? = nil
    /// A deliberately broken storage recovery.
    public var storageBug: StorageBug? = nil
    /// Called with every trace line when set (replaying one seed).
    public var trace: (@Sendable (String) -> Void)? = nil

    public init(replicas: Int = 3, seed: UInt64 = 1) {
        self.replicas = replicas
        self.seed = seed
    }
}

/// What a run did, and the first invariant it broke.
public struct SimulationReport: Sendable, CustomStringConvertible {
    public var seed: UInt64
    public var replicas: Int
    public var ticks = 0
    public var steps = 0
    public var lossRate = 0.0
    public var sent = 0
    public var dropped = 0
    public var duplicated = 0
    public var crashes = 0
    public var partitions = 0
    public var bridges = 0
    public var compactions = 0
    public var snapshotsInstalled = 0
    public var proposed = 0
    public var acknowledged = 0
    public var notAppended = 0
    public var readBarriers = 0
    public var unknownOutcomes = 0
    /// Appends retried with the same identity after an unknown outcome, and identities an
    /// unknown outcome left that a retry then settled (acknowledged).
    public var retries = 0
    public var settledByRetry = 0
    /// Identities a retry got chosen at a second slot (readers see them once).
    public var identitiesChosenTwice = 0
    /// Accepts followers did not vote for because their logs held `maxFollowerHeldBytes`.
    public var votesWithheldForMemory = 0
    /// The most value bytes any follower's core held at the end of a tick.
    public var maxFollowerHeldBytes = 0
    public var entriesRead = 0
    public var chosenSlots = 0
    /// Storage failures (each stops a replica until its operator restarts it).
    public var storageFailures = 0
    /// Disks that lost their state (Simulation+DiskLoss.swift), and the restarts on them the
    /// identity guard refused (each replica counted once per loss).
    public var diskLosses = 0
    public var refusedRestarts = 0
    public var diskLossKinds: Set<DiskLoss> = []
    /// Times a replica won an election (each ballot wins at most once), in the whole run and
    /// after the faults stopped.
    public var leaderChanges = 0
    public var livenessLeaderChanges = 0
    /// Leadership transfers asked for, and those whose target took over.
    public var transfers = 0
    public var transfersCompleted = 0
    public var faults = FaultCounters()
    public var violation: String? = nil
    public var violationTick: Int? = nil

    public var description: String {
        let f = faults
        let head = "seed=\(seed) replicas=\(replicas) ticks=\(ticks) steps=\(steps) loss=\(Int(lossRate * 100))% "
            + "sent=\(sent) dropped=\(dropped) dup=\(duplicated) crashes=\(crashes) partitions=\(partitions) bridges=\(bridges) "
            + "compactions=\(compactions) installed=\(snapshotsInstalled) leader_changes=\(leaderChanges) (after faults \(livenessLeaderChanges)) "
            + "proposed=\(proposed) acked=\(acknowledged) not_appended=\(notAppended) unknown=\(unknownOutcomes) retries=\(retries) settled=\(settledByRetry) chosen_twice=\(identitiesChosenTwice) read=\(entriesRead) chosen=\(chosenSlots) "
            + "torn=\(f.tornWrites) lost_unsynced=\(f.lostUnsynced) read_corruptions=\(f.readCorruptions) misdirected=\(f.misdirectedWrites) "
            + "eio=\(f.eio) fsync_failures=\(f.fsyncFailures) enospc=\(f.enospc) disk_losses=\(diskLosses) refused_restarts=\(refusedRestarts) "
            + "transfers=\(transfers) (completed \(transfersCompleted))"
        guard let v = violation else { return head }
        return head + "\nVIOLATION at tick \(violationTick ?? -1): \(v)\nreplay with PAXOS_SEED=\(seed)"
    }
}

/// A deterministic simulation of a PaxosLog cluster running the real ``Replica`` (the code a
/// database runs, core and driver logic both) over a faulty simulated network, a faulty
/// simulated storage (``SimulatedStorage``), disks that lose their state (restarted through the
/// real identity guard, Simulation+DiskLoss.swift) and simulated time, with clients appending unique
/// values and readers reading every replica. The ``InvariantChecker`` runs after every step.
///
/// Everything runs on one thread: the executor is a FIFO queue run to empty after each event.
public final class Simulation: @unchecked Sendable {
    struct Node {
        var id: NodeID
        let disk = SimulatedDisk()
        var replica: Replica?
        var storage: SimulatedStorage?
        var link: NodeLink?
        /// Chosen values this incarnation knows, from slot 1 (seeded from durable state).
        var learned: [Value] = []
        /// The next slot this replica's reader reads.
        var readFrom: Slot = 1
        var restartAt: Int? = nil
        var incarnation = 0
    }

    public private(set) var options: SimulationOptions
    public internal(set) var checker: InvariantChecker
    public internal(set) var report: SimulationReport
    var faults: FaultCounters {
        get { report.faults }
        set { report.faults = newValue }
    }
    var rng: SplitMix64
    var network = SimulatedNetwork()
    let executor = SimulatedExecutor()
    var nodes: [Node] = []
    var now = 0
    var clientTarget = 0
    var members: [NodeID]
    var faultsOn = true
    /// Drawn per run: how often storage syncs, how often replicas crash, storage fault rates.
    var syncRate: Double
    var crashRate: Double
    var storageRates = StorageFaultRates.none
    /// Draws for bridge partitions only; `bridgeRate` is 0 in a run without them.
    var bridgeRNG: SplitMix64
    /// Draws for read barriers only; `barrierRate` is 0 in a run without them.
    var barrierRNG: SplitMix64
    var barrierRate = 0.0
    /// Draws for disk losses only; `diskLossRate` is 0 in a run without them.
    var diskLossRNG: SplitMix64
    var diskLossRate = 0.0
    /// Draws for leadership transfers only; `transferRate` is 0 in a run without them.
    var transferRNG: SplitMix64
    var transferRate = 0.0
    /// The highest chosen watermark each follower reported to each leader, per ballot.
    var reportedChosen: [TransferReport: Slot] = [:]
    /// Draws for client identities and retries only, so other runs keep their trajectories.
    var clientRNG: SplitMix64
    /// The simulated clients' ids and the next sequence number of each.
    var clients: [(id: UInt64, next: UInt64)] = []
    /// Whether clients retry unknown outcomes (half the runs), and the retries due.
    var retryUnknown = false
    var retries: [(due: Int, attempt: Int, id: ProposalID, value: UInt64)] = []
    /// Identities an attempt left unknown: a later "not appended" speaks only for its attempt.
    var mayBeAppended: Set<ProposalID> = []
    /// Barriers asked and not yet answered: on which replica, its incarnation, and when.
    var openBarriers: [Int: (node: Int, incarnation: Int, asked: Int)] = [:]
    var nextBarrierID = 0
    var bridgeRate = 0.0
    /// The bridge partition that is up: its links, and when they heal.
    var bridge: (links: [(NodeID, NodeID)], healAt: Int)? = nil
    /// The bridge partition due to start around a newly elected leader.
    var nextBridge: (at: Int, leader: Int)? = nil
    /// What the election checks remember (Simulation+Elections.swift).
    var elections: ElectionWatch
    /// Every replica's election timeout range when not the configuration's default.
    var electionTimeoutTicks: ClosedRange<Int>? = nil
    static let tickInterval = TimeAmount.milliseconds(10)
    /// Shorter than production's, so a run of a few hundred ticks sees many elections.
    static let electionTimeoutTicks = 10...20

    public init(_ options: SimulationOptions) {
        self.options = options
        self.rng = SplitMix64(seed: options.seed &* 0x2545_F491_4F6C_DD1D &+ 0x1234_5678)
        self.report = SimulationReport(seed: options.seed, replicas: options.replicas)
        self.checker = InvariantChecker(replicas: options.replicas)
        self.elections = ElectionWatch(replicas: options.replicas)
        checker.checkDurabilityContract = options.checkDurabilityContract
        self.members = (1...options.replicas).map { NodeID($0) }
        network.lossRate = Double(rng.below(Int(options.maxLossRate * 100) + 1)) / 100
        network.duplicateRate = options.duplicateRate
        network.maxDelay = options.maxDelay
        report.lossRate = network.lossRate
        syncRate = options.syncRate * Double(1 + rng.below(10)) / 10
        crashRate = Double(1 + rng.below(5)) / 100
        // Seeded from a mix of the seed: consecutive seeds would otherwise share shifted streams.
        var mix = SplitMix64(seed: options.seed ^ 0xB81D_6E5A_0C3F_97D1)
        bridgeRNG = SplitMix64(seed: mix.next())
        barrierRNG = SplitMix64(seed: options.seed ^ 0x5EAD_BA44_1E7C_0FF5)
        barrierRate = barrierRNG.chance(options.readBarrierRunRate) ? options.readBarrierRate : 0
        clientRNG = SplitMix64(seed: options.seed ^ 0xC11E_4715_E551_0A5D)
        diskLossRNG = SplitMix64(seed: options.seed ^ 0xD15C_1055_0BAD_F00D)
        transferRNG = SplitMix64(seed: options.seed ^ 0x7EA4_5FE2_1EAD_0021)
        transferRate = transferRNG.chance(options.transferRunRate) ? options.transferRate : 0
        clients = (0..<3).map { _ in (clientRNG.next() & ~ProposalID.unretriedBit, 1) }
        retryUnknown = clientRNG.chance(options.retryRunRate)
        diskLossRate = diskLossRNG.chance(options.diskLossRunRate) ? options.diskLossRate : 0
        checker.clientsRetry = retryUnknown
        if options.partitions, bridgeRNG.chance(options.bridgeRunRate) { bridgeRate = options.bridgeRate }
        if bridgeRate > 0 {
            // A bridge's scenario must fit between the rest's election timeout and the old
            // leader's second quorum check; runs with bridges draw the upper bound in 20...40.
            let d = Self.electionTimeoutTicks
            electionTimeoutTicks = d.lowerBound...(d.upperBound + bridgeRNG.below(d.upperBound + 1))
        }
        var storageRNG = SplitMix64(seed: mix.next())
        if storageRNG.chance(options.storageFaultRunRate) {
            storageRates.readCorruption = Double(storageRNG.below(5)) / 100
            storageRates.eio = Double(storageRNG.below(5)) / 100
            storageRates.misdirectedWrite = Double(storageRNG.below(3)) / 200
            storageRates.fsyncFailure = Double(storageRNG.below(3)) / 1000
            storageRates.enospc = Double(storageRNG.below(3)) / 1000
        }
        nodes = members.map { Node(id: $0) }
        for i in nodes.indices {
            bootstrap(i)
            start(i, state: DurableState(), chosen: [])
        }
    }

    func coreConfiguration(for id: NodeID, incarnation: Int) -> Configuration {
        var c = Configuration(id: id, members: members,
                              randomSeed: options.seed &* 31 &+ UInt64(id) &* 1_000_003 &+ UInt64(incarnation) &* 7919)
        c.maxBatchCount = 8
        c.maxInflightBatches = 4
        c.maxQueuedProposals = 64
        c.maxCatchUpEntries = 16
        c.maxFollowerHeldBytes = options.maxFollowerHeldBytes
        c.plantedBug = options.plantedBug
        c.electionTimeoutTicks = electionTimeoutTicks ?? Self.electionTimeoutTicks
        c.preVote = options.preVote
        c.leaderStickiness = options.leaderStickiness
        c.maxCandidateLag = options.maxCandidateLag
        return c
    }

    func replicaConfiguration(for id: NodeID) -> PaxosLog.Configuration {
        let address = PeerAddress(host: "127.0.0.1", port: 0)
        var c = PaxosLog.Configuration(nodeID: id, members: members.map { PaxosLog.Member(id: $0, peerAddress: address, clientAddress: address) },
                                       dataDirectory: "simulated-\(id)")
        c.tickInterval = Self.tickInterval
        c.appendTimeout = Self.tickInterval * Int64(Self.barrierDeadlineTicks - 10)
        c.appendHold = .zero
        c.snapshotChunkSize = options.snapshotChunkSize
        c.snapshotWindowBytes = options.snapshotWindowBytes
        c.retainedChosenBytes = options.retainedChosenBytes
        return c
    }

    func trace(_ s: @autoclosure () -> String) {
        if let t = options.trace { t("[\(now)] " + s()) }
    }

    var simulatedNow: NIODeadline { .uptimeNanoseconds(UInt64(now) * UInt64(Self.tickInterval.nanoseconds)) }

    // MARK: - Running

    /// Runs the fault phase, then the liveness phase; stops at the first violation.
    public func run() -> SimulationReport {
        while now < options.faultTicks, checker.violation == nil {
            injectFaults()
            step()
        }
        if checker.violation == nil { checkLiveness() }
        checkElectionCounts()
        return finish()
    }

    /// Checks what holds at the end of any run and fills in the report's totals.
    func finish() -> SimulationReport {
        checkAcknowledgedKept()
        report.violation = checker.violation
        report.sent = network.sent
        report.dropped = network.dropped
        report.duplicated = network.duplicated
        report.chosenSlots = checker.chosen.count
        report.acknowledged = checker.acknowledged.count
        report.identitiesChosenTwice = checker.identitiesChosenTwice
        for n in nodes { report.votesWithheldForMemory += n.replica?.core.votesWithheldForMemory ?? 0 }
        report.ticks = now
        return report
    }

    /// Runs everything the executor has queued, checking invariants after each.
    func settle() {
        while let work = executor.next() {
            work()
            report.steps += 1
            if transferRate > 0 { checkTransfers() }
            if checker.violation != nil, report.violationTick == nil {
                report.violationTick = now
                trace("VIOLATION \(checker.violation!)")
            }
        }
    }

    /// One tick: restarts, timers, clients, deliveries, syncs, readers.
    func step() {
        now += 1
        executor.now = simulatedNow
        // A replica whose storage failed is restarted by its operator, on what its disk kept.
        for i in nodes.indices where nodes[i].replica?.failure != nil {
            if let t = nodes[i].restartAt, t <= now { crash(i, restartAfter: 0) }
        }
        for i in nodes.indices where nodes[i].replica == nil {
            if let t = nodes[i].restartAt, t <= now { restart(i) }
        }
        for i in nodes.indices {
            guard let r = nodes[i].replica else { continue }
            r.tick()
            settle()
        }
        if rng.chance(options.proposeRate) { propose(count: 1 + rng.below(3)) }
        maybeTransferLeadership()
        retryDue()
        if barrierRate > 0, barrierRNG.chance(barrierRate) {
            // Mostly the replica clients believe leads, sometimes any (a follower must refuse).
            readBarrier(barrierRNG.chance(0.75) ? clientTarget : barrierRNG.below(nodes.count))
        }
        for i in nodes.indices where nodes[i].replica != nil && rng.chance(options.compactionRate) {
            compact(i)
        }
        for e in network.due(now: now, rng: &rng) {
            guard let i = members.firstIndex(of: e.to), let r = nodes[i].replica else { continue }
            watchDelivery(e)
            watchTransferReports(e)
            r.receive(e)
            settle()
        }
        for i in nodes.indices where nodes[i].replica != nil && rng.chance(syncRate) {
            nodes[i].storage?.sync()
            settle()
        }
        for i in nodes.indices { read(i) }
        for n in nodes { if let core = n.replica?.core, !core.isLeader { report.maxFollowerHeldBytes = Swift.max(report.maxFollowerHeldBytes, core.heldBytes) } }
        checkBarriersEnd()
        checkElections()
    }

    // MARK: - Clients

    func propose(count: Int) {
        for _ in 0..<count {
            checker.issued += 1
            // Now and then a client appends a record with the bytes of another's (a new value
            // all the same: its identity differs): an outcome decided by bytes mistakes them.
            let value = checker.issued > 1 && clientRNG.chance(0.1) ? checker.issued - 1 : checker.issued
            let c = clientRNG.below(clients.count)
            let id = ProposalID(client: clients[c].id, sequence: clients[c].next)
            clients[c].next += 1
            report.proposed += 1
            send(id: id, value: value, attempt: 1)
        }
        settle()
    }

    /// Offers one attempt of an append to the replica clients believe leads.
    func send(id: ProposalID, value: UInt64, attempt: Int) {
        var target = clientTarget
        if nodes[target].replica == nil { target = rng.below(nodes.count) }
        let bytes = SimulationValue.encode(value)
        guard let replica = nodes[target].replica else {
            // Nobody to ask: this attempt never left the client.
            return answered(id: id, value: value, attempt: attempt, .failure(PaxosLogError(.transport, "replica down", outcome: .notAppended)))
        }
        let batch = AppendBatch(count: 1, .callback { [unowned self] result in self.answered(id: id, value: value, attempt: attempt, result) })
        replica.propose([bytes], id: id, isRetry: attempt > 1, batch: batch)
    }

    func retryDue() {
        guard retries.contains(where: { $0.due <= now }) else { return }
        // In identity order: outcomes arrive in the order a replica's dictionaries iterate, which
        // differs between processes, and a replay must not.
        let due = retries.filter { $0.due <= now }.sorted { ($0.id.client, $0.id.sequence, $0.attempt) < ($1.id.client, $1.id.sequence, $1.attempt) }
        retries.removeAll { $0.due <= now }
        for r in due {
            report.retries += 1
            send(id: r.id, value: r.value, attempt: r.attempt)
        }
        settle()
    }

    /// A client hears its append's outcome: acknowledged at a slot, definitely not appended, or
    /// unknown. An unknown outcome may be retried with the same identity.
    func answered(id: ProposalID, value: UInt64, attempt: Int, _ result: Result<[Slot], PaxosLogError>) {
        let v = Value.identified(id, SimulationValue.encode(value))
        switch result {
        case .success(let slots):
            checker.acknowledge(slot: slots[0], value: v)
            if attempt > 1 { report.settledByRetry += 1 }
        case .failure(let error):
            switch error.outcome {
            case .notAppended:
                report.notAppended += 1
                // Only for this attempt: an earlier one left unknown may still be chosen.
                if mayBeAppended.contains(id) { scheduleRetry(id: id, value: value, after: attempt) }
                else { checker.refuse(v, because: "\(error)") }
            case .unknown:
                report.unknownOutcomes += 1
                mayBeAppended.insert(id)
                scheduleRetry(id: id, value: value, after: attempt)
            case nil:
                checker.failOutcome("append of \(checker.describe(v)) failed without saying whether it was appended: \(error)")
            }
            if error.code == .notLeader {
                if let l = error.leader, let k = members.firstIndex(of: l) { clientTarget = k } else { clientTarget = rng.below(nodes.count) }
            }
        }
    }

    private func scheduleRetry(id: ProposalID, value: UInt64, after attempt: Int) {
        guard retryUnknown, attempt < 4, faultsOn else { return }
        // The delay from the identity, not from a stream: outcomes arrive in an order that
        // differs between processes (dictionary iteration), and draws would follow it.
        var mix = SplitMix64(seed: id.client ^ id.sequence &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(attempt))
        retries.append((now + 5 + mix.below(20), attempt + 1, id, value))
    }

    /// A client asks replica `i` for a read barrier: the position it answers must cover every
    /// append acknowledged before the question, and be readable there.
    func readBarrier(_ i: Int) {
        guard let replica = nodes[i].replica else { return }
        let acknowledgedBefore = checker.acknowledged.keys.max() ?? 0
        let node = nodes[i].id, incarnation = nodes[i].incarnation
        let id = nextBarrierID
        nextBarrierID += 1
        openBarriers[id] = (i, incarnation, now)
        replica.readBarrier { [unowned self] result in
            self.openBarriers[id] = nil
            guard case .success(let position) = result else { return }
            self.report.readBarriers += 1
            if position < acknowledgedBefore {
                self.checker.failRead("node \(node) answered a read barrier with position \(position), but slot \(acknowledgedBefore) was acknowledged before it was asked")
            }
            if self.nodes[i].incarnation == incarnation, let r = self.nodes[i].replica, r.readableThrough < position {
                self.checker.failRead("node \(node) answered a read barrier with position \(position) it cannot read yet (readable through \(r.readableThrough))")
            }
        }
        settle()
    }

    /// Every barrier ends: answered or failed by its deadline (the append timeout), unless its
    /// replica died with it.
    func checkBarriersEnd() {
        for id in openBarriers.keys.sorted() {
            let b = openBarriers[id]!
            if nodes[b.node].incarnation != b.incarnation || nodes[b.node].replica == nil {
                openBarriers[id] = nil
            } else if now - b.asked > Self.barrierDeadlineTicks {
                checker.failRead("a read barrier asked of node \(nodes[b.node].id) at tick \(b.asked) never ended")
                openBarriers[id] = nil
            }
        }
    }

    /// The replicas' append timeout (150 ticks) with room for the tick that notices it.
    static let barrierDeadlineTicks = 160

    /// A reader on replica `i` reads what is readable, with the code `entries(from:)` runs, and
    /// checks it: one sequence on every replica, nothing that is not durable there.
    func read(_ i: Int) {
        guard let replica = nodes[i].replica, let storage = nodes[i].storage, replica.failure == nil else { return }
        let through = replica.readableThrough
        guard nodes[i].readFrom <= through else { return }
        let from = nodes[i].readFrom
        do {
            let (entries, next) = try PaxosLog.Entries.read(storage: storage, skipping: replica.duplicates, from: from, through: through, maxCount: 64)
            var position = from
            for e in entries {
                while position < e.position { checker.observeSkipped(node: nodes[i].id, position: position); position += 1 }
                position += 1
                report.entriesRead += 1
                let value = e.id.map { Value.identified($0, e.bytes) } ?? .data(e.bytes)
                checker.observeRead(node: nodes[i].id, position: e.position, value: value)
                if storage.durableValue(e.position) != value, e.position > storage.snapshotSlot ?? 0 {
                    checker.failRead("node \(nodes[i].id) served slot \(e.position) to a reader before its record was durable")
                }
            }
            while position < next { checker.observeSkipped(node: nodes[i].id, position: position); position += 1 }
            nodes[i].readFrom = next
        } catch let error as PaxosLogError where error.code == .compacted {
            // Restore the snapshot and read on after it, as an application does.
            nodes[i].readFrom = (storage.snapshotSlot ?? 0) + 1
        } catch {
            // Read faults (CRC caught, EIO): an error, never a value; try again later.
        }
    }

    // MARK: - Storage, network and observation hooks

    func nodeID(of disk: SimulatedDisk) -> NodeID {
        nodes.first { $0.disk === disk }!.id
    }

    func observeAppended(_ records: [LogRecord], node: NodeID) {
        checker.observe(records: records.compactMap(Self.durableRecord), node: node)
    }

    func observeDurable(_ records: [LogRecord], node: NodeID) {
        checker.observeDurable(records: records.compactMap(Self.durableRecord), node: node)
    }

    static func durableRecord(_ r: LogRecord) -> DurableRecord? {
        switch r {
        case .promise(let b): return .promise(Ballot(round: b.round, node: b.node))
        case .accepted(let es):
            return .learned(es.map(Entry.init))
        case .chosen(let t): return .chosen(through: t)
        case .snapshot, .suffixTruncated: return nil
        }
    }

    /// Misdirected writes destroy a record for good (recovery then fails closed): allowed on a
    /// disk only while a majority of disks stays intact.
    func mayDamagePermanently(_ disk: SimulatedDisk) -> Bool {
        guard faultsOn else { return false }
        let damaged = nodes.filter(permanentlyLost)
        if damaged.contains(where: { $0.disk === disk }) { return true }
        return damaged.count + 1 <= (members.count - 1) / 2
    }

    /// A replica received a whole snapshot and is about to make it durable: every value in it must
    /// be the chosen one and agree with what that replica learned.
    func observeReceivedSnapshot(_ bytes: [UInt8], slot: Slot, disk: SimulatedDisk) {
        let i = nodes.firstIndex { $0.disk === disk }!
        guard let values = SimulationSnapshot.decode(bytes), values.count == Int(slot) else {
            checker.failSnapshot("node \(nodes[i].id) received a snapshot for slot \(slot) that does not decode")
            return
        }
        for (k, v) in values.enumerated() {
            let s = Slot(k + 1)
            if checker.trulyChosen[s] != v || (k < checker.chosen.count && checker.chosen[k] != v) {
                checker.failSnapshot("node \(nodes[i].id) received \(checker.describe(v)) at slot \(s) in a snapshot, which was not chosen there")
                return
            }
        }
    }

    func send(_ e: Envelope, from incarnation: Int) {
        guard let i = members.firstIndex(of: e.from), nodes[i].incarnation == incarnation, nodes[i].replica != nil else { return }
        if nodes[i].replica?.failure != nil, SimulatedNetwork.isVote(e.message) {
            checker.failStorage("node \(e.from) voted (\(e.message)) after its storage failed")
        }
        checker.observeSent(e)
        checkTimeoutNow(e)
        network.send(e, now: now, rng: &rng)
        // Buggify: crash at the moment a vote leaves while records are still unsynced.
        if faultsOn, crashesNow, SimulatedNetwork.isVote(e.message), !SimulatedNetwork.isPreVote(e.message), nodes[i].storage?.hasUnsynced == true,
           rng.chance(options.crashAfterVoteRate) {
            crash(i, restartAfter: 1 + rng.below(3))
        }
    }

    func chose(_ entries: [ChosenEntry], node: NodeID) {
        guard let i = members.firstIndex(of: node) else { return }
        for c in entries {
            checker.observeChosen(node: node, entry: c, learnedCount: nodes[i].learned.count)
            nodes[i].learned.append(c.value)
        }
    }

    func installed(through slot: Slot, node: NodeID) {
        guard let i = members.firstIndex(of: node), let storage = nodes[i].storage else { return }
        guard let bytes = nodes[i].disk.snapshotFiles[slot], let values = SimulationSnapshot.decode(bytes) else {
            checker.failSnapshot("node \(node) acted on snapshot \(slot) before it was durable")
            return
        }
        if storage.snapshotSlot != slot {
            checker.failSnapshot("node \(node) acted on snapshot \(slot) before its marker was durable")
        }
        for k in 0..<Swift.min(values.count, nodes[i].learned.count) where nodes[i].learned[k] != values[k] {
            checker.failSnapshot("node \(node) installed a snapshot that disagrees with its learned slot \(k + 1)")
            return
        }
        checker.observeInstalledSnapshot(values)
        nodes[i].learned = values
        report.snapshotsInstalled += 1
        trace("node \(node) installed snapshot \(slot)")
    }

    func leadershipChanged(_ l: Leadership, node: NodeID) {
        guard let i = members.firstIndex(of: node) else { return }
        trace("node \(node): \(l)")
        watchLeadership(l, index: i)
        if l.isLeader { clientTarget = i }
        if l.isLeader, faultsOn, bridgeRate > 0, bridge == nil, nextBridge == nil, bridgeRNG.chance(bridgeRate) {
            nextBridge = (now + 2 + bridgeRNG.below(7), i)
        }
    }

    func storageFailed(node: NodeID) {
        guard let i = members.firstIndex(of: node) else { return }
        trace("node \(node): storage failed")
        report.storageFailures += 1
        // An operator restarts it a while later, on what its disk kept.
        nodes[i].restartAt = now + 5 + rng.below(20)
    }

    // MARK: - Faults

    /// Replicas crash, except while a bridge partition is up: its scenario needs the old leader,
    /// the bridge and a majority of the rest running for the few dozen ticks it lasts.
    var crashesNow: Bool { options.crashes && bridge == nil }

    func injectFaults() {
        if crashesNow, rng.chance(crashRate) {
            let i = rng.below(nodes.count)
            // Half the restarts are quick, so a replica is back before anyone noticed it left.
            if nodes[i].replica != nil { crash(i, restartAfter: rng.chance(0.5) ? 1 + rng.below(3) : 1 + rng.below(40)) }
        }
        if options.partitions, let b = bridge {
            // One partition at a time: a random heal would end the bridge's scenario early.
            if now >= b.healAt {
                for (x, y) in b.links { network.heal(x, y) }
                bridge = nil
                trace("bridge heals")
            }
        } else if options.partitions, let b = nextBridge, b.at <= now {
            nextBridge = nil
            if nodes[b.leader].replica?.core.isLeader == true { startBridgePartition(around: b.leader) }
        } else if options.partitions {
            if rng.chance(0.02) {
                // Isolate one replica, or cut one random link.
                let a = members[rng.below(members.count)]
                if rng.chance(0.5) {
                    for b in members where b != a { network.cut(a, b) }
                    trace("isolate \(a)")
                } else {
                    let b = members[rng.below(members.count)]
                    if a != b { network.cut(a, b) }
                    trace("cut \(a)-\(b)")
                }
                report.partitions += 1
            }
            if !network.cut.isEmpty, rng.chance(0.04) {
                // Heal one link, chosen at random: partitions heal in random order.
                let links = network.cut.sorted()
                let l = links[rng.below(links.count)]
                network.heal(NodeID(l >> 32), NodeID(l & 0xFFFF_FFFF))
                trace("heal \(l >> 32)-\(l & 0xFFFF_FFFF)")
            }
        }
    }

    /// Splits the cluster around a leader: it is cut off from everyone but one bridge replica,
    /// whose links to the rest lose every vote but carry heartbeats and catch-up. The rest elect
    /// a newer leader while the old one still leads, for up to its quorum check; the bridge hears
    /// both leaders' heartbeats and none of the newer one's Prepares or Accepts. That is when a
    /// replica must not follow a leader whose ballot it did not promise (the planted bug
    /// `followWithoutPromise`). Random loss and whole-link cuts practically never make that shape.
    func startBridgePartition(around leader: Int) {
        let old = members[leader]
        let others = members.filter { $0 != old }
        let via = others[bridgeRNG.below(others.count)]
        // The network heals first, so the split is exactly this shape.
        network.healAll()
        var links: [(NodeID, NodeID)] = []
        for m in others where m != via {
            network.cut(old, m)
            network.blockVotes(via, m)
            links.append((old, m))
            links.append((via, m))
        }
        bridge = (links, now + 30 + bridgeRNG.below(61))
        report.bridges += 1
        trace("bridge: \(old) cut off but for \(via), which passes no votes")
    }

    /// Crashes replica `i`: its storage keeps what the fault model says, everything in memory,
    /// in flight to it or queued on its executor is lost.
    func crash(_ i: Int, restartAfter: Int) {
        guard let replica = nodes[i].replica else { return }
        report.crashes += 1
        report.votesWithheldForMemory += replica.core.votesWithheldForMemory
        nodes[i].storage?.crash()
        nodes[i].replica = nil
        nodes[i].storage = nil
        nodes[i].link = nil
        nodes[i].restartAt = now + restartAfter
        network.dropAll(involving: nodes[i].id)
        trace("crash \(nodes[i].id)")
        maybeLoseDisk(i)
    }

    func restart(_ i: Int) {
        nodes[i].restartAt = nil
        guard !nodes[i].disk.brokenBeyondRecovery else { return }
        nodes[i].incarnation += 1
        // The directory's identity first, as `PaxosLog.open` checks it before recovery.
        guard admit(i) else { return }
        let storage = makeStorage(i)
        let recovered: (state: DurableState, chosen: [Value])
        do {
            recovered = try storage.recover()
        } catch {
            // Fails closed: this replica stays down; the schedule keeps a majority intact.
            trace("node \(nodes[i].id) refuses to start: \(error)")
            return
        }
        checker.observeRestart(node: nodes[i].id, state: recovered.state)
        for (k, v) in recovered.chosen.enumerated() where k < checker.chosen.count && checker.chosen[k] != v {
            checker.fail("node \(nodes[i].id) restarted holding \(checker.describe(v)) as chosen at slot \(k + 1), but \(checker.describe(checker.chosen[k])) was chosen")
            break
        }
        trace("restart \(nodes[i].id) promised=\(recovered.state.promised) chosen=\(recovered.state.chosenThrough)")
        start(i, state: recovered.state, chosen: recovered.chosen, storage: storage)
    }

    func makeStorage(_ i: Int) -> SimulatedStorage {
        SimulatedStorage(disk: nodes[i].disk, world: self, rates: faultsOn ? storageRates : .none, bug: options.storageBug,
                         seed: options.seed &* 0x9E37_79B9 &+ UInt64(nodes[i].id) &* 131 &+ UInt64(nodes[i].incarnation))
    }

    func start(_ i: Int, state: DurableState, chosen: [Value], storage: SimulatedStorage? = nil) {
        let id = nodes[i].id
        let storage = storage ?? makeStorage(i)
        let link = NodeLink(simulation: self, incarnation: nodes[i].incarnation)
        let replica = Replica(configuration: replicaConfiguration(for: id), core: coreConfiguration(for: id, incarnation: nodes[i].incarnation),
                              restoring: state, storage: storage, network: link, executor: executor,
                              localClient: clientRNG.next(), bug: options.replicaBug)
        replica.observer = link
        nodes[i].replica = replica
        nodes[i].storage = storage
        nodes[i].link = link
        nodes[i].learned = chosen
        // The application restarted with its replica: it restores its snapshot and reads on from
        // there, so what it reads again must be the same (repeats skipped across the restart).
        nodes[i].readFrom = (storage.snapshotSlot ?? 0) + 1
        replica.start()
        settle()
    }

    // MARK: - Compaction

    /// The application snapshots its readable prefix (or part of it) and compacts.
    func compact(_ i: Int) {
        guard let replica = nodes[i].replica, let storage = nodes[i].storage else { return }
        let readable = Swift.min(Int(replica.readableThrough), nodes[i].learned.count)
        let current = Int(storage.snapshotSlot ?? 0)
        guard readable > current else { return }
        let through = readable - rng.below(Swift.min(4, readable - current))
        let bytes = SimulationSnapshot.encode(nodes[i].learned[0..<through])
        report.compactions += 1
        trace("node \(nodes[i].id) compacts through \(through)")
        if let table = replica.sessionTable(through: Slot(through)) { storage.saveSnapshotTable(slot: Slot(through), bytes: table) }
        storage.commitSnapshot(slot: Slot(through), bytes: bytes, markChosen: false) { [unowned self] error in
            guard error == nil, self.nodes[i].replica === replica else { return }
            let below = replica.compacted(through: Slot(through))
            storage.truncatePrefix(below: below)
        }
        settle()
    }

    // MARK: - Liveness

    /// Faults stop: links heal, crashed replicas restart, loss, duplication and storage faults
    /// end. Within `livenessTicks` every replica that can start must learn every acknowledged
    /// slot and a new proposal must be chosen and learned everywhere.
    func checkLiveness() {
        faultsOn = false
        bridge = nil
        nextBridge = nil
        network.healAll()
        network.lossRate = 0
        network.duplicateRate = 0
        for i in nodes.indices where nodes[i].replica?.failure != nil { crash(i, restartAfter: 0) }
        for i in nodes.indices {
            nodes[i].storage?.rates = .none
            if nodes[i].replica == nil { restart(i) }
        }
        let mustLearn = (checker.acknowledged.keys.max() ?? 0)
        let firstNewID = checker.issued + 1
        let deadline = now + options.livenessTicks
        let live = { (n: Node) in !n.disk.brokenBeyondRecovery && n.disk.refused == nil }
        while now < deadline, checker.violation == nil {
            step()
            // A fresh proposal is acknowledged and every replica learned through it.
            var newAck: Slot? = nil
            for (slot, v) in checker.acknowledged {
                if let b = v.record, let id = SimulationValue.decode(b), id >= firstNewID { newAck = Swift.max(newAck ?? 0, slot) }
            }
            if let s = newAck {
                let need = Swift.max(s, mustLearn)
                if nodes.filter(live).allSatisfy({ Slot($0.learned.count) >= need }) { return }
            }
        }
        if checker.violation == nil {
            let learned = nodes.map { "\($0.id):\($0.learned.count)" }.joined(separator: " ")
            let status = nodes.map { "\($0.id): \($0.replica?.core.statusDescription ?? ($0.disk.brokenBeyondRecovery ? "disk broken" : $0.disk.refused != nil ? "refused (disk lost)" : "down"))" }.joined(separator: "; ")
            checker.failLiveness("no progress within \(options.livenessTicks) ticks after faults stopped: must learn \(mustLearn), learned \(learned); \(status)")
            report.violationTick = now
        }
    }
}

/// One incarnation of a replica's network and observer: what it sends goes through the
/// simulation (dropped once the incarnation crashed), what it learns is checked.
final class NodeLink: ReplicaNetwork, ReplicaObserver, @unchecked Sendable {
    unowned let simulation: Simulation
    let incarnation: Int

    init(simulation: Simulation, incarnation: Int) {
        self.simulation = simulation
        self.incarnation = incarnation
    }

    func send(_ envelope: Envelope) { simulation.send(envelope, from: incarnation) }
    func replica(_ node: NodeID, chose entries: [ChosenEntry]) { simulation.chose(entries, node: node) }
    func replica(_ node: NodeID, leadership: Leadership) { simulation.leadershipChanged(leadership, node: node) }
    func replica(_ node: NodeID, installedSnapshotThrough slot: Slot) { simulation.installed(through: slot, node: node) }
    func replica(_ node: NodeID, failed: PaxosLogError) { simulation.storageFailed(node: node) }
}

/// The simulation's one thread: a FIFO queue of work, and simulated time.
final class SimulatedExecutor: ReplicaExecutor, @unchecked Sendable {
    var now: NIODeadline = .uptimeNanoseconds(0)
    private var queue: [@Sendable () -> Void] = []
    private var head = 0
    var inExecutor: Bool { true }

    func execute(_ body: @escaping @Sendable () -> Void) { queue.append(body) }

    func next() -> (@Sendable () -> Void)? {
        guard head < queue.count else {
            queue.removeAll(keepingCapacity: true)
            head = 0
            return nil
        }
        defer { head += 1 }
        return queue[head]
    }
}

extension InvariantChecker {
    mutating func failLiveness(_ s: String) { fail("liveness: " + s) }
    mutating func failSnapshot(_ s: String) { fail("snapshot: " + s) }
    mutating func failRead(_ s: String) { fail("read: " + s) }
    mutating func failStorage(_ s: String) { fail("storage: " + s) }
    mutating func failOutcome(_ s: String) { fail("outcome: " + s) }
}

