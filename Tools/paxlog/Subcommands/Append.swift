import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOConcurrencyHelpers
import NIOCore
import MultiPaxos
import NIOPosix
import PaxosTransport

/// `paxlog append`: appends records to a cluster and reports each acknowledged position.
struct Append: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append each line of stdin (or generated records) to a cluster; print each acknowledged position.",
        discussion: """
        Each request carries its records' identities (a random client id, a sequence number per \
        record). A request whose outcome is unknown (no answer from a replica within \
        --attempt-timeout, a lost connection, a server timeout) is sent again with the same \
        identities, to another replica if that one failed, until --timeout: the cluster answers a \
        retried identity with the first attempt's position, so a line is never appended twice. \
        Failed records are reported on stderr (with --json, as objects on stdout) with their \
        outcome: "not appended" (safe to append again) or "outcome unknown" (may be in the log; \
        retrying needs the printed identity).

        Exit 0 when every record was acknowledged; 1 when some were not and every failed one is \
        certainly not appended; 3 when the outcome of some is unknown; 2 on usage errors or when \
        no replica could be reached at all.
        """
    )

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "Generate this many records instead of reading stdin.") var count: Int?
    @Option(help: "Size of generated records, in bytes.") var size = 256
    @Option(help: "Concurrent append streams.") var concurrency = 1
    @Option(help: "Records per request (one round trip carries this many).") var batch = 1
    @Option(help: "Seconds each request may take, retries included (default 10).") var timeout: Double = 10
    @Option(help: "Seconds one attempt waits for a replica's answer before trying the next (default 3).") var attemptTimeout: Double = 3
    @Flag(help: "One JSON object per line, then a summary object.") var json = false
    @Flag(help: "Print only the summary.") var quiet = false

    func validate() throws {
        if let count, count < 0 { throw ValidationError("--count must be ≥ 0") }
        guard size >= 0, size <= 16 << 20 else { throw ValidationError("--size must be 0…16 MiB") }
        guard concurrency >= 1, concurrency <= 4096 else { throw ValidationError("--concurrency must be 1…4096") }
        guard batch >= 1, batch <= 4096 else { throw ValidationError("--batch must be 1…4096") }
        guard timeout > 0, timeout <= 86_400, attemptTimeout > 0, attemptTimeout <= timeout else {
            throw ValidationError("--timeout must be positive and --attempt-timeout 0…--timeout")
        }
    }

    func run() async throws {
        let records: RecordSource = count.map { .generated(count: $0, size: size) } ?? .lines(Self.readStdinLines())
        var configuration = try cluster.clientConfiguration()
        configuration.requestTimeout = .nanoseconds(Int64(timeout * 1e9))
        configuration.attemptTimeout = .nanoseconds(Int64(attemptTimeout * 1e9))
        var load = AppendLoad(configuration: configuration, concurrency: concurrency, batch: batch)
        let json = self.json
        load.onFailure = { failure in
            if json {
                output.write(jsonLine(failure))
            } else {
                let which = failure.count == 1 ? "record \(failure.index)" : "records \(failure.index)…\(failure.index + failure.count - 1)"
                FileHandle.standardError.write(Data("paxlog: \(which) (from 0) failed, \(failure.outcome)\(failure.identity.map { " (identity \($0))" } ?? ""): \(failure.error)\n".utf8))
            }
        }
        let result = try await load.run(records) { position, size in
            guard !quiet else { return }
            if json { output.write("{\"position\":\(position),\"size\":\(size)}") } else { output.write("\(position)") }
        }
        output.flush()
        if json {
            print(jsonLine(["summary": result.summary]))
        } else {
            let s = result.summary
            FileHandle.standardError.write(Data("acknowledged \(s.acknowledged), failed \(s.failed) (not appended \(s.not_appended), outcome unknown \(s.unknown)), \(Int(s.records_per_second)) records/s, \(s.latency_us.text)\n".utf8))
            for (e, n) in result.errors.sorted(by: { $0.value > $1.value }).prefix(5) {
                FileHandle.standardError.write(Data("  \(n)× \(e)\n".utf8))
            }
        }
        if result.summary.unknown > 0 { throw ExitCode(3) }
        if result.summary.failed > 0 { throw ExitCode(1) }
    }

    static func readStdinLines() -> [[UInt8]] {
        var lines: [[UInt8]] = []
        while let line = readLine(strippingNewline: true) { lines.append(Array(line.utf8)) }
        return lines
    }
}

