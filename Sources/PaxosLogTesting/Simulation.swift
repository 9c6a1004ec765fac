@_spi(Testing) import MultiPaxos

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
    /// Probability per tick that clients propose (1–3 values).
    public var proposeRate: Double = 0.5
    /// Upper bound of the probability per tick per replica that its storage syncs what is
    /// pending (each run draws its own in `syncRate/10 ... syncRate`; slow syncs widen the
    /// window in which a crash loses records).
    public var syncRate: Double = 0.8
    /// Also check the durability contract directly (votes and ballots durable before any message
    /// vouching for them leaves), not only its consequences.
    public var checkDurabilityContract = true
    /// Probability that a replica crashes right after it voted or changed role, before its
    /// storage synced: the moments where durability bugs bite.
    public var crashAfterVoteRate: Double = 0.05
    /// A deliberately broken core to run instead of the real one.
    @_spi(Testing) public var plantedBug: PlantedBug? = nil
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
    public var proposed = 0
    public var acknowledged = 0
    public var chosenSlots = 0
    public var violation: String? = nil
    public var violationTick: Int? = nil

    public var description: String {
        let head = "seed=\(seed) replicas=\(replicas) ticks=\(ticks) steps=\(steps) loss=\(Int(lossRate * 100))% "
            + "sent=\(sent) dropped=\(dropped) dup=\(duplicated) crashes=\(crashes) partitions=\(partitions) "
            + "proposed=\(proposed) acked=\(acknowledged) chosen=\(chosenSlots)"
        guard let v = violation else { return head }
        return head + "\nVIOLATION at tick \(violationTick ?? -1): \(v)\nreplay with PAXOS_SEED=\(seed)"
    }
}

/// A deterministic simulation of a PaxosLog cluster: N cores, a faulty network, storage that
/// loses whatever was not synced when a replica crashes, and clients proposing unique values.
/// The ``InvariantChecker`` runs after every step.
public struct Simulation: Sendable {
    struct Storage: Sendable {
        var durable: [DurableRecord] = []
        var pending: [DurableRecord] = []
        /// Sequence of the last durable record (of the current incarnation's numbering).
        var durableSeq: RecordSequence = 0
        var lastSeq: RecordSequence = 0
    }

    struct Node: Sendable {
        var id: NodeID
        var core: PaxosCore?
        var storage = Storage()
        /// Messages held until their record sequence is durable.
        var gated: [(seq: RecordSequence, envelopes: [Envelope])] = []
        /// Chosen values learned, from slot 1 (this incarnation, seeded from durable state).
        var learned: [Value] = []
        var restartAt: Int? = nil
        var incarnation = 0
    }

    struct PendingProposal: Sendable {
        var node: Int
        var incarnation: Int
        var slot: Slot
        var value: Value
    }

    public private(set) var options: SimulationOptions
    public private(set) var checker: InvariantChecker
    public private(set) var report: SimulationReport
    var rng: SplitMix64
    var network = SimulatedNetwork()
    var nodes: [Node] = []
    var now = 0
    var pending: [PendingProposal] = []
    var clientTarget = 0
    var members: [NodeID]
    var faultsOn = true
    /// Drawn per run: how often storage syncs, how often replicas crash.
    var syncRate: Double
    var crashRate: Double

    public init(_ options: SimulationOptions) {
        self.options = options
        self.rng = SplitMix64(seed: options.seed &* 0x2545_F491_4F6C_DD1D &+ 0x1234_5678)
        self.report = SimulationReport(seed: options.seed, replicas: options.replicas)
        self.checker = InvariantChecker(replicas: options.replicas)
        checker.checkDurabilityContract = options.checkDurabilityContract
        self.members = (1...options.replicas).map { NodeID($0) }
        network.lossRate = Double(rng.below(Int(options.maxLossRate * 100) + 1)) / 100
        network.duplicateRate = options.duplicateRate
        network.maxDelay = options.maxDelay
        report.lossRate = network.lossRate
        syncRate = options.syncRate * Double(1 + rng.below(10)) / 10
        crashRate = Double(1 + rng.below(5)) / 100
        for id in members {
            var n = Node(id: id)
            n.core = PaxosCore(configuration: config(for: id, incarnation: 0))
            nodes.append(n)
        }
    }

    func config(for id: NodeID, incarnation: Int) -> Configuration {
        var c = Configuration(id: id, members: members,
                              randomSeed: options.seed &* 31 &+ UInt64(id) &* 1_000_003 &+ UInt64(incarnation) &* 7919)
        c.maxBatchCount = 8
        c.maxInflightBatches = 4
        c.maxQueuedProposals = 64
        c.plantedBug = options.plantedBug
        return c
    }

    func trace(_ s: @autoclosure () -> String) {
        if let t = options.trace { t("[\(now)] " + s()) }
    }

