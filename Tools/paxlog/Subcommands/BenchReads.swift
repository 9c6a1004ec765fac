import ArgumentParser
import Foundation
import PaxosLog

/// `paxlog bench reads`: what a linearizable read costs against a local one, on the leader
/// (one replicated round per barrier, shared by concurrent reads) and on a follower (a barrier
/// asked of the leader over its client port, then a wait until the follower has applied it).
struct BenchReads: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reads",
        abstract: "Read latency and throughput, local against linearizable, on the leader and on a follower: 3 replicas in one process over loopback TCP.",
        discussion: "Each read asks for the last 16 records of a log preloaded with --records records of --size bytes; no appends run meanwhile."
    )

    @Option(help: "Seconds per mode.") var duration: Double = 5
    @Option(help: "Concurrent readers.") var concurrency: Int = 8
    @Option(help: "Records appended before the reads.") var records: Int = 1000
    @Option(help: "Record size in bytes.") var size: Int = 256
    @Flag(help: "One JSON object per mode.") var json = false

    func validate() throws {
        guard duration > 0, concurrency > 0, records > 0, size >= 0 else {
            throw ValidationError("--duration, --concurrency and --records must be positive, --size not negative")
        }
    }

    func run() async throws {
        let directory = NSTemporaryDirectory() + "/paxlog-bench-reads-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Serving clients: a follower asks the leader for its barrier over the client port.
        let servers = try await BenchCluster.openCluster(in: directory, replicas: 3, { _ in }) { try await PaxosLogServer.start($0) }
        let logs = servers.map(\.log)
        let leader = try await BenchCluster.waitForLeader(logs)
        let follower = logs.first { $0 !== leader }!
        var last: PaxosLog.Position = 0
        for start in stride(from: 0, to: records, by: 100) {
            last = try await leader.append(contentsOf: (start..<Swift.min(records, start + 100)).map { _ in [UInt8](repeating: 0x61, count: size) }).last!
        }
        // Until the follower holds it all: a local read there then sees the same log.
        while try await follower.status().chosenThrough < last { try await Task.sleep(nanoseconds: 10_000_000) }
        let from = last > 15 ? last - 15 : 1

        if !json { print("mode                      reads/s      p50 µs    p99 µs") }
        for (name, log, consistency) in [("leader local", leader, PaxosLog.ReadConsistency.local), ("leader linearizable", leader, .linearizable),
                                         ("follower local", follower, .local), ("follower linearizable", follower, .linearizable)] {
            let loop = ClosedLoop(concurrency: concurrency, duration: duration, label: name)
            let result = try await loop.run { _ in
                let page = try await log.read(from: from, maxCount: 16, consistency: consistency)
                guard page.entries.count == 16 else { throw CLIError("\(name) read \(page.entries.count) of 16 records") }
            }
            let rate = Double(result.records) / result.seconds
            let (p50, p99) = (result.histogram.valueAtPercentile(50), result.histogram.valueAtPercentile(99))
            if json {
                print(JSON.object([("mode", .string(name)), ("concurrency", .int(Int64(concurrency))), ("reads_per_second", .double(rate)),
                                   ("p50_us", .uint(p50)), ("p99_us", .uint(p99))]).text)
            } else {
                print(name.padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: "%11.0f %11llu %9llu", rate, p50, p99))
            }
        }
        for server in servers { try await server.shutdown() }
    }
}
