import Foundation
import Logging
import MultiPaxos
import PaxosLog
import PaxosLogTesting
import PaxosTransport
import Testing

/// The compaction API of the facade, on a local WAL and on an in-process cluster where a
/// lagging replica must catch up through a streamed snapshot.
@Suite struct CompactionTests {
    func kvRecords(_ n: Int, prefix: String = "k") -> [[UInt8]] {
        (0..<n).map { i in i % 7 == 6 ? KeyValueStateMachine.delete("\(prefix)\(i - 3)") : KeyValueStateMachine.set("\(prefix)\(i % 50)", "v\(i)") }
    }

    func kv(_ records: [[UInt8]]) -> KeyValueStateMachine {
        var m = KeyValueStateMachine()
        for r in records { m.apply(r) }
        return m
    }

    /// A kv runner under `policy` over a local log in `dir` (4 KiB segments), once it applied all
    /// of `records`. Call `stop()` when done checking.
    struct RunnerRun {
        let log: PaxosLog
        let runner: StateMachineRunner<KeyValueStateMachine>
        let positions: [PaxosLog.Position]
        let task: Task<Void, any Error>

        init(_ dir: String, _ records: [[UInt8]], policy: SnapshotPolicy) async throws {
            var c = PaxosLog.Configuration.local(dataDirectory: dir)
            c.storage.segmentSize = 4096
            log = try await PaxosLog.open(c)
            let runner = StateMachineRunner<KeyValueStateMachine>(log: log, policy: policy)
            self.runner = runner
            task = Task { try await runner.run() }
            positions = try await log.append(contentsOf: records)
            while runner.state.applied < positions.last! { try await Task.sleep(nanoseconds: 10_000_000) }
        }

        func stop() async throws {
            try await log.close()
            try await task.value
        }

        /// Waits until the log's snapshot covers `position`: compactions run in the background.
        func waitForSnapshot(atLeast position: PaxosLog.Position) async throws {
            for _ in 0..<1500 where (try log.latestSnapshot()?.position ?? 0) < position { try await Task.sleep(nanoseconds: 10_000_000) }
            // The counter moves once the compaction's segment deletion ends, after the snapshot.
            for _ in 0..<500 where runner.compactions < 1 { try await Task.sleep(nanoseconds: 10_000_000) }
            let now = try log.latestSnapshot()?.position
            #expect(now ?? 0 >= position, "snapshot \(String(describing: now)), applied \(runner.state.applied), compactions \(runner.compactions)")
        }
    }

    @Test func localCompactionKeepsTheSuffixAndRestores() async throws {
        let dir = temporaryDirectory("compact-local")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = PaxosLog.Configuration.local(dataDirectory: dir)
        c.storage.segmentSize = 4096
        let records = kvRecords(600)
        let log = try await PaxosLog.open(c)
        let positions = try await log.append(contentsOf: records)
        let cut = positions[399]
        // Beyond the chosen watermark: refused, nothing written.
        await #expect(throws: PaxosLogError.self) { try await log.compact(through: positions.last! + 10, snapshot: [1]) }
        #expect(try log.latestSnapshot() == nil)
        let result = try await log.compact(through: cut, snapshot: kv(Array(records[0..<400])).snapshot())
        #expect(result.snapshotPosition == cut)
        #expect(result.segmentsDeleted > 0)
        #expect(result.bytesFreed > 0)
        // Reading below the snapshot says "compacted"; above it works.
        await #expect(throws: PaxosLogError.self) { _ = try await log.read(from: 1, maxCount: 10) }
        let (after, _) = try await log.read(from: cut + 1, maxCount: 1000)
        #expect(after.map(\.bytes) == Array(records[400...]))
        // A streamed, newer snapshot.
        let cut2 = positions[499]
        let bytes = kv(Array(records[0..<500])).snapshot()
        let chunks = AsyncStream<[UInt8]> { continuation in
            for start in stride(from: 0, to: bytes.count, by: 100) { continuation.yield(Array(bytes[start..<Swift.min(start + 100, bytes.count)])) }
            continuation.finish()
        }
        try await log.compact(through: cut2, snapshot: chunks)
        // Below the current snapshot: refused.
        await #expect(throws: PaxosLogError.self) { try await log.compact(through: cut, snapshot: [1]) }
        try await log.close()

        // On open: the latest snapshot, then the entries after it, give the full state.
        let reopened = try await PaxosLog.open(c)
        let snapshot = try #require(try reopened.latestSnapshot())
        #expect(snapshot.position == cut2)
        var machine = try KeyValueStateMachine(snapshot: try snapshot.readAll())
        let (rest, _) = try await reopened.read(from: snapshot.position + 1, maxCount: 10_000)
        for e in rest { machine.apply(e.bytes) }
        #expect(machine == kv(records))
        try await reopened.close()
    }

