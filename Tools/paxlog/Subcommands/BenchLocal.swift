import ArgumentParser
import Foundation
import Logging
import SegmentLog

/// `paxlog bench local`: SegmentLog alone as a local WAL. `--concurrency` tasks each append
/// batches of `--batch` records of `--size` bytes; then the log is reopened (recovered) and timed.
struct BenchLocal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "local",
        abstract: "Local WAL append throughput, latency and recovery time (SegmentLog alone, no network)."
    )

    @OptionGroup var options: BenchOptions
    @Option(help: "Records per append call (each call is one record in the log).") var batch: Int = 1
    @Option(help: "Sync interval in milliseconds for --sync interval.") var intervalMs: Int = 10
    @Option(help: "Segment size in MiB.") var segmentMib: Int = 64
    @Option(help: ArgumentHelp("Steady state: each time this many MiB more are written, snapshot and truncate the log's prefix, as a database's checkpoint does (0: never).",
                               discussion: "Compaction keeps freed segment files for reuse, so a steady-state log appends into recycled files.")) var checkpointMib: Int = 0
    @Flag(help: "Only open (recover) the existing log in --dir and report the time; writes nothing.") var openOnly = false

    func validate() throws {
        guard batch > 0, intervalMs > 0, segmentMib > 0 else { throw ValidationError("--batch, --interval-ms and --segment-mib must be positive") }
        guard checkpointMib >= 0 else { throw ValidationError("--checkpoint-mib must be 0 (never) or positive") }
    }

    func run() async throws {
        var logger = Logger(label: "paxlog.bench")
        logger.logLevel = .warning
        if openOnly {
            guard let dir = options.dir else { throw ValidationError("--open-only needs --dir") }
            return try reportOpen(directory: dir, logger: logger)
        }
        let (base, created) = try options.makeDirectory()
        defer { if created && !options.keep { try? FileManager.default.removeItem(atPath: base) } }
        let limits = try options.measureLimits(in: base)
        let payload = options.payloadGenerator()
        var storeOptions = options.storageOptions(intervalMilliseconds: intervalMs)
        storeOptions.segmentSize = segmentMib << 20
        var reports: [BenchReport] = []

        for concurrency in options.concurrencies! {
            let directory = "\(base)/local-c\(concurrency)"
            try? FileManager.default.removeItem(atPath: directory)
            let loadBefore = BenchReport.loadAverage()
            let store = try SegmentStore.open(directory: directory, options: storeOptions, logger: logger)
            let firstSlot = (store.state.lastSlot ?? 0) + 1
            let before = store.statistics
            let usage0 = ResourceUsage.current()
            let threads0 = ThreadCPU.sample()
            let loop = ClosedLoop(concurrency: concurrency, batch: batch, records: options.recordCount, duration: options.duration,
                                  label: "local c=\(concurrency)")
            let checkpoints = checkpointMib == 0 ? nil : Task {
                try await checkpointLoop(every: checkpointMib << 20, written: { store.statistics.bytesWritten }) {
                    try await Self.checkpoint(store, keeping: UInt64(concurrency * batch))
                }
            }
            let result = try await loop.run { range in
                let entries = range.map {
                    LogEntry(slot: firstSlot + UInt64($0), ballot: LogBallot(round: 1, node: 1), isNoop: false, payload: payload.record($0))
                }
                try await store.append([.accepted(entries)])
            }
            checkpoints?.cancel()
            let checkpointCount = try await checkpoints?.value
            let usage1 = ResourceUsage.current()
            let threadCPU = ThreadCPU.sample().since(threads0)
            let after = store.statistics
            let storage = StorageTotals(after) - StorageTotals(before)
            try store.close()

            let reopenStart = monotonicSeconds()
            let reopened = try SegmentStore.open(directory: directory, options: storeOptions, logger: logger)
            let reopenSeconds = monotonicSeconds() - reopenStart
            let recovered = reopened.state.entryCount
            try reopened.close()

            let usage = ResourceUsage(cpuSeconds: usage1.cpuSeconds - usage0.cpuSeconds, peakRSSMB: usage1.peakRSSMB)
            var details: [String: Double] = [:]
            details["batch"] = Double(batch)
            for (group, seconds) in threadCPU where group != "event_loops" { details["cpu_\(group)_threads_seconds"] = seconds }
            details["appends_per_fsync"] = storage.fsyncs > 0 ? Double(storage.appends) / Double(storage.fsyncs) : 0
            details["reopen_seconds"] = reopenSeconds
            details["reopen_log_bytes"] = Double(Self.directoryBytes(directory))
            details["recovered_entries"] = Double(recovered)
            if let checkpointCount {
                details["checkpoints"] = Double(checkpointCount)
                details["segments_created"] = Double(after.segmentsCreated - before.segmentsCreated)
                details["segments_recycled"] = Double(after.segmentsRecycled - before.segmentsRecycled)
            }
            if let limits {
                let bytesPerRecord = Double(storage.bytesWritten) / Double(max(result.records, 1))
                details["crc_ns_per_record"] = bytesPerRecord / limits.crc32_gb_per_second
            }
            let report = BenchReport(
                scenario: checkpointMib > 0 ? "local-checkpointed" : "local", replicas: 1, concurrency: concurrency, options: options, load: result, storage: storage,
                leaderGroupCommits: storage.groupCommits, usage: usage, loadCPUSeconds: usage.cpuSeconds, limits: limits,
                loadBefore: loadBefore, details: details
            )
            BenchReport.emit(report, json: options.json)
            reports.append(report)
            if !options.keep { try? FileManager.default.removeItem(atPath: directory) }
        }
        if !options.json {
            BenchReport.printTable(reports, limits: limits)
            for r in reports {
                print(String(format: "  local c=%d: reopened %.0f MB (%.0f entries) in %.3f s", r.concurrency,
                             (r.details["reopen_log_bytes"] ?? 0) / 1e6, r.details["recovered_entries"] ?? 0, r.details["reopen_seconds"] ?? 0))
            }
            if options.keep { print("logs kept in \(base)") }
        }
    }

    /// A checkpoint of everything but the last `keeping` slots (appends still in flight): a
    /// token snapshot, then the log truncated below it. False when the log is still too short.
    static func checkpoint(_ store: SegmentStore, keeping: UInt64) async throws -> Bool {
        guard let last = store.state.lastSlot, last > keeping else { return false }
        let through = last - keeping
        try await store.writeSnapshot(slot: through, data: Array("bench checkpoint through \(through)".utf8))
        try store.truncatePrefix(below: through + 1)
        return true
    }

    static func directoryBytes(_ directory: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.reduce(0) { sum, name in
            let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + name)
            return sum + ((attributes?[.size] as? Int) ?? 0)
        }
    }
}

extension BenchLocal {
    /// Times recovery of an existing log (scan, CRC of every record, index rebuild).
    func reportOpen(directory: String, logger: Logger) throws {
        let start = DispatchTime.now().uptimeNanoseconds
        let store = try SegmentStore.open(directory: directory, options: SegmentStore.Options(segmentSize: segmentMib << 20), logger: logger)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let state = store.state
        try store.close()
        let bytes = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).reduce(0) { sum, name in
            sum + (((try? FileManager.default.attributesOfItem(atPath: "\(directory)/\(name)"))?[.size] as? Int) ?? 0)
        }
        let result: [String: Any] = [
            "scenario": "local-wal open", "open_seconds": seconds, "log_bytes": bytes,
            "entries": state.entryCount, "segments": Int(state.lastSegment - state.firstSegment + 1),
        ]
        if options.json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("opened \(directory): \(state.entryCount) entries, \(bytes) bytes in \(String(format: "%.3f", seconds)) s")
        }
    }
}
