import Foundation
import MultiPaxos
import NIOConcurrencyHelpers
import PaxosLog
import Testing

/// `PaxosLog.transferLeadership(to:)` on three in-process replicas over loopback TCP.
@Suite struct TransferLeadershipTests {
    /// Leadership moves to a follower and back while appenders keep appending to whichever
    /// replica leads; every acknowledged record is then at its position on every replica.
    @Test func leadershipMovesUnderLoadAndNothingAcknowledgedMoves() async throws {
        let (logs, dir) = try await InProcessClusterTests.openCluster("transfer-load")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try await InProcessClusterTests.waitForLeader(logs)
        let firstID = first.configuration.nodeID
        let target = logs.first { $0 !== first }!
        let targetID = target.configuration.nodeID
        let acked = NIOLockedValueBox<[PaxosLog.Position: [UInt8]]>([:])
        let stop = NIOLockedValueBox(false)
        let appenders = (0..<4).map { a in
            Task {
                var n = 0
                var leader = first
                while !stop.withLockedValue({ $0 }) {
                    let bytes = Array("appender-\(a)-\(n)".utf8)
                    do {
                        let p = try await leader.append(bytes)
                        acked.withLockedValue { $0[p] = bytes }
                        n += 1
                    } catch let e as PaxosLogError {
                        // Not appended (held, then refused) or unknown: a new record either way.
                        n += 1
                        if let l = e.leader, let next = logs.first(where: { $0.configuration.nodeID == l }) { leader = next }
                        else { try? await Task.sleep(for: .milliseconds(5)) }
                    }
                }
            }
        }
        // Appends go on before, between and after the transfers.
        func fiftyMoreAcknowledged() async throws {
            let before = acked.withLockedValue { $0.count }
            for _ in 0..<1200 where acked.withLockedValue({ $0.count }) < before + 50 { try await Task.sleep(for: .milliseconds(25)) }
            #expect(acked.withLockedValue { $0.count } >= before + 50, "appends stalled")
        }
        try await fiftyMoreAcknowledged()
        try await first.transferLeadership(to: targetID)
        #expect(try await target.status().isLeader)
        #expect(try await first.status().leader == targetID)
        try await fiftyMoreAcknowledged()
        try await target.transferLeadership(to: firstID)
        #expect(try await first.status().isLeader)
        try await fiftyMoreAcknowledged()
        stop.withLockedValue { $0 = true }
        for t in appenders { try await t.value }
        let records = acked.withLockedValue { $0 }
        let last = records.keys.max()!
        for l in logs {
            let entries = try await firstEntries(l, count: Int(last), seconds: 30)
            var at: [PaxosLog.Position: [UInt8]] = [:]
            for e in entries { at[e.position] = e.bytes }
            for (p, bytes) in records { #expect(at[p] == bytes, "node \(l.configuration.nodeID) position \(p)") }
        }
        for l in logs { try await l.close() }
    }

    @Test func onlyTheLeaderTransfersAndOnlyToAMember() async throws {
        let (logs, dir) = try await InProcessClusterTests.openCluster("transfer-errors")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await InProcessClusterTests.waitForLeader(logs)
        let leaderID = leader.configuration.nodeID
        let follower = logs.first { $0 !== leader }!
        for _ in 0..<200 where try await follower.status().leader != leaderID { try await Task.sleep(for: .milliseconds(25)) }
        await #expect { try await follower.transferLeadership(to: follower.configuration.nodeID) } throws: {
            ($0 as? PaxosLogError)?.code == .notLeader && ($0 as? PaxosLogError)?.leader == leaderID
        }
        await #expect { try await leader.transferLeadership(to: 42) } throws: {
            ($0 as? PaxosLogError)?.code == .invalidArgument && "\($0)".contains("node 42 is not a member")
        }
        try await leader.transferLeadership(to: leaderID)
        #expect(try await leader.status().isLeader)
        _ = try await leader.append(Array("still leading".utf8))
        for l in logs { try await l.close() }
    }
}
