import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore
import PaxosLog

/// One replica: a PaxosLog member, its SQLite file, and an HTTP API.
///
///     POST /execute              body: one SQL statement; answers once applied here:
///                                {"position": P, "error": null | "why it failed (everywhere)"}
///     POST /query[?local=1]      body: a read-only query; {"columns": [...], "rows": [[...]]}
///                                linearizable by default (read barrier, then wait until applied);
///                                ?local=1 reads this replica's state as it is (may be stale)
///     GET  /status               {"node", "leader", "applied", "chosen"}
@main
struct ReplicatedSQLite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A replicated SQLite database over PaxosLog, served over HTTP.")

    @Option(help: "This replica's node id.") var id: UInt32
    @Option(help: "Every member: ID=HOST:PEER_PORT:CLIENT_PORT[,…].") var members: String
    @Option(help: "Data directory (the log in log/, the database in db/).") var data: String
    @Option(help: "HTTP port on 127.0.0.1.") var http: Int
    @Option(help: "Bootstrap an empty data directory into this cluster id (the same on every member, first start only).") var bootstrap: String?
    @Option(help: "Compact the log every this many entries (on the database's word: no copy).") var snapshotEvery = 10_000
    @Option(help: "Entries the log keeps below the applied position when it compacts.") var snapshotRetain = 1_000

    func run() async throws {
        var logger = Logger(label: "sqlite-replica-\(id)")
        logger.logLevel = .info
        var configuration = PaxosLog.Configuration(nodeID: id, members: try PaxosLog.Member.parseList(members), dataDirectory: data + "/log")
        configuration.clusterName = "replicated-sqlite"
        configuration.nonLeaderAppends = .forward
        configuration.logger = logger
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        if let bootstrap {
            guard let clusterID = PaxosLog.ClusterID(parsing: bootstrap) else { throw ValidationError("--bootstrap: not a cluster id") }
            if !FileManager.default.fileExists(atPath: data + "/log") {
                _ = try await PaxosLog.bootstrap(configuration, clusterID: clusterID)
            }
        }
        let server = try await PaxosLogServer.start(configuration)
        let log = server.log
        let machine = SQLiteStateMachine(directory: data + "/db")
        let applier = LogApplier(log: log, machine: machine, policy: SnapshotPolicy(everyEntries: snapshotEvery, retainedEntries: snapshotRetain))
        let applying = Task { try await applier.run() }

        let router = Router()
        router.post("execute") { request, _ -> Response in
            let sql = String(buffer: try await request.body.collect(upTo: 1 << 20))
            let position: PaxosLog.Position
            do { position = try await log.append(Array(sql.utf8)) } catch let error as PaxosLogError {
                return Self.json(["error": "\(error)", "appended": error.outcome == .notAppended ? "no" : "unknown"], status: .serviceUnavailable)
            }
            await applier.waitApplied(through: position)
            let failure = try await machine.error(at: position)
            return Self.json(["position": Int(position), "error": failure.map { $0 as Any } ?? NSNull()])
        }
        router.post("query") { request, _ -> Response in
            let sql = String(buffer: try await request.body.collect(upTo: 1 << 20))
            if request.uri.queryParameters.get("local") != "1" {
                do {
                    await applier.waitApplied(through: try await log.readBarrier())
                } catch let error as PaxosLogError {
                    return Self.json(["error": "\(error)", "leader": error.leader.map { Int($0) as Any } ?? NSNull()], status: .serviceUnavailable)
                }
            }
            do {
                return Self.json(data: try await machine.query(sql))
            } catch {
                return Self.json(["error": "\(error)"], status: .badRequest)
            }
        }
        router.get("status") { _, _ -> Response in
            let status = try await log.status()
            return Self.json(["node": Int(status.nodeID), "leader": status.leader.map { Int($0) as Any } ?? NSNull(),
                              "applied": Int(applier.applied), "chosen": Int(status.chosenThrough)])
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: http)), logger: logger)
        print("replica \(id): http on 127.0.0.1:\(http), data in \(data)")
        try await app.runService()
        try await server.shutdown()
        try await applying.value
        try await machine.close()
    }

    static func json(_ object: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        json(data: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8), status: status)
    }

    static func json(data: Data, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
