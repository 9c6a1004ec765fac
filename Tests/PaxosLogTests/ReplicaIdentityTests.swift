import Foundation
import MultiPaxos
import PaxosLog
import PaxosLogTesting
import SegmentLog
import Testing

/// Which data directories a replica opens as a voter (issue 21, section 1): never an empty or cut
/// one in a multi-member cluster.
@Suite struct ReplicaIdentityTests {
    /// Node `id` of a 3-member loopback cluster, its data in `dir/node-ID`.
    static func member(_ id: NodeID, _ dir: String) throws -> PaxosLog.Configuration {
        let members = PaxosLog.Member.loopback(ports: try LocalCluster.freePorts(6))
        return PaxosLog.Configuration(nodeID: id, members: members, dataDirectory: "\(dir)/node-\(id)")
    }

    /// Node `id`'s configuration, its directory bootstrapped as a member of a new cluster.
    static func bootstrapped(_ id: NodeID, _ dir: String) async throws -> (PaxosLog.Configuration, PaxosLog.ClusterID, DirectoryIdentity) {
        let c = try member(id, dir)
        let cluster = PaxosLog.ClusterID.random()
        return (c, cluster, try await PaxosLog.bootstrap(c, clusterID: cluster))
    }

    static func expectRefusal(_ code: PaxosLogError.Code, _ configuration: PaxosLog.Configuration, mentioning words: [String]) async {
        do {
            let log = try await PaxosLog.open(configuration)
            try? await log.close()
            Issue.record("node \(configuration.nodeID) opened; expected \(code)")
        } catch let error as PaxosLogError {
            #expect(error.code == code, "\(error)")
            for w in words { #expect(error.message.contains(w), "\(error) does not mention \(w)") }
        } catch {
            Issue.record("expected PaxosLogError \(code), got \(error)")
        }
    }

    @Test("a multi-member replica refuses an empty directory unless bootstrapped, and writes nothing")
    func emptyDirectoryRefused() async throws {
        let dir = temporaryDirectory("identity-empty")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try Self.member(1, dir)
        await Self.expectRefusal(.notBootstrapped, c, mentioning: ["paxlog init", "must not vote"])
        let left = (try? FileManager.default.contentsOfDirectory(atPath: c.dataDirectory)) ?? []
        #expect(left.filter { $0 != "LOCK" }.isEmpty)
    }

    @Test("bootstrap, then restarts open; a wiped directory is refused; bootstrap refuses a used directory")
    func bootstrapRestartWipe() async throws {
        let dir = temporaryDirectory("identity-restart")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (member, cluster, written) = try await Self.bootstrapped(2, dir)
        var c = member
        #expect(written == DirectoryIdentity(clusterID: cluster, nodeID: 2, incarnation: 1))
        for _ in 0..<2 {
            let log = try await PaxosLog.open(c)
            #expect(log.identity == written)
            try await log.close()
        }
        await #expect(throws: PaxosLogError.self) { try await PaxosLog.bootstrap(c, clusterID: cluster) }

        // The node id and the cluster id are checked.
        var other = c
        other.nodeID = 3
        await Self.expectRefusal(.wrongIdentity, other, mentioning: ["node 2", "node 3"])
        c.clusterID = .random()
        await Self.expectRefusal(.wrongIdentity, c, mentioning: ["\(cluster)", "\(c.clusterID!)"])
        c.clusterID = cluster

        try FileManager.default.removeItem(atPath: c.dataDirectory)
        await Self.expectRefusal(.notBootstrapped, c, mentioning: ["must not vote", "not yet available"])
    }

    @Test("a directory whose records were cut is refused as a voter, and opens for a one-member log")
    func needsRejoinRefused() async throws {
        let dir = temporaryDirectory("identity-rejoin")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (c, cluster, _) = try await Self.bootstrapped(1, dir)
        try DirectoryIdentity(clusterID: cluster, nodeID: 1, incarnation: 2, lostState: .repair).write(directory: c.dataDirectory)
        await Self.expectRefusal(.needsRejoin, c, mentioning: ["repair", "not yet available"])

        let local = try await PaxosLog.open(.local(dataDirectory: c.dataDirectory))
        #expect(local.identity.needsRejoin)
        try await local.close()
    }

    @Test("a one-member log bootstraps itself on an empty directory and keeps its cluster id")
    func localBootstrapsItself() async throws {
        let dir = temporaryDirectory("identity-local")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        let first = log.identity
        #expect(first.nodeID == 1 && first.incarnation == 1 && !first.needsRejoin && !first.clusterID.isUnknown)
        _ = try await log.append(Array("x".utf8))
        try await log.close()
        let again = try await PaxosLog.open(.local(dataDirectory: dir))
        #expect(again.identity == first)
        try await again.close()
    }
}
