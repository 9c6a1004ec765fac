import Foundation
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PaxosLogTesting
import PaxosTransport
import SegmentLog
import Testing

/// The `paxlog` binary beside the test bundle (`swift test` builds it: this target depends on it).
func paxlogExecutable() throws -> String {
    // Another build's binary, to measure before and after a change (`PAXOS_PAXLOG=/path/to/paxlog`).
    if let path = ProcessInfo.processInfo.environment["PAXOS_PAXLOG"] { return path }
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    for candidate in ["\(dir)/paxlog", "\(dir)/../paxlog"] where FileManager.default.isExecutableFile(atPath: candidate) {
        return candidate
    }
    throw ClusterError("paxlog binary not found next to \(CommandLine.arguments[0]); run `swift build` first")
}

/// Runs `body` on a fresh cluster. On success the directories are removed; on failure they are
/// kept and every replica's log tail is printed, so a CI failure can be diagnosed.
func withCluster(_ name: String, extra: [String] = [], _ body: (LocalCluster) async throws -> Void) async throws {
    let cluster = try makeCluster(name, extra: extra)
    do {
        try await body(cluster)
    } catch {
        cluster.terminateAll()
        print("test failed: \(error); replica logs kept in \(cluster.baseDirectory)\n\(cluster.logTails())")
        throw error
    }
    cluster.terminateAll()
    try? FileManager.default.removeItem(atPath: cluster.baseDirectory)
}

func makeCluster(_ name: String, extra: [String] = []) throws -> LocalCluster {
    let dir = NSTemporaryDirectory() + "paxoslog-e2e-\(name)-\(getpid())"
    try? FileManager.default.removeItem(atPath: dir)
    return try LocalCluster(executable: try paxlogExecutable(), size: 3, baseDirectory: dir, clusterName: "e2e-\(name)", extraArguments: extra)
}

/// Closed-loop appenders: each stream appends unique records one at a time and records what
/// was acknowledged. Errors are counted, never retried (a retry could duplicate).
final class Load: Sendable {
    struct Ack: Hashable, Sendable { var slot: Slot; var bytes: [UInt8] }
    let acks = NIOLockedValueBox<[Ack]>([])
    /// Acknowledgements of earlier rounds (see `reset`).
    let older = NIOLockedValueBox<[Ack]>([])
    let failures = NIOLockedValueBox(0)
    let stopFlag = NIOLockedValueBox(false)
    private let counter = NIOLockedValueBox(0)

    /// Records `"<tag>-<n>"`.
    func run(_ cluster: LocalCluster, streams: Int, tag: String) async {
        await run(cluster, streams: streams) { Array("\(tag)-\($0)".utf8) }
    }

    /// Appends `record(n)` for n = 1, 2, … (unique across streams and rounds) until `stop`.
    func run(_ cluster: LocalCluster, streams: Int, record: @escaping @Sendable (Int) -> [UInt8]) async {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<streams {
                group.addTask {
                    var client: PaxosClient?
                    while !self.stopFlag.withLockedValue({ $0 }) {
                        do {
                            if client == nil {
                                var c = PaxosClientConfiguration(addresses: cluster.clientAddresses, clusterName: cluster.clusterName, secret: cluster.clientSecret)
                                c.connectTimeout = .milliseconds(300)
                                c.tls = cluster.clientTLS
                                client = try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "load"))
                            }
                            let bytes = record(self.counter.withLockedValue { n -> Int in n += 1; return n })
                            let slot = try await client!.append([bytes])[0]
                            self.acks.withLockedValue { $0.append(Ack(slot: slot, bytes: bytes)) }
                        } catch {
                            self.failures.withLockedValue { $0 += 1 }
                            if let c = client { await c.close() }
                            client = nil
                            try? await Task.sleep(nanoseconds: 20_000_000)
                        }
                    }
                    if let c = client { await c.close() }
                }
            }
        }
    }

    func stop() { stopFlag.withLockedValue { $0 = true } }
    /// Starts a new round: acks so far move to `older`, the count restarts.
    func reset() {
        let a = acks.withLockedValue { a -> [Ack] in defer { a = [] }; return a }
        older.withLockedValue { $0 += a }
        stopFlag.withLockedValue { $0 = false }
    }
    var ackCount: Int { acks.withLockedValue { $0.count } }
    var allAcks: [Ack] { older.withLockedValue { $0 } + acks.withLockedValue { $0 } }
}

