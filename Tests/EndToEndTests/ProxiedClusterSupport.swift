import Foundation
import MultiPaxos
import PaxosLogTesting
import PaxosTransport

/// Runs `body` on a fresh cluster of `size` replicas whose peer links all run through proxies.
/// On success the directories are removed (unless `PAXOS_E2E_KEEP=1`); on failure they are kept, their path and the log
/// tails printed. The proxies and processes are stopped either way.
func withProxiedCluster(_ name: String, size: Int = 3, seed: UInt64 = 1,
                        _ body: (LocalCluster, ProxiedNetwork) async throws -> Void) async throws {
    let dir = NSTemporaryDirectory() + "paxoslog-e2e-\(name)-\(getpid())"
    try? FileManager.default.removeItem(atPath: dir)
    let cluster = try LocalCluster(executable: try paxlogExecutable(), size: size, baseDirectory: dir, clusterName: "e2e-\(name)")
    let network = try await ProxiedNetwork.start(for: cluster, seed: seed)
    do {
        try await body(cluster, network)
    } catch {
        network.healAll()
        cluster.terminateAll()
        await network.shutdown()
        print("test failed: \(error); replica logs kept in \(cluster.baseDirectory)\n\(cluster.logTails())")
        throw error
    }
    cluster.terminateAll()
    await network.shutdown()
    if ProcessInfo.processInfo.environment["PAXOS_E2E_KEEP"] == "1" {
        print("\(name): replica directories and logs kept in \(cluster.baseDirectory) (PAXOS_E2E_KEEP=1)")
    } else {
        try? FileManager.default.removeItem(atPath: cluster.baseDirectory)
    }
}

/// The highest ballot round any replica knows: how many elections have been started (pre-votes
/// raise no round), an upper bound on leader changes that a poll cannot miss. Asks again (up to
/// five times) until every running replica answered: a busy leader missing from one answer
/// would lower the maximum and make the next difference count elections that never happened.
func highestRound(_ cluster: LocalCluster) async -> UInt64 {
    var best: [NodeID: ClientStatus] = [:]
    for _ in 0..<5 {
        best = await cluster.statuses(within: 1)
        if best.count == cluster.nodes.count(where: { cluster.isRunning($0.id) }) { break }
    }
    return best.values.map(\.ballot.round).max() ?? 0
}

/// Polls every replica's status until stopped and collects the ballots some replica led under:
/// the leader changes a 100 ms poll sees (it can miss a leadership shorter than that).
final class LeaderWatch: Sendable {
    private let ballots = LockedBox<Set<Ballot>>([])
    private let stopped = LockedBox(false)

    func run(_ cluster: LocalCluster) async {
        while !stopped.get() {
            for s in await cluster.statuses(within: 0.5).values where s.leaderID == s.nodeID {
                ballots.update { $0.insert(s.ballot) }
            }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
    }

    func stop() { stopped.update { $0 = true } }
    var leaderBallots: Set<Ballot> { ballots.get() }
}

/// A value behind a lock, for test helpers.
final class LockedBox<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func get() -> Value { lock.withLock { value } }
    func update<R>(_ body: (inout Value) -> R) -> R { lock.withLock { body(&value) } }
}
