import Foundation
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PaxosLogTesting
import PaxosTransport
import Testing

/// Runs `paxlog` with `arguments` and `input` on stdin. A process still running after
/// `killAfter` seconds is killed (a hang must fail the test, not stall the suite): `killed` says
/// so. No assertion is made on how long it took.
func runPaxlog(_ arguments: [String], input: String, killAfter: Double) throws -> (status: Int32, killed: Bool, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try paxlogExecutable())
    p.arguments = arguments
    let out = Pipe(), err = Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    try p.run()
    inp.fileHandleForWriting.write(Data(input.utf8))
    try inp.fileHandleForWriting.close()
    let killed = NIOLockedValueBox(false)
    let guardTimer = DispatchSource.makeTimerSource(queue: .global())
    guardTimer.schedule(deadline: .now() + killAfter)
    guardTimer.setEventHandler {
        if p.isRunning {
            killed.withLockedValue { $0 = true }
            kill(p.processIdentifier, SIGKILL)
        }
    }
    guardTimer.resume()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guardTimer.cancel()
    return (p.terminationStatus, killed.withLockedValue { $0 }, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// A TCP port that accepts connections (the kernel completes them into the backlog) and never
/// answers a byte: a black hole, like a stopped process or an address that is not a replica's.
final class SilentListener {
    let port: Int
    private let fd: Int32

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClusterError("socket: errno \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = self.fd
        let ok = withUnsafeMutablePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && listen(fd, 64) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else { throw ClusterError("bind/listen: errno \(errno)") }
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    deinit { close(fd) }
}

/// The client side of exactly-once appends and bounded calls, against real replica processes.
@Suite(.serialized) struct ClientProcessTests {
    /// `--client-port` that disagrees with the client port `--members` gives the node (the
    /// issue's setup: the other replicas redirect clients to the implied port, where nothing
    /// listens) is refused at startup, with the fix in the message.
    @Test func clientPortThatDisagreesWithTheMembersIsRefused() throws {
        let ports = try LocalCluster.freePorts(4)
        let dir = NSTemporaryDirectory() + "paxoslog-e2e-clientport-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let members = "1=127.0.0.1:\(ports[0]),2=127.0.0.1:\(ports[1]),3=127.0.0.1:\(ports[2])"
        let refused = try runPaxlog(["serve", "--id", "1", "--members", members, "--data", dir, "--client-port", "\(ports[3])"], input: "", killAfter: 60)
        #expect(!refused.killed && refused.status == 2, "\(refused)")
        #expect(refused.stderr.contains("disagrees with --members"), "\(refused.stderr)")
        #expect(refused.stderr.contains("1=127.0.0.1:\(ports[0]):\(ports[3])"), "the message shows the members to give: \(refused.stderr)")
        // Agreeing with the implied port is fine (it fails later, for want of `paxlog init`).
        let agreeing = try runPaxlog(["serve", "--id", "1", "--members", members, "--data", dir, "--client-port", "\(ports[0] + 1000)"], input: "", killAfter: 60)
        #expect(!agreeing.stderr.contains("disagrees"), "\(agreeing.stderr)")
    }

    /// The stranding, with real processes: every replica's membership gives the *other*
    /// replicas client addresses where something accepts connections and never answers, so a
    /// follower redirects clients into a black hole. `paxlog append --cluster F,F,L` (followers
    /// first) used to fail or hang there; it must try the other addresses it was given, append
    /// every line once, and exit 0.
    @Test func redirectIntoABlackHoleDoesNotStrandTheClient() async throws {
        let holes = try (0..<3).map { _ in try SilentListener() }
        let cluster = try makeCluster("blackhole")
        for n in cluster.nodes {
            let skewed = cluster.nodes.map { m in "\(m.id)=127.0.0.1:\(m.peerPort):\(m.id == n.id ? m.clientPort : holes[Int(m.id) - 1].port)" }
            // The last --members wins: each replica sees itself right and the others wrong.
            cluster.nodeArguments[n.id] = ["--members", skewed.joined(separator: ",")]
        }
        do {
            try cluster.startAll()
            let leader = try await cluster.waitForLeader()
            let followers = cluster.nodes.map(\.id).filter { $0 != leader }
            let order = followers + [leader]
            let addresses = order.map { "127.0.0.1:\(cluster.node($0).clientPort)" }.joined(separator: ",")
            let lines = (0..<5).map { "stranded-\($0)" }
            let cliStart = NIODeadline.now()
            let run = try runPaxlog(["append", "--cluster", addresses, "--cluster-name", cluster.clusterName], input: lines.joined(separator: "\n") + "\n", killAfter: 120)
            print(String(format: "paxlog append redirected into a black hole: %.2f s, exit %d", Double((NIODeadline.now() - cliStart).nanoseconds) / 1e9, run.status))
            #expect(!run.killed, "paxlog append hung: \(run.stderr)")
            #expect(run.status == 0, "exit \(run.status): \(run.stderr)")
            let positions = run.stdout.split(separator: "\n").compactMap { UInt64($0) }
            #expect(positions.count == lines.count, "\(run.stdout)")
            // Every line once, at the position it was acknowledged at.
            let log = try await readAll(cluster, from: cluster.node(leader).clientPort)
            for line in lines { #expect(log.filter { $0.bytes == Array(line.utf8) }.count == 1, "\(line) in \(log.count) entries") }
            #expect(Set(log.filter { lines.contains(String(decoding: $0.bytes, as: UTF8.self)) }.map(\.slot)) == Set(positions))
        } catch {
            print("replica logs:\n\(cluster.logTails())")
            cluster.terminateAll()
            throw error
        }
        cluster.terminateAll()
        try? FileManager.default.removeItem(atPath: cluster.baseDirectory)
        _ = holes
    }

    /// The leader SIGSTOPped (a stalled machine): a client that was talking to it times out the
    /// request it sent there, tries the other addresses, and finds the new leader; so does
    /// `paxlog append` started meanwhile with the stopped leader first in --cluster. Once it is
    /// resumed, every record is in the log exactly once.
    @Test func stoppedLeaderDoesNotStallClients() async throws {
        try await withCluster("sigstop") { cluster in
            try cluster.startAll()
            let leader = try await cluster.waitForLeader()
            let order = [leader] + cluster.nodes.map(\.id).filter { $0 != leader }
            var c = PaxosClientConfiguration(addresses: order.map { PeerAddress(host: "127.0.0.1", port: cluster.node($0).clientPort) }, clusterName: cluster.clusterName)
            c.attemptTimeout = .seconds(2)
            c.requestTimeout = .seconds(20)
            let client = try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "sigstop"))
            var acked: [(String, Slot)] = []
            acked.append(("before", try await client.append([Array("before".utf8)])[0]))
            #expect(client.connectedNodeID == leader)

            cluster.signal(leader, SIGSTOP)
            defer { cluster.signal(leader, SIGCONT) }
            var took: [Double] = []
            for i in 0..<3 {
                let record = "while-stopped-\(i)"
                let t0 = NIODeadline.now()
                acked.append((record, try await client.append([Array(record.utf8)])[0]))
                took.append(Double((NIODeadline.now() - t0).nanoseconds) / 1e9)
            }
            print("appends with the leader stopped (attempt timeout 2 s): " + took.map { String(format: "%.2f s", $0) }.joined(separator: ", "))
            #expect(client.connectedNodeID != leader)
            let addresses = order.map { "127.0.0.1:\(cluster.node($0).clientPort)" }.joined(separator: ",")
            let lines = (0..<3).map { "cli-while-stopped-\($0)" }
            let cliStart = NIODeadline.now()
            let run = try runPaxlog(["append", "--cluster", addresses, "--cluster-name", cluster.clusterName, "--attempt-timeout", "2", "--timeout", "20"],
                                   input: lines.joined(separator: "\n") + "\n", killAfter: 120)
            print(String(format: "paxlog append with the stopped leader first in --cluster: %.2f s", Double((NIODeadline.now() - cliStart).nanoseconds) / 1e9))
            #expect(!run.killed && run.status == 0, "exit \(run.status), killed \(run.killed): \(run.stderr)")
            let positions = run.stdout.split(separator: "\n").compactMap { UInt64($0) }
            #expect(positions.count == lines.count)
            for (line, p) in zip(lines, positions) { acked.append((line, p)) }

            cluster.signal(leader, SIGCONT)
            // A linearizable read after the old leader is back: each record once, where it was acknowledged.
            let log = try await readAll(cluster, from: cluster.node(order[1]).clientPort)
            for (record, slot) in acked {
                let copies = log.filter { $0.bytes == Array(record.utf8) }
                #expect(copies.map(\.slot) == [slot], "\(record): \(copies.map(\.slot)), acknowledged at \(slot)")
            }
            await client.close()
        }
    }

    /// Linearizable reads from a follower's client port right after each acknowledged append
    /// hold it (`paxlog read --linearizable` too); and the cost, measured: local and
    /// linearizable read latency on the leader and on a follower.
    @Test func linearizableReadsOnAFollowerAndTheirCost() async throws {
        try await withCluster("linearizable") { cluster in
            try cluster.startAll()
            let leader = try await cluster.waitForLeader()
            let follower = cluster.nodes.map(\.id).first { $0 != leader }!
            func client(_ id: NodeID) async throws -> PaxosClient {
                var c = PaxosClientConfiguration(addresses: [PeerAddress(host: "127.0.0.1", port: cluster.node(id).clientPort)], clusterName: cluster.clusterName)
                c.maxRedirects = 0
                return try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "lin"))
            }
            let writer = try await client(leader)
            let leaderReader = try await client(leader)
            let followerReader = try await client(follower)
            for i in 0..<20 {
                let record = Array("fresh-\(i)".utf8)
                let slot = try await writer.append([record])[0]
                let page = try await followerReader.read(from: slot, maxCount: 1, consistency: .linearizable)
                #expect(page.entries == [ClientEntry(slot: slot, bytes: record)], "read \(i) on node \(follower)")
            }
            let run = try runPaxlog(["read", "--linearizable", "--cluster", "127.0.0.1:\(cluster.node(follower).clientPort)", "--cluster-name", cluster.clusterName],
                                   input: "", killAfter: 60)
            #expect(run.status == 0 && run.stdout.contains("fresh-19"), "\(run)")

            // The cost: 200 sequential one-entry reads of each kind (printed, not asserted).
            var report: [String] = []
            for (name, reader) in [("leader", leaderReader), ("follower", followerReader)] {
                for consistency in ReadConsistency.allCases {
                    var micros: [Double] = []
                    for _ in 0..<200 {
                        let t0 = NIODeadline.now()
                        _ = try await reader.read(from: 1, maxCount: 1, consistency: consistency)
                        micros.append(Double((NIODeadline.now() - t0).nanoseconds) / 1000)
                    }
                    micros.sort()
                    report.append("\(name) \(consistency): p50 \(Int(micros[micros.count / 2])) µs, p99 \(Int(micros[micros.count * 99 / 100])) µs")
                }
            }
            print("read latency (3 processes, loopback, sync always, 200 reads each):\n  " + report.joined(separator: "\n  "))
            for c in [writer, leaderReader, followerReader] { await c.close() }
        }
    }

    /// Every chosen entry, read linearizably page by page from one replica's client port.
    func readAll(_ cluster: LocalCluster, from port: Int) async throws -> [ClientEntry] {
        let first = cluster.clientAddresses.filter { $0.port == port }
        var c = PaxosClientConfiguration(addresses: first + cluster.clientAddresses.filter { $0.port != port }, clusterName: cluster.clusterName)
        c.requestTimeout = .seconds(30)
        let client = try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "read"))
        var out: [ClientEntry] = []
        var next: Slot = 1
        while true {
            let page = try await client.read(from: next, maxCount: 1000, consistency: .linearizable)
            out += page.entries
            if page.isComplete || page.nextSlot <= next { break }
            next = page.nextSlot
        }
        await client.close()
        return out
    }
}