    // MARK: - Running

    /// Runs the fault phase, then the liveness phase; stops at the first violation.
    public mutating func run() -> SimulationReport {
        while now < options.faultTicks, checker.violation == nil {
            injectFaults()
            step()
        }
        if checker.violation == nil { checkLiveness() }
        report.violation = checker.violation
        report.sent = network.sent
        report.dropped = network.dropped
        report.duplicated = network.duplicated
        report.chosenSlots = checker.chosen.count
        report.acknowledged = checker.acknowledged.count
        report.ticks = now
        return report
    }

    /// One tick: restarts, timers, clients, deliveries, syncs; invariants after every step.
    mutating func step() {
        now += 1
        for i in nodes.indices where nodes[i].core == nil {
            if let t = nodes[i].restartAt, t <= now { restart(i) }
        }
        for i in nodes.indices where nodes[i].core != nil {
            nodes[i].core!.tick()
            drain(i)
        }
        if rng.chance(options.proposeRate) { propose(count: 1 + rng.below(3)) }
        for e in network.due(now: now, rng: &rng) {
            guard let i = members.firstIndex(of: e.to), nodes[i].core != nil else { continue }
            nodes[i].core!.step(e)
            drain(i)
        }
        for i in nodes.indices where nodes[i].core != nil && rng.chance(syncRate) {
            sync(i)
        }
    }

    mutating func propose(count: Int) {
        var target = clientTarget
        if nodes[target].core == nil { target = rng.below(nodes.count) }
        guard nodes[target].core != nil else { return }
        for _ in 0..<count {
            checker.issued += 1
            let value = Value.data(SimulationValue.encode(checker.issued))
            report.proposed += 1
            switch nodes[target].core!.propose(value) {
            case .proposed(let slot):
                pending.append(PendingProposal(node: target, incarnation: nodes[target].incarnation, slot: slot, value: value))
            case .notLeader(let leader):
                if let l = leader, let k = members.firstIndex(of: l) { clientTarget = k } else { clientTarget = rng.below(nodes.count) }
                drain(target)
                return
            case .overloaded:
                drain(target)
                return
            }
        }
        drain(target)
    }

    /// Handles a replica's Ready the way the contract says, then checks invariants.
    mutating func drain(_ i: Int) {
        let r = nodes[i].core!.takeReady()
        report.steps += 1
        let id = nodes[i].id
        if !r.records.isEmpty {
            checker.observe(records: r.records, node: id)
            nodes[i].storage.pending.append(contentsOf: r.records)
            nodes[i].storage.lastSeq = r.persistThrough
        }
        for e in r.messages { send(e) }
        if !r.messagesAfterPersist.isEmpty {
            if r.persistThrough <= nodes[i].storage.durableSeq {
                for e in r.messagesAfterPersist { send(e) }
            } else {
                nodes[i].gated.append((r.persistThrough, r.messagesAfterPersist))
            }
        }
        for c in r.chosen {
            checker.observeChosen(node: id, entry: c, learnedCount: nodes[i].learned.count)
            nodes[i].learned.append(c.value)
        }
        if !r.chosen.isEmpty { settleProposals(i) }
        if let l = r.leadership {
            trace("node \(id): \(l)")
            if l.isLeader { clientTarget = i }
        }
        if checker.violation != nil, report.violationTick == nil {
            report.violationTick = now
            trace("VIOLATION \(checker.violation!)")
        }
        // Buggify: crash at the moment a vote or a new ballot exists only in memory.
        if faultsOn, options.crashes, !nodes[i].storage.pending.isEmpty,
           r.leadership != nil || !r.messagesAfterPersist.isEmpty || r.records.contains(where: { if case .promise = $0 { return true } else { return false } }),
           rng.chance(options.crashAfterVoteRate) {
            crash(i, restartAfter: 1 + rng.below(3))
        }
    }

    mutating func send(_ e: Envelope) {
        checker.observeSent(e)
        network.send(e, now: now, rng: &rng)
    }

    /// Clients learn the fate of proposals whose slot their leader now reports chosen.
    mutating func settleProposals(_ i: Int) {
        let learned = Slot(nodes[i].learned.count)
        pending.removeAll { p in
            guard p.node == i, p.slot <= learned else { return false }
            guard p.incarnation == nodes[i].incarnation else { return true }
            if nodes[i].learned[Int(p.slot - 1)] == p.value { checker.acknowledge(slot: p.slot, value: p.value) }
            return true
        }
    }

