import Foundation
import Logging
import Metrics
import MultiPaxos
import NIOConcurrencyHelpers
import NIOPosix
import PaxosLog
import PaxosLogTesting
import PaxosTransport
import SegmentLog
import Testing

func temporaryDirectory(_ name: String) -> String {
    let path = NSTemporaryDirectory() + "paxoslog-tests-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Collects the first `count` entries of a log (fails the test after `seconds`).
func firstEntries(_ log: PaxosLog, count: Int, seconds: Double = 20) async throws -> [PaxosLog.Entry] {
    try await withTimeout(seconds: seconds) {
        var out: [PaxosLog.Entry] = []
        for try await e in log.entries(from: 1) {
            // Positions and bytes: the identities are the appenders' (RetryTests checks them).
            out.append(PaxosLog.Entry(position: e.position, bytes: e.bytes))
            if out.count == count { break }
        }
        return out
    }
}

/// Runs `body`, failing the test instead of hanging if it takes longer than `seconds`. A body
/// that never returns is left behind: a task group would wait for it, cancelled or not.
func withTimeout<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let outcome = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
    return try await withCheckedThrowingContinuation { continuation in
        outcome.withLockedValue { $0 = continuation }
        let finish: @Sendable (Result<T, any Error>) -> Void = { result in
            outcome.withLockedValue { c in
                c?.resume(with: result)
                c = nil
            }
        }
        let timer = Task {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            finish(.failure(ClusterError("timed out after \(seconds) s")))
        }
        Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            timer.cancel()
            finish(result)
        }
    }
}

@Suite struct LocalWALTests {
    @Test func appendsSurviveReopenInOrder() async throws {
        let dir = temporaryDirectory("local")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var positions: [PaxosLog.Position] = []
        do {
            let log = try await PaxosLog.open(.local(dataDirectory: dir))
            for i in 0..<50 { positions.append(try await log.append(Array("record \(i)".utf8))) }
            positions += try await log.append(contentsOf: (50..<300).map { Array("record \($0)".utf8) })
            try await log.close()
        }
        #expect(positions == positions.sorted())
        #expect(Set(positions).count == 300)

        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        let entries = try await firstEntries(log, count: 300)
        #expect(entries.map(\.position) == positions)
        #expect(entries.map { String(decoding: $0.bytes, as: UTF8.self) } == (0..<300).map { "record \($0)" })
        // Appends continue after the restart, after everything before it.
        let next = try await log.append(Array("after reopen".utf8))
        #expect(next > positions.last!)
        try await log.close()
    }

    @Test func aClosedLogRecordsEverySlotItKnewChosen() async throws {
        let dir = temporaryDirectory("chosen-on-close")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        var last: PaxosLog.Position = 0
        for i in 0..<20 { last = try await log.append(Array("record \(i)".utf8)) }
        // At once: the chosen watermark otherwise waits for the next tick to be written.
        try await log.close()
        let store = try SegmentStore.open(directory: dir, logger: Logger(label: "test"))
        let state = store.state
        try store.close()
        #expect(state.chosenThrough == last, "offline tools (compact --through) need the chosen watermark on disk")
    }

    @Test func oversizedRecordIsRefusedAndTheLogGoesOn() async throws {
        let dir = temporaryDirectory("oversized")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = PaxosLog.Configuration.local(dataDirectory: dir)
        c.maxRecordSize = 1024
        let log = try await PaxosLog.open(c)
        do {
            _ = try await log.append(contentsOf: [[1], Array(repeating: 7, count: 1025)])
            Issue.record("an oversized record was accepted")
        } catch let e as PaxosLogError {
            #expect(e.code == .invalidArgument)
        }
        let p = try await log.append(Array(repeating: 7, count: 1024))
        #expect(try await firstEntries(log, count: 1).map(\.position) == [p])
        try await log.close()
    }

    @Test func closedLogRefusesAppends() async throws {
        let dir = temporaryDirectory("closed")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        try await log.close()
        await #expect(throws: PaxosLogError.self) { try await log.append([1, 2, 3]) }
    }

    @Test func secondOpenOfADirectoryIsRefused() async throws {
        let dir = temporaryDirectory("locked")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        await #expect(throws: (any Error).self) { _ = try await PaxosLog.open(.local(dataDirectory: dir)) }
        try await log.close()
    }

