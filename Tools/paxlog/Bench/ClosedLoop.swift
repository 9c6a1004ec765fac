import Atomics
import Foundation
import Histogram

/// A closed-loop load: `concurrency` streams, each with one append of `batch` records in flight,
/// until `records` are acknowledged or `duration` seconds have passed. Latency is recorded per
/// record (every record of a batch gets its batch's latency), in microseconds.
struct ClosedLoop: Sendable {
    var concurrency: Int
    var batch: Int = 1
    var records: Int?
    var duration: Double?
    var label: String
    /// Where the streams run (nil: Swift's global executor).
    var executor: (any TaskExecutor)? = nil

    struct Result {
        var records: Int
        var seconds: Double
        var histogram: Histogram<UInt64>
    }

    /// Runs the load; `append` receives the record indexes of one request and returns once
    /// they are durable (or throws, which ends the run with that error).
    func run(_ append: @escaping @Sendable (Range<Int>) async throws -> Void) async throws -> Result {
        let next = ManagedAtomic<Int>(0)
        let done = ManagedAtomic<Int>(0)
        let total = records ?? Int.max
        let start = monotonicSeconds()
        let end = duration.map { start + $0 }
        let progress = BenchProgress.start(label: label, total: records, duration: duration, done: done)
        defer { progress.cancel() }
        let batch = self.batch
        let endNanoseconds = end.map { UInt64($0 * 1e9) }
        let histogram = try await withThrowingTaskGroup(of: [UInt32].self) { group in
            let stream: @Sendable () async throws -> [UInt32] = {
                // Raw samples, appended in order: a histogram per stream (160 KiB of counts
                // each) cost about 8% of the load's CPU in cache misses at 256 streams.
                var samples: [UInt32] = []
                samples.reserveCapacity(1024)
                var now = monotonicNanoseconds()
                while true {
                    if let endNanoseconds, now >= endNanoseconds { break }
                    let lo = next.loadThenWrappingIncrement(by: batch, ordering: .relaxed)
                    if lo >= total { break }
                    let range = lo..<Swift.min(total, lo + batch)
                    let t0 = now
                    try await append(range)
                    now = monotonicNanoseconds()
                    let micros = UInt32(clamping: (now - t0) / 1000)
                    for _ in range { samples.append(micros) }
                    done.wrappingIncrement(by: range.count, ordering: .relaxed)
                }
                return samples
            }
            for _ in 0..<concurrency {
                // Not `addTask(executorPreference: nil)`: that still gives the task a preference
                // record, and the runtime then takes a lock on every hop to look it up (about 6%
                // of the CPU of `bench local` at 256 streams, in `swift_task_switch`).
                if let executor {
                    group.addTask(executorPreference: executor, operation: stream)
                } else {
                    group.addTask(operation: stream)
                }
            }
            var merged = newLatencyHistogram()
            for try await samples in group {
                for micros in samples { _ = merged.record(UInt64(micros)) }
            }
            return merged
        }
        let seconds = monotonicSeconds() - start
        return Result(records: done.load(ordering: .relaxed), seconds: seconds, histogram: histogram)
    }
}

/// The progress line on stderr: rewritten in place on a terminal, a line every 5 s otherwise.
enum BenchProgress {
    static let isTerminal = isatty(STDERR_FILENO) == 1

    static func note(_ line: String) {
        FileHandle.standardError.write(Data("paxlog bench: \(line)\n".utf8))
    }

    /// Starts reporting `done` every second; cancel the task to stop (it clears the line).
    static func start(label: String, total: Int?, duration: Double?, done: ManagedAtomic<Int>) -> Task<Void, Never> {
        Task.detached {
            let start = monotonicSeconds()
            var last = 0
            var lastTime = start
            var lastPrinted = start
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: 1_000_000_000)
                if Task.isCancelled { break }
                let now = monotonicSeconds()
                let n = done.load(ordering: .relaxed)
                let rate = Double(n - last) / Swift.max(now - lastTime, 1e-9)
                (last, lastTime) = (n, now)
                let of = total.map { " of \($0)" } ?? duration.map { String(format: " in %.0f s", $0) } ?? ""
                let line = String(format: "%@: %d records%@ · %.0f records/s now · %.1f s", label, n, of, rate, now - start)
                if isTerminal {
                    FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
                } else if now - lastPrinted >= 5 {
                    FileHandle.standardError.write(Data("\(line)\n".utf8))
                    lastPrinted = now
                }
            }
            if isTerminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        }
    }
}

/// CPU time and peak resident memory from `getrusage`.
struct ResourceUsage {
    var cpuSeconds: Double
    var peakRSSMB: Double

    static func current(_ who: Int32 = RUSAGE_SELF.rawValue) -> ResourceUsage {
        var u = rusage()
        getrusage(__rusage_who_t(who), &u)
        let cpu = Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
        return ResourceUsage(cpuSeconds: cpu, peakRSSMB: Double(u.ru_maxrss) / 1024)
    }

    /// Terminated and reaped child processes (the replicas of `bench processes`, once stopped).
    static var children: ResourceUsage { current(RUSAGE_CHILDREN.rawValue) }
}
