import Foundation
import MultiPaxos
import PaxosLogTesting
import Testing

/// `paxlog member list` and `paxlog leader transfer` against real replica processes.
@Suite(.serialized) struct MembershipProcessTests {
    struct Listing: Decodable {
        struct Row: Decodable {
            var id: UInt32
            var address: String
            var clientAddress: String
            var role: String
            var isVoter: Bool
            var acknowledgedThrough: UInt64?
            var chosenThrough: UInt64?
        }
        var answeredBy: UInt32?
        var leader: UInt32?
        var members: [Row]
    }

    /// Asked through a follower, `member list --json` gives the leader's view: every member with
    /// its addresses and, after some appends, positions through the last one; the table says the
    /// same. `leader transfer` to a non-member, through a follower, exits 1 naming the problem.
    @Test func memberListAndRefusedTransfer() async throws {
        try await withCluster("members") { cluster in
            try cluster.startAll()
            let leader = try await cluster.waitForLeader()
            let follower = cluster.nodes.map(\.id).first { $0 != leader }!
            let viaFollower = "127.0.0.1:\(cluster.node(follower).clientPort)"
            let append = try runPaxlog(["append", "--cluster", viaFollower, "--cluster-name", cluster.clusterName], input: (0..<10).map { "m\($0)\n" }.joined(), killAfter: 60)
            #expect(append.status == 0, "\(append.stderr)")
            let last = try #require(append.stdout.split(separator: "\n").compactMap { UInt64($0) }.max())

            var listing: Listing?
            try await eventually("every member's positions to reach \(last)") {
                guard let run = try? runPaxlog(["member", "list", "--cluster", viaFollower, "--cluster-name", cluster.clusterName, "--json"], environment: [:]),
                      run.status == 0, let parsed = try? JSONDecoder().decode(Listing.self, from: Data(run.stdout.utf8)) else { return false }
                listing = parsed
                return parsed.members.allSatisfy { ($0.acknowledgedThrough ?? 0) >= last && ($0.chosenThrough ?? 0) >= last }
            }
            let list = try #require(listing)
            #expect(list.leader == leader && list.answeredBy == leader)
            #expect(list.members.map(\.id) == cluster.nodes.map(\.id))
            for (row, node) in zip(list.members, cluster.nodes) {
                #expect(row.address == "127.0.0.1:\(node.peerPort)" && row.clientAddress == "127.0.0.1:\(node.clientPort)")
                #expect(row.role == (node.id == leader ? "leader" : "follower") && row.isVoter)
            }

            let table = try runPaxlog(["member", "list", "--cluster", viaFollower, "--cluster-name", cluster.clusterName])
            #expect(table.status == 0, "\(table.stderr)")
            #expect(table.stdout.hasPrefix("ID") && table.stdout.contains("CLIENT ADDRESS") && table.stdout.contains("leader"), "\(table.stdout)")

            let refused = try runPaxlog(["leader", "transfer", "--cluster", viaFollower, "--cluster-name", cluster.clusterName, "--to", "7"])
            #expect(refused.status == 1 && !refused.signaled, "exit \(refused.status): \(refused.stderr)")
            #expect(refused.stderr.contains("node 7 is not a member"), "\(refused.stderr)")
            #expect(refused.stdout.isEmpty)

            let usage = try runPaxlog(["leader", "transfer", "--cluster", viaFollower, "--to", "0"])
            #expect(usage.status == 2, "\(usage.stderr)")
        }
    }
}