    @Test func invalidConfigurationsAreErrorsNotCrashes() async throws {
        let dir = temporaryDirectory("invalid")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = PaxosLog.Configuration.local(dataDirectory: dir)
        c.nodeID = 7
        await #expect(throws: PaxosLogError.self) { _ = try await PaxosLog.open(c) }
        c = .local(dataDirectory: dir)
        c.members.append(c.members[0])
        await #expect(throws: PaxosLogError.self) { _ = try await PaxosLog.open(c) }
        c = .local(dataDirectory: dir)
        c.appendHold = .microseconds(-1)
        await #expect(throws: PaxosLogError.self) { _ = try await PaxosLog.open(c) }
        #expect(throws: PaxosLogError.self) { _ = try PaxosLog.Member.parseList("1=127.0.0.1:notaport") }
        #expect(throws: PaxosLogError.self) { _ = try PaxosLog.Member.parseList("x=127.0.0.1:7000") }
        #expect(try PaxosLog.Member.parseList("1=127.0.0.1:7101,2=127.0.0.1:7102:9000").map(\.clientAddress.port) == [8101, 9000])
    }
}

/// Three replicas in one process over loopback TCP.
@Suite struct InProcessClusterTests {
    static func openCluster(_ name: String, nonLeader: PaxosLog.NonLeaderAppends = .redirect,
                            metricsFactory: (any MetricsFactory)? = nil) async throws -> (logs: [PaxosLog], dir: String) {
        let (servers, dir) = try await startServers(name, nonLeader: nonLeader, metricsFactory: metricsFactory)
        return (servers.map(\.log), dir)
    }

    /// Replicas that also serve clients (forwarding goes to the leader's client port).
    static func startServers(_ name: String, nonLeader: PaxosLog.NonLeaderAppends = .redirect,
                             metricsFactory: (any MetricsFactory)? = nil) async throws -> (servers: [PaxosLogServer], dir: String) {
        let dir = temporaryDirectory(name)
        let members = PaxosLog.Member.loopback(ports: try LocalCluster.freePorts(6))
        var servers: [PaxosLogServer] = []
        let clusterID = PaxosLog.ClusterID.random()
        for m in members {
            var c = PaxosLog.Configuration(nodeID: m.id, members: members, dataDirectory: "\(dir)/node-\(m.id)")
            c.nonLeaderAppends = nonLeader
            c.clusterName = "in-process"
            c.metricsFactory = metricsFactory
            try await PaxosLog.bootstrap(c, clusterID: clusterID)
            servers.append(try await PaxosLogServer.start(c))
        }
        return (servers, dir)
    }

