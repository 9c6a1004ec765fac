import ArgumentParser
import Dispatch
import Foundation
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import PaxosLog
import SegmentLog
import ServiceLifecycle

/// `paxlog serve`: runs one replica, under swift-service-lifecycle, until SIGTERM or SIGINT.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one replica: peers on its peer port, clients on its client port.",
        discussion: """
        Members are ID=HOST:PORT[:CLIENTPORT] (client port defaults to PORT+1000). \
        --config FILE takes the same keys, one `key = value` per line (id, members, data, \
        client-port, cluster, cluster-id, secret-file, sync, metrics, tls-cert, tls-key, tls-ca, \
        tls-require-client-cert); flags override it. With --tls-cert/--tls-key/--tls-ca, peers speak \
        mutual TLS 1.3 and clients TLS 1.3; SIGHUP reloads the three files (for rotation). Without a \
        secret or TLS, anyone who can reach the ports can join or append: do not expose them beyond a \
        trusted network.

        Bootstrapping is explicit: before the first start of a new cluster, run `paxlog init` \
        once on each initial member, with one shared --cluster-id. A member of a multi-member \
        cluster refuses to start on a directory with no log (exit 2, the reason on stderr): an \
        empty acceptor that votes could forget a promise it made before its disk was lost, and \
        lose acknowledged records. It also refuses a directory of another node or cluster, and \
        one whose records were cut by tolerant recovery or `paxlog repair \
        --truncate-after-corruption` (it must rejoin as a learner, which is not yet available). \
        A one-member cluster needs no init. A directory from before identities is adopted on \
        first start.
        """
    )

    @Option(help: "Configuration file with the same keys as the flags.") var config: String?
    @Option(help: "This replica's id.") var id: UInt32?
    @Option(help: "All members: ID=HOST:PORT[:CLIENTPORT],…") var members: String?
    @Option(help: "Data directory.") var data: String?
    @Option(help: "Client port; must agree with this node's in --members (ID=HOST:PORT:CLIENTPORT, default PORT+1000), where the other replicas redirect clients.") var clientPort: Int?
    @Option(help: "Cluster name; peers and clients of another cluster are refused.") var cluster: String?
    @Option(help: "Cluster id (from `paxlog init`); when given, a data directory of another cluster is refused.") var clusterId: String?
    @Option(help: "Join a running cluster (HOST:PORT,…) with no state. Not yet available: refused on an empty directory, ignored on an initialized one.")
    var join: String?
    @Option(help: "File holding the shared secret.") var secretFile: String?
    @Option(help: "Sync policy: always, interval, never.") var sync: String?
    @Option(help: "LZ4 compression of large batch records: on (default) or off.") var compression: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: String = "info"
    @Option(help: "Run this built-in state machine over the log (kv) and compact by --snapshot-every.") var stateMachine: String?
    @Option(help: "With --state-machine: compact after this many applied entries.") var snapshotEvery: Int?
    @Option(help: "With --state-machine: entries kept in the log below each snapshot, so a follower that far behind catches up from the log, not a snapshot transfer (default 128).")
    var snapshotRetain: Int?
    @Option(help: "Segment file size in bytes (default 64 MiB).") var segmentSize: Int?
    @Option(help: "Segment files compaction keeps for reuse instead of deleting (default 4; 0 deletes them).") var recycleSegments: Int?
    @Option(help: "TLS: this replica's certificate (PEM); it must name the node as URI SAN paxoslog://node/ID. Needs --tls-key and --tls-ca.") var tlsCert: String?
    @Option(help: "TLS: the certificate's private key (PEM).") var tlsKey: String?
    @Option(help: "TLS: the CA certificate(s) (PEM) that sign members' and clients' certificates.") var tlsCa: String?
    @Option(help: "TLS: require clients to present a certificate signed by the CA: yes or no (default no).") var tlsRequireClientCert: String?
    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).") var metrics: String?
    @Option(help: "Seconds a SIGTERM/SIGINT shutdown may take before the process exits anyway (default 10).") var shutdownTimeout: Double = 10
    @Flag(help: .hidden) var exitWithParent = false

    func run() async throws {
        var keys = try config.map(Self.readConfig) ?? [:]
        func set(_ k: String, _ v: String?) { if let v { keys[k] = v } }
        set("id", id.map(String.init)); set("members", members); set("data", data)
        set("client-port", clientPort.map(String.init)); set("cluster", cluster)
        set("cluster-id", clusterId); set("secret-file", secretFile); set("sync", sync); set("metrics", metrics)
        set("tls-cert", tlsCert); set("tls-key", tlsKey); set("tls-ca", tlsCa); set("tls-require-client-cert", tlsRequireClientCert)

        var configuration = try Self.replicaConfiguration(keys)
        let nodeID = configuration.nodeID, list = configuration.members, dataDirectory = configuration.dataDirectory
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("--log-level: unknown level '\(logLevel)'") }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        configuration.secret = try readSecret(keys["secret-file"])
        configuration.logger = Logger(label: "paxlog.serve.\(nodeID)")
        if let s = keys["sync"] { configuration.storage.syncPolicy = try parseSyncPolicy(s) }
        configuration.tls = try Self.loadTLS(keys, nodeID: nodeID)
        switch compression {
        case nil, "on": break
        case "off": configuration.storage.compressionThreshold = Int.max
        case let other?: throw ValidationError("--compression must be on or off, not '\(other)'")
        }

        if let size = segmentSize { configuration.storage.segmentSize = size }
        if let n = recycleSegments {
            guard n >= 0 else { throw ValidationError("--recycle-segments must not be negative") }
            configuration.storage.recycleSegments = n
        }
        if let m = stateMachine, m != "kv" { throw ValidationError("--state-machine: only 'kv' is built in") }
        if let n = snapshotEvery, n < 1 { throw ValidationError("--snapshot-every must be positive") }
        if let n = snapshotRetain, n < 0 { throw ValidationError("--snapshot-retain must not be negative") }
        if stateMachine == nil, snapshotEvery != nil || snapshotRetain != nil {
            throw ValidationError("--snapshot-every and --snapshot-retain need --state-machine")
        }

        let metricsEndpoint = try await keys["metrics"].asyncMap { try await Self.startMetrics(address: $0, nodeID: nodeID, logger: configuration.logger) }
        let server: PaxosLogServer
        do {
            server = try await PaxosLogServer.start(configuration)
        } catch let error as PaxosLogError where [.notBootstrapped, .wrongIdentity, .needsRejoin].contains(error.code) {
            await metricsEndpoint?.0.shutdown()
            // Refusals an operator must act on: one line on stderr, exit 2.
            if error.code == .notBootstrapped, join != nil {
                complain("node \(nodeID) cannot join with an empty directory yet: rejoining as a non-voting learner is not yet available, "
                    + "and an empty replica must never vote. Nothing was written; keep it stopped (the others stay available while a majority of them is up)")
            } else {
                complain("node \(nodeID) refuses to start: \(error)")
            }
            throw OfflineExit.failure
        } catch {
            await metricsEndpoint?.0.shutdown()
            throw error
        }
        metricsEndpoint?.1.withLockedValue { $0 = server.log }
        if join != nil { configuration.logger.notice("--join ignored: the data directory already belongs to this cluster") }
        var runnerTask: Task<Void, Never>? = nil
        if stateMachine != nil {
            let runner = StateMachineRunner<KeyValueStateMachine>(log: server.log, policy: SnapshotPolicy(everyEntries: snapshotEvery, retainedEntries: snapshotRetain ?? 128))
            let logger = configuration.logger
            runnerTask = Task {
                do { try await runner.run() } catch { logger.error("state machine stopped: \(error)") }
            }
        }
        FileHandle.standardOutput.write(Data("serving node \(nodeID) of \(list.count): clients on \(server.clientAddress), data in \(dataDirectory)\n".utf8))
        guard shutdownTimeout > 0 else { throw ValidationError("--shutdown-timeout must be positive") }
        Self.reloadOnHangup(configuration.tls, logger: configuration.logger)
        let logger = configuration.logger
        let timeout = shutdownTimeout
        let runner = runnerTask
        let replica = ReplicaService(server: server, logger: logger) {
            Self.exitIfShutdownTakesLongerThan(timeout)
        } afterShutdown: {
            await metricsEndpoint?.0.shutdown()
            await runner?.value
        }
        // swift-service-lifecycle turns SIGTERM and SIGINT into a graceful shutdown of the replica.
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [.init(service: replica)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        Self.exitOnSecondSignal()
        if exitWithParent { Self.watchParent { Task { await group.triggerGracefulShutdown() } } }
        try await group.run()
    }

    /// The replica under swift-service-lifecycle: serves until graceful shutdown, then hands
    /// leadership over if it leads, fails waiting appends (with their outcomes), finishes
    /// in-flight syncs, closes sockets and releases the directory lock.
    struct ReplicaService: Service {
        let server: PaxosLogServer
        let logger: Logger
        /// Arms the bound on how long the shutdown may take.
        let beforeShutdown: @Sendable () -> Void
        let afterShutdown: @Sendable () async -> Void

        func run() async throws {
            // Returns when the group shuts down gracefully; throws if it is cancelled instead,
            // which shuts down all the same.
            try? await gracefulShutdown()
            logger.info("shutting down: failing waiting appends, finishing syncs, closing sockets")
            beforeShutdown()
            // A leader hands over first: clients then wait for one transfer, not an election.
            if let next = await server.log.handOffLeadership() { logger.info("handed leadership to node \(next)") }
            try await server.shutdown()
            logger.info("shut down cleanly")
            await afterShutdown()
        }
    }

    /// The replica's identity and place in the cluster from `key = value` settings (flags or
    /// `--config`): id, members, data, client-port, cluster, cluster-id. Shared with `init`.
    static func replicaConfiguration(_ keys: [String: String]) throws -> PaxosLog.Configuration {
        guard let idText = keys["id"], let nodeID = UInt32(idText) else { throw ValidationError("--id is required (a member id)") }
        guard let membersText = keys["members"] else { throw ValidationError("--members is required") }
        guard let dataDirectory = keys["data"] else { throw ValidationError("--data is required") }
        let list = try PaxosLog.Member.parseList(membersText)
        if let p = keys["client-port"] {
            guard let port = Int(p), (1...65535).contains(port), let me = list.first(where: { $0.id == nodeID }) else {
                throw ValidationError("--client-port: '\(p)' is not a port, or --id is not a member")
            }
            // The other replicas send clients to the client address --members gives this node:
            // listening elsewhere would strand every client they redirect here.
            guard port == me.clientAddress.port else {
                throw ValidationError(Self.clientPortMismatch(port: port, member: me, members: list))
            }
        }
        var configuration = PaxosLog.Configuration(nodeID: nodeID, members: list, dataDirectory: dataDirectory)
        configuration.clusterName = keys["cluster"] ?? "paxoslog"
        if let text = keys["cluster-id"] {
            guard let id = PaxosLog.ClusterID(parsing: text) else { throw ValidationError("--cluster-id: '\(text)' is not 32 hex digits") }
            configuration.clusterID = id
        }
        return configuration
    }

    /// Why `--client-port PORT` is refused: every replica redirects clients to the client address
    /// `--members` gives the leader, and only this replica would know about the override.
    static func clientPortMismatch(port: Int, member: PaxosLog.Member, members: [PaxosLog.Member]) -> String {
        var fixed = members
        if let i = fixed.firstIndex(where: { $0.id == member.id }) { fixed[i].clientAddress.port = port }
        return "--client-port \(port) disagrees with --members, which gives node \(member.id) the client port "
            + "\(member.clientAddress.port); the other replicas would redirect clients to \(member.clientAddress), where "
            + "nothing listens. Give every member's client port in --members (on every replica), e.g. "
            + "--members \(fixed.map(\.description).joined(separator: ",")), and drop --client-port or make it agree"
    }

    /// Signal sources live as long as the process: a released source stops delivering.
    nonisolated(unsafe) private static var signalSources: [any DispatchSourceSignal] = []
    nonisolated(unsafe) private static var parentWatch: (any DispatchSourceTimer)?

    /// A second SIGTERM or SIGINT (the first starts the service group's graceful shutdown) exits
    /// at once (status 130) without closing anything: acknowledged appends are durable already,
    /// so that loses nothing but waiting callers' answers.
    static func exitOnSecondSignal() {
        let queue = DispatchQueue(label: "paxlog.signals")
        let seen = NIOLockedValueBox(false)
        for sig in [SIGTERM, SIGINT] {
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler {
                let again = seen.withLockedValue { s in defer { s = true }; return s }
                guard again else { return }
                FileHandle.standardError.write(Data("paxlog: second signal: exiting without a clean shutdown\n".utf8))
                _exit(130)
            }
            source.resume()
            signalSources.append(source)
        }
    }

    /// Calls `gone` once the parent process has exited: replicas started by a test or the demo
    /// must not outlive it, even when it is killed.
    static func watchParent(_ gone: @escaping @Sendable () -> Void) {
        let parent = getppid()
        let once = NIOLockedValueBox(false)
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "paxlog.parent"))
        timer.schedule(deadline: .now() + .milliseconds(200), repeating: .milliseconds(200))
        timer.setEventHandler {
            guard getppid() != parent, once.withLockedValue({ f in defer { f = true }; return !f }) else { return }
            gone()
        }
        timer.resume()
        parentWatch = timer
    }

    /// Exits the process (status 1, naming the timeout) if it is still running `seconds` from now:
    /// a shutdown stuck on a hung disk or peer must not keep a service manager waiting forever.
    static func exitIfShutdownTakesLongerThan(_ seconds: Double) {
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
            FileHandle.standardError.write(Data("paxlog: shutdown did not finish within \(seconds) s; exiting\n".utf8))
            _exit(1)
        }
    }

    /// `key = value` lines; `#` starts a comment.
    static func readConfig(_ path: String) throws -> [String: String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIError("cannot read config file \(path)") }
        var keys: [String: String] = [:]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? ""
            if line.isEmpty { continue }
            let kv = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            let known = ["id", "members", "data", "client-port", "cluster", "cluster-id", "secret-file", "sync", "metrics",
                         "tls-cert", "tls-key", "tls-ca", "tls-require-client-cert"]
            guard kv.count == 2, known.contains(kv[0]) else { throw CLIError("\(path):\(n + 1): expected one of \(known.joined(separator: ", ")) = value") }
            keys[kv[0]] = kv[1]
        }
        return keys
    }
}

func parseSyncPolicy(_ text: String) throws -> SyncPolicy {
    switch text {
    case "always": return .always
    case "never": return .never
    case "interval": return .interval(milliseconds: 5)
    default: throw ValidationError("sync policy must be always, interval or never, not '\(text)'")
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let self else { return nil }
        return try await transform(self)
    }
}
