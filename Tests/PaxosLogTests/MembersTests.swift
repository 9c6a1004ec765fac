import Foundation
import MultiPaxos
import PaxosLog
import PaxosTransport
import Testing

/// `PaxosLog.members()`, and the client side of `members` and `transferLeadership` (the paths
/// that need no transfer: the transfer itself is tested with it).
@Suite struct MembersTests {
    /// On the leader every row has positions, and after some appends every member's reach the
    /// leader's chosen watermark; on a follower only its own row has them.
    @Test func membersOnTheLeaderAndOnAFollower() async throws {
        let (servers, dir) = try await InProcessClusterTests.startServers("members")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let logs = servers.map(\.log)
        let leader = try await InProcessClusterTests.waitForLeader(logs)
        let leaderID = try await leader.status().nodeID
        let positions = try await leader.append(contentsOf: (0..<20).map { Array("member-\($0)".utf8) })
        let last = try #require(positions.last)

        // Followers report their chosen watermark in heartbeat replies: give them a few.
        var rows: [PaxosLog.MemberStatus] = []
        for _ in 0..<400 {
            rows = try await leader.members()
            if rows.allSatisfy({ ($0.chosenThrough ?? 0) >= last && ($0.acknowledgedThrough ?? 0) >= last }) { break }
            try await Task.sleep(nanoseconds: 25_000_000)
        }
        #expect(rows.map(\.id) == leader.configuration.members.map(\.id))
        #expect(rows.map(\.peerAddress) == leader.configuration.members.map(\.peerAddress))
        #expect(rows.map(\.clientAddress) == leader.configuration.members.map(\.clientAddress))
        #expect(rows.filter { $0.role == .leader }.map(\.id) == [leaderID])
        #expect(rows.filter(\.isSelf).map(\.id) == [leaderID])
        for row in rows {
            #expect((row.chosenThrough ?? 0) >= last && (row.acknowledgedThrough ?? 0) >= last, "\(row) behind \(last)")
        }
        let chosen = try await leader.status().chosenThrough
        #expect(rows.allSatisfy { ($0.chosenThrough ?? .max) <= chosen }, "no member is ahead of the leader's chosen watermark \(chosen)")

        let follower = logs.first { $0 !== leader }!
        let followerID = follower.configuration.nodeID
        for _ in 0..<200 where try await follower.status().leader != leaderID { try await Task.sleep(nanoseconds: 25_000_000) }
        let seen = try await follower.members()
        #expect(seen.filter(\.isSelf).map(\.id) == [followerID])
        #expect(seen.first { $0.id == leaderID }?.role == .leader)
        #expect(seen.filter { $0.role == .follower }.count == 2)
        for row in seen where !row.isSelf {
            #expect(row.acknowledgedThrough == nil && row.chosenThrough == nil, "a follower knows no other member's positions: \(row)")
        }
        let own = try #require(seen.first { $0.isSelf })
        #expect(own.acknowledgedThrough != nil && own.chosenThrough != nil)

        for s in servers { try await s.shutdown() }
        await #expect(throws: PaxosLogError.self) { try await leader.members() }
    }

    /// A client of a follower's port gets the leader's list (redirected); a transfer sent to a
    /// follower is redirected to the leader (not followed: a `redirect` error; followed: the
    /// leader refuses a non-member with a clear message).
    @Test func clientMembersAndTransferAreRedirectedToTheLeader() async throws {
        let (servers, dir) = try await InProcessClusterTests.startServers("members-client")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await InProcessClusterTests.waitForLeader(servers.map(\.log))
        let leaderID = try await leader.status().nodeID
        let follower = servers.first { $0.log !== leader }!
        for _ in 0..<200 where try await follower.log.status().leader != leaderID { try await Task.sleep(nanoseconds: 25_000_000) }

        let client = try await InProcessClusterTests.client(of: follower)
        let rows = try await client.members()
        #expect(rows.first(where: \.isSelf)?.id == leaderID, "answered by the leader: \(rows)")
        #expect(rows.first(where: \.isSelf)?.role == .leader)
        #expect(rows.allSatisfy { $0.acknowledgedThrough != nil && $0.chosenThrough != nil })

        do {
            _ = try await client.transferLeadership(to: 7)
            Issue.record("a transfer to a non-member succeeded")
        } catch {
            #expect(error.code == .rejected, "\(error)")
            #expect(error.serverError?.code == .invalidRequest, "\(error)")
            #expect(error.serverError?.message.contains("node 7 is not a member") == true, "\(error)")
            #expect(client.connectedNodeID == leaderID, "redirected to the leader")
        }
        await client.close()

        let unfollowing = try await InProcessClusterTests.client(of: follower, maxRedirects: 0)
        do {
            _ = try await unfollowing.transferLeadership(to: leaderID)
            Issue.record("a follower took a transfer request")
        } catch {
            #expect(error.code == .redirect, "\(error)")
            #expect(error.cause?.message.contains("redirected to node \(leaderID)") == true, "\(error)")
        }
        await unfollowing.close()
        for s in servers { try await s.shutdown() }
    }
}
