import Foundation
import PaxosLog
import Testing

/// The read barrier at the facade: the leader answers a position covering what it acknowledged,
/// readable at once; a follower refuses, naming the leader. The linearizability argument is
/// checked by the simulation (every barrier against every acknowledgement before it).
@Suite struct ReadBarrierTests {
    @Test func theLeaderCoversEveryAcknowledgedAppendAndAFollowerRedirects() async throws {
        let (logs, dir) = try await InProcessClusterTests.openCluster("read-barrier")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await InProcessClusterTests.waitForLeader(logs)
        let positions = try await leader.append(contentsOf: (0..<20).map { Array("r\($0)".utf8) })
        let barrier = try await leader.readBarrier()
        // Exactly the last acknowledged append: the barrier's own no-op is not needed to cover it.
        #expect(barrier == positions.last!)
        // Readable at once: a read through the barrier holds every acknowledged record.
        let (entries, _) = try await leader.read(from: 1, maxCount: 1000)
        #expect(entries.map(\.position) == positions)
        #expect(try await leader.status().chosenThrough >= barrier)

        let follower = logs.first { $0 !== leader }!
        do {
            _ = try await follower.readBarrier()
            Issue.record("a follower answered a read barrier")
        } catch let error as PaxosLogError {
            #expect(error.code == .notLeader)
            #expect(error.leader == leader.configuration.nodeID)
        }
        for l in logs { try await l.close() }
    }

    @Test func aLocalLogAnswersAtOnce() async throws {
        let dir = temporaryDirectory("read-barrier-local")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        let p = try await log.append(Array("x".utf8))
        #expect(try await log.readBarrier() == p)
        try await log.close()
    }
}
