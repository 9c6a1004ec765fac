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
        var ticks = 0, steps = 0, sent = 0, dropped = 0, dup = 0, crashes = 0, partitions = 0, chosen = 0, acked = 0
        let seeds = SimulationSeeds.seeds(base: base)
        for seed in seeds {
            var o = SimulationOptions(replicas: replicas, seed: seed)
            if SimulationSeeds.replaying { o.trace = { print($0) } }
            var sim = Simulation(o)
            let r = sim.run()
            ticks += r.ticks; steps += r.steps; sent += r.sent; dropped += r.dropped; dup += r.duplicated
            crashes += r.crashes; partitions += r.partitions; chosen += r.chosenSlots; acked += r.acknowledged
            if r.violation != nil {
                Issue.record("simulation failed:\n\(r)")
                return
            }
        }
        print("simulation replicas=\(replicas) seeds=\(seeds.count) ticks=\(ticks) steps=\(steps) sent=\(sent) dropped=\(dropped) duplicated=\(dup) crashes=\(crashes) partitions=\(partitions) chosen=\(chosen) acked=\(acked)")
    }

    @Test func threeReplicas() { runSeeds(replicas: 3, base: 1_000) }
    @Test func fiveReplicas() { runSeeds(replicas: 5, base: 5_000) }
}