    /// A client of `server`'s client port alone (following at most `maxRedirects` redirects).
    static func client(of server: PaxosLogServer, maxRedirects: Int = 5) async throws -> PaxosClient {
        var config = PaxosClientConfiguration(addresses: [PeerAddress(host: "127.0.0.1", port: try #require(server.clientAddress.port))], clusterName: "in-process")
        config.maxRedirects = maxRedirects
        return try await PaxosClient.connect(configuration: config, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "test"))
    }

    static func waitForLeader(_ logs: [PaxosLog]) async throws -> PaxosLog {
        for _ in 0..<400 {
            for l in logs where try await l.status().isLeader { return l }
            try await Task.sleep(nanoseconds: 25_000_000)
        }
        throw ClusterError("no leader within 10 s")
    }

    @Test func everyReplicaReadsTheSameRecordsInOrder() async throws {
        let (logs, dir) = try await Self.openCluster("replicated")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await Self.waitForLeader(logs)
        let records = (0..<200).map { Array("value-\($0)".utf8) }
        var positions: [PaxosLog.Position] = []
        try await withThrowingTaskGroup(of: [PaxosLog.Position].self) { group in
            for chunk in stride(from: 0, to: 200, by: 20) {
                group.addTask { try await leader.append(contentsOf: Array(records[chunk..<chunk + 20])) }
            }
            for try await p in group { positions += p }
        }
        #expect(Set(positions).count == 200)
        var views: [[PaxosLog.Entry]] = []
        for l in logs { views.append(try await firstEntries(l, count: 200)) }
        #expect(views[0] == views[1])
        #expect(views[1] == views[2])
        #expect(Set(views[0].map(\.bytes)) == Set(records))
        for l in logs { try await l.close() }
    }

    @Test func followerForwardsToTheLeader() async throws {
        let (servers, dir) = try await Self.startServers("forward", nonLeader: .forward)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let logs = servers.map(\.log)
        let leader = try await Self.waitForLeader(logs)
        let leaderID = try await leader.status().nodeID
        let follower = logs.first { $0 !== leader }!
        for _ in 0..<200 where try await follower.status().leader != leaderID { try await Task.sleep(nanoseconds: 25_000_000) }
        let position = try await follower.append(Array("forwarded".utf8))
        let seen = try await firstEntries(follower, count: 1)
        #expect(seen == [PaxosLog.Entry(position: position, bytes: Array("forwarded".utf8))])
        for s in servers { try await s.shutdown() }
    }

    /// A client of a follower's port, forbidden to follow redirects, still gets its append in:
    /// the follower's server takes it on its loop and forwards it to the leader.
    @Test func clientAppendThroughAForwardingFollower() async throws {
        let (servers, dir) = try await Self.startServers("client-forward", nonLeader: .forward)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let logs = servers.map(\.log)
        let leader = try await Self.waitForLeader(logs)
        let leaderID = try await leader.status().nodeID
        let follower = servers.first { $0.log !== leader }!
        for _ in 0..<200 where try await follower.log.status().leader != leaderID { try await Task.sleep(nanoseconds: 25_000_000) }
        let client = try await Self.client(of: follower, maxRedirects: 0)
        let positions = try await client.append([Array("via".utf8), Array("follower".utf8)])
        #expect(client.connectedNodeID == follower.log.configuration.nodeID)
        let seen = try await firstEntries(follower.log, count: 2)
        #expect(seen == [PaxosLog.Entry(position: positions[0], bytes: Array("via".utf8)), PaxosLog.Entry(position: positions[1], bytes: Array("follower".utf8))])
        await client.close()
        for s in servers { try await s.shutdown() }
    }

    /// The server answers an oversized append at once, with the client's error, and goes on.
    @Test func oversizedClientAppendIsRefused() async throws {
        let (servers, dir) = try await Self.startServers("client-oversized")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await Self.waitForLeader(servers.map(\.log))
        let server = servers.first { $0.log === leader }!
        let client = try await Self.client(of: server)
        do {
            _ = try await client.append([[1], Array(repeating: 7, count: leader.configuration.maxRecordSize + 1)])
            Issue.record("an oversized record was accepted")
        } catch {
            #expect(error.serverError?.code == .invalidRequest)
        }
        let positions = try await client.append([[2]])
        #expect(try await firstEntries(leader, count: 1) == [PaxosLog.Entry(position: positions[0], bytes: [2])])
        await client.close()
        for s in servers { try await s.shutdown() }
    }

    /// Records whose sum is above the frame limit come back over several reads: each read stops
    /// after the record that brings it to its byte budget. Before, the server put all of them in
    /// one answer, which the client refused as too large, so they could not be read at all.
    @Test func largeRecordsAreReadInPages() async throws {
        let (servers, dir) = try await Self.startServers("client-large-read")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await Self.waitForLeader(servers.map(\.log))
        let server = servers.first { $0.log === leader }!
        let size = leader.configuration.maxRecordSize
        let records = (0..<5).map { [UInt8](repeating: UInt8($0), count: size) }
        let positions = try await leader.append(contentsOf: records)
        let first = try await leader.read(from: positions[0], maxCount: 100, maxBytes: size + 1)
        #expect(first.entries.map(\.position) == Array(positions[0...1]) && first.next == positions[2])

        let client = try await Self.client(of: server)
        var read: [[UInt8]] = []
        var next = positions[0]
        var pages = 0
        while read.count < records.count, pages < 10 {
            let page = try await client.read(from: next, maxCount: 100)
            read += page.entries.map(\.bytes)
            next = page.nextSlot
            pages += 1
        }
        #expect(read == records)
        #expect(pages > 1)
        await client.close()
        for s in servers { try await s.shutdown() }
    }

    @Test func followerRedirectsNamingTheLeader() async throws {
        let (logs, dir) = try await Self.openCluster("redirect")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let leader = try await Self.waitForLeader(logs)
        let leaderID = try await leader.status().nodeID
        let follower = logs.first { $0 !== leader }!
        for _ in 0..<200 where try await follower.status().leader != leaderID { try await Task.sleep(nanoseconds: 25_000_000) }
        do {
            _ = try await follower.append([1])
            Issue.record("a follower accepted an append")
        } catch let e as PaxosLogError {
            #expect(e.code == .notLeader)
            // The leader it names: the one we found, unless a slow machine let leadership move on
            // meanwhile (seen with the suites in parallel), then the one the follower follows now.
            let now = try await follower.status().leader
            #expect(e.leader == leaderID || e.leader == now, "named \(String(describing: e.leader)), leader was \(leaderID), is \(String(describing: now))")
        }
        for l in logs { try await l.close() }
    }
}

@Suite("Task executor")
struct TaskExecutorTests {
    /// A task preferring the replica's executor runs on the replica's event loop, before and after
    /// an append; one that does not prefer it runs elsewhere (so the check can fail).
    @Test func tasksPreferringTheReplicaRunOnItsLoop() async throws {
        let dir = temporaryDirectory("executor")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        let executor = log.taskExecutor
        let onLoop = await Task(executorPreference: executor) { () -> [Bool] in
            var seen = [executor.loop.inEventLoop]
            for i in 0..<20 {
                _ = try? await log.append(Array("r\(i)".utf8))
                seen.append(executor.loop.inEventLoop)
            }
            return seen
        }.value
        #expect(onLoop == Array(repeating: true, count: 21))
        let elsewhere = await Task.detached { executor.loop.inEventLoop }.value
        #expect(!elsewhere)
        #expect(try await firstEntries(log, count: 20).count == 20)
        try await log.close()
    }
}
