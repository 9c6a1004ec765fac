import Foundation
import Logging
import MultiPaxos
import NIOPosix
import PaxosLogTesting
import PaxosTransport
import SegmentLog
import Testing

/// Issue 21's scenario with real `paxlog serve` processes: a replica that lost its disk must not
/// come back as an acceptor that forgot its votes.
@Suite(.serialized) struct IdentityProcessTests {
    /// Appends `bytes` through any replica, retrying while there is no leader; returns its slot.
    static func append(_ cluster: LocalCluster, _ bytes: [UInt8], seconds: Double = 30) async throws -> Slot {
        let end = Date().addingTimeInterval(seconds)
        var lastError: (any Error)?
        while Date() < end {
            do {
                var c = PaxosClientConfiguration(addresses: cluster.clientAddresses, clusterName: cluster.clusterName)
                c.connectTimeout = .milliseconds(300)
                let client = try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "identity"))
                defer { Task { await client.close() } }
                return try await client.append([bytes])[0]
            } catch {
                lastError = error
                try await Task.sleep(nanoseconds: 100_000_000)
            }
        }
        throw ClusterError("append not acknowledged within \(seconds) s: \(lastError.map { "\($0)" } ?? "no attempt")")
    }

    @Test("a replica restarted under its old id on a deleted directory is refused, and the acknowledged record survives")
    func wipedReplicaIsRefused() async throws {
        try await withCluster("wiped") { cluster in
            try cluster.startAll()
            _ = try await cluster.waitForLeader()
            // Node 3 misses the append; nodes 1 and 2 acknowledge it.
            cluster.kill(3)
            let record = Array("acknowledged by nodes 1 and 2".utf8)
            let slot = try await Self.append(cluster, record)

            // Node 2 loses its disk; node 1, the other holder, is down when it comes back. Before
            // identities, nodes 2 and 3 formed a majority here and chose another value at `slot`.
            cluster.kill(1)
            cluster.kill(2)
            try FileManager.default.removeItem(atPath: cluster.node(2).dataDirectory)
            try cluster.start(3)
            try cluster.start(2)
            let status = try await cluster.waitForExit(2, timeout: 30)
            #expect(status != nil && status != 0, "node 2 started on a wiped directory (status \(String(describing: status)))")
            let log = (try? String(contentsOfFile: cluster.node(2).logFile, encoding: .utf8)) ?? ""
            let refusal = log.split(separator: "\n").last { $0.hasPrefix("paxlog: node 2 refuses to start") }
            #expect(refusal?.contains("not bootstrapped") == true && refusal?.contains("must not vote") == true,
                    "no one-line refusal in node 2's output:\n\(log.suffix(2000))")
            let left = (try? FileManager.default.contentsOfDirectory(atPath: cluster.node(2).dataDirectory)) ?? []
            #expect(!left.contains { $0.hasSuffix(".seg") || $0 == "IDENTITY" }, "node 2 wrote \(left)")

            // Node 1 returns: nodes 1 and 3 go on, with the record at its slot.
            try cluster.start(1)
            let next = try await Self.append(cluster, Array("after the refusal".utf8))
            #expect(next > slot)
            try await eventually("node 3 learns through slot \(next)") { await chosenThrough(cluster, 3) >= next }
            cluster.terminateAll()
            for id: NodeID in [1, 3] {
                let store = try SegmentStore.open(directory: cluster.node(id).dataDirectory, logger: Logger(label: "verify"))
                defer { try? store.close() }
                let entry = try store.entry(at: slot)
                #expect(entry?.payload == record && entry?.isNoop == false, "node \(id): slot \(slot) holds \(String(describing: entry))")
            }
        }
    }
}