    @Test func runnerCompactsByPolicyAndRestores() async throws {
        let dir = temporaryDirectory("compact-runner")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = PaxosLog.Configuration.local(dataDirectory: dir)
        c.storage.segmentSize = 4096
        let records = kvRecords(500)
        do {
            let run = try await RunnerRun(dir, records, policy: SnapshotPolicy(everyEntries: 100, retainedEntries: 0))
            #expect(run.runner.state.machine == kv(records))
            // The policy fires last after fewer than 100 entries remain; firings while a
            // compaction runs in the background are taken up together when it ends.
            try await run.waitForSnapshot(atLeast: run.positions[400])
            #expect(run.runner.compactions >= 1)
            // Streamed in 1 MiB pieces, the snapshot is byte for byte the one-array encoding.
            let snapshot = try #require(try run.log.latestSnapshot())
            let covered = try #require(run.positions.firstIndex(of: snapshot.position))
            #expect(try snapshot.readAll() == kv(Array(records[...covered])).snapshot())
            try await run.stop()
        }
        let log = try await PaxosLog.open(c)
        #expect(try log.latestSnapshot()?.position ?? 0 >= 400)
        let runner = StateMachineRunner<KeyValueStateMachine>(log: log, policy: .never)
        let task = Task { try await runner.run() }
        while runner.state.applied < 500 { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(runner.state.machine == kv(records))
        try await log.close()
        try await task.value
    }

    /// Records of exactly `size` bytes (`set kN xxx…`), so a byte policy fires at known positions.
    func fixedSizeRecords(_ n: Int, size: Int) -> [[UInt8]] {
        (0..<n).map { i in
            let head = "set k\(i % 10) "
            return Array((head + String(repeating: "x", count: size - head.utf8.count)).utf8)
        }
    }

    @Test func runnerCompactsEveryBytes() async throws {
        let dir = temporaryDirectory("compact-bytes")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 100-byte records, a snapshot every 1,000 bytes: the last firing is at record 86 or later.
        let records = fixedSizeRecords(95, size: 100)
        let run = try await RunnerRun(dir, records, policy: SnapshotPolicy(everyBytes: 1_000, retainedEntries: 0))
        try await run.waitForSnapshot(atLeast: run.positions[85])
        #expect((1...9).contains(run.runner.compactions))
        #expect(run.runner.state.machine == kv(records))
        try await run.stop()
    }

    @Test func runnerRetainsEntriesAboveTheSnapshot() async throws {
        let dir = temporaryDirectory("compact-retain")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let records = kvRecords(530)
        // A snapshot is captured every 100 entries and written once 50 more are applied.
        // No quiet rule: on a loaded machine a pause between the two appends must not count.
        let run = try await RunnerRun(dir, Array(records[..<430]), policy: SnapshotPolicy(everyEntries: 100, retainedEntries: 50, retainedWait: nil))
        let more = try await run.log.append(contentsOf: Array(records[430...]))
        // The first capture (at 100) compacts once 150 are applied; captures the policy asks for
        // while it runs are taken when it ends, each waiting for its 50 retained entries.
        try await run.waitForSnapshot(atLeast: run.positions[99])
        #expect(run.runner.compactions >= 1)
        let snapshot = try #require(try run.log.latestSnapshot()).position
        #expect(snapshot + 50 <= more.last!)
        // The retained entries are still in the log; the snapshot covers what is below them.
        let (kept, _) = try await run.log.read(from: snapshot + 1, maxCount: 1000)
        #expect(kept.map(\.bytes) == Array(records[(records.count - kept.count)...]))
        #expect(kept.count >= 50)
        await #expect(throws: PaxosLogError.self) { _ = try await run.log.read(from: snapshot, maxCount: 1) }
        try await run.stop()
    }

    /// Once appends stop, a capture waiting for retained entries that will not come is written
    /// after `retainedWait` without any entry applied: the latest snapshot ends within an interval
    /// of the applied position, not wherever the last compaction under load left it.
    @Test func runnerWritesItsLastCaptureOnceTheLogIsQuiet() async throws {
        let dir = temporaryDirectory("compact-quiet")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let records = kvRecords(250)
        // 1,000 retained entries will never come: without the quiet rule no snapshot is written.
        let run = try await RunnerRun(dir, records, policy: SnapshotPolicy(everyEntries: 100, retainedEntries: 1_000, retainedWait: .milliseconds(50)))
        try await run.waitForSnapshot(atLeast: run.positions[149])
        let snapshot = try #require(try run.log.latestSnapshot())
        #expect(snapshot.position >= run.positions[149] && snapshot.position <= run.positions.last!)
        let covered = try #require(run.positions.firstIndex(of: snapshot.position))
        #expect(try snapshot.readAll() == kv(Array(records[...covered])).snapshot())
        #expect(run.runner.state.machine == kv(records))
        try await run.stop()
    }

    /// Appends through whichever replica leads, retrying only when the record was certainly not
    /// proposed (`notLeader`, `overloaded`): a leader may change under a loaded machine.
    func appendToLeader(_ logs: [PaxosLog], _ records: [[UInt8]]) async throws -> [PaxosLog.Position] {
        for _ in 0..<200 {
            let leader = try await InProcessClusterTests.waitForLeader(logs)
            do {
                return try await leader.append(contentsOf: records)
            } catch let e as PaxosLogError where e.code == .notLeader || e.code == .overloaded {
                try await Task.sleep(nanoseconds: 50_000_000)
            }
        }
        throw ClusterError("no leader took the append")
    }

    /// Each member's configuration for a 3-replica cluster on loopback, data in `dir/node-ID`;
    /// every member's directory is bootstrapped.
    static func loopbackCluster(_ dir: String, name: String, segmentSize: Int) async throws -> @Sendable (NodeID) -> PaxosLog.Configuration {
        let members = PaxosLog.Member.loopback(ports: try LocalCluster.freePorts(6))
        let config: @Sendable (NodeID) -> PaxosLog.Configuration = { id in
            var c = PaxosLog.Configuration(nodeID: id, members: members, dataDirectory: "\(dir)/node-\(id)")
            c.clusterName = name
            c.storage.segmentSize = segmentSize
            return c
        }
        let clusterID = PaxosLog.ClusterID.random()
        for m in members { try await PaxosLog.bootstrap(config(m.id), clusterID: clusterID) }
        return config
    }

    /// Node 3 is closed; the others take appends (one 3 MiB record, so the snapshot streams in
    /// several chunks) and compact; node 3 reopens and must catch up through the snapshot.
    @Test func laggingReplicaCatchesUpThroughASnapshot() async throws {
        let dir = temporaryDirectory("compact-catchup")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try await Self.loopbackCluster(dir, name: "compaction", segmentSize: 1 << 20)
        var logs = [try await PaxosLog.open(config(1)), try await PaxosLog.open(config(2))]
        let big = KeyValueStateMachine.set("big", String(repeating: "x", count: 3 << 20))
        let records = [big] + kvRecords(300)
        var positions: [PaxosLog.Position] = []
        for chunk in stride(from: 0, to: records.count, by: 50) {
            positions += try await appendToLeader(logs, Array(records[chunk..<Swift.min(chunk + 50, records.count)]))
        }
        let cut = positions[250]
        for l in logs {
            for _ in 0..<400 where try await l.status().chosenThrough < positions.last! { try await Task.sleep(nanoseconds: 10_000_000) }
            try await l.compact(through: cut, snapshot: kv(Array(records[0...250])).snapshot())
        }
        // Restart the two: their transports no longer queue the Accepts node 3 missed, so only
        // a snapshot can bring it up to date.
        for l in logs { try await l.close() }
        logs = [try await PaxosLog.open(config(1)), try await PaxosLog.open(config(2))]
        let lagging = try await PaxosLog.open(config(3))
        logs.append(lagging)
        let runner = StateMachineRunner<KeyValueStateMachine>(log: lagging, policy: .never)
        let task = Task { try await runner.run() }
        // A fresh append after the lagging replica is back: it must learn everything.
        let last = try await appendToLeader(logs, [KeyValueStateMachine.set("after", "1")])[0]
        for _ in 0..<1500 where runner.state.applied < last { try await Task.sleep(nanoseconds: 20_000_000) }
        #expect(runner.state.applied >= last)
        #expect(runner.state.machine == kv(records + [KeyValueStateMachine.set("after", "1")]))
        #expect(try lagging.latestSnapshot()?.position == cut)
        let received = try await lagging.snapshotTransferCounters()
        #expect(received.installed == 1)
        // The client sessions as of the snapshot came with it: the same table as the senders'.
        let table = "/snapshot-" + String(repeating: "0", count: 20 - String(cut).count) + String(cut) + ".table"
        let tables = (1...3).map { FileManager.default.contents(atPath: "\(dir)/node-\($0)" + table) }
        #expect(tables[2] != nil && tables[2] == tables[0] && tables[2] == tables[1])
        var sent: UInt64 = 0
        for l in logs.prefix(2) { sent += try await l.snapshotTransferCounters().sentBytes }
        #expect(sent >= 3 << 20)
        for l in logs { try await l.close() }
        try await task.value
    }

    /// Node 3 falls 60 entries behind while the others compact by policy; with a retention of
    /// 100 entries it must catch up from the log, without a snapshot (with none, it would need one).
    @Test func followerAFewEntriesBehindCatchesUpFromTheRetainedLog() async throws {
        let dir = temporaryDirectory("compact-retained-catchup")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try await Self.loopbackCluster(dir, name: "retention", segmentSize: 4096)
        // No quiet rule: the second capture must keep waiting for its retained entries.
        let policy = SnapshotPolicy(everyEntries: 50, retainedEntries: 100, retainedWait: nil)
        var logs = [try await PaxosLog.open(config(1)), try await PaxosLog.open(config(2)), try await PaxosLog.open(config(3))]
        let records = kvRecords(160)
        let early = try await appendToLeader(logs, Array(records[0..<100]))
        for _ in 0..<1500 where try await logs[2].status().chosenThrough < early.last! { try await Task.sleep(nanoseconds: 10_000_000) }
        try await logs[2].close()
        logs.removeLast()
        var runners = logs.map { StateMachineRunner<KeyValueStateMachine>(log: $0, policy: policy) }
        var tasks = runners.map { r in Task { try await r.run() } }
        let positions = try await appendToLeader(logs, Array(records[100...]))
        for r in runners {
            for _ in 0..<1500 where r.state.applied < positions.last! { try await Task.sleep(nanoseconds: 10_000_000) }
            // The snapshot after record 50 compacted (in the background) after record 150; the
            // next one waits for its retained entries.
            for _ in 0..<1500 where r.compactions < 1 { try await Task.sleep(nanoseconds: 10_000_000) }
            #expect(r.compactions == 1)
        }
        // Restart the two so that no queued Accept reaches node 3: only the log or a snapshot can.
        for l in logs { try await l.close() }
        for t in tasks { try await t.value }
        logs = [try await PaxosLog.open(config(1)), try await PaxosLog.open(config(2))]
        // Below what node 3 holds (without retention it would be at record 150, above it).
        for l in logs { #expect(try l.latestSnapshot()?.position ?? .max < early.last!) }
        runners = logs.map { StateMachineRunner<KeyValueStateMachine>(log: $0, policy: policy) }
        tasks = runners.map { r in Task { try await r.run() } }
        let lagging = try await PaxosLog.open(config(3))
        logs.append(lagging)
        let last = try await appendToLeader(logs, [KeyValueStateMachine.set("after", "1")])[0]
        for _ in 0..<1500 where try await lagging.status().chosenThrough < last { try await Task.sleep(nanoseconds: 20_000_000) }
        #expect(try await lagging.status().chosenThrough >= last)
        #expect(try await lagging.snapshotTransferCounters().installed == 0)
        #expect(try lagging.latestSnapshot() == nil)
        let (all, _) = try await lagging.read(from: 1, maxCount: 1000)
        #expect(all.map(\.bytes) == records + [KeyValueStateMachine.set("after", "1")])
        for l in logs { try await l.close() }
        for t in tasks { try await t.value }
    }
}
