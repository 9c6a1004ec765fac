import Foundation
import Metrics
import MetricsTestKit
import MultiPaxos
import PaxosLog
import PaxosTransport
import Testing

/// What a library user sees through swift-metrics: every series carries the replica's node id.
@Suite struct ReplicaMetricsTests {
    @Test func appendsFsyncsAndStateArePublishedWithTheNodeDimension() async throws {
        let metrics = TestMetrics()
        let loopback = PeerAddress(host: "127.0.0.1", port: 0)
        var c = PaxosLog.Configuration(nodeID: 7, members: [.init(id: 7, peerAddress: loopback, clientAddress: loopback)],
                                       dataDirectory: temporaryDirectory("metrics"))
        c.metricsFactory = metrics
        c.metricsInterval = nil  // only the explicit sample below
        let log = try await PaxosLog.open(c)
        for i in 0..<10 { _ = try await log.append([UInt8(i)]) }
        _ = try await log.append(contentsOf: [[1], [2], [3]])
        await log.publishMetrics()
        let node = [("node", "7")]
        #expect(try metrics.expectCounter("paxoslog_appended_records_total", node).totalValue == 13)
        #expect(try metrics.expectCounter("paxoslog_append_failures_total", node).totalValue == 0)
        #expect(try metrics.expectTimer("paxoslog_append_duration_seconds", node).values.count == 11)
        #expect(try metrics.expectTimer("paxoslog_fsync_duration_seconds", node).values.count >= 1)
        #expect(try metrics.expectRecorder("paxoslog_group_commit_appends", node).values.reduce(0, +) >= 11)
        #expect(try metrics.expectCounter("paxoslog_chosen_slots_total", node).totalValue >= 13)
        #expect(try metrics.expectGauge("paxoslog_chosen_through", node).lastValue ?? 0 >= 13)
        #expect(try metrics.expectGauge("paxoslog_is_leader", node).lastValue == 1)
        #expect(try metrics.expectGauge("paxoslog_leader_id", node).lastValue == 7)
        #expect(try metrics.expectGauge("paxoslog_role", node + [("role", "leader")]).lastValue == 1)
        #expect(try metrics.expectGauge("paxoslog_storage_failed", node).lastValue == 0)
        #expect(try metrics.expectCounter("paxoslog_storage_written_bytes_total", node).totalValue > 0)
        #expect(try metrics.expectGauge("paxoslog_data_directory_bytes", node).lastValue ?? 0 > 0)
        // An append the log refuses is a failure, not an append.
        await #expect(throws: PaxosLogError.self) { _ = try await log.append([UInt8](repeating: 0, count: c.maxRecordSize + 1)) }
        try await log.close()
        #expect(try metrics.expectCounter("paxoslog_appended_records_total", node).totalValue == 13)
    }

    /// A leader publishes each follower's lag and in-flight Accepts as it sees them, and counts
    /// the leadership transfers it is asked for.
    @Test func aLeaderPublishesEachFollowersProgress() async throws {
        let metrics = TestMetrics()
        let (logs, dir) = try await InProcessClusterTests.openCluster("metrics-followers", metricsFactory: metrics)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await InProcessClusterTests.waitForLeader(logs)
        _ = try await leader.append(contentsOf: (0..<50).map { [UInt8($0)] })
        await leader.publishMetrics()
        let me = leader.configuration.nodeID
        for follower in leader.configuration.members.map(\.id) where follower != me {
            let d = [("node", "\(me)"), ("follower", "\(follower)")]
            #expect(try metrics.expectGauge("paxoslog_follower_lag_slots", d).lastValue != nil)
            #expect(try metrics.expectGauge("paxoslog_follower_inflight_accepts", d).lastValue != nil)
            #expect(try metrics.expectGauge("paxoslog_follower_inflight_bytes", d).lastValue != nil)
        }
        // A transfer, and one refused (not a member), counted by outcome.
        let target = leader.configuration.members.map(\.id).first { $0 != me }!
        try await leader.transferLeadership(to: target)
        await #expect(throws: PaxosLogError.self) { try await leader.transferLeadership(to: 42) }
        #expect(try metrics.expectCounter("paxoslog_leadership_transfers_total", [("node", "\(me)"), ("outcome", "completed")]).totalValue == 1)
        #expect(try metrics.expectCounter("paxoslog_leadership_transfers_total", [("node", "\(me)"), ("outcome", "refused")]).totalValue == 1)
        for l in logs { try await l.close() }
    }
}
