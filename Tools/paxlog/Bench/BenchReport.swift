import Foundation
import SegmentLog

/// Storage counters of one or more replicas over the measured interval.
struct StorageTotals: Sendable {
    var appends = 0
    var groupCommits = 0
    var fsyncs = 0
    var bytesWritten = 0
    var rawPayloadBytes = 0
    var storedPayloadBytes = 0

    init() {}

    init(_ s: SegmentStore.Statistics) {
        appends = s.appends; groupCommits = s.groupCommits; fsyncs = s.dataSyncs
        bytesWritten = s.bytesWritten; rawPayloadBytes = s.rawPayloadBytes; storedPayloadBytes = s.storedPayloadBytes
    }

    /// From `paxlog serve`'s status details (`storage_*` keys).
    init(details: [String: String]) {
        func n(_ k: String) -> Int { Int(details["storage_" + k] ?? "") ?? 0 }
        appends = n("appends"); groupCommits = n("group_commits"); fsyncs = n("fsyncs")
        bytesWritten = n("bytes_written"); rawPayloadBytes = n("raw_payload_bytes"); storedPayloadBytes = n("stored_payload_bytes")
    }

    static func - (a: Self, b: Self) -> Self {
        var r = Self()
        r.appends = a.appends - b.appends; r.groupCommits = a.groupCommits - b.groupCommits; r.fsyncs = a.fsyncs - b.fsyncs
        r.bytesWritten = a.bytesWritten - b.bytesWritten; r.rawPayloadBytes = a.rawPayloadBytes - b.rawPayloadBytes
        r.storedPayloadBytes = a.storedPayloadBytes - b.storedPayloadBytes
        return r
    }

    static func + (a: Self, b: Self) -> Self {
        var r = Self()
        r.appends = a.appends + b.appends; r.groupCommits = a.groupCommits + b.groupCommits; r.fsyncs = a.fsyncs + b.fsyncs
        r.bytesWritten = a.bytesWritten + b.bytesWritten; r.rawPayloadBytes = a.rawPayloadBytes + b.rawPayloadBytes
        r.storedPayloadBytes = a.storedPayloadBytes + b.storedPayloadBytes
        return r
    }
}

/// What one scenario measured, as `--json` prints it (one object per line).
struct BenchReport: Encodable {
    var scenario: String
    var replicas: Int
    var concurrency: Int
    var size: Int
    var sync: String
    var compression: String
    var payload: String
    var records: Int
    var seconds: Double
    var records_per_second: Double
    /// Raw record bytes acknowledged per second.
    var mb_per_second: Double
    /// Bytes written to segment files per second, summed over replicas (framing and compression included).
    var stored_mb_per_second: Double
    var latency_us: LatencySummary
    var latency_mean_us: Double
    /// `fdatasync` calls on segment files, summed over replicas.
    var fsyncs: Int
    var fsyncs_per_second: Double
    /// Records made durable per group commit (one write + one fdatasync) on the leader.
    var mean_batch_records: Double
    /// Raw ÷ stored payload bytes.
    var compression_ratio: Double
    /// CPU of every process of the scenario (load generator and replicas) over the run.
    var cpu_seconds: Double
    /// Of `cpu_seconds`: the load generator's own (for `processes`; the whole process otherwise).
    var load_cpu_seconds: Double
    var peak_rss_mb: Double
    var limits: LimitsReport?
    /// Load average (1 min) of the machine before and after the scenario: the machine is shared.
    var load_average_before: Double
    var load_average_after: Double
    var cores: Int
    /// Scenario-specific figures (recovery time, per-replica counters, …).
    var details: [String: Double]

    struct LimitsReport: Encodable {
        var fdatasync_per_second: Double
        var seq_write_mb_per_second: Double
        var lz4_compress_mb_per_second: Double
        var lz4_decompress_mb_per_second: Double
        var crc32_gb_per_second: Double
        /// Each figure over its limit: fsyncs/s ÷ fdatasync/s, stored MB/s ÷ sequential MB/s, and
        /// for LZ4 and CRC the share of one core that compressing, decompressing and checksumming
        /// the bytes would take at the measured speed.
        var fraction_of_limit: [String: Double]
    }