private let output = LineWriter()

enum RecordSource: Sendable {
    case lines([[UInt8]])
    case generated(count: Int, size: Int)
    /// Generated records that are kv commands (`set r<i> <filler>`, one key per record), for
    /// the demo's state machine.
    case keyValue(count: Int, size: Int)
    /// `count` records from a benchmark's payload generator (`paxlog bench processes`).
    case payload(PayloadGenerator, count: Int)

    var count: Int {
        switch self {
        case .lines(let l): return l.count
        case .generated(let n, _): return n
        case .keyValue(let n, _): return n
        case .payload(_, let n): return n
        }
    }

    /// Record `i`. Generated records are unique (they start with their index) and otherwise filler.
    func record(_ i: Int) -> [UInt8] {
        switch self {
        case .lines(let l): return l[i]
        case .payload(let g, _): return g.record(i)
        case .generated(_, let size):
            var r = Array("r\(i) ".utf8)
            if r.count > size { r.removeLast(r.count - size) }
            while r.count < size { r.append(UInt8(ascii: "a") + UInt8(r.count % 26)) }
            return r
        case .keyValue(_, let size):
            return Array("set ".utf8) + RecordSource.generated(count: 0, size: Swift.max(8, size - 4)).record(i)
        }
    }
}

/// A closed-loop load: `concurrency` streams, each with one request of `batch` records in flight.
///
/// `PaxosClient` retries each request (with its records' identities) within its request timeout.
/// A load with a `deadline` (benchmarks, the demo) then retries a failed request again, with the
/// same identities, until the deadline; a load without one (`paxlog append`) reports it. Anything
/// not acknowledged counts as failed, never as acknowledged, with its outcome.
struct AppendLoad: Sendable {
    var configuration: PaxosClientConfiguration
    var concurrency: Int
    var batch: Int
    var deadline: NIODeadline? = nil
    /// Clients (one connection each) the streams are spread over. One, as in a database that
    /// links one `PaxosClient`: its coalescer then merges all streams' appends into few requests.
    var connections = 1
    /// Called for each request that finally failed.
    var onFailure: (@Sendable (Failure) -> Void)? = nil

    struct Summary: Encodable {
        var acknowledged: Int
        var failed: Int
        /// Of the failed records: certainly not appended.
        var not_appended: Int
        /// Of the failed records: may be in the log.
        var unknown: Int
        var records_per_second: Double
        var latency_us: LatencySummary
    }

    /// A request that failed: its records (indexes into the source), what became of them, and
    /// the identity of the first (a retry with it cannot duplicate them).
    struct Failure: Encodable, Sendable {
        var index: Int
        var count: Int
        var outcome: String
        var identity: String?
        var error: String
    }

    struct Result {
        var summary: Summary
        var acknowledged: [(index: Int, position: UInt64)]
        var errors: [String: Int]
        /// Per-record latencies in microseconds, and the wall time of the whole load.
        var histogram: Histogram<UInt64>
        var seconds: Double
    }

    private struct Shared {
        var next = 0
        var acked: [(index: Int, position: UInt64)] = []
        var failed = 0
        var unknown = 0
        var errors: [String: Int] = [:]
        var histogram = newLatencyHistogram()
    }

