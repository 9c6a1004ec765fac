import Foundation
import Logging
import MultiPaxos
import NIOPosix
import PaxosTransport
import SegmentLog

/// A cluster of real `paxlog serve` processes on 127.0.0.1, for the demo and end-to-end tests.
///
/// Each replica gets its own data directory and log file under `baseDirectory`, and free ports.
/// Processes are killed when the cluster is deinitialised, so a failed test leaves none behind.
public final class LocalCluster: @unchecked Sendable {
    public struct Node: Sendable {
        public var id: NodeID
        public var peerPort: Int
        public var clientPort: Int
        public var dataDirectory: String
        public var logFile: String
    }

    public let executable: String
    public let baseDirectory: String
    public let clusterName: String
    /// The id `paxlog init` records in every node's directory (random per cluster).
    public let clusterID = ClusterID.random()
    public let nodes: [Node]
    /// Extra `paxlog serve` arguments (e.g. `--secret-file`).
    public var extraArguments: [String]
    /// Extra `paxlog serve` arguments of one replica (e.g. its own TLS certificate or metrics port).
    public var nodeArguments: [NodeID: [String]] = [:]
    /// The peer port each replica dials for each other replica, when not that replica's own
    /// (``ProxiedNetwork`` puts a proxy on every link this way): `peerPorts[viewer][peer]`. Set
    /// before the replicas start; each replica gets its own view in `--members`. The handshake
    /// checks node ids, not ports, so a replica cannot tell a proxy from its peer.
    public var peerPorts: [NodeID: [NodeID: Int]] = [:]
    /// The secret status requests present, when the cluster runs with one.
    public var clientSecret: [UInt8]? = nil
    /// The TLS credentials status requests present, when the cluster runs with TLS.
    public var clientTLS: TLSCredentials? = nil
    private var processes: [NodeID: Process] = [:]
    /// Nodes whose directory this cluster has bootstrapped (`paxlog init`).
    private var bootstrapped: Set<NodeID> = []
    private let lock = NSLock()

    /// - Parameters:
    ///   - executable: path of the `paxlog` binary.
    ///   - size: number of replicas.
    ///   - baseDirectory: where data directories and logs go (created if missing).
    public init(executable: String, size: Int = 3, baseDirectory: String, clusterName: String = "paxoslog-local", extraArguments: [String] = []) throws {
        self.executable = executable
        self.baseDirectory = baseDirectory
        self.clusterName = clusterName
        self.extraArguments = extraArguments
        try FileManager.default.createDirectory(atPath: baseDirectory, withIntermediateDirectories: true)
        let ports = try Self.freePorts(2 * size)
        nodes = (0..<size).map { i in
            Node(
                id: NodeID(i + 1), peerPort: ports[2 * i], clientPort: ports[2 * i + 1],
                dataDirectory: "\(baseDirectory)/node-\(i + 1)", logFile: "\(baseDirectory)/node-\(i + 1).log"
            )
        }
    }

    deinit {
        for (_, p) in processes where p.isRunning { Foundation.kill(p.processIdentifier, SIGKILL) }
    }

    /// `1=127.0.0.1:PEER:CLIENT,…`, as `paxlog serve --members` takes it.
    public var membersArgument: String {
        nodes.map { "\($0.id)=127.0.0.1:\($0.peerPort):\($0.clientPort)" }.joined(separator: ",")
    }

    /// The members as replica `viewer` is told them: its own peer port, and for every other
    /// replica the port in ``peerPorts`` (a proxy) if there is one.
    public func membersArgument(for viewer: NodeID) -> String {
        nodes.map { n in
            let port = n.id == viewer ? n.peerPort : (peerPorts[viewer]?[n.id] ?? n.peerPort)
            return "\(n.id)=127.0.0.1:\(port):\(n.clientPort)"
        }.joined(separator: ",")
    }

    public var clientAddresses: [PeerAddress] {
        nodes.map { PeerAddress(host: "127.0.0.1", port: $0.clientPort) }
    }

    public func node(_ id: NodeID) -> Node { nodes[Int(id) - 1] }