/// Waits until `condition` holds (polling), failing after `seconds`.
func eventually(_ what: String, seconds: Double = 30, _ condition: () async -> Bool) async throws {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if await condition() { return }
        try await Task.sleep(nanoseconds: 50_000_000)
    }
    throw ClusterError("timed out after \(seconds) s waiting for \(what)")
}

/// Stops every replica, then reads each data directory offline: the chosen logs must be
/// identical and hold every acknowledged record at its acknowledged slot.
func verifyOffline(_ cluster: LocalCluster, _ acks: [Load.Ack]) throws {
    cluster.terminateAll()
    var logs: [[Slot: LogEntry]] = []
    for n in cluster.nodes {
        let store = try SegmentStore.open(directory: n.dataDirectory, logger: Logger(label: "verify"))
        defer { try? store.close() }
        let through = store.state.chosenThrough ?? 0
        var chosen: [Slot: LogEntry] = [:]
        if through > 0 { for e in try store.entries(from: 1, through: through) { chosen[e.slot] = e } }
        #expect(chosen.count == Int(through), "node \(n.id): chosen prefix through \(through) has \(chosen.count) entries")
        for a in acks {
            let e = chosen[a.slot]
            #expect(e != nil && e!.isNoop == false && e!.payload == a.bytes, "node \(n.id): acknowledged record at slot \(a.slot) is missing or different")
        }
        logs.append(chosen)
    }
    let common = logs.map(\.count).min() ?? 0
    for slot in stride(from: Slot(1), through: Slot(common), by: 1) {
        let values = logs.map { $0[slot] }
        #expect(values.allSatisfy { $0?.payload == values[0]?.payload && $0?.isNoop == values[0]?.isNoop }, "replicas disagree at slot \(slot)")
    }
}

/// Stops `load`, waits until every replica has learned the last slot it acknowledged, then
/// reads every data directory offline (`verifyOffline`).
func stopLoadAndVerify(_ cluster: LocalCluster, _ load: Load, _ running: Task<Void, Never>) async throws {
    load.stop()
    await running.value
    let acks = load.acks.withLockedValue { $0 }
    let top = acks.map(\.slot).max() ?? 0
    for n in cluster.nodes { try await eventually("node \(n.id) catching up") { await chosenThrough(cluster, n.id) >= top } }
    try verifyOffline(cluster, acks)
}

func chosenThrough(_ cluster: LocalCluster, _ id: NodeID) async -> Slot {
    (try? await cluster.status(id).chosenThrough) ?? 0
}

@Suite(.serialized) struct ProcessClusterTests {
    func killUnderLoad(victimIsLeader: Bool) async throws {
        try await withCluster(victimIsLeader ? "kill-leader" : "kill-follower") { cluster in
        try cluster.startAll()
        let leader = try await cluster.waitForLeader()
        let load = Load()
        let running = Task { await load.run(cluster, streams: 8, tag: "k") }
        try await eventually("appends before the kill") { load.ackCount >= 200 }

        let victim = victimIsLeader ? leader : cluster.nodes.map(\.id).first { $0 != leader }!
        cluster.kill(victim)
        let before = load.ackCount
        // Appends are acknowledged again (after a new election, if the leader died).
        try await eventually("appends after the kill") { load.ackCount >= before + 200 }
        if victimIsLeader {
            let newLeader = try await cluster.waitForLeader()
            #expect(newLeader != victim)
        }
        try cluster.start(victim)
        try await eventually("appends after the restart") { load.ackCount >= before + 400 }
        load.stop()
        await running.value
        let acks = load.acks.withLockedValue { $0 }
        let top = acks.map(\.slot).max() ?? 0
        try await eventually("the restarted replica catching up") { await chosenThrough(cluster, victim) >= top }
        for n in cluster.nodes { try await eventually("node \(n.id) catching up") { await chosenThrough(cluster, n.id) >= top } }
        try verifyOffline(cluster, acks)
        }
    }

