import Foundation
import MultiPaxos

/// Injects the faults of ``NemesisRound``s into a ``LocalCluster`` whose peer links run through
/// a ``ProxiedNetwork``, and heals them.
///
/// Every round ends healed: links healthy, every replica running and thawed. A round's length is
/// its own (a sleep), so a run is bounded by the sum of its rounds.
public final class Nemesis: Sendable {
    public let cluster: LocalCluster
    public let network: ProxiedNetwork
    private let exits = LockedValue<[String]>([])

    /// Replicas found dead that the nemesis had not killed (a crash is a finding: they are
    /// restarted so the run goes on, and listed here), e.g. `node 2 exited with status 6`.
    public var unexpectedExits: [String] { exits.withLock { $0 } }

    public init(cluster: LocalCluster, network: ProxiedNetwork) {
        self.cluster = cluster
        self.network = network
    }

    /// Injects `round`'s fault, keeps it for `round.seconds`, then heals everything.
    /// - Returns: what was done, e.g. `bridge 1-3 cut (middle 2), leader 1`.
    /// - Throws: if a killed replica cannot be restarted.
    public func run(_ round: NemesisRound) async throws -> String {
        var rng = SplitMix64(seed: round.seed)
        let ids = cluster.nodes.map(\.id)
        let leader = await cluster.leader(within: 0.5)
        /// The leader half the time (when one is known), otherwise any replica.
        func victim() -> NodeID {
            if let leader, rng.chance(0.5) { return leader }
            return ids[rng.below(ids.count)]
        }
        func follower(of l: NodeID) -> NodeID {
            let others = ids.filter { $0 != l }
            return others[rng.below(others.count)]
        }
        func hold(_ seconds: Double) async { try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9)) }
        let leaderText = leader.map { "leader \($0)" } ?? "no leader known"
        var done: String
        defer { network.healAll() }

        switch round.fault {
        case .isolateLeader:
            let v = leader ?? victim()
            network.isolate(v)
            done = "node \(v) cut off"
            await hold(round.seconds)
        case .split:
            var shuffled = ids.shuffled(using: &rng)
            if let leader, rng.chance(0.5), let i = shuffled.firstIndex(of: leader) { shuffled.swapAt(0, i) }
            let minority = Array(shuffled.prefix((ids.count - 1) / 2)), majority = Array(shuffled.dropFirst(minority.count))
            network.partition([minority, majority])
            done = "split \(minority) | \(majority)"
            await hold(round.seconds)
        case .bridge:
            var shuffled = ids.shuffled(using: &rng)
            if let leader, rng.chance(0.5), let i = shuffled.firstIndex(of: leader) { shuffled.swapAt(0, i) }
            let left = Array(shuffled.prefix(ids.count / 2)), middle = shuffled[ids.count / 2], right = Array(shuffled.suffix(from: ids.count / 2 + 1))
            for a in left { for b in right { network.set(.cut, between: a, b) } }
            done = "bridge \(left) - \(middle) - \(right)"
            await hold(round.seconds)
        case .oneWayLoss:
            let l = leader ?? victim(), f = follower(of: l)
            let (from, to) = rng.chance(0.5) ? (l, f) : (f, l)
            let fault: LinkFault = rng.chance(0.5) ? .cut : .blackHole
            network.set(fault, from, to)
            done = "\(from)→\(to) \(fault)"
            await hold(round.seconds)
        case .flappingLink:
            let l = leader ?? victim(), f = follower(of: l)
            let end = Date().addingTimeInterval(round.seconds)
            var flips = 0
            while Date() < end {
                network.set(flips % 2 == 0 ? .cut : .none, between: l, f)
                flips += 1
                await hold(0.1 + 0.5 * rng.nextUnit())
            }
            done = "\(l)↔\(f) flapping (\(flips) flips)"
        case .pause:
            let v = victim()
            cluster.signal(v, SIGSTOP)
            done = "node \(v) frozen (SIGSTOP)"
            await hold(round.seconds)
            cluster.signal(v, SIGCONT)
        case .killRestart:
            let v = victim()
            cluster.kill(v)
            done = "node \(v) killed (SIGKILL) and restarted"
            await hold(min(round.seconds, 2))
            try cluster.start(v)
        case .blackHoleNode:
            let v = victim()
            network.isolate(v, with: .blackHole)
            done = "node \(v) black-holed"
            await hold(round.seconds)
        case .slowNode:
            let v = victim()
            network.isolate(v, with: .delay(min: 0.05, max: 0.4))
            done = "node \(v) links delayed 50-400 ms"
            await hold(round.seconds)
        case .lossyNetwork:
            let p = 0.02 + 0.08 * rng.nextUnit()
            for a in ids { for b in ids where a != b { network.set(.lossy(resetProbability: p), a, b) } }
            done = "every link resets with p=\(String(format: "%.3f", p))"
            await hold(round.seconds)
        }
        try restoreProcesses()
        return "\(done); \(leaderText)"
    }

    /// Heals every link, thaws every replica and restarts any that is not running.
    public func healAll() throws {
        network.healAll()
        try restoreProcesses()
    }

    private func restoreProcesses() throws {
        for n in cluster.nodes {
            cluster.signal(n.id, SIGCONT)
            guard !cluster.isRunning(n.id) else { continue }
            if let p = cluster.process(n.id) {
                let status = p.terminationStatus
                exits.withLock { $0.append("node \(n.id) exited with status \(status) (\(p.terminationReason == .uncaughtSignal ? "signal" : "exit"))") }
            }
            try cluster.start(n.id)
        }
    }
}
