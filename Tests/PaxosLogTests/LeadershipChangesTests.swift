import Foundation
import MultiPaxos
import PaxosLog
import Testing

@Suite struct LeadershipChangesTests {
    /// A follower's sequence starts with the leader it follows and reports the next one after
    /// the leader goes away, without polling `status()`.
    @Test func aFollowerSeesTheLeaderThenItsSuccessor() async throws {
        let (logs, dir) = try await InProcessClusterTests.openCluster("leadership-changes")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await InProcessClusterTests.waitForLeader(logs)
        let old = leader.configuration.nodeID
        let follower = logs.first { $0 !== leader }!
        let changes = follower.leadershipChanges()
        let successor = Task { () -> NodeID? in
            var sawOld = false
            for await l in changes {
                if l.leader == old { sawOld = true }
                if sawOld, let next = l.leader, next != old { return next }
            }
            return nil
        }
        // The follower must have reported the old leader before it is closed.
        try await Task.sleep(for: .milliseconds(200))
        try await leader.close()
        let next = try await withTimeout(seconds: 20) { await successor.value }
        #expect(next != nil && next != old)
        for l in logs where l !== leader { try await l.close() }
    }

    @Test func theSequenceEndsWhenTheLogCloses() async throws {
        let dir = temporaryDirectory("leadership-local")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        let seen = Task { () -> [Leadership] in
            var all: [Leadership] = []
            for await l in log.leadershipChanges() { all.append(l) }
            return all
        }
        try await Task.sleep(for: .milliseconds(100))
        try await log.close()
        let all = try await withTimeout(seconds: 10) { await seen.value }
        #expect(all.first?.isLeader == true && all.first?.leader == 1)
    }
}
