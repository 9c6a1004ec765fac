import ArgumentParser
import Foundation
import Logging
import MultiPaxos
import PaxosLog
import PaxosLogTesting
import PaxosTransport

/// `paxlog bench cluster`: three replicas in this process, talking over loopback TCP, each with
/// its own data directory and `--sync` policy; the load calls `append` on the leader's
/// ``PaxosLog`` directly (no client protocol), so this is replication's cost alone.
struct BenchCluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Replicated append throughput and latency: 3 replicas in one process over loopback TCP."
    )

    @OptionGroup var options: BenchOptions
    @Option(help: "Replicas.") var replicas = 3
    @Option(help: ArgumentHelp("Steady state: each time a replica has written this many MiB more, it compacts its log through its chosen watermark (0: never).",
                               discussion: "Compaction keeps freed segment files for reuse, so a steady-state log appends into recycled files.")) var checkpointMib: Int = 0
    @Option(help: "Where the load's streams run: 'loop' (the leader's event loop, as PaxosLog.taskExecutor suggests) or 'global' (Swift's global executor, where tasks run by default).")
    var streams: Streams = .loop
    @Option(help: "The replicas' Configuration.appendHold in microseconds (default: the library's).") var appendHoldUs: Int?

    enum Streams: String, ExpressibleByArgument, CaseIterable {
        case loop, global
    }

    func validate() throws {
        guard checkpointMib >= 0 else { throw ValidationError("--checkpoint-mib must be 0 (never) or positive") }
        guard appendHoldUs.map({ $0 >= 0 }) ?? true else { throw ValidationError("--append-hold-us must not be negative") }
    }

    func run() async throws {
        let (base, created) = try options.makeDirectory()
        defer { if created && !options.keep { try? FileManager.default.removeItem(atPath: base) } }
        let limits = try options.measureLimits(in: base)
        let payload = options.payloadGenerator()
        var reports: [BenchReport] = []

        for concurrency in options.concurrencies! {
            let directory = "\(base)/cluster-c\(concurrency)"
            try? FileManager.default.removeItem(atPath: directory)
            let logs = try await Self.openCluster(in: directory, replicas: replicas) { c in
                c.storage = options.storageOptions()
                if let appendHoldUs { c.appendHold = .microseconds(Int64(appendHoldUs)) }
            }
            let leader = try await Self.waitForLeader(logs)
            BenchProgress.note("cluster c=\(concurrency): node \(leader.configuration.nodeID) leads")
            // One warm-up append, so connections and the first Accept are not in the figures.
            // A fresh leader may still be finishing Phase 1: retry briefly.
            for attempt in 1...100 {
                do {
                    _ = try await leader.append(payload.record(0))
                    break
                } catch where attempt < 100 {
                    try await Task.sleep(nanoseconds: 20_000_000)
                }
            }

            let loadBefore = BenchReport.loadAverage()
            let before = logs.map { StorageTotals($0.storageStatistics) }
            let leaderBefore = StorageTotals(leader.storageStatistics)
            let usage0 = ResourceUsage.current()
            let threads0 = ThreadCPU.sample()
            var loop = ClosedLoop(concurrency: concurrency, records: options.recordCount, duration: options.duration, label: "cluster c=\(concurrency)")
            if streams == .loop { loop.executor = leader.taskExecutor }
            let checkpoints = checkpointMib == 0 ? [] : logs.map { log in
                Task { await checkpointLoop(every: checkpointMib << 20, written: { log.storageStatistics.bytesWritten }) { await Self.checkpoint(log) } }
            }
            let result = try await loop.run { range in
                _ = try await leader.append(contentsOf: range.map(payload.record))
            }
            var checkpointCount = 0
            for task in checkpoints {
                task.cancel()
                checkpointCount += await task.value
            }
            let usage1 = ResourceUsage.current()
            var storage = StorageTotals()
            var details: [String: Double] = [
                "leader": Double(leader.configuration.nodeID),
                "streams_on_global_executor": streams == .global ? 1 : 0,
                "append_hold_us": Double(leader.configuration.appendHold.nanoseconds) / 1000,
            ]
            for (group, seconds) in ThreadCPU.sample().since(threads0) { details["cpu_\(group)_threads_seconds"] = seconds }
            for (i, log) in logs.enumerated() {
                let d = StorageTotals(log.storageStatistics) - before[i]
                storage = storage + d
                details["node\(i + 1)_fsyncs"] = Double(d.fsyncs)
                details["node\(i + 1)_group_commits"] = Double(d.groupCommits)
                if checkpointMib > 0 {
                    details["node\(i + 1)_segments_created"] = Double(log.storageStatistics.segmentsCreated)
                    details["node\(i + 1)_segments_recycled"] = Double(log.storageStatistics.segmentsRecycled)
                }
            }
            if checkpointMib > 0 { details["checkpoints"] = Double(checkpointCount) }
            let leaderCommits = (StorageTotals(leader.storageStatistics) - leaderBefore).groupCommits
            for log in logs { try await log.close() }

            let usage = ResourceUsage(cpuSeconds: usage1.cpuSeconds - usage0.cpuSeconds, peakRSSMB: usage1.peakRSSMB)
            let report = BenchReport(
                scenario: "cluster" + (checkpointMib > 0 ? "-checkpointed" : "") + (streams == .global ? "-global" : ""), replicas: replicas, concurrency: concurrency, options: options, load: result, storage: storage,
                leaderGroupCommits: leaderCommits, usage: usage, loadCPUSeconds: usage.cpuSeconds, limits: limits,
                loadBefore: loadBefore, details: details
            )
            BenchReport.emit(report, json: options.json)
            reports.append(report)
            if !options.keep { try? FileManager.default.removeItem(atPath: directory) }
        }
        if !options.json {
            BenchReport.printTable(reports, limits: limits)
            if options.keep { print("logs kept in \(base)") }
        }
    }

    /// A compaction of the replica's log through its chosen watermark with a token snapshot.
    /// False when nothing is chosen yet or the previous compaction still runs (try again later).
    static func checkpoint(_ log: PaxosLog) async -> Bool {
        guard let chosen = try? await log.status().chosenThrough, chosen > 0 else { return false }
        return (try? await log.compact(through: chosen, snapshot: Array("bench checkpoint".utf8))) != nil
    }

    /// Bootstraps and opens `replicas` replicas on loopback ports, each in `directory/node-N`.
    static func openCluster(in directory: String, replicas: Int, _ configure: (inout PaxosLog.Configuration) -> Void) async throws -> [PaxosLog] {
        try await openCluster(in: directory, replicas: replicas, configure) { try await PaxosLog.open($0) }
    }

    /// The same, each replica opened by `open` (a ``PaxosLogServer`` to serve clients too).
    static func openCluster<Replica>(in directory: String, replicas: Int, _ configure: (inout PaxosLog.Configuration) -> Void,
                                     open: (PaxosLog.Configuration) async throws -> Replica) async throws -> [Replica] {
        let members = PaxosLog.Member.loopback(ports: try LocalCluster.freePorts(2 * replicas))
        let clusterID = PaxosLog.ClusterID.random()
        var logs: [Replica] = []
        for m in members {
            try FileManager.default.createDirectory(atPath: "\(directory)/node-\(m.id)", withIntermediateDirectories: true)
            var c = PaxosLog.Configuration(nodeID: m.id, members: members, dataDirectory: "\(directory)/node-\(m.id)")
            c.clusterName = "paxlog-bench"
            configure(&c)
            try await PaxosLog.bootstrap(c, clusterID: clusterID)
            logs.append(try await open(c))
        }
        return logs
    }

    /// Polls until one replica says it leads (at most 20 s).
    static func waitForLeader(_ logs: [PaxosLog]) async throws -> PaxosLog {
        let end = monotonicSeconds() + 20
        while monotonicSeconds() < end {
            for log in logs where (try? await log.status().isLeader) == true { return log }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        throw CLIError("no leader elected within 20 s")
    }
}
