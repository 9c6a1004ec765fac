import Foundation
import MultiPaxos
import PaxosLogTesting
import Testing

/// Leadership transfer with real `paxlog serve` processes (Sources/MultiPaxos/ELECTIONS.md,
/// "Leadership transfer").
@Suite(.serialized) struct TransferProcessTests {
    /// A leader stopped with SIGTERM under load hands leadership to a follower before it closes:
    /// its log says to whom, that follower leads, appends go on, and every acknowledged record
    /// is at its slot on every replica afterwards, read offline.
    @Test func aLeaderStoppedWithSIGTERMHandsLeadershipOver() async throws {
        try await withCluster("handoff") { cluster in
            try cluster.startAll()
            let leader = try await cluster.waitForLeader()
            let load = Load()
            let running = Task { await load.run(cluster, streams: 4, tag: "h") }
            try await eventually("appends before the stop") { load.ackCount >= 100 }
            #expect(cluster.terminate(leader) == 0, "a graceful stop exits 0")
            let log = try String(contentsOfFile: cluster.node(leader).logFile, encoding: .utf8)
            let line = try #require(log.split(separator: "\n").first { $0.contains("handed leadership to node") },
                                    "node \(leader) did not hand over:\n\(cluster.logTails())")
            let next = try #require(NodeID(String(line.split(separator: " ").last!)))
            try await eventually("node \(next) leading") { await cluster.leader() == next }
            let before = load.ackCount
            try await eventually("appends after the stop") { load.ackCount >= before + 50 }
            try cluster.start(leader)
            try await stopLoadAndVerify(cluster, load, running)
        }
    }

    /// `paxlog leader transfer` moves leadership round the three replicas under load, asked
    /// through whichever replica; each time the named node leads, appends go on; without `--to`
    /// it moves to a follower. Every acknowledged record is at its slot on every replica
    /// afterwards, read offline.
    @Test func leaderTransferUnderLoad() async throws {
        try await withCluster("transfer-cli") { cluster in
            try cluster.startAll()
            _ = try await cluster.waitForLeader()
            let load = Load()
            let running = Task { await load.run(cluster, streams: 4, tag: "t") }
            try await eventually("appends before the transfers") { load.ackCount >= 100 }
            let hosts = cluster.nodes.map { "127.0.0.1:\($0.clientPort)" }.joined(separator: ",")
            for target in [NodeID(2), 3, 1, 3] {
                let run = try runPaxlog(["leader", "transfer", "--cluster", hosts, "--cluster-name", cluster.clusterName, "--to", "\(target)", "--json"])
                #expect(run.status == 0 && run.stdout == "{\"leader\":\(target)}\n", "exit \(run.status): \(run.stdout) \(run.stderr)")
                try await eventually("node \(target) leading") { await cluster.leader() == target }
                let before = load.ackCount
                try await eventually("appends after the transfer to node \(target)") { load.ackCount >= before + 50 }
            }
            // Without --to: to the follower furthest along, as the leader sees it.
            let old = try await cluster.waitForLeader()
            let run = try runPaxlog(["leader", "transfer", "--cluster", hosts, "--cluster-name", cluster.clusterName])
            #expect(run.status == 0, "exit \(run.status): \(run.stderr)")
            try await eventually("a follower of node \(old) leading") { await cluster.leader().map { $0 != old } ?? false }
            try await stopLoadAndVerify(cluster, load, running)
        }
    }
}
