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
            let log = try await PaxosLog.open(c)
            let runner = StateMachineRunner<KeyValueStateMachine>(log: log, policy: SnapshotPolicy(everyEntries: 100))
            let task = Task { try await runner.run() }
            let positions = try await log.append(contentsOf: records)
            while runner.state.applied < positions.last! { try await Task.sleep(nanoseconds: 10_000_000) }
            #expect(runner.state.machine == kv(records))
            #expect(runner.compactions >= 4)
            try await log.close()
            try await task.value
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

    /// Node 3 is closed; the others take appends (one 3 MiB record, so the snapshot streams in
    /// several chunks) and compact; node 3 reopens and must catch up through the snapshot.
    @Test func laggingReplicaCatchesUpThroughASnapshot() async throws {
        let dir = temporaryDirectory("compact-catchup")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ports = try LocalCluster.freePorts(6)
        let members = (0..<3).map { i in
            PaxosLog.Member(id: NodeID(i + 1), peerAddress: PeerAddress(host: "127.0.0.1", port: ports[2 * i]), clientAddress: PeerAddress(host: "127.0.0.1", port: ports[2 * i + 1]))
        }
        func config(_ id: NodeID) -> PaxosLog.Configuration {
            var c = PaxosLog.Configuration(nodeID: id, members: members, dataDirectory: "\(dir)/node-\(id)")
            c.clusterName = "compaction"
            c.storage.segmentSize = 1 << 20
            return c
        }
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
        var sent: UInt64 = 0
        for l in logs.prefix(2) { sent += try await l.snapshotTransferCounters().sentBytes }
        #expect(sent >= 3 << 20)
        for l in logs { try await l.close() }
        try await task.value
    }
}