    init(scenario: String, replicas: Int, concurrency: Int, options: BenchOptions, load: ClosedLoop.Result,
         storage: StorageTotals, leaderGroupCommits: Int, usage: ResourceUsage, loadCPUSeconds: Double,
         limits: MachineLimits?, loadBefore: Double, details: [String: Double] = [:]) {
        self.scenario = scenario
        self.replicas = replicas
        self.concurrency = concurrency
        size = options.size
        sync = options.sync
        compression = options.compression
        payload = options.payload
        records = load.records
        seconds = load.seconds
        let s = Swift.max(load.seconds, 1e-9)
        records_per_second = Double(load.records) / s
        mb_per_second = Double(load.records * options.size) / 1e6 / s
        stored_mb_per_second = Double(storage.bytesWritten) / 1e6 / s
        latency_us = LatencySummary(load.histogram)
        latency_mean_us = load.histogram.mean
        fsyncs = storage.fsyncs
        fsyncs_per_second = Double(storage.fsyncs) / s
        mean_batch_records = leaderGroupCommits > 0 ? Double(load.records) / Double(leaderGroupCommits) : 0
        compression_ratio = storage.storedPayloadBytes > 0 ? Double(storage.rawPayloadBytes) / Double(storage.storedPayloadBytes) : 1
        cpu_seconds = usage.cpuSeconds
        load_cpu_seconds = loadCPUSeconds
        peak_rss_mb = usage.peakRSSMB
        load_average_before = loadBefore
        load_average_after = Self.loadAverage()
        cores = ProcessInfo.processInfo.activeProcessorCount
        self.details = details
        if let l = limits {
            let rawMB = Double(storage.rawPayloadBytes) / 1e6 / s
            let storedMB = Double(storage.bytesWritten) / 1e6 / s
            var fraction: [String: Double] = [:]
            fraction["fsyncs_per_second"] = fsyncs_per_second / l.fdatasync_per_second
            fraction["stored_mb_per_second"] = stored_mb_per_second / l.seq_write_mb_per_second
            fraction["lz4_compress"] = options.compression == "on" ? rawMB / l.lz4_compress_mb_per_second : 0
            fraction["lz4_decompress"] = rawMB / l.lz4_decompress_mb_per_second
            fraction["crc32"] = storedMB / (l.crc32_gb_per_second * 1000)
            // Closed loop with sync=always: every acknowledgement waits for at least one fdatasync
            // (the leader's and a follower's run in parallel), so records/s ≤ concurrency × fdatasync/s.
            fraction["records_per_second_of_concurrency_x_fdatasync"] = records_per_second / (Double(concurrency) * l.fdatasync_per_second)
            self.limits = LimitsReport(
                fdatasync_per_second: l.fdatasync_per_second, seq_write_mb_per_second: l.seq_write_mb_per_second,
                lz4_compress_mb_per_second: l.lz4_compress_mb_per_second, lz4_decompress_mb_per_second: l.lz4_decompress_mb_per_second,
                crc32_gb_per_second: l.crc32_gb_per_second, fraction_of_limit: fraction
            )
        }
    }

    static func loadAverage() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return -1 }
        return Double(text.split(separator: " ").first ?? "") ?? -1
    }

    /// Prints `reports` as a table (human) or one JSON object per line.
    static func emit(_ report: BenchReport, json: Bool) {
        if json { FileHandle.standardOutput.write(Data((jsonLine(report) + "\n").utf8)) }
    }

    static func printTable(_ reports: [BenchReport], limits: MachineLimits?) {
        guard !reports.isEmpty else { return }
        let header = ["scenario", "conc", "records/s", "MB/s", "stored MB/s", "p50 µs", "p90", "p99", "p99.9", "max",
                      "fsyncs/s", "rec/commit", "ratio", "cpu s", "RSS MB", "load"]
        var rows: [[String]] = [header]
        for r in reports {
            rows.append([
                r.scenario, "\(r.concurrency)", String(format: "%.0f", r.records_per_second), String(format: "%.1f", r.mb_per_second),
                String(format: "%.1f", r.stored_mb_per_second), "\(r.latency_us.p50)", "\(r.latency_us.p90)", "\(r.latency_us.p99)",
                "\(r.latency_us.p999)", "\(r.latency_us.max)", String(format: "%.0f", r.fsyncs_per_second),
                String(format: "%.1f", r.mean_batch_records), String(format: "%.2f", r.compression_ratio),
                String(format: "%.1f", r.cpu_seconds), String(format: "%.0f", r.peak_rss_mb),
                String(format: "%.1f→%.1f", r.load_average_before, r.load_average_after),
            ])
        }
        let widths = (0..<header.count).map { c in rows.map { $0[c].count }.max()! }
        for (i, row) in rows.enumerated() {
            let cells = row.enumerated().map { c, cell in
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return c == 0 ? cell + pad : pad + cell
            }
            print(cells.joined(separator: "  "))
            if i == 0 { print(widths.map { String(repeating: "─", count: $0) }.joined(separator: "  ")) }
        }
        let r0 = reports[0]
        print("\n\(r0.size) B \(r0.payload) records, sync=\(r0.sync), compression \(r0.compression), \(r0.cores) cores; load = 1-min load average before→after")
        if let limits {
            print("machine limits (same run): \(limits.text)")
            for r in reports {
                guard let f = r.limits?.fraction_of_limit else { continue }
                let bound = f["records_per_second_of_concurrency_x_fdatasync"] ?? 0
                print(String(format: "  %@ c=%d: records/s %.0f%% of concurrency × fdatasync/s · fsyncs %.0f%% of fdatasync/s · stored MB/s %.1f%% of sequential · one core's share: CRC %.2f%%, LZ4 %.2f%%",
                             r.scenario, r.concurrency, 100 * bound, 100 * (f["fsyncs_per_second"] ?? 0), 100 * (f["stored_mb_per_second"] ?? 0),
                             100 * (f["crc32"] ?? 0), 100 * (f["lz4_compress"] ?? 0)))
            }
        }
    }
}
