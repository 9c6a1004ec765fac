import ArgumentParser
import Dispatch
import Foundation
import Histogram
import Logging
import MultiPaxos
import PaxosLog
import PaxosLogTesting
import PaxosTransport
import SegmentLog

/// `paxlog bench compaction`: compaction time, snapshot transfer rate, and append latency with
/// and without a compaction running, with the machine's fdatasync rate measured alongside.
struct BenchCompaction: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compaction",
        abstract: "Measure compaction of a large log, snapshot transfer on loopback, and append p99 during compaction."
    )

    @Option(help: "Log size to compact, in MiB.") var logMiB = 1024
    @Option(help: "Snapshot size, in MB (10^6 bytes).") var snapshotMB = 100
    @Option(help: "Directory for the data (default: a new temporary directory).") var dir: String?
    @Option(help: "Seconds of appends for each latency phase.") var latencySeconds: Double = 5
    @Option(help: "Cap the snapshot writes of the latency phase's compactions, in MiB/s; 0: no cap (default: the library's, 64).") var snapshotRateMib: Int?
    @Flag(help: "Print the results as one JSON object.") var json = false

    func run() async throws {
        let base = dir ?? (NSTemporaryDirectory() + "paxlog-bench-compaction-\(getpid())")
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { if dir == nil { try? FileManager.default.removeItem(atPath: base) } }
        var results: [String: Double] = [:]
        results["fdatasync_per_second_before"] = fdatasyncRate(base)
        let snapshot = (0..<(snapshotMB * 1_000_000)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 11) }

        // 1. Compaction of a large log: write `logMiB` of 4 KiB records, then compact through
        // almost all of it with a snapshot streamed in 1 MiB chunks (like `paxlog compact --snapshot`).
        let logDir = base + "/log"
        var options = SegmentStore.Options()
        options.syncPolicy = .never
        let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
        var store = try SegmentStore.open(directory: logDir, options: options, logger: logger)
        // Incompressible payloads (xorshift), so the log really is `logMiB` on disk.
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        let perRecord = 64
        let total = (logMiB << 20) / 4096
        var slot: UInt64 = 0
        while slot < UInt64(total) {
            var entries: [LogEntry] = []
            for _ in 0..<perRecord {
                slot += 1
                let p = [UInt8](unsafeUninitializedCapacity: 4096) { buffer, count in
                    let words = UnsafeMutableRawBufferPointer(buffer).bindMemory(to: UInt64.self)
                    for k in 0..<words.count {
                        x ^= x << 13; x ^= x >> 7; x ^= x << 17
                        words[k] = x
                    }
                    count = 4096
                }
                entries.append(LogEntry(slot: slot, ballot: LogBallot(round: 1, node: 1), payload: p))
            }
            try await store.append([.accepted(entries)])
        }
        try await store.append([.chosen(through: slot)])
        try store.close()
        sync()
        store = try SegmentStore.open(directory: logDir, logger: logger)
        let through = slot - 1000
        let start = DispatchTime.now().uptimeNanoseconds
        let writer = try store.beginSnapshot(slot: through)
        for k in stride(from: 0, to: snapshot.count, by: 1 << 20) {
            try writer.write(snapshot[k..<Swift.min(k + (1 << 20), snapshot.count)])
        }
        let written = DispatchTime.now().uptimeNanoseconds
        try await writer.commit()
        let committed = DispatchTime.now().uptimeNanoseconds
        let victims = try store.segmentsWhollyBelow(through + 1)
        let deleted = try store.truncatePrefix(below: through + 1)
        let end = DispatchTime.now().uptimeNanoseconds
        try store.close()
        results["compaction_seconds"] = Double(end - start) / 1e9
        results["compaction_write_seconds"] = Double(written - start) / 1e9
        results["compaction_sync_rename_record_seconds"] = Double(committed - written) / 1e9
        results["compaction_delete_seconds"] = Double(end - committed) / 1e9
        results["segments_deleted"] = Double(deleted)
        results["bytes_freed_mib"] = Double(victims.prefix(deleted).reduce(0) { $0 + $1.bytes }) / Double(1 << 20)
        try? FileManager.default.removeItem(atPath: logDir)

        // 2. Snapshot transfer on loopback: two replicas take a few appends and compact with the
        // big snapshot; a third opens empty and must install it.
        let members = PaxosLog.Member.loopback(ports: try LocalCluster.freePorts(6))
        func config(_ id: NodeID) -> PaxosLog.Configuration {
            var c = PaxosLog.Configuration(nodeID: id, members: members, dataDirectory: "\(base)/node-\(id)")
            c.clusterName = "bench-transfer"
            return c
        }
        let clusterID = PaxosLog.ClusterID.random()
        for m in members {
            // A fresh cluster each run: a directory left by an earlier run is another cluster's.
            try? FileManager.default.removeItem(atPath: config(m.id).dataDirectory)
            try await PaxosLog.bootstrap(config(m.id), clusterID: clusterID)
        }
        var logs = [try await PaxosLog.open(config(1)), try await PaxosLog.open(config(2))]
        var leader = try await waitForLeader(logs)
        var last: PaxosLog.Position = 0
        for i in 0..<20 { last = try await leader.append(Array("record \(i)".utf8)) }
        for l in logs {
            while try await l.status().chosenThrough < last { try await Task.sleep(nanoseconds: 5_000_000) }
            try await l.compact(through: last, snapshot: snapshot)
        }
        for l in logs { try await l.close() }
        logs = [try await PaxosLog.open(config(1)), try await PaxosLog.open(config(2))]
        leader = try await waitForLeader(logs)
        let transferStart = DispatchTime.now().uptimeNanoseconds
        let lagging = try await PaxosLog.open(config(3))
        // Phases: until the leader queues its first chunk, until it has queued the last one,
        // until the lagging replica has the snapshot durable and installed.
        var firstChunk: UInt64? = nil, lastChunk: UInt64? = nil
        while try await lagging.snapshotTransferCounters().installed == 0 {
            var sent: UInt64 = 0
            for l in logs { sent += try await l.snapshotTransferCounters().sentBytes }
            let now = DispatchTime.now().uptimeNanoseconds
            if sent > 0, firstChunk == nil { firstChunk = now }
            if sent >= UInt64(snapshot.count), lastChunk == nil { lastChunk = now }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
        let transferEnd = DispatchTime.now().uptimeNanoseconds
        results["transfer_until_first_chunk_seconds"] = Double((firstChunk ?? transferEnd) - transferStart) / 1e9
        results["transfer_until_last_chunk_queued_seconds"] = Double((lastChunk ?? transferEnd) - transferStart) / 1e9
        results["transfer_seconds"] = Double(transferEnd - transferStart) / 1e9
        results["transfer_mb_per_second"] = Double(snapshot.count) / 1e6 / results["transfer_seconds"]!
        try await lagging.close()
        for l in logs { try await l.close() }

        // 3. Append latency on a local WAL (sync always), without and then with compactions of
        // the big snapshot running back to back.
        var localConfiguration = PaxosLog.Configuration.local(dataDirectory: base + "/local")
        if let rate = snapshotRateMib { localConfiguration.snapshotWriteBytesPerSecond = rate > 0 ? rate << 20 : nil }
        let local = try await PaxosLog.open(localConfiguration)
        let without = try await appendLatencies(local, seconds: latencySeconds, compacting: nil)
        let with = try await appendLatencies(local, seconds: latencySeconds, compacting: snapshot)
        try await local.close()
        results["append_p50_us_without"] = Double(without.p50)
        results["append_p99_us_without"] = Double(without.p99)
        results["append_p50_us_during"] = Double(with.p50)
        results["append_p99_us_during"] = Double(with.p99)
        results["compactions_during"] = Double(with.compactions)
        results["fdatasync_per_second_after"] = fdatasyncRate(base)

        if json {
            print(jsonLine(results))
        } else {
            for k in results.keys.sorted() { print(String(format: "%-40@ %.3f", k as NSString, results[k]!)) }
        }
    }

    func waitForLeader(_ logs: [PaxosLog]) async throws -> PaxosLog {
        for _ in 0..<800 {
            for l in logs where try await l.status().isLeader { return l }
            try await Task.sleep(nanoseconds: 25_000_000)
        }
        throw CLIError("no leader within 20 s")
    }

    /// Closed-loop appends from 8 tasks for `seconds`; with `compacting`, a compaction loop runs beside them.
    func appendLatencies(_ log: PaxosLog, seconds: Double, compacting snapshot: [UInt8]?) async throws -> (p50: UInt64, p99: UInt64, compactions: Int) {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        let record = [UInt8](repeating: 0x42, count: 256)
        let compactions = LockedBox(0)
        let samples = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var out: [UInt64] = []
                    while DispatchTime.now().uptimeNanoseconds < deadline {
                        let t = DispatchTime.now().uptimeNanoseconds
                        _ = try await log.append(record)
                        out.append((DispatchTime.now().uptimeNanoseconds - t) / 1000)
                    }
                    return out
                }
            }
            if let snapshot {
                group.addTask {
                    while DispatchTime.now().uptimeNanoseconds < deadline {
                        let at = try await log.status().chosenThrough
                        try await log.compact(through: at, snapshot: snapshot)
                        compactions.value += 1
                    }
                    return []
                }
            }
            var all: [UInt64] = []
            for try await s in group { all += s }
            return all
        }
        var h = newLatencyHistogram()
        for s in samples { h.record(s) }
        return (h.valueAtPercentile(50), h.valueAtPercentile(99), compactions.value)
    }

    func fdatasyncRate(_ directory: String) -> Double {
        let path = directory + "/fdatasync.tmp"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { return 0 }
        defer { close(fd); unlink(path) }
        var page = [UInt8](repeating: 7, count: 4096)
        let start = DispatchTime.now().uptimeNanoseconds
        var n = 0
        while DispatchTime.now().uptimeNanoseconds - start < 500_000_000 {
            _ = page.withUnsafeMutableBytes { pwrite(fd, $0.baseAddress, 4096, off_t(n % 256) * 4096) }
            fdatasync(fd)
            n += 1
        }
        return Double(n) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
}
