import Foundation
import Logging
import MultiPaxos
import NIOPosix
import PaxosLog
import PaxosTransport
import Testing

/// Linearizable reads on an in-process cluster of three replicas serving clients: the facade's
/// `read(…, consistency: .linearizable)` and the client protocol's, on the leader and on a
/// follower (which asks the leader for the barrier over its client port).
@Suite(.timeLimit(.minutes(2))) struct LinearizableReadTests {
    /// Right after the leader acknowledges an append, a linearizable read on a follower holds
    /// it. A local read there often would not yet (the follower learns the slot is chosen with
    /// the leader's next message), so this fails when the barrier is skipped.
    @Test func followerReadsEveryAppendAcknowledgedBeforeIt() async throws {
        let (servers, dir) = try await InProcessClusterTests.startServers("linearizable-follower")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await InProcessClusterTests.waitForLeader(servers.map(\.log))
        let leaderID = try await leader.status().nodeID
        let follower = servers.first { $0.log !== leader }!
        for _ in 0..<200 where try await follower.log.status().leader != leaderID { try await Task.sleep(nanoseconds: 25_000_000) }

        // The follower's own client port, redirects not followed: the follower answers itself.
        let client = try await InProcessClusterTests.client(of: follower, maxRedirects: 0)
        for i in 0..<30 {
            let record = Array("lin-\(i)".utf8)
            let position = try await leader.append(record)
            let viaFacade = try await follower.log.read(from: position, maxCount: 1, consistency: .linearizable)
            // Compared by position and bytes: entries also carry the identity they were appended under.
            #expect(viaFacade.entries.map(\.position) == [position] && viaFacade.entries.map(\.bytes) == [record], "facade read \(i)")
            let record2 = Array("lin-client-\(i)".utf8)
            let position2 = try await leader.append(record2)
            let viaClient = try await client.read(from: position2, maxCount: 1, consistency: .linearizable)
            #expect(viaClient.entries == [ClientEntry(slot: position2, bytes: record2)], "client read \(i)")
            #expect(client.connectedNodeID == follower.log.configuration.nodeID)
        }
        await client.close()
        for s in servers { try await s.shutdown() }
    }

    /// On the leader the barrier is its own; a barrier request to a follower is redirected,
    /// never forwarded; a status names the client address the replica listens on.
    @Test func leaderBarrierFollowerRedirectAndAdvertisedAddress() async throws {
        let (servers, dir) = try await InProcessClusterTests.startServers("linearizable-leader")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await InProcessClusterTests.waitForLeader(servers.map(\.log))
        let leaderID = try await leader.status().nodeID
        let leaderServer = servers.first { $0.log === leader }!
        let follower = servers.first { $0.log !== leader }!
        for _ in 0..<200 where try await follower.log.status().leader != leaderID { try await Task.sleep(nanoseconds: 25_000_000) }

        let position = try await leader.append(Array("x".utf8))
        let page = try await leader.read(from: 1, maxCount: 10, consistency: .linearizable)
        #expect(page.entries.contains { $0.position == position && $0.bytes == Array("x".utf8) })

        let client = try await InProcessClusterTests.client(of: follower, maxRedirects: 0)
        let error = try await #require(throws: PaxosClientError.self) { try await client.readBarrier() }
        #expect(error.code == .redirect)
        let status = try await client.status()
        #expect(status.details.first { $0.key == "client_address" }?.value == "\(follower.clientAddress)")
        await client.close()

        // Following redirects, the barrier comes from the leader and covers the append.
        let all = PaxosClientConfiguration(addresses: servers.map { PeerAddress(host: "127.0.0.1", port: $0.clientAddress.port!) }, clusterName: "in-process")
        let any = try await PaxosClient.connect(configuration: all, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "test"))
        #expect(try await any.readBarrier() >= position)
        #expect(any.connectedNodeID == leaderServer.log.configuration.nodeID)
        await any.close()
        for s in servers { try await s.shutdown() }
    }
}
