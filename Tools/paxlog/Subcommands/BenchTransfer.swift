import ArgumentParser
import Foundation
import Histogram
import NIOConcurrencyHelpers
import PaxosLog

/// `paxlog bench transfer`: what a leadership transfer costs the appends running through it:
/// the gap in acknowledgements, the call's duration, and throughput and p99 latency while
/// transfers happen against steady state before them.
struct BenchTransfer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transfer",
        abstract: "Appends through leadership transfers: the gap in acknowledgements and throughput and p99 against steady state; 3 replicas in one process over loopback TCP.",
        discussion: "Appenders append to whichever replica leads (following the leader an error names). After --steady seconds the leader hands leadership to the next replica, --transfers times, every --interval seconds."
    )

    @Option(help: "Seconds of steady state before the first transfer.") var steady: Double = 3
    @Option(help: "Leadership transfers.") var transfers: Int = 5
    @Option(help: "Seconds between transfers.") var interval: Double = 1
    @Option(help: "Concurrent appenders.") var concurrency: Int = 16
    @Option(help: "Record size in bytes.") var size: Int = 256
    @Flag(help: "One JSON object.") var json = false

    func validate() throws {
        guard steady > 0, transfers > 0, interval > 0, concurrency > 0, size >= 0 else {
            throw ValidationError("--steady, --transfers, --interval and --concurrency must be positive, --size not negative")
        }
    }

    /// One appender's acknowledgements: when, and how long each took (ns).
    struct Samples: Sendable {
        var acked: [(at: UInt64, latency: UInt64)] = []
        var notAppended = 0
        var unknown = 0
    }

    func run() async throws {
        let directory = NSTemporaryDirectory() + "/paxlog-bench-transfer-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let logs = try await BenchCluster.openCluster(in: directory, replicas: 3) { _ in }
        let first = try await BenchCluster.waitForLeader(logs)
        let leader = NIOLockedValueBox(logs.firstIndex { $0 === first }!)
        let stop = NIOLockedValueBox(false)
        let record = [UInt8](repeating: 0x61, count: size)
        let appenders = (0..<concurrency).map { _ in
            Task { () -> Samples in
                var s = Samples()
                while !stop.withLockedValue({ $0 }) {
                    let log = logs[leader.withLockedValue { $0 }]
                    let t0 = monotonicNanoseconds()
                    do {
                        _ = try await log.append(record)
                        let t1 = monotonicNanoseconds()
                        s.acked.append((t1, t1 - t0))
                    } catch let e as PaxosLogError {
                        if e.outcome == .unknown { s.unknown += 1 } else { s.notAppended += 1 }
                        if let l = e.leader, let k = logs.firstIndex(where: { $0.configuration.nodeID == l }) {
                            leader.withLockedValue { $0 = k }
                        } else {
                            try? await Task.sleep(nanoseconds: 1_000_000)
                        }
                    }
                }
                return s
            }
        }
        let start = monotonicNanoseconds()
        try await Task.sleep(nanoseconds: UInt64(steady * 1e9))
        var calls: [(start: UInt64, end: UInt64)] = []
        for k in 0..<transfers {
            let from = leader.withLockedValue { $0 }
            let to = (from + 1) % logs.count
            let t0 = monotonicNanoseconds()
            try await logs[from].transferLeadership(to: logs[to].configuration.nodeID)
            calls.append((t0, monotonicNanoseconds()))
            leader.withLockedValue { $0 = to }
            try await Task.sleep(nanoseconds: UInt64(interval * 1e9))
        }
        stop.withLockedValue { $0 = true }
        var all = Samples()
        for a in appenders {
            let s = try await a.value
            all.acked += s.acked
            all.notAppended += s.notAppended
            all.unknown += s.unknown
        }
        for log in logs { try await log.close() }
        let end = calls.last!.end + UInt64(interval * 1e9)
        report(all, start: start, transfersStart: calls[0].start, end: end, calls: calls)
    }

    func report(_ s: Samples, start: UInt64, transfersStart: UInt64, end: UInt64, calls: [(start: UInt64, end: UInt64)]) {
        let times = s.acked.map(\.at).sorted()
        // The longest stretch without an acknowledgement that overlaps each call.
        let gaps = calls.map { c -> Double in
            var gap: UInt64 = 0
            for (a, b) in zip(times, times.dropFirst()) where b >= c.start && a <= c.end { gap = Swift.max(gap, b - a) }
            return Double(gap) / 1e6
        }
        let durations = calls.map { Double($0.end - $0.start) / 1e6 }
        func phase(_ from: UInt64, _ to: UInt64) -> (rate: Double, p50: UInt64, p99: UInt64) {
            var h = newLatencyHistogram()
            var n = 0
            for a in s.acked where a.at >= from && a.at < to {
                _ = h.record(a.latency / 1000)
                n += 1
            }
            return (Double(n) / (Double(to - from) / 1e9), h.valueAtPercentile(50), h.valueAtPercentile(99))
        }
        let steadyPhase = phase(start, transfersStart)
        let transferPhase = phase(transfersStart, end)
        if json {
            print(JSON.object([
                ("concurrency", .int(Int64(concurrency))), ("size", .int(Int64(size))), ("transfers", .int(Int64(calls.count))),
                ("steady_records_per_second", .double(steadyPhase.rate)), ("steady_p50_us", .uint(steadyPhase.p50)), ("steady_p99_us", .uint(steadyPhase.p99)),
                ("transfer_records_per_second", .double(transferPhase.rate)), ("transfer_p50_us", .uint(transferPhase.p50)), ("transfer_p99_us", .uint(transferPhase.p99)),
                ("ack_gap_ms", .array(gaps.map { .double($0) })), ("transfer_ms", .array(durations.map { .double($0) })),
                ("not_appended", .int(Int64(s.notAppended))), ("unknown", .int(Int64(s.unknown))),
            ]).text)
            return
        }
        print("phase                     records/s    p50 µs    p99 µs")
        print("steady                  " + String(format: "%11.0f %9llu %9llu", steadyPhase.rate, steadyPhase.p50, steadyPhase.p99))
        print("with transfers          " + String(format: "%11.0f %9llu %9llu", transferPhase.rate, transferPhase.p50, transferPhase.p99))
        print("transfer call (ms):      " + durations.map { String(format: "%.1f", $0) }.joined(separator: " "))
        print("gap in acks (ms):        " + gaps.map { String(format: "%.1f", $0) }.joined(separator: " "))
        print("appends refused (not appended): \(s.notAppended), unknown outcome: \(s.unknown)")
    }
}
