import Foundation
import MultiPaxos
import PaxosLog
import PaxosLogTesting
import Testing

/// An on-disk state machine for tests: a kv map whose durable copy is a file (kv snapshot bytes
/// after an 8-byte applied position), rewritten, synced and renamed on `sync()`. Its own
/// storage, not the log's: what a database would be.
actor FileBackedKV: OnDiskStateMachine {
    let path: String
    var kv = KeyValueStateMachine()
    var applied: PaxosLog.Position = 0
    var durable: PaxosLog.Position = 0
    /// The first position `apply` was handed after `open` (where replay started).
    var firstApplied: PaxosLog.Position?

    init(path: String) { self.path = path }

    func open() async throws -> PaxosLog.Position {
        guard let data = FileManager.default.contents(atPath: path) else { return 0 }
        let bytes = [UInt8](data)
        guard bytes.count >= 8 else { throw PaxosLogError(.storage, "\(path) is truncated") }
        applied = bytes[0..<8].reversed().reduce(0) { $0 << 8 | UInt64($1) }
        kv = try KeyValueStateMachine(snapshot: Array(bytes[8...]))
        durable = applied
        return applied
    }

    func apply(_ entries: [PaxosLog.Entry]) async throws {
        if firstApplied == nil { firstApplied = entries.first?.position }
        precondition(entries.first!.position > applied, "applied out of order")
        for e in entries { kv.apply(e.bytes) }
        applied = entries.last!.position
    }

    func sync() async throws -> PaxosLog.Position {
        var out: [UInt8] = []
        withUnsafeBytes(of: applied.littleEndian) { out.append(contentsOf: $0) }
        out += kv.snapshot()
        let tmp = path + ".tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(out)) else { throw PaxosLogError(.storage, "cannot write \(tmp)") }
        let fd = Foundation.open(tmp, O_RDONLY)
        fsync(fd)
        close(fd)
        guard rename(tmp, path) == 0 else { throw PaxosLogError(.storage, "cannot rename \(tmp)") }
        durable = applied
        return durable
    }

    func prepareSnapshot() async throws -> any StateSnapshot { Captured(kv: kv, position: applied) }

    func restore(from input: SnapshotInput) async throws {
        kv = try await KeyValueStateMachine(reading: input)
        applied = input.position
    }

    struct Captured: StateSnapshot {
        let kv: KeyValueStateMachine
        let position: PaxosLog.Position
        func save(to output: SnapshotOutput) async throws { try await kv.writeSnapshot(to: output) }
    }
}

@Suite struct OnDiskStateMachineTests {
    func kv(_ records: [[UInt8]]) -> KeyValueStateMachine {
        var m = KeyValueStateMachine()
        for r in records { m.apply(r) }
        return m
    }

    func records(_ n: Int, prefix: String = "k") -> [[UInt8]] {
        (0..<n).map { i in i % 7 == 6 ? KeyValueStateMachine.delete("\(prefix)\(i - 3)") : KeyValueStateMachine.set("\(prefix)\(i % 50)", "v\(i)") }
    }

