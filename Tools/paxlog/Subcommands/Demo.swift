import ArgumentParser
import Foundation
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import PaxosLogTesting
import SegmentLog

/// `paxlog demo`: three replica processes, load, the leader SIGKILLed halfway, a restart and
/// catch-up, then every acknowledged record checked on every replica's disk.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run 3 replicas, append under load, SIGKILL the leader, restart it, and check nothing acknowledged was lost.",
        discussion: "Exit 0 when every acknowledged record is on every replica, 1 when any is missing, 2 on errors."
    )

    @Option(help: "Seconds of load.") var duration: Double = 10
    @Option(help: "Concurrent append streams.") var concurrency = 64
    @Option(help: "Records per request.") var batch = 1
    @Option(help: "Record size in bytes.") var size = 256
    @Option(help: "Directory for the replicas' data (default: a new temporary directory).") var dir: String?
    @Flag(help: "Print the result as one JSON object.") var json = false

    func validate() throws {
        guard duration >= 2, duration <= 3600 else { throw ValidationError("--duration must be 2…3600 seconds") }
        guard concurrency >= 1, concurrency <= 4096 else { throw ValidationError("--concurrency must be 1…4096") }
        guard batch >= 1, batch <= 4096 else { throw ValidationError("--batch must be 1…4096") }
        guard size >= 16, size <= 1 << 20 else { throw ValidationError("--size must be 16 B…1 MiB") }
    }

    struct Report: Encodable {
        var directory: String
        var appended_attempted: Int
        var acknowledged: Int
        var failed: Int
        var lost: Int
        var records_per_second: Double
        var latency_us: LatencySummary
        var killed_leader: UInt32
        var failover_ms: Double?
        var catch_up_ms: Double?
        var replicas_chosen_through: [String: UInt64]
    }

    func run() async throws {
        let base = dir ?? (NSTemporaryDirectory() + "paxlog-demo-\(getpid())")
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let cluster = try LocalCluster(executable: exe, size: 3, baseDirectory: base, clusterName: "paxlog-demo")
        say("starting 3 replicas in \(base)")
        try cluster.startAll()
        let first = try await cluster.waitForLeader()
        say("node \(first) leads; appending \(size) B records with \(concurrency) streams for \(Int(duration)) s")

        let records = RecordSource.generated(count: Int.max / 2, size: size)
        let start = NIODeadline.now()
        let killAt = start + .nanoseconds(Int64(duration / 2 * 1e9))
        let load = AppendLoad(
            configuration: .init(addresses: cluster.clientAddresses, clusterName: cluster.clusterName),
            concurrency: concurrency, batch: batch, deadline: start + .nanoseconds(Int64(duration * 1e9))
        )
        let firstAckAfterKill = NIOLockedValueBox<NIODeadline?>(nil)
        let killedAt = NIOLockedValueBox<NIODeadline?>(nil)

        async let result = load.run(records) { _, _ in
            guard let k = killedAt.withLockedValue({ $0 }) else { return }
            firstAckAfterKill.withLockedValue { if $0 == nil { $0 = NIODeadline.now() } }
            _ = k
        }
        // Halfway: SIGKILL the leader; two seconds later, restart it.
        try await Task.sleep(nanoseconds: UInt64(Swift.max(0, (killAt - .now()).nanoseconds)))
        let victim = await cluster.leader() ?? first
        cluster.kill(victim)
        killedAt.withLockedValue { $0 = .now() }
        say("SIGKILLed the leader, node \(victim)")
        try await Task.sleep(nanoseconds: 2_000_000_000)
        try cluster.start(victim)
        let restartedAt = NIODeadline.now()
        say("restarted node \(victim)")
        let load_ = try await result
        let failoverMs = firstAckAfterKill.withLockedValue { $0 }.flatMap { a in killedAt.withLockedValue { $0 }.map { Double((a - $0).nanoseconds) / 1e6 } }

        // Catch-up: wait until the restarted replica has chosen everything the leader has.
        var catchUpMs: Double? = nil
        let target = load_.acknowledged.map(\.position).max() ?? 0
        for _ in 0..<600 {
            if let s = try? await cluster.status(victim), s.chosenThrough >= target {
                catchUpMs = Double((NIODeadline.now() - restartedAt).nanoseconds) / 1e6
                break
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        say("stopping replicas and checking every acknowledged record on every disk")
        cluster.terminateAll()

        var lost = 0
        var chosen: [String: UInt64] = [:]
        for n in cluster.nodes {
            let (missing, through) = try Self.check(n.dataDirectory, acknowledged: load_.acknowledged, records: records)
            lost += missing
            chosen["\(n.id)"] = through
        }
        let report = Report(
            directory: base, appended_attempted: load_.summary.acknowledged + load_.summary.failed,
            acknowledged: load_.summary.acknowledged, failed: load_.summary.failed, lost: lost,
            records_per_second: load_.summary.records_per_second, latency_us: load_.summary.latency_us,
            killed_leader: victim, failover_ms: failoverMs, catch_up_ms: catchUpMs, replicas_chosen_through: chosen
        )
        if json {
            print(jsonLine(report))
        } else {
            print("""

            appended (attempted)  \(report.appended_attempted)
            acknowledged          \(report.acknowledged)
            failed (not acked)    \(report.failed)
            lost                  \(report.lost)
            throughput            \(Int(report.records_per_second)) records/s
            latency               \(report.latency_us.text)
            failover              \(failoverMs.map { String(format: "%.0f ms", $0) } ?? "none") (leader node \(victim) SIGKILLed)
            catch-up              \(catchUpMs.map { String(format: "%.0f ms", $0) } ?? "did not finish") after restart
            chosen through        \(chosen.sorted { $0.key < $1.key }.map { "node \($0.key): \($0.value)" }.joined(separator: ", "))
            data directories      \(base)/node-{1,2,3} (try: paxlog inspect \(base)/node-1)
            """)
        }
        if lost > 0 { throw ExitCode(1) }
    }

    private func say(_ s: String) {
        FileHandle.standardError.write(Data("demo: \(s)\n".utf8))
    }

    /// Opens a stopped replica's directory and counts acknowledged records that are not chosen
    /// there with the acknowledged bytes at the acknowledged position.
    static func check(_ directory: String, acknowledged: [(index: Int, position: UInt64)], records: RecordSource) throws -> (missing: Int, chosenThrough: UInt64) {
        let store = try SegmentStore.open(directory: directory, logger: Logger(label: "paxlog.demo"))
        defer { try? store.close() }
        let through = store.state.chosenThrough ?? 0
        var chosen: [UInt64: LogEntry] = [:]
        if through > 0 {
            for e in try store.entries(from: 1, through: through) { chosen[e.slot] = e }
        }
        var missing = 0
        for (index, position) in acknowledged {
            guard let e = chosen[position], !e.isNoop, e.payload == records.record(index) else {
                missing += 1
                continue
            }
        }
        return (missing, through)
    }
}
