import ArgumentParser
import Logging
import PaxosLogTesting
import SegmentLog

#if canImport(Glibc)
import Glibc
#endif

/// `paxlog bench crash-writer` (hidden): the child process of SegmentLog's crash test. Appends
/// `SegmentLogCrashWorkload` entries with `sync=always` from many tasks and prints `a <slot>` on
/// stdout after each acknowledgement, until it is killed. With `--compact-every-ms`, it also
/// snapshots and truncates the log's prefix that often, so new segments reuse freed files.
struct BenchCrashWriter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-writer",
        abstract: "Append acknowledged records until killed (SegmentLog crash-test child).",
        shouldDisplay: false
    )

    @Option(help: "Data directory.") var dir: String
    @Option(help: "Concurrent appenders.") var concurrency: Int = 16
    @Option(help: "Snapshot and truncate all but the last 200 slots this often (0: never).") var compactEveryMs: Int = 0

    func run() async throws {
        var logger = Logger(label: "crash-writer")
        logger.logLevel = .warning
        var options = SegmentStore.Options(segmentSize: SegmentLogCrashWorkload.segmentSize, compressionThreshold: 4096)
        options.preallocate = true
        let store = try SegmentStore.open(directory: dir, options: options, logger: logger)
        report("ready")
        let start = (store.state.lastSlot ?? 0) + 1
        let concurrency = max(1, self.concurrency)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<concurrency {
                group.addTask {
                    var slot = start + UInt64(lane)
                    while true {
                        var records: [LogRecord] = [.accepted([SegmentLogCrashWorkload.entry(slot)])]
                        if let ballot = SegmentLogCrashWorkload.promise(slot) { records.append(.promise(ballot)) }
                        try await store.append(records)
                        report("a \(slot)")
                        slot += UInt64(concurrency)
                    }
                }
            }
            if compactEveryMs > 0 {
                group.addTask {
                    while true {
                        try await Task.sleep(for: .milliseconds(compactEveryMs))
                        guard let last = store.state.lastSlot, last > 200 else { continue }
                        let through = last - 200
                        try await store.writeSnapshot(slot: through, data: Array("through \(through)".utf8))
                        try store.truncatePrefix(below: through + 1)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// One unbuffered write per line, so a line the parent reads was printed after the ack.
    private func report(_ line: String) {
        var bytes = Array((line + "\n").utf8)
        bytes.withUnsafeMutableBytes { _ = write(1, $0.baseAddress, $0.count) }
    }
}