    /// Storage finishes a sync: everything pending is durable; gated messages leave.
    mutating func sync(_ i: Int) {
        guard !nodes[i].storage.pending.isEmpty else { return }
        checker.observeDurable(records: nodes[i].storage.pending, node: nodes[i].id)
        nodes[i].storage.durable.append(contentsOf: nodes[i].storage.pending)
        nodes[i].storage.pending.removeAll()
        nodes[i].storage.durableSeq = nodes[i].storage.lastSeq
        let seq = nodes[i].storage.durableSeq
        var still: [(seq: RecordSequence, envelopes: [Envelope])] = []
        for g in nodes[i].gated {
            if g.seq <= seq {
                for e in g.envelopes { send(e) }
            } else {
                still.append(g)
            }
        }
        nodes[i].gated = still
        nodes[i].core!.persisted(through: seq)
        drain(i)
    }

    // MARK: - Faults

    mutating func injectFaults() {
        if options.crashes, rng.chance(crashRate) {
            let i = rng.below(nodes.count)
            // Half the restarts are quick, so a replica is back before anyone noticed it left.
            if nodes[i].core != nil { crash(i, restartAfter: rng.chance(0.5) ? 1 + rng.below(3) : 1 + rng.below(40)) }
        }
        if options.partitions {
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
            }
        }
    }

    /// Crashes replica `i`: it keeps its durable records plus a random prefix of the pending
    /// ones (the kernel may have written some), and the last of those may be torn (dropped by
    /// recovery). Held messages and unsent effects are lost.
    mutating func crash(_ i: Int, restartAfter: Int) {
        report.crashes += 1
        var kept = nodes[i].storage.pending.count == 0 ? 0 : rng.below(nodes[i].storage.pending.count + 1)
        if kept > 0, rng.chance(0.3) { kept -= 1 }  // torn last write
        checker.observeDurable(records: nodes[i].storage.pending.prefix(kept), node: nodes[i].id)
        nodes[i].storage.durable.append(contentsOf: nodes[i].storage.pending.prefix(kept))
        nodes[i].storage.pending.removeAll()
        nodes[i].core = nil
        nodes[i].gated.removeAll()
        nodes[i].restartAt = now + restartAfter
        network.dropAll(involving: nodes[i].id)
        pending.removeAll { $0.node == i }
        trace("crash \(nodes[i].id) keeping \(kept) unsynced records")
    }

    mutating func restart(_ i: Int) {
        var state = DurableState()
        for r in nodes[i].storage.durable { state.apply(r) }
        checker.observeRestart(node: nodes[i].id, state: state)
        // Rewrite storage compactly, as recovery would, so sequence numbers start afresh.
        nodes[i].storage = Storage(durable: nodes[i].storage.durable)
        nodes[i].incarnation += 1
        nodes[i].restartAt = nil
        nodes[i].core = PaxosCore(configuration: config(for: nodes[i].id, incarnation: nodes[i].incarnation), restoring: state)
        var latest: [Slot: Value] = [:]
        for e in state.entries where e.slot <= state.chosenThrough { latest[e.slot] = e.value }
        nodes[i].learned = state.chosenThrough == 0 ? [] : (1...state.chosenThrough).map { latest[$0] ?? .noop }
        trace("restart \(nodes[i].id) promised=\(state.promised) chosen=\(state.chosenThrough)")
        drain(i)
    }

    // MARK: - Liveness

    /// Faults stop: links heal, crashed replicas restart, loss and duplication end. Within
    /// `livenessTicks` every replica must learn every acknowledged slot and a new proposal must
    /// be chosen and learned everywhere.
    mutating func checkLiveness() {
        faultsOn = false
        network.healAll()
        network.lossRate = 0
        network.duplicateRate = 0
        for i in nodes.indices where nodes[i].core == nil { restart(i) }
        let mustLearn = (checker.acknowledged.keys.max() ?? 0)
        let firstNewID = checker.issued + 1
        let deadline = now + options.livenessTicks
        while now < deadline, checker.violation == nil {
            step()
            // A fresh proposal is acknowledged and every replica learned through it.
            var newAck: Slot? = nil
            for (slot, v) in checker.acknowledged {
                if case .data(let b) = v, let id = SimulationValue.decode(b), id >= firstNewID { newAck = Swift.max(newAck ?? 0, slot) }
            }
            if let s = newAck {
                let need = Swift.max(s, mustLearn)
                if nodes.allSatisfy({ Slot($0.learned.count) >= need }) { return }
            }
        }
        if checker.violation == nil {
            let learned = nodes.map { "\($0.id):\($0.learned.count)" }.joined(separator: " ")
            let status = nodes.map { "\($0.id): \($0.core?.statusDescription ?? "down")" }.joined(separator: "; ")
            checker.failLiveness("no progress within \(options.livenessTicks) ticks after faults stopped: must learn \(mustLearn), learned \(learned); \(status)")
            report.violationTick = now
        }
    }
}

extension InvariantChecker {
    mutating func failLiveness(_ s: String) { fail("liveness: " + s) }
}