    /// Starts replica `id` (appending to its log file). The first start of each node in this
    /// cluster bootstraps its directory first (``bootstrap(_:)``); later ones never do, so a
    /// replica restarted on a wiped directory is refused, as in production.
    public func start(_ id: NodeID) throws {
        if lock.withLock({ !bootstrapped.contains(id) }) { try bootstrap(id) }
        let p = try launch(id, ["serve", "--id", "\(id)", "--members", membersArgument(for: id), "--data", node(id).dataDirectory,
                                "--cluster", clusterName, "--cluster-id", "\(clusterID)", "--exit-with-parent"] + extraArguments + nodeArguments[id, default: []])
        lock.withLock { processes[id] = p }
    }

    /// Runs `paxlog init` for replica `id` (an initial member of a new cluster) and waits for it.
    /// - Throws: `ClusterError` if init fails (its output is in the node's log file).
    public func bootstrap(_ id: NodeID) throws {
        let p = try launch(id, ["init", "--id", "\(id)", "--members", membersArgument(for: id), "--data", node(id).dataDirectory,
                                "--cluster-id", "\(clusterID)"])
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ClusterError("paxlog init for node \(id) exited \(p.terminationStatus); see \(node(id).logFile)")
        }
        lock.withLock { _ = bootstrapped.insert(id) }
    }

    /// Starts `paxlog` with `arguments`, its output appended to node `id`'s log file.
    private func launch(_ id: NodeID, _ arguments: [String]) throws -> Process {
        let n = node(id)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if !FileManager.default.fileExists(atPath: n.logFile) { _ = FileManager.default.createFile(atPath: n.logFile, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: n.logFile))
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Waits up to `timeout` seconds for replica `id`'s process to exit.
    /// - Returns: its exit status, or nil if it is still running.
    public func waitForExit(_ id: NodeID, timeout: Double) async throws -> Int32? {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            guard let p = lock.withLock({ processes[id] }) else { return nil }
            if !p.isRunning {
                p.waitUntilExit()
                return p.terminationStatus
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        return nil
    }

    public func startAll() throws {
        for n in nodes { try start(n.id) }
    }

    public func isRunning(_ id: NodeID) -> Bool {
        lock.withLock { processes[id]?.isRunning ?? false }
    }

    /// SIGKILL: no chance to flush or sync anything.
    public func kill(_ id: NodeID) {
        guard let p = lock.withLock({ processes[id] }), p.isRunning else { return }
        Foundation.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// SIGTERM and wait: a clean shutdown. - Returns: the exit status.
    ///
    /// A replica frozen with SIGSTOP is thawed first: a stopped process never handles the
    /// SIGTERM, and the wait would never end.
    @discardableResult
    public func terminate(_ id: NodeID) -> Int32 {
        guard let p = lock.withLock({ processes[id] }) else { return 0 }
        if p.isRunning {
            p.terminate()
            Foundation.kill(p.processIdentifier, SIGCONT)
        }
        p.waitUntilExit()
        return p.terminationStatus
    }

    /// Sends `signal` to replica `id` if it runs (e.g. SIGHUP to reload its TLS files, SIGSTOP
    /// to freeze it as a stalled machine would, SIGCONT to thaw it).
    public func signal(_ id: NodeID, _ signal: Int32) {
        guard let p = lock.withLock({ processes[id] }), p.isRunning else { return }
        Foundation.kill(p.processIdentifier, signal)
    }

    /// The process of replica `id`, if it was started.
    public func process(_ id: NodeID) -> Process? { lock.withLock { processes[id] } }

    public func terminateAll() {
        for n in nodes { terminate(n.id) }
    }

    /// Asks each running replica for its status; returns the leader a replica reports as itself.
    public func leader(logger: Logger = Logger(label: "cluster")) async -> NodeID? {
        for n in nodes where isRunning(n.id) {
            if let s = try? await status(n.id, logger: logger), s.leaderID == n.id,
               s.details.contains(where: { $0.key == "is_leader" && $0.value == "true" }) {
                return n.id
            }
        }
        return nil
    }

    /// Waits (polling every 50 ms, up to `timeout` seconds) for a replica to lead.
    public func waitForLeader(timeout: Double = 20) async throws -> NodeID {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if let l = await leader() { return l }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        throw ClusterError("no leader elected within \(timeout) s; logs in \(baseDirectory)")
    }

    /// One replica's status over its client port.
    public func status(_ id: NodeID, logger: Logger = Logger(label: "cluster")) async throws -> ClientStatus {
        var c = PaxosClientConfiguration(addresses: [PeerAddress(host: "127.0.0.1", port: node(id).clientPort)], clusterName: clusterName, secret: clientSecret)
        c.connectTimeout = .milliseconds(500)
        c.tls = clientTLS
        let client = try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        defer { Task { await client.close() } }
        return try await client.status()
    }

    /// One replica's status, or nil if it does not answer within `seconds` (a frozen or
    /// unreachable replica accepts the connection and never answers, and the client's own
    /// handshake timeout is 5 s).
    public func status(_ id: NodeID, within seconds: Double, logger: Logger = Logger(label: "cluster")) async -> ClientStatus? {
        var c = PaxosClientConfiguration(addresses: [PeerAddress(host: "127.0.0.1", port: node(id).clientPort)], clusterName: clusterName, secret: clientSecret)
        c.connectTimeout = .milliseconds(Int64(seconds * 1000))
        c.handshakeTimeout = .milliseconds(Int64(seconds * 1000))
        c.tls = clientTLS
        let configuration = c
        let client = LockedValue<PaxosClient?>(nil)
        let status = try? await withDeadline(seconds, onTimeout: { await client.withLock { $0 }?.close() }) {
            let connected = try await PaxosClient.connect(configuration: configuration, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
            client.withLock { $0 = connected }
            defer { Task { await connected.close() } }
            return try await connected.status()
        }
        return status
    }

    /// Every running replica's status, asked at once, each bounded by `seconds`; those that did
    /// not answer are missing.
    public func statuses(within seconds: Double) async -> [NodeID: ClientStatus] {
        await withTaskGroup(of: (NodeID, ClientStatus?).self) { group in
            for n in nodes where isRunning(n.id) {
                group.addTask { (n.id, await self.status(n.id, within: seconds)) }
            }
            var result: [NodeID: ClientStatus] = [:]
            for await (id, s) in group { if let s { result[id] = s } }
            return result
        }
    }

    /// The replica that says it leads under the highest ballot, among those answering within
    /// `seconds` (a deposed leader cut off from the others may still believe it leads).
    public func leader(within seconds: Double) async -> NodeID? {
        let all = await statuses(within: seconds)
        return all.values.filter { $0.leaderID == $0.nodeID && $0.details.contains(ClientStatus.Detail("is_leader", "true")) }
            .max { $0.ballot < $1.ballot }?.nodeID
    }

    /// The last `lines` lines of every replica's log, for a failure message.
    public func logTails(lines: Int = 30) -> String {
        nodes.map { n in
            let text = (try? String(contentsOfFile: n.logFile, encoding: .utf8)) ?? "(no log)"
            let tail = text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
            return "--- node \(n.id) (\(n.logFile)) ---\n\(tail)"
        }.joined(separator: "\n")
    }

    /// Ports free now: random ones below Linux's ephemeral range (32768 up), each bound once to
    /// check, then released. Not port 0: the kernel hands out ephemeral ports, which any
    /// outgoing connection (another test's client) may take as its own before the caller binds.
    public static func freePorts(_ count: Int) throws -> [Int] {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        var ports: [Int] = []
        var attempts = 0
        while ports.count < count {
            attempts += 1
            guard attempts < 10_000 else { throw ClusterError("no free port found in 15000..<32768") }
            let port = Int.random(in: 15_000..<32_768)
            if ports.contains(port) { continue }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw ClusterError("socket: errno \(errno)") }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &addr) { ptr in
                ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 }
            }
            guard bound else { close(fd); continue }
            fds.append(fd)
            ports.append(port)
        }
        return ports
    }
}

public struct ClusterError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
