import ArgumentParser
import CZlib
import CLZ4
import Foundation
import Histogram
import Logging
import SegmentLog

/// `paxlog bench local`: SegmentLog alone as a local WAL. `--concurrency` tasks each append
/// single-entry batches of `--size` bytes until `--records` are acknowledged, then the log is
/// reopened (recovered) and timed. Prints the machine's own limits measured in the same run.
struct BenchLocal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "local",
        abstract: "Local WAL append throughput, latency and recovery time (SegmentLog alone)."
    )

    @Option(help: "Records to append.") var records: Int = 200_000
    @Option(help: "Value size in bytes.") var size: Int = 256
    @Option(help: "Concurrent appenders.") var concurrency: Int = 256
    @Option(help: "Entries per append (one record per append).") var batch: Int = 1
    @Option(help: "always | interval | never") var sync: String = "always"
    @Option(help: "Sync interval in milliseconds for --sync interval.") var intervalMs: Int = 10
    @Option(help: "Segment size in MiB.") var segmentMib: Int = 64
    @Option(help: "Data directory (default: a new temporary directory).") var dir: String?
    @Flag(help: "Leave the log in --dir for the inspection tools.") var keep = false
    @Flag(help: "Print one JSON object.") var json = false
    @Flag(help: "Use compressible values (repeating text) instead of random bytes.") var compressible = false
    @Flag(help: "Skip measuring the machine's limits (fdatasync rate, CRC and LZ4 speed).") var noLimits = false
    @Flag(help: "Only open (recover) the existing log in --dir and report the time.") var openOnly = false

    func validate() throws {
        guard records > 0, size >= 0, concurrency > 0, batch > 0 else {
            throw ValidationError("--records, --concurrency and --batch must be positive, --size non-negative")
        }
        guard ["always", "interval", "never"].contains(sync) else { throw ValidationError("--sync must be always, interval or never") }
    }

    func run() async throws {
        var logger = Logger(label: "paxlog.bench")
        logger.logLevel = .warning
        let directory = dir ?? makeTemporaryDirectory()
        // Without --keep the benchmark's log is removed; --open-only never removes anything.
        defer { if !keep && !openOnly { try? FileManager.default.removeItem(atPath: directory) } }
        var options = SegmentStore.Options(segmentSize: segmentMib << 20)
        options.syncPolicy = sync == "always" ? .always : sync == "never" ? .never : .interval(milliseconds: intervalMs)
        if openOnly {
            try reportOpen(directory: directory, options: options, logger: logger)
            return
        }
        let value = makeValue()

        let store = try SegmentStore.open(directory: directory, options: options, logger: logger)
        let firstSlot = (store.state.lastSlot ?? 0) + 1
        let appendsTotal = (records + batch - 1) / batch
        let lanes = min(concurrency, appendsTotal)
        let batch = self.batch
        let records = self.records
        let started = DispatchTime.now().uptimeNanoseconds
        let histogram = try await withThrowingTaskGroup(of: Histogram<UInt64>.self) { group in
            for lane in 0..<lanes {
                group.addTask {
                    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
                    var a = lane
                    while a < appendsTotal {
                        let first = firstSlot + UInt64(a * batch)
                        let count = min(batch, records - a * batch)
                        let entries = (0..<count).map {
                            LogEntry(slot: first + UInt64($0), ballot: LogBallot(round: 1, node: 1), isNoop: false, payload: value)
                        }
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        try await store.append([.accepted(entries)])
                        _ = histogram.record((DispatchTime.now().uptimeNanoseconds - t0) / 1000)
                        a += lanes
                    }
                    return histogram
                }
            }
            var total = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
            for try await h in group { total.add(h) }
            return total
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let stats = store.statistics
        try store.close()

        let reopenStart = DispatchTime.now().uptimeNanoseconds
        let reopened = try SegmentStore.open(directory: directory, options: options, logger: logger)
        let reopenSeconds = Double(DispatchTime.now().uptimeNanoseconds - reopenStart) / 1e9
        let recovered = reopened.state.entryCount
        try reopened.close()
        let logBytes = directoryBytes(directory)

        let limits = noLimits ? nil : measureLimits(directory: directory, value: value)
        var result: [String: Any] = [
            "scenario": "local-wal sync=\(sync) size=\(size) concurrency=\(concurrency) batch=\(batch)",
            "records": records,
            "records_per_second": Double(records) / elapsed,
            "mb_per_second": Double(records * size) / elapsed / 1e6,
            "seconds": elapsed,
            "latency_us": [
                "p50": histogram.valueAtPercentile(50), "p90": histogram.valueAtPercentile(90),
                "p99": histogram.valueAtPercentile(99), "p999": histogram.valueAtPercentile(99.9),
                "max": histogram.max,
            ],
            "fsyncs": stats.dataSyncs,
            "group_commits": stats.groupCommits,
            "appends_per_fsync": stats.dataSyncs > 0 ? Double(stats.appends) / Double(stats.dataSyncs) : 0,
            "bytes_written": stats.bytesWritten,
            "compression_ratio": stats.storedPayloadBytes > 0 ? Double(stats.rawPayloadBytes) / Double(stats.storedPayloadBytes) : 1,
            "segments_created": stats.segmentsCreated,
            "reopen_seconds": reopenSeconds,
            "reopen_log_bytes": logBytes,
            "recovered_entries": recovered,
            "peak_rss_mib": peakRSSMiB(),
            "cpu_seconds": cpuSeconds(),
            "directory": keep ? directory : "",
        ]
        if let limits {
            result["machine"] = limits
            if let crc = limits["crc32_mb_per_second"] as? Double {
                // CRC cost per record: its stored bytes (+12 header bytes) at the measured speed.
                let perRecord = Double(stats.bytesWritten) / Double(max(records, 1))
                result["crc_ns_per_record"] = perRecord / crc * 1e3
                result["crc_share_of_elapsed"] = Double(stats.bytesWritten) / (crc * 1e6) / elapsed
            }
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            printHuman(result)
        }
    }

    private func reportOpen(directory: String, options: SegmentStore.Options, logger: Logger) throws {
        let start = DispatchTime.now().uptimeNanoseconds
        let store = try SegmentStore.open(directory: directory, options: options, logger: logger)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let state = store.state
        try store.close()
        let result: [String: Any] = [
            "scenario": "local-wal open", "open_seconds": seconds, "log_bytes": directoryBytes(directory),
            "entries": state.entryCount, "segments": Int(state.lastSegment - state.firstSegment + 1),
        ]
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("opened \(directory): \(state.entryCount) entries, \(result["log_bytes"] ?? 0) bytes in \(String(format: "%.3f", seconds)) s")
        }
    }

    private func makeValue() -> [UInt8] {
        if compressible {
            let text = Array("the quick brown fox jumps over the lazy dog; ".utf8)
            return (0..<size).map { text[$0 % text.count] }
        }
        var generator = SystemRandomNumberGenerator()
        return (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    private func makeTemporaryDirectory() -> String {
        var template = Array((NSTemporaryDirectory() + "/paxlog-bench-XXXXXX").utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    private func directoryBytes(_ directory: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.reduce(0) { sum, name in
            let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + name)
            return sum + ((attributes?[.size] as? Int) ?? 0)
        }
    }

    /// fdatasync rate of 4 KiB writes, CRC32 and LZ4 speed: the limits every figure is read against.
    private func measureLimits(directory: String, value: [UInt8]) -> [String: Any] {
        var limits: [String: Any] = [:]
        let path = directory + "/limits.tmp"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        if fd >= 0 {
            var page = [UInt8](repeating: 7, count: 4096)
            let start = DispatchTime.now().uptimeNanoseconds
            var n = 0
            while DispatchTime.now().uptimeNanoseconds - start < 500_000_000 {
                _ = page.withUnsafeMutableBytes { pwrite(fd, $0.baseAddress, 4096, off_t(n % 256) * 4096) }
                fdatasync(fd)
                n += 1
            }
            limits["fdatasync_per_second"] = Double(n) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            close(fd)
            unlink(path)
        }
        let buffer = (0..<(64 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }
        var start = DispatchTime.now().uptimeNanoseconds
        var crc: UInt = 0
        for _ in 0..<4 {
            crc = buffer.withUnsafeBufferPointer { CZlib.crc32(crc, $0.baseAddress, UInt32($0.count)) }
        }
        limits["crc32_mb_per_second"] = Double(4 * buffer.count) / 1e6 / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        limits["crc32_check"] = crc
        let sample = [UInt8]((0..<(1 << 20)).map { value.isEmpty ? 0 : value[$0 % value.count] })
        var output = [UInt8](repeating: 0, count: Int(LZ4_compressBound(Int32(sample.count))))
        start = DispatchTime.now().uptimeNanoseconds
        var packed: Int32 = 0
        for _ in 0..<16 {
            packed = sample.withUnsafeBytes { src in
                output.withUnsafeMutableBytes { dst in
                    LZ4_compress_default(src.baseAddress!.assumingMemoryBound(to: CChar.self), dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                         Int32(src.count), Int32(dst.count))
                }
            }
        }
        limits["lz4_compress_mb_per_second"] = Double(16 * sample.count) / 1e6 / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        limits["lz4_ratio_of_values"] = Double(sample.count) / Double(max(packed, 1))
        return limits
    }

    private func peakRSSMiB() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }

    private func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }

    private func printHuman(_ r: [String: Any]) {
        func f(_ key: String) -> String {
            if let d = r[key] as? Double { return String(format: "%.1f", d) }
            return "\(r[key] ?? "-")"
        }
        let latency = r["latency_us"] as? [String: UInt64] ?? [:]
        print("scenario            \(r["scenario"] ?? "")")
        print("records/s           \(f("records_per_second"))   MB/s \(f("mb_per_second"))   in \(f("seconds")) s")
        print("latency µs          p50 \(latency["p50"] ?? 0)  p90 \(latency["p90"] ?? 0)  p99 \(latency["p99"] ?? 0)  p99.9 \(latency["p999"] ?? 0)  max \(latency["max"] ?? 0)")
        print("fdatasyncs          \(f("fsyncs"))   appends/fsync \(f("appends_per_fsync"))   compression \(f("compression_ratio"))x")
        print("reopen              \(f("reopen_seconds")) s for \(f("reopen_log_bytes")) bytes, \(f("recovered_entries")) entries")
        print("cpu / peak RSS      \(f("cpu_seconds")) s / \(f("peak_rss_mib")) MiB")
        if let m = r["machine"] as? [String: Any] {
            print("machine             fdatasync/s \(m["fdatasync_per_second"] ?? "-")  crc32 MB/s \(m["crc32_mb_per_second"] ?? "-")  lz4 MB/s \(m["lz4_compress_mb_per_second"] ?? "-")")
            print("crc cost            \(f("crc_ns_per_record")) ns/record, \(f("crc_share_of_elapsed")) of elapsed")
        }
        if keep, let d = r["directory"] { print("log kept in         \(d)") }
    }
}
