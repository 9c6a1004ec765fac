@_spi(Testing) import MultiPaxos
@_spi(Testing) import PaxosLogTesting
import Testing

/// Replicas that lose their disk (Simulation+DiskLoss.swift): the identity guard keeps them down,
/// and no acknowledged record is lost while fewer than a majority of disks are lost.
@Suite struct DiskLossTests {
    /// Every run loses disks (`diskLossRunRate = 1`): `PAXOS_DISK_LOSS_SEEDS=N` (or else
    /// `PAXOS_SIM_SEEDS=N`, as under the sanitizers) runs N seeds per cluster size, 100 by default
    /// (the main sweeps lose disks in a share of their runs too).
    @Test(arguments: [3, 5])
    func guardHoldsAcrossSeeds(replicas: Int) {
        let env = SimulationSeeds.env
        let n = (env["PAXOS_DISK_LOSS_SEEDS"] ?? env["PAXOS_SIM_SEEDS"]).flatMap(Int.init) ?? 100
        var summary = SimulationSummary(replicas: replicas)
        var kinds: Set<DiskLoss> = []
        let started = ContinuousClock.now
        for seed in UInt64(9_000)..<UInt64(9_000 + n) {
            var o = SimulationOptions(replicas: replicas, seed: seed)
            o.diskLossRunRate = 1
            let r = Simulation(o).run()
            summary.add(r)
            kinds.formUnion(r.diskLossKinds)
            if r.violation != nil, summary.violations <= 3 { Issue.record("simulation with disk loss failed:\n\(r)") }
        }
        let elapsed = started.duration(to: .now).components
        summary.seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        print("disk loss \(summary.line)")
        let f = summary.faults
        #expect(f.disk_losses > 0 && f.refused_restarts == f.disk_losses, "disk losses \(f.disk_losses), refused \(f.refused_restarts)")
        if n >= 50 { #expect(kinds == Set(DiskLoss.allCases), "kinds of disk loss seen: \(kinds)") }
    }

    static func scenario(seed: UInt64, bug: StorageBug? = nil) -> SimulationReport {
        var o = SimulationOptions(replicas: 3, seed: seed)
        o.crashes = false
        o.partitions = false
        o.maxLossRate = 0
        o.duplicateRate = 0
        o.storageFaultRunRate = 0
        o.diskLossRunRate = 0
        o.compactionRate = 0
        o.storageBug = bug
        if SimulationSeeds.replaying { o.trace = { print($0) } }
        return Simulation(o).runLostDiskScenario()
    }

    static let scenarioSeeds = (UInt64(1)...10).map { $0 }

    /// Issue 21's scenario with the real guard: the wiped replica is refused, the cluster waits
    /// for the replica that holds the acknowledged records, and every one is kept.
    @Test(arguments: scenarioSeeds)
    func issueScenarioRefused(seed: UInt64) {
        let r = Self.scenario(seed: seed)
        #expect(r.violation == nil, "\(r)")
        #expect(r.diskLosses == 1 && r.refusedRestarts == 1, "\(r)")
        #expect(r.acknowledged >= 3, "\(r)")
    }

    /// The same scenario with the guard bypassed (`wipedReplicaVotes`): the wiped replica and the
    /// one that missed the appends form a majority, and the simulation sees another value chosen
    /// at an acknowledged slot.
    @Test(arguments: scenarioSeeds)
    func issueScenarioCatchesWipedReplicaVoting(seed: UInt64) {
        let r = Self.scenario(seed: seed, bug: .wipedReplicaVotes)
        // Agreement: a second value gets a majority at a slot whose value was chosen (acknowledged).
        #expect(r.violation?.contains("a majority accepted") == true, "the wiped replica voted and nothing noticed: \(r)")
        print("wipedReplicaVotes scenario seed \(seed): \(r.violation ?? "not caught")")
    }
}
