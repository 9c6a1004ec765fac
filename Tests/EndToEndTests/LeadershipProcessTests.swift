import Foundation
import Logging
import MultiPaxos
import NIOPosix
import PaxosLogTesting
import PaxosTransport
import Testing

/// Leadership that stays put, with real `paxlog serve` processes (Sources/MultiPaxos/ELECTIONS.md).
@Suite(.serialized) struct LeadershipProcessTests {
    /// A follower killed (SIGKILL) and restarted five times under load never deposes the healthy
    /// leader: its pre-votes are refused while the leader heartbeats, so the leader's ballot
    /// never changes. Before pre-vote, a restarted follower deposed the leader in 8 of 12 restarts.
    @Test func restartedFollowerNeverDeposesTheLeader() async throws {
        try await withCluster("restart-follower") { cluster in
            try cluster.startAll()
            let leader = try await cluster.waitForLeader()
            let ballot = try await cluster.status(leader).ballot
            let load = Load()
            let running = Task { await load.run(cluster, streams: 4, tag: "r") }
            try await eventually("appends before the restarts") { load.ackCount >= 100 }
            let follower = cluster.nodes.map(\.id).first { $0 != leader }!
            for round in 1...5 {
                cluster.kill(follower)
                // Down for longer than the election timeout (150-300 ms): its timer fires at once
                // on restart, and it has missed slots.
                try await Task.sleep(nanoseconds: 400_000_000)
                let before = load.ackCount
                try cluster.start(follower)
                try await eventually("appends after restart \(round)") { load.ackCount >= before + 50 }
                try await eventually("node \(follower) following again after restart \(round)") {
                    (try? await cluster.status(follower).leaderID) == leader
                }
            }
            load.stop()
            await running.value
            let after = try await cluster.status(leader)
            #expect(after.leaderID == leader, "node \(leader) was deposed")
            #expect(after.ballot == ballot, "leadership changed from \(ballot) to \(after.ballot) during follower restarts")
            let acks = load.acks.withLockedValue { $0 }
            let top = acks.map(\.slot).max() ?? 0
            for n in cluster.nodes { try await eventually("node \(n.id) catching up") { await chosenThrough(cluster, n.id) >= top } }
            try verifyOffline(cluster, acks)
        }
    }

    /// Opt-in measurement (`PAXOS_E2E_MEASURE=1`): failover time after SIGKILL of the leader,
    /// from the kill to the first append acknowledged by the new leader, over several trials.
    @Test func measureFailoverAfterLeaderKill() async throws {
        guard ProcessInfo.processInfo.environment["PAXOS_E2E_MEASURE"] == "1" else { return }
        try await withCluster("measure-failover") { cluster in
            try cluster.startAll()
            var times: [Double] = []
            for _ in 1...5 {
                let leader = try await cluster.waitForLeader()
                let load = Load()
                let tag = "m\(times.count)"
                let running = Task { await load.run(cluster, streams: 4, tag: tag) }
                try await eventually("appends before the kill") { load.ackCount >= 100 }
                cluster.kill(leader)
                let killed = Date()
                let before = load.ackCount
                try await eventually("appends after the kill") { load.ackCount > before + 1 }
                times.append(Date().timeIntervalSince(killed))
                load.stop()
                await running.value
                try cluster.start(leader)
                try await eventually("node \(leader) back") { (try? await cluster.status(leader).leaderID) != nil }
            }
            Self.printTimes("failover after SIGKILL of the leader", times)
        }
    }

    /// Opt-in measurement (`PAXOS_E2E_MEASURE=1`): failover after SIGSTOP of the leader (time
    /// until another replica leads; it comes back and must not depose it), and the time from a
    /// leader losing its quorum (both followers stopped) to failing an append it holds. A frozen
    /// replica accepts connections and never answers, so only the others are asked anything.
    @Test func measureStalledLeaderAndLostQuorum() async throws {
        guard ProcessInfo.processInfo.environment["PAXOS_E2E_MEASURE"] == "1" else { return }
        try await withCluster("measure-stall") { cluster in
            try cluster.startAll()
            var failover: [Double] = []
            var stepDown: [Double] = []
            var leader = try await cluster.waitForLeader()
            for trial in 1...5 {
                cluster.signal(leader, SIGSTOP)
                let stalled = Date()
                let newLeader = try await Self.leader(cluster, among: cluster.nodes.map(\.id).filter { $0 != leader })
                failover.append(Date().timeIntervalSince(stalled))
                cluster.signal(leader, SIGCONT)
                try await Task.sleep(nanoseconds: 500_000_000)
                #expect(await cluster.leader() == newLeader, "the thawed leader deposed node \(newLeader)")
                leader = newLeader

                // Both followers freeze: the leader must fail what it holds once it notices.
                let followers = cluster.nodes.map(\.id).filter { $0 != leader }
                var c = PaxosClientConfiguration(addresses: [PeerAddress(host: "127.0.0.1", port: cluster.node(leader).clientPort)], clusterName: cluster.clusterName)
                c.maxRedirects = 0
                let client = try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
                for f in followers { cluster.signal(f, SIGSTOP) }
                let cut = Date()
                do {
                    _ = try await client.append([Array("q\(trial)".utf8)])
                    Issue.record("an append was acknowledged without a majority")
                } catch {
                    stepDown.append(Date().timeIntervalSince(cut))
                    if trial == 1 { print("append to a leader that lost its quorum: \(error)") }
                }
                await client.close()
                for f in followers { cluster.signal(f, SIGCONT) }
                leader = try await cluster.waitForLeader()
            }
            Self.printTimes("failover after SIGSTOP of the leader", failover)
            Self.printTimes("losing quorum to failing a held append", stepDown)
        }
    }

    static func leader(_ cluster: LocalCluster, among ids: [NodeID]) async throws -> NodeID {
        for _ in 0..<200 {
            for id in ids {
                if let s = try? await cluster.status(id), s.leaderID == id { return id }
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        throw ClusterError("no leader among \(ids)")
    }

    static func printTimes(_ what: String, _ times: [Double]) {
        let sorted = times.sorted()
        print("\(what) (s): \(times.map { String(format: "%.3f", $0) }) median \(String(format: "%.3f", sorted[sorted.count / 2])) max \(String(format: "%.3f", sorted.last!))")
    }
}
