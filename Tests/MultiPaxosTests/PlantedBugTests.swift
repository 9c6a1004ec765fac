@_spi(Testing) import MultiPaxos
@_spi(Testing) import PaxosLogTesting
import PaxosLog
import Testing

/// Each planted bug breaks one rule the core depends on; the simulation must notice within the
/// CI seed budget. The seeds each one took are printed (and recorded in the issue's closing note).
@Suite struct PlantedBugTests {
    /// `PAXOS_PLANTED_BUDGET=N` hunts longer, to see how far a bug the budget misses is.
    static let budget = SimulationSeeds.env["PAXOS_PLANTED_BUDGET"].flatMap(Int.init) ?? SimulationSeeds.ciSeeds

    /// Runs seeds on 3 and then 5 replicas until the checker reports a violation.
    func seedsToCatch(_ bug: PlantedBug, contract: Bool = true) -> (seeds: Int, report: SimulationReport)? {
        Self.seedsToCatch { o in
            o.plantedBug = bug
            o.checkDurabilityContract = contract
        }
    }

    static func seedsToCatch(_ plant: (inout SimulationOptions) -> Void) -> (seeds: Int, report: SimulationReport)? {
        var tried = 0
        for seed in UInt64(1)...UInt64(Self.budget) {
            for replicas in [3, 5] {
                tried += 1
                var o = SimulationOptions(replicas: replicas, seed: seed)
                plant(&o)
                let r = Simulation(o).run()
                if r.violation != nil { return (tried, r) }
            }
        }
        return nil
    }

    /// Planted bugs the seeded fault schedule is known not to reach within the budget. Each is
    /// caught by a hand-written scenario instead, and its hunt here is a known issue: the test
    /// fails once the simulation does catch it, so the entry is removed then.
    /// `followWithoutPromise` was one until bridge partitions (`Simulation.startBridgePartition`)
    /// made the shape it needs — a deposed leader still leading while a follower of the newer
    /// leader hears its heartbeats and catch-up but none of its Prepares or Accepts.
    /// `laggingCandidateWins` took 539 runs before the replica counted identified values'
    /// payloads toward its memory bound (which changed every schedule); it now survives 1,200
    /// (`PAXOS_PLANTED_BUDGET=600`). The `caught_up_leader` transcript catches it
    /// (`TranscriptTests.theCaughtUpLeaderTranscriptCatchesALaggingCandidateWinning`).
    /// `followerIgnoresHeldBytes` cannot show at the production cap these sweeps run with (their
    /// values are a few bytes); `SimulationTests.laggingFollowersUnderAByteCap` catches it at 800 B.
    /// `transferMarkIgnored` only makes transfers fail, which the simulation allows (a transfer
    /// may be given up under faults); the `leader_transfer` transcript catches it
    /// (`TranscriptTests.theLeaderTransferTranscriptCatchesTheMarkIgnored`).
    static let seededBlindSpots: Set<PlantedBug> = [.laggingCandidateWins, .followerIgnoresHeldBytes, .transferMarkIgnored]

    @Test(arguments: PlantedBug.allCases)
    func caught(_ bug: PlantedBug) {
        if Self.seededBlindSpots.contains(bug) {
            withKnownIssue("known blind spot of the seeded simulation") { hunt(bug) }
        } else {
            hunt(bug)
        }
    }

    func hunt(_ bug: PlantedBug) {
        guard let (n, r) = seedsToCatch(bug) else {
            Issue.record("planted bug \(bug) survived \(Self.budget) seeds on 3 and 5 replicas")
            return
        }
        print("planted bug \(bug): caught after \(n) runs (seed \(r.seed), \(r.replicas) replicas, tick \(r.violationTick ?? -1)): \(r.violation!)")
    }
}

/// Opt-in (`PAXOS_PLANTED_CONSEQUENCES=1`): the same hunt with the durability-contract check off,
/// so bugs must show up as a safety violation (two values chosen, an unchosen value learned).
/// Informational: durability bugs need an unlucky crash to bite, so this may take many seeds.
@Suite struct PlantedBugConsequenceTests {
    @Test(arguments: PlantedBug.allCases)
    func consequences(_ bug: PlantedBug) {
        guard ProcessEnvironment.all["PAXOS_PLANTED_CONSEQUENCES"] == "1" else { return }
        if let (n, r) = PlantedBugTests().seedsToCatch(bug, contract: false) {
            print("planted bug \(bug) (consequences only): caught after \(n) runs (seed \(r.seed), \(r.replicas) replicas): \(r.violation!)")
        } else {
            print("planted bug \(bug) (consequences only): not caught in \(PlantedBugTests.budget * 2) runs")
        }
    }
}

/// Planted bugs in the replica (the code around the core, which the simulation now runs) and in
/// the model of storage recovery: each must be caught within the CI seed budget too. The storage
/// bug `wipedReplicaVotes` (a replica that lost its disk votes at once) is hunted here in the
/// seeded runs, whose disk losses are random; `DiskLossTests` also plays issue 21's scenario.
@Suite struct PlantedReplicaBugTests {
    /// Replica bugs the seeded schedule no longer reaches within the budget; the hunt is a known
    /// issue and fails once the simulation catches the bug again. `acknowledgeAnyValue`: since
    /// honest step-down, a leader fails its appends the moment it stops leading, so an append is
    /// answered from a chosen slot only while its own ballot leads, where every chosen value is its
    /// own. What is left is one event that deposes a leader and also teaches it another ballot's
    /// chosen values (an Accept from the newer leader over slots already chosen): not caught in
    /// 1500 seeds (`PAXOS_PLANTED_BUDGET=1500`). `AppendOutcomeTests` covers the decision.
    /// `sessionsNotRestored` bites only when a retried record is repeated in the log (about 5 in
    /// 300 runs of 5 replicas), a compaction falls between its two slots, and that replica
    /// restarts before the second is chosen: not caught in 400 runs with every client retrying
    /// and compactions 20 times as frequent. `RepeatedIdentityTests` plants its effect (the table
    /// beside the snapshot removed) and sees the repeat read again.
    static let seededBlindSpots: Set<ReplicaBug> = [.acknowledgeAnyValue, .sessionsNotRestored]

    @Test(arguments: ReplicaBug.allCases)
    func caught(_ bug: ReplicaBug) {
        if Self.seededBlindSpots.contains(bug) {
            withKnownIssue("known blind spot of the seeded simulation") {
                report("replica bug \(bug)", PlantedBugTests.seedsToCatch { $0.replicaBug = bug })
            }
        } else {
            report("replica bug \(bug)", PlantedBugTests.seedsToCatch { $0.replicaBug = bug })
        }
    }

    @Test(arguments: StorageBug.allCases)
    func caught(_ bug: StorageBug) {
        report("storage bug \(bug)", PlantedBugTests.seedsToCatch { $0.storageBug = bug })
    }

    func report(_ name: String, _ caught: (seeds: Int, report: SimulationReport)?) {
        guard let (n, r) = caught else {
            Issue.record("planted \(name) survived \(PlantedBugTests.budget) seeds on 3 and 5 replicas")
            return
        }
        print("planted \(name): caught after \(n) runs (seed \(r.seed), \(r.replicas) replicas, tick \(r.violationTick ?? -1)): \(r.violation!)")
    }
}
