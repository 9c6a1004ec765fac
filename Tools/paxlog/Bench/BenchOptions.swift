import ArgumentParser
import Foundation
import SegmentLog

/// Options every `paxlog bench` scenario shares.
struct BenchOptions: ParsableArguments {
    @Option(help: "Records to append per run (default 200000 unless --duration is given).") var records: Int?
    @Option(help: "Run each concurrency for this many seconds instead of a record count.") var duration: Double?
    @Option(help: "Record size in bytes.") var size: Int = 256
    @Option(help: "Concurrent append streams; a comma-separated list runs one scenario per value (e.g. 1,16,256).")
    var concurrency: String = "256"
    @Option(help: "Sync policy on every replica: always | interval | never.") var sync: String = "always"
    @Option(help: "LZ4 compression of batch records: on | off.") var compression: String = "on"
    @Option(help: "Records: random (incompressible) | text (realistic log lines).") var payload: String = "random"
    @Option(help: "Directory for the logs and the limit measurements (default: a new temporary directory).") var dir: String?
    @Flag(help: "Leave the logs in --dir.") var keep = false
    @Flag(help: "One JSON object per scenario on stdout, one per line.") var json = false
    @Flag(help: "Skip measuring the machine's limits (fdatasync rate, sequential write, LZ4, CRC32).") var noLimits = false
    @Option(help: "Nice value the storage commit threads ask for (needs CAP_SYS_NICE below 0), or 'off' for the default priority.")
    var commitThreadNice: String = "-10"
    @Option(help: "Group commit delay in microseconds before a sync that follows a large one (default 0: none).")
    var commitDelayUs: Int?

    func validate() throws {
        if let commitDelayUs, commitDelayUs < 0 || commitDelayUs > 100_000 { throw ValidationError("--commit-delay-us must be 0…100000") }
        if let records, records <= 0 { throw ValidationError("--records must be positive") }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        if records != nil && duration != nil { throw ValidationError("give --records or --duration, not both") }
        guard size >= 0, size <= 16 << 20 else { throw ValidationError("--size must be 0…16 MiB") }
        guard let c = concurrencies, !c.isEmpty, c.allSatisfy({ (1...4096).contains($0) }) else {
            throw ValidationError("--concurrency must be a list of integers in 1…4096")
        }
        guard ["always", "interval", "never"].contains(sync) else { throw ValidationError("--sync must be always, interval or never") }
        guard ["on", "off"].contains(compression) else { throw ValidationError("--compression must be on or off") }
        guard PayloadGenerator.Kind(rawValue: payload) != nil else { throw ValidationError("--payload must be random or text") }
        guard commitThreadNice == "off" || Int32(commitThreadNice).map({ (-20...19).contains($0) }) == true else {
            throw ValidationError("--commit-thread-nice must be off or an integer in -20…19")
        }
    }

    var concurrencies: [Int]? {
        let parts = concurrency.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        return parts.contains(nil) ? nil : parts.map { $0! }
    }

    var recordCount: Int? { duration == nil ? (records ?? 200_000) : nil }

    func payloadGenerator() -> PayloadGenerator { PayloadGenerator(kind: PayloadGenerator.Kind(rawValue: payload)!, size: size) }

    /// Storage options for every replica of the run.
    func storageOptions(intervalMilliseconds: Int = 5) -> SegmentStore.Options {
        var o = SegmentStore.Options()
        o.syncPolicy = sync == "always" ? .always : sync == "never" ? .never : .interval(milliseconds: intervalMilliseconds)
        if compression == "off" { o.compressionThreshold = Int.max }
        o.commitThreadNice = Int32(commitThreadNice)
        if let commitDelayUs { o.commitDelayMicroseconds = commitDelayUs }
        return o
    }

    /// The benchmark directory (created), and whether this run made it (so it removes it).
    func makeDirectory() throws -> (path: String, created: Bool) {
        if let dir {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return (dir, false)
        }
        var template = Array((NSTemporaryDirectory() + "/paxlog-bench-XXXXXX").utf8CString)
        let path = template.withUnsafeMutableBufferPointer { buffer -> String? in
            guard let p = mkdtemp(buffer.baseAddress!) else { return nil }
            return String(cString: p)
        }
        guard let path else { throw CLIError("cannot create a temporary directory: errno \(errno)") }
        return (path, true)
    }

    /// The limits, measured once per invocation unless `--no-limits`.
    func measureLimits(in directory: String) throws -> MachineLimits? {
        guard !noLimits else { return nil }
        BenchProgress.note("measuring the machine's limits in \(directory)…")
        let limits = try MachineLimits.measure(directory: directory, payload: payloadGenerator())
        BenchProgress.note("limits: \(limits.text)")
        return limits
    }
}
