import ArgumentParser
import Foundation
import PaxosLog

/// `paxlog init`: bootstraps one initial member of a new cluster.
struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bootstrap an initial member of a new cluster: record its data directory's identity.",
        discussion: """
            Run once per initial member, before its first `paxlog serve`, with the same --id, \
            --members and --data (or --config) it will serve with. Writes the directory's \
            identity (cluster id, node id, incarnation 1) durably and before anything else, then \
            an empty log. Every initial member needs the same --cluster-id: without one, init \
            makes a random id and prints it; pass it to `paxlog init` on the other members.

            Refuses a directory that already holds an identity or a log. Never run it for a \
            replica that was a member and lost its directory: it would come back as an acceptor \
            that forgot its promises and votes (which can lose acknowledged records). A \
            one-member cluster needs no init.

            Exit status: 0 initialized; 2 usage error, already initialized, or I/O error.
            """
    )

    @Option(help: "Configuration file with the same keys as `paxlog serve`.") var config: String?
    @Option(help: "This replica's id.") var id: UInt32?
    @Option(help: "All initial members: ID=HOST:PORT[:CLIENTPORT],…") var members: String?
    @Option(help: "Data directory (created if missing).") var data: String?
    @Option(help: "The new cluster's id, 32 hex digits (uuidgen's output works); made and printed when omitted.") var clusterId: String?

    func run() async throws {
        var keys = try config.map(Serve.readConfig) ?? [:]
        if let id { keys["id"] = String(id) }
        if let members { keys["members"] = members }
        if let data { keys["data"] = data }
        if let clusterId { keys["cluster-id"] = clusterId }
        var configuration = try Serve.replicaConfiguration(keys)
        let made = configuration.clusterID == nil
        let clusterID = configuration.clusterID ?? .random()
        configuration.clusterID = clusterID
        do {
            try await PaxosLog.bootstrap(configuration, clusterID: clusterID)
        } catch {
            complain("\(error)")
            throw OfflineExit.failure
        }
        print("initialized \(configuration.dataDirectory) as node \(configuration.nodeID) of cluster \(clusterID)")
        if made && configuration.members.count > 1 {
            print("new cluster id \(clusterID): run `paxlog init --cluster-id \(clusterID) …` on each other initial member")
        }
    }
}