    func run(_ source: RecordSource, onAck: @escaping @Sendable (UInt64, Int) -> Void) async throws -> Result {
        let logger = Logger(label: "paxlog.append")
        let connections = Swift.max(1, Swift.min(concurrency, self.connections))
        var clients: [PaxosClient] = []
        var executors: [EventLoopTaskExecutor] = []
        for _ in 0..<connections {
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            executors.append(EventLoopTaskExecutor(loop))
            do {
                clients.append(try await PaxosClient.connect(configuration: configuration, group: loop, logger: logger))
            } catch {
                throw CLIError("cannot connect to \(configuration.addresses.map(\.description).joined(separator: ",")): \(error)")
            }
        }
        let shared = NIOLockedValueBox(Shared())
        let total = source.count
        let start = NIODeadline.now()
        let deadline = self.deadline
        let batch = self.batch
        let onFailure = self.onFailure
        await withTaskGroup(of: Void.self) { tasks in
            for stream in 0..<concurrency {
                let client = clients[stream % connections]
                // Each stream runs on its client's event loop, where the client answers appends:
                // resuming it then costs no hop through Swift's global executor and its threads.
                tasks.addTask(executorPreference: executors[stream % connections]) {
                    while true {
                        if let deadline, NIODeadline.now() >= deadline { return }
                        let range: Range<Int> = shared.withLockedValue { s in
                            let lo = s.next
                            s.next = Swift.min(total, lo + batch)
                            return lo..<s.next
                        }
                        if range.isEmpty { return }
                        let records = range.map(source.record)
                        var attempt = 0
                        // After a failure, retries reuse the identities it reports, and an
                        // unknown outcome stays unknown whatever later attempts are told.
                        var identity: ProposalID? = nil
                        var unknown = false
                        while true {
                            let t0 = NIODeadline.now()
                            do throws(PaxosClientError) {
                                let slots: [UInt64]
                                if let identity {
                                    slots = try await client.append(records, id: identity)
                                } else {
                                    slots = try await client.append(records)
                                }
                                let micros = UInt64((NIODeadline.now() - t0).nanoseconds / 1000)
                                shared.withLockedValue { s in
                                    for (i, slot) in slots.enumerated() {
                                        s.acked.append((range.lowerBound + i, slot))
                                        s.histogram.record(micros)
                                    }
                                }
                                for (i, slot) in slots.enumerated() { onAck(slot, records[i].count) }
                                break
                            } catch {
                                attempt += 1
                                identity = identity ?? error.proposalID
                                if error.outcome != .notAppended { unknown = true }
                                if Self.retryable(error), attempt < 200, let deadline, NIODeadline.now() < deadline {
                                    try? await Task.sleep(nanoseconds: UInt64(Swift.min(attempt, 20)) * 5_000_000)
                                    continue
                                }
                                let outcome: PaxosClientError.Outcome = unknown ? .unknown : .notAppended
                                shared.withLockedValue { s in
                                    s.failed += records.count
                                    if unknown { s.unknown += records.count }
                                    s.errors["\(error.code): \(outcome)", default: 0] += 1
                                }
                                onFailure?(Failure(index: range.lowerBound, count: records.count, outcome: "\(outcome)",
                                                   identity: identity.map { "\($0)" }, error: "\(error)"))
                                break
                            }
                        }
                    }
                }
            }
        }
        let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        for c in clients { await c.close() }
        let s = shared.withLockedValue { $0 }
        return Result(
            summary: Summary(acknowledged: s.acked.count, failed: s.failed, not_appended: s.failed - s.unknown, unknown: s.unknown,
                             records_per_second: Double(s.acked.count) / Swift.max(seconds, 1e-9), latency_us: LatencySummary(s.histogram)),
            acknowledged: s.acked, errors: s.errors, histogram: s.histogram, seconds: seconds
        )
    }

    /// Errors worth another call with the same identities: not a refusal of the request or of
    /// the connection, which would fail the same way.
    static func retryable(_ error: PaxosClientError) -> Bool {
        ![.rejected, .refused, .closed, .cancelled].contains(error.code)
    }
}
