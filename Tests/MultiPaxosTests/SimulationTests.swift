@_spi(Testing) import MultiPaxos
import PaxosLogTesting
import Testing

/// Seeds for one configuration: `PAXOS_SEED=<seed>` replays one, `PAXOS_SIM_SEEDS=N` runs N.
enum SimulationSeeds {
    static let ciSeeds = 300

    static var env: [String: String] { ProcessEnvironment.all }

    static func seeds(base: UInt64) -> [UInt64] {
        if let s = env["PAXOS_SEED"], let seed = UInt64(s) { return [seed] }
        let n = env["PAXOS_SIM_SEEDS"].flatMap(Int.init) ?? ciSeeds
        return (0..<UInt64(n)).map { base + $0 }
    }

    static var replaying: Bool { env["PAXOS_SEED"] != nil }
}

@Suite struct SimulationTests {
    func runSeeds(replicas: Int, base: UInt64) {
        var ticks = 0, steps = 0, sent = 0, dropped = 0, dup = 0, crashes = 0, partitions = 0, bridges = 0, chosen = 0, acked = 0
        var compactions = 0, installed = 0
        let seeds = SimulationSeeds.seeds(base: base)
        for seed in seeds {
            var o = SimulationOptions(replicas: replicas, seed: seed)
            if SimulationSeeds.replaying { o.trace = { print($0) } }
            // PAXOS_SIM_COMPACTION=0 turns compaction (and so snapshot transfer) off, to bisect.
            if let rate = SimulationSeeds.env["PAXOS_SIM_COMPACTION"].flatMap(Double.init) { o.compactionRate = rate }
            var sim = Simulation(o)
            let r = sim.run()
            ticks += r.ticks; steps += r.steps; sent += r.sent; dropped += r.dropped; dup += r.duplicated
            crashes += r.crashes; partitions += r.partitions; bridges += r.bridges; chosen += r.chosenSlots; acked += r.acknowledged
            compactions += r.compactions; installed += r.snapshotsInstalled
            if r.violation != nil {
                Issue.record("simulation failed:\n\(r)")
                return
            }
        }
        print("simulation replicas=\(replicas) seeds=\(seeds.count) ticks=\(ticks) steps=\(steps) sent=\(sent) dropped=\(dropped) duplicated=\(dup) crashes=\(crashes) partitions=\(partitions) bridges=\(bridges) compactions=\(compactions) snapshots_installed=\(installed) chosen=\(chosen) acked=\(acked)")
        // The snapshot paths must actually run, or the invariants above say nothing about them.
        if seeds.count >= 100 {
            #expect(compactions > 0 && installed > 0, "no snapshot was installed in \(seeds.count) runs")
            #expect(bridges > 0, "no bridge partition in \(seeds.count) runs")
        }
    }

    @Test func threeReplicas() { runSeeds(replicas: 3, base: 1_000) }
    @Test func fiveReplicas() { runSeeds(replicas: 5, base: 5_000) }
}
