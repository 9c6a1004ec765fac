import ArgumentParser
import Foundation
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import PaxosLog
import PaxosLogTesting
import SegmentLog

/// `paxlog demo`: three replica processes running the kv state machine and compacting by
/// policy, load, the leader SIGKILLed halfway, a restart and catch-up, then every acknowledged
/// record checked on every replica's disk (through its snapshot and the log after it).
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run 3 replicas, append under load, SIGKILL the leader, restart it, and check nothing acknowledged was lost.",
        discussion: "Exit 0 when every acknowledged record is on every replica, 1 when any is missing, 2 on errors."
    )

    @Option(help: "Seconds of load.") var duration: Double = 10
    @Option(help: "Concurrent append streams.") var concurrency = 64
    @Option(help: "Records per request.") var batch = 1
    @Option(help: "Record size in bytes.") var size = 256
    @Option(help: "Directory for the replicas' data (default: a new temporary directory).") var dir: String?
    @Option(help: "Each replica's kv state machine compacts every this many entries; 0: no state machine, plain records.") var snapshotEvery = 2_000
    @Flag(help: "Print the result as one JSON object.") var json = false

    func validate() throws {
        guard duration >= 2, duration <= 3600 else { throw ValidationError("--duration must be 2…3600 seconds") }
        guard concurrency >= 1, concurrency <= 4096 else { throw ValidationError("--concurrency must be 1…4096") }
        guard batch >= 1, batch <= 4096 else { throw ValidationError("--batch must be 1…4096") }
        guard size >= 16, size <= 1 << 20 else { throw ValidationError("--size must be 16 B…1 MiB") }
        guard snapshotEvery >= 0 else { throw ValidationError("--snapshot-every must be 0 or positive") }
    }

    struct Report: Encodable {
        var directory: String
        var appended_attempted: Int
        var acknowledged: Int
        var failed: Int
        var lost: Int
        var records_per_second: Double
        var latency_us: LatencySummary
        var killed_leader: UInt32
        var failover_ms: Double?
        var catch_up_ms: Double?
        var replicas_chosen_through: [String: UInt64]
        /// Per replica: the position its latest snapshot covers (kv mode).
        var replicas_snapshot: [String: UInt64]?
        /// Per replica: chosen watermark less the latest snapshot's position when the load
        /// stopped, and at the end (kv mode). The target is at most two `--snapshot-every`.
        var replicas_snapshot_lag_at_load_end: [String: UInt64]?
        var replicas_snapshot_lag: [String: UInt64]?
        /// From the end of the load until every replica's snapshot was within two intervals of
        /// its chosen watermark (nil: not within 60 s of catch-up).
        var snapshots_settled_ms: Double?
        /// Whether every replica's state (snapshot + log) equals the state of the acknowledged
        /// records applied without compaction, up to appends of unknown outcome (kv mode).
        var state_matches: Bool?
    }

    func run() async throws {
        let base = dir ?? (NSTemporaryDirectory() + "paxlog-demo-\(getpid())")
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let kv = snapshotEvery > 0
        let cluster = try LocalCluster(executable: exe, size: 3, baseDirectory: base, clusterName: "paxlog-demo",
                                       extraArguments: kv ? ["--state-machine", "kv", "--snapshot-every", "\(snapshotEvery)"] : [])
        say("starting 3 replicas in \(base)")
        try cluster.startAll()
        let first = try await cluster.waitForLeader()
        say("node \(first) leads; appending \(size) B records with \(concurrency) streams for \(Int(duration)) s")

        let records = kv ? RecordSource.keyValue(count: Int.max / 2, size: size) : RecordSource.generated(count: Int.max / 2, size: size)
        let start = NIODeadline.now()
        let killAt = start + .nanoseconds(Int64(duration / 2 * 1e9))
        let load = AppendLoad(
            configuration: .init(addresses: cluster.clientAddresses, clusterName: cluster.clusterName),
            concurrency: concurrency, batch: batch, deadline: start + .nanoseconds(Int64(duration * 1e9))
        )
        let firstAckAfterKill = NIOLockedValueBox<NIODeadline?>(nil)
        let killedAt = NIOLockedValueBox<NIODeadline?>(nil)

        async let result = load.run(records) { _, _ in
            guard let k = killedAt.withLockedValue({ $0 }) else { return }
            firstAckAfterKill.withLockedValue { if $0 == nil { $0 = NIODeadline.now() } }
            _ = k
        }
        // Halfway: SIGKILL the leader; two seconds later, restart it.
        try await Task.sleep(nanoseconds: UInt64(Swift.max(0, (killAt - .now()).nanoseconds)))
        let victim = await cluster.leader() ?? first
        cluster.kill(victim)
        killedAt.withLockedValue { $0 = .now() }
        say("SIGKILLed the leader, node \(victim)")
        try await Task.sleep(nanoseconds: 2_000_000_000)
        try cluster.start(victim)
        let restartedAt = NIODeadline.now()
        say("restarted node \(victim)")
        let load_ = try await result
        let loadEnded = NIODeadline.now()
        // Each replica's snapshot lag at the moment the load stopped: what a full snapshot of a
        // growing state costs under load (the victim may still be catching up).
        let lagAtLoadEnd: [String: UInt64]? = kv ? await snapshotLags(cluster) : nil
        let failoverMs = firstAckAfterKill.withLockedValue { $0 }.flatMap { a in killedAt.withLockedValue { $0 }.map { Double((a - $0).nanoseconds) / 1e6 } }

        // Catch-up: wait until the restarted replica has chosen everything the leader has.
        var catchUpMs: Double? = nil
        let target = load_.acknowledged.map(\.position).max() ?? 0
        for _ in 0..<600 {
            if let s = try? await cluster.status(victim), s.chosenThrough >= target {
                catchUpMs = Double((NIODeadline.now() - restartedAt).nanoseconds) / 1e6
                break
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        // The runners apply and compact in the background: wait until every replica's latest
        // snapshot is within two intervals of its chosen watermark, or 60 s. Measured on the
        // running replicas, before they are stopped.
        var settledMs: Double? = nil
        if kv {
            let bound = UInt64(2 * snapshotEvery)
            for _ in 0..<1200 {
                let lags = await snapshotLags(cluster)
                if lags.count == cluster.nodes.count, lags.values.allSatisfy({ $0 <= bound }) {
                    settledMs = Double((NIODeadline.now() - loadEnded).nanoseconds) / 1e6
                    break
                }
                try await Task.sleep(nanoseconds: 50_000_000)
            }
        }
        say("stopping replicas and checking every acknowledged record on every disk")
        cluster.terminateAll()

        var lost = 0
        var chosen: [String: UInt64] = [:]
        var snapshots: [String: UInt64]? = kv ? [:] : nil
        var lags: [String: UInt64]? = kv ? [:] : nil
        var matches: Bool? = nil
        if kv {
            // The state computed without compaction: every acknowledged record, in log order.
            var reference = KeyValueStateMachine()
            for (index, _) in load_.acknowledged.sorted(by: { $0.position < $1.position }) { reference.apply(records.record(index)) }
            matches = true
            for n in cluster.nodes {
                let (state, snapshot, through) = try Self.kvState(n.dataDirectory)
                let missing = reference.values.filter { state.values[$0.key] != $0.value }.count
                // One key per record: extra keys can only be appends whose outcome was unknown.
                let extra = state.values.count - (reference.values.count - missing)
                lost += missing
                if missing > 0 || extra > load_.summary.failed { matches = false }
                chosen["\(n.id)"] = through
                snapshots?["\(n.id)"] = snapshot
                lags?["\(n.id)"] = through - Swift.min(through, snapshot)
            }
        } else {
            for n in cluster.nodes {
                let (missing, through) = try Self.check(n.dataDirectory, acknowledged: load_.acknowledged, records: records)
                lost += missing
                chosen["\(n.id)"] = through
            }
        }
        let report = Report(
            directory: base, appended_attempted: load_.summary.acknowledged + load_.summary.failed,
            acknowledged: load_.summary.acknowledged, failed: load_.summary.failed, lost: lost,
            records_per_second: load_.summary.records_per_second, latency_us: load_.summary.latency_us,
            killed_leader: victim, failover_ms: failoverMs, catch_up_ms: catchUpMs, replicas_chosen_through: chosen,
            replicas_snapshot: snapshots, replicas_snapshot_lag_at_load_end: lagAtLoadEnd, replicas_snapshot_lag: lags,
            snapshots_settled_ms: settledMs, state_matches: matches
        )
        if json {
            print(jsonLine(report))
        } else {
            print("""

            appended (attempted)  \(report.appended_attempted)
            acknowledged          \(report.acknowledged)
            failed (not acked)    \(report.failed)
            lost                  \(report.lost)
            throughput            \(Int(report.records_per_second)) records/s
            latency               \(report.latency_us.text)
            failover              \(failoverMs.map { String(format: "%.0f ms", $0) } ?? "none") (leader node \(victim) SIGKILLed)
            catch-up              \(catchUpMs.map { String(format: "%.0f ms", $0) } ?? "did not finish") after restart
            chosen through        \(chosen.sorted { $0.key < $1.key }.map { "node \($0.key): \($0.value)" }.joined(separator: ", "))
            data directories      \(base)/node-{1,2,3} (try: paxlog inspect \(base)/node-1)
            """)
            if let snapshots, let matches, let lags {
                func perNode(_ m: [String: UInt64]) -> String { m.sorted { $0.key < $1.key }.map { "node \($0.key): \($0.value)" }.joined(separator: ", ") }
                let bound = UInt64(2 * snapshotEvery)
                print("""
                kv state machine      compacting every \(snapshotEvery) entries; snapshots at \(perNode(snapshots))
                snapshot lag          \(perNode(lags)) entries behind the chosen watermark at the end (target ≤ \(bound): \(lags.values.allSatisfy { $0 <= bound } ? "met" : "NOT met"))\(settledMs.map { String(format: ", %.0f ms after the load stopped", $0) } ?? ", not within 60 s after catch-up")
                  when load stopped   \(lagAtLoadEnd.map(perNode) ?? "-")
                state after failover  \(matches ? "equals" : "DIFFERS FROM") the state of the acknowledged records applied without compaction, on every replica\(report.failed > 0 ? " (up to \(report.failed) appends of unknown outcome)" : "")
                """)
            }
        }
        if lost > 0 || matches == false { throw ExitCode(1) }
    }

    /// Each answering replica's chosen watermark less its latest snapshot's position.
    private func snapshotLags(_ cluster: LocalCluster) async -> [String: UInt64] {
        var lags: [String: UInt64] = [:]
        for (id, s) in await cluster.statuses(within: 2) {
            let snapshot = s.details.first { $0.key == "snapshot_slot" }.flatMap { UInt64($0.value) } ?? 0
            lags["\(id)"] = s.chosenThrough - Swift.min(s.chosenThrough, snapshot)
        }
        return lags
    }

    private func say(_ s: String) {
        FileHandle.standardError.write(Data("demo: \(s)\n".utf8))
    }

    /// A stopped replica's kv state: its snapshot, then its chosen entries after it.
    static func kvState(_ directory: String) throws -> (KeyValueStateMachine, UInt64, UInt64) {
        let store = try SegmentStore.open(directory: directory, logger: Logger(label: "paxlog.demo"))
        defer { try? store.close() }
        var machine = KeyValueStateMachine()
        if let snapshot = try store.readSnapshot() { machine = try KeyValueStateMachine(snapshot: snapshot.data) }
        let from = (store.state.snapshotSlot ?? 0) + 1
        let through = store.state.chosenThrough ?? 0
        if from <= through {
            for e in try store.entries(from: from, through: through) where !e.isNoop { machine.apply(e.payload) }
        }
        return (machine, store.state.snapshotSlot ?? 0, through)
    }

    /// Opens a stopped replica's directory and counts acknowledged records that are not chosen
    /// there with the acknowledged bytes at the acknowledged position.
    static func check(_ directory: String, acknowledged: [(index: Int, position: UInt64)], records: RecordSource) throws -> (missing: Int, chosenThrough: UInt64) {
        let store = try SegmentStore.open(directory: directory, logger: Logger(label: "paxlog.demo"))
        defer { try? store.close() }
        let through = store.state.chosenThrough ?? 0
        var chosen: [UInt64: LogEntry] = [:]
        if through > 0 {
            for e in try store.entries(from: 1, through: through) { chosen[e.slot] = e }
        }
        var missing = 0
        for (index, position) in acknowledged {
            guard let e = chosen[position], !e.isNoop, e.payload == records.record(index) else {
                missing += 1
                continue
            }
        }
        return (missing, through)
    }
}