    @Test func leaderKilledUnderLoadLosesNothing() async throws {
        try await killUnderLoad(victimIsLeader: true)
    }

    @Test func followerKilledUnderLoadLosesNothing() async throws {
        try await killUnderLoad(victimIsLeader: false)
    }

    @Test func withoutAMajorityNothingIsAcknowledged() async throws {
        try await withCluster("no-majority") { cluster in
        try cluster.startAll()
        let leader = try await cluster.waitForLeader()
        let others = cluster.nodes.map(\.id).filter { $0 != leader }
        cluster.kill(others[0])
        cluster.kill(others[1])
        // The survivor cannot reach a majority: an append fails (or times out) with an error.
        var c = PaxosClientConfiguration(addresses: [PeerAddress(host: "127.0.0.1", port: cluster.node(leader).clientPort)], clusterName: cluster.clusterName)
        c.maxRedirects = 0
        let client = try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
        var acknowledged = 0
        for i in 0..<3 {
            if (try? await client.append([Array("lonely-\(i)".utf8)])) != nil { acknowledged += 1 }
        }
        await client.close()
        #expect(acknowledged == 0)
        // With the majority back, appends resume.
        try cluster.start(others[0])
        try cluster.start(others[1])
        let load = Load()
        let running = Task { await load.run(cluster, streams: 2, tag: "back") }
        try await eventually("appends after the majority returns", seconds: 40) { load.ackCount >= 20 }
        try await stopLoadAndVerify(cluster, load, running)
        }
    }

    @Test func strangersWrongSecretsAndGarbageAreRefused() async throws {
        let dir = NSTemporaryDirectory() + "paxoslog-e2e-secretfile-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data("right secret\n".utf8).write(to: URL(fileURLWithPath: "\(dir)/secret"))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await withCluster("secret", extra: ["--secret-file", "\(dir)/secret"]) { cluster in
        cluster.clientSecret = Array("right secret".utf8)
        try cluster.startAll()
        _ = try await cluster.waitForLeader()
        let group = MultiThreadedEventLoopGroup.singleton
        let address = PeerAddress(host: "127.0.0.1", port: cluster.nodes[0].clientPort)
        // Wrong secret, no secret, wrong cluster name: refused at the handshake.
        for (cluster_, secret) in [(cluster.clusterName, Array("wrong".utf8)), (cluster.clusterName, nil), ("other-cluster", Array("right secret".utf8))] {
            let c = PaxosClientConfiguration(addresses: [address], clusterName: cluster_, secret: secret)
            await #expect(throws: (any Error).self) {
                let client = try await PaxosClient.connect(configuration: c, group: group, logger: Logger(label: "t"))
                _ = try await client.status()
            }
        }
        // Random bytes at both ports of every replica.
        var rng = SystemRandomNumberGenerator()
        for n in cluster.nodes {
            for port in [n.peerPort, n.clientPort] {
                let channel = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get()
                var buffer = channel.allocator.buffer(capacity: 4096)
                for _ in 0..<4096 { buffer.writeInteger(UInt8.random(in: 0...255, using: &rng)) }
                try? await channel.writeAndFlush(buffer).get()
                try? await channel.close().get()
            }
        }
        // Every replica is still alive and the cluster still works with the right secret.
        for n in cluster.nodes { #expect(cluster.isRunning(n.id), "node \(n.id) died from garbage") }
        let good = PaxosClientConfiguration(addresses: cluster.clientAddresses, clusterName: cluster.clusterName, secret: Array("right secret".utf8))
        var slot: Slot = 0
        try await eventually("an append with the right secret") {
            guard let client = try? await PaxosClient.connect(configuration: good, group: group, logger: Logger(label: "t")) else { return false }
            defer { Task { await client.close() } }
            if let s = try? await client.append([Array("welcome".utf8)]) { slot = s[0]; return true }
            return false
        }
        #expect(slot > 0)
        }
    }
}