    func waitFor(_ what: String, seconds: Double = 30, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while try await !condition() {
            guard Date() < deadline else { throw ClusterError("timed out waiting for \(what)") }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    @Test func compactsThroughTheDurablePositionWithoutACopyAndReplaysFromIt() async throws {
        let dir = temporaryDirectory("ondisk-local")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = PaxosLog.Configuration.local(dataDirectory: dir + "/log")
        c.storage.segmentSize = 4096
        let all = records(600)
        let machinePath = dir + "/machine.kv"
        do {
            let log = try await PaxosLog.open(c)
            let machine = FileBackedKV(path: machinePath)
            let applier = LogApplier(log: log, machine: machine, policy: SnapshotPolicy(everyEntries: 100, retainedEntries: 10))
            let task = Task { try await applier.run() }
            var last: PaxosLog.Position = 0
            for chunk in stride(from: 0, to: 500, by: 50) { last = try await log.append(contentsOf: Array(all[chunk..<chunk + 50])).last! }
            try await waitFor("applied") { applier.applied >= last }
            try await waitFor("a marker compaction") { (try log.latestSnapshot()?.position ?? 0) >= 300 }
            let snapshot = try #require(try log.latestSnapshot())
            #expect(snapshot.holdsExternalState)
            #expect(snapshot.length == 0)
            #expect(applier.compactions >= 1)
            // The log holds no copy of the state: the only snapshot file is the 40-byte marker
            // (once the superseded one is removed, which follows the new marker's record).
            func markers() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: dir + "/log").filter { $0.hasSuffix(".snap") } }
            try await waitFor("superseded markers removed") { try markers().count == 1 }
            let files = try markers()
            #expect(try FileManager.default.attributesOfItem(atPath: dir + "/log/" + files[0])[.size] as? Int == 40)
            await #expect(throws: PaxosLogError.self) { _ = try await log.read(from: 1, maxCount: 1) }
            // Not a snapshot to hand to an application as data.
            #expect(throws: PaxosLogError.self) { _ = try snapshot.readAll() }
            _ = try await machine.sync()
            try await log.close()
            try await task.value
        }
        // Reopened: the machine reports its durable position and replay starts right after it.
        let log = try await PaxosLog.open(c)
        let machine = FileBackedKV(path: machinePath)
        let applier = LogApplier(log: log, machine: machine, policy: .never)
        let task = Task { try await applier.run() }
        let before = try await machine.open()
        let more = try await log.append(contentsOf: Array(all[500...]))
        try await waitFor("applied after reopen") { applier.applied >= more.last! }
        #expect(await machine.firstApplied == before + 1)
        #expect(await machine.kv == kv(all))
        #expect(applier.restores == 0)
        // A linearizable read (barrier, then wait until applied) returns: the barrier covers the
        // last append, and the applier reaches it.
        let barrier = try await log.readBarrier()
        #expect(barrier >= more.last!)
        try await withTimeout(seconds: 10) { await applier.waitApplied(through: barrier) }
        #expect(applier.applied >= barrier)
        try await log.close()
        try await task.value

        // A machine that lost its files cannot be replayed over the compacted log: a clear error.
        try FileManager.default.removeItem(atPath: machinePath)
        let again = try await PaxosLog.open(c)
        let lost = LogApplier(log: again, machine: FileBackedKV(path: machinePath), policy: .never)
        await #expect(throws: PaxosLogError.self) { try await lost.run() }
        try await again.close()
    }

    /// Nodes 1 and 2 compact on their machines' word while node 3 is down; node 3 comes back
    /// with an empty machine and must get the state exported from a peer's machine.
    @Test func laggingReplicaGetsTheStateExportedFromAPeersMachine() async throws {
        let dir = temporaryDirectory("ondisk-catchup")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try await CompactionTests.loopbackCluster(dir, name: "ondisk", segmentSize: 4096)
        let policy = SnapshotPolicy(everyEntries: 50, retainedEntries: 0)
        func start(_ id: NodeID) async throws -> (PaxosLog, FileBackedKV, LogApplier<FileBackedKV>, Task<Void, any Error>) {
            let log = try await PaxosLog.open(config(id))
            let machine = FileBackedKV(path: "\(dir)/machine-\(id).kv")
            let applier = LogApplier(log: log, machine: machine, policy: policy)
            return (log, machine, applier, Task { try await applier.run() })
        }
        var nodes = [try await start(1), try await start(2)]
        let all = records(300)
        var last: PaxosLog.Position = 0
        for chunk in stride(from: 0, to: all.count, by: 50) {
            last = try await CompactionTests().appendToLeader(nodes.map(\.0), Array(all[chunk..<chunk + 50])).last!
        }
        for n in nodes {
            try await waitFor("node compaction") { try n.2.applied >= last && (n.0.latestSnapshot()?.position ?? 0) >= 200 }
            #expect(try n.0.latestSnapshot()?.holdsExternalState == true)
        }
        // Restarted, so no queued Accept reaches node 3: only a snapshot can.
        for n in nodes { try await n.0.close(); try await n.3.value }
        nodes = [try await start(1), try await start(2)]
        let lagging = try await start(3)
        nodes.append(lagging)
        let after = KeyValueStateMachine.set("after", "1")
        let final = try await CompactionTests().appendToLeader(nodes.map(\.0), [after])[0]
        try await waitFor("node 3 applied", seconds: 60) { lagging.2.applied >= final }
        #expect(await lagging.1.kv == kv(all + [after]))
        #expect(lagging.2.restores == 1)
        #expect(try await lagging.0.snapshotTransferCounters().installed == 1)
        #expect(nodes[0].0.snapshotExportsWritten + nodes[1].0.snapshotExportsWritten >= 1)
        for n in nodes { try await n.0.close(); try await n.3.value }
    }
}
