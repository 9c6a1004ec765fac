import Foundation
import Testing
@testable import SegmentLog

@Suite("Round trips")
struct RoundTripTests {
    static let sizes = [0, 1, 7, 100, 4095, 4096, 4097, 10_000, 65_536, 300_000, 1 << 20]

    @Test("every record type, 0 B to 1 MiB, compressed or not, across segment rolls", arguments: [false, true])
    func roundTrip(compressible: Bool) async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        var options = SegmentStore.Options(segmentSize: compressible ? 2048 : 32 << 10, compressionThreshold: 4 << 10)
        options.maxRecordBytes = 2 << 20
        var expected: [UInt64: LogEntry] = [:]
        let store = try TestSupport.open(dir, options)
        try await store.append([.promise(LogBallot(round: 3, node: 2))])
        var slot: UInt64 = 1
        for size in Self.sizes {
            // One entry alone, then a batch of three around it.
            let single = TestSupport.entry(slot, size: size, compressible: compressible)
            try await store.append([.accepted([single])])
            expected[slot] = single
            slot += 1
            let batch = (0..<3).map { TestSupport.entry(slot + UInt64($0), size: size / 3, compressible: compressible) }
            try await store.append([.accepted(batch), .chosen(through: slot)])
            for e in batch { expected[e.slot] = e }
            slot += 3
        }
        // A no-op, and a later accept superseding an earlier one.
        let noop = LogEntry(slot: slot, ballot: LogBallot(round: 4, node: 1), isNoop: true, payload: [])
        let newer = TestSupport.entry(2, size: 99, round: 5, compressible: compressible, salt: 7)
        try await store.append([.accepted([noop]), .accepted([newer]), .promise(LogBallot(round: 5, node: 1))])
        expected[slot] = noop
        expected[2] = newer

        func check(_ store: SegmentStore) throws {
            for (s, e) in expected { #expect(try store.entry(at: s) == e) }
            let all = try store.entries(from: 0, through: .max)
            #expect(all == expected.keys.sorted().map { expected[$0]! })
            let middle = try store.entries(from: 10, through: 20)
            #expect(middle.map(\.slot) == Array(10...20))
            #expect(try store.entry(at: slot + 1) == nil)
            let state = store.state
            #expect(state.promised == LogBallot(round: 5, node: 1))
            #expect(state.chosenThrough == slot - 3)
            #expect(state.firstSlot == 1)
            #expect(state.lastSlot == slot)
            #expect(state.entryCount == expected.count)
            #expect(state.lastSegment > state.firstSegment, "the log should span several segments")
        }
        try check(store)
        let stats = store.statistics
        if compressible {
            #expect(stats.storedPayloadBytes * 4 < stats.rawPayloadBytes)
        } else {
            // Noise does not compress; only the entry headers of small batches might.
            #expect(Double(stats.storedPayloadBytes) > Double(stats.rawPayloadBytes) * 0.99)
        }
        try store.close()

        let reopened = try TestSupport.open(dir, options)
        try check(reopened)
        // The scanner sees the same records, compressed exactly when that was asked for and useful.
        let scanner = SegmentScanner(directory: dir)
        var codecs: Set<String> = []
        var accepted = 0
        for file in try scanner.segmentFiles() {
            let report = try scanner.scan(file, decode: true) { record in
                if record.kind == .accepted, record.rawLength > (compressible ? 4 << 10 : 64 << 10) { codecs.insert(record.codec) }
                if case .accepted(let entries)? = record.record { accepted += entries.count }
                #expect(record.crcExpected == record.crcActual)
            }
            #expect(report.end == .clean)
        }
        #expect(codecs == [compressible ? "lz4" : "raw"])
        #expect(accepted == expected.count + 1)  // slot 2 twice
        // Appends continue after reopen.
        try await reopened.append([.accepted([TestSupport.entry(slot + 1)])])
        #expect(try reopened.entry(at: slot + 1) == TestSupport.entry(slot + 1))
        try reopened.close()
    }

    @Test("a batch above maxRecordBytes is split; one entry above it is refused")
    func splitting() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        var options = SegmentStore.Options(segmentSize: 1 << 20)
        options.maxRecordBytes = 4096
        let store = try TestSupport.open(dir, options)
        let batch = (1...40).map { TestSupport.entry(UInt64($0), size: 500) }
        try await store.append([.accepted(batch)])
        #expect(try store.entries(from: 1, through: 40) == batch)
        await #expect(throws: SegmentLogError.self) { try await store.append([.accepted([TestSupport.entry(41, size: 5000)])]) }
        try store.close()
        var frames = 0
        let scanner = SegmentScanner(directory: dir)
        for file in try scanner.segmentFiles() { _ = try scanner.scan(file) { _ in frames += 1 } }
        #expect(frames >= 5)
    }

    @Test("snapshots compact, prefix truncation deletes whole segments, suffix truncation persists")
    func snapshotsAndTruncation() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let options = SegmentStore.Options(segmentSize: 4096)
        let store = try TestSupport.open(dir, options)
        try await store.append([.promise(LogBallot(round: 9, node: 3))])
        for s in stride(from: UInt64(1), through: 200, by: 4) {
            try await store.append([.accepted((s..<s + 4).map { TestSupport.entry($0, size: 60) }), .chosen(through: s + 3)])
        }
        let before = store.state
        #expect(before.lastSegment - before.firstSegment > 2)
        #expect(throws: SegmentLogError.self) { try store.truncatePrefix(below: 50) }  // no snapshot yet
        try await store.writeSnapshot(slot: 100, data: Array("state through 100".utf8))
        #expect(throws: SegmentLogError.self) { try store.entry(at: 100) }
        #expect(try store.entry(at: 101) == TestSupport.entry(101, size: 60))
        #expect(throws: SegmentLogError.self) { try store.truncatePrefix(below: 102) }  // beyond the snapshot
        let deleted = try store.truncatePrefix(below: 101)
        #expect(deleted > 0)
        #expect(store.state.firstSegment == before.firstSegment + UInt64(deleted))
        try await store.truncateSuffix(after: 150)
        #expect(try store.entry(at: 151) == nil)
        #expect(store.state.lastSlot == 150)
        try await store.writeSnapshot(slot: 120, data: Array("state through 120".utf8))
        try store.close()
        #expect(TestSupport.files(dir).filter { $0.hasPrefix("snapshot-") } == ["snapshot-00000000000000000120.snap"])

        let reopened = try TestSupport.open(dir, options)
        let state = reopened.state
        #expect(state.promised == LogBallot(round: 9, node: 3))
        #expect(state.chosenThrough == 200)
        #expect(state.snapshotSlot == 120)
        #expect(state.firstSlot == 121)
        #expect(state.lastSlot == 150)
        #expect(try reopened.readSnapshot() == SegmentStore.Snapshot(slot: 120, data: Array("state through 120".utf8)))
        #expect(try reopened.entries(from: 121, through: 1000) == (121...150).map { TestSupport.entry($0, size: 60) })
        do {
            _ = try reopened.entries(from: 5, through: 10)
            Issue.record("expected .compacted")
        } catch let error as SegmentLogError {
            #expect(error.code == .compacted(slot: 5))
        }
        // Later accepts for truncated slots land again.
        try await reopened.append([.accepted([TestSupport.entry(151, size: 10, salt: 1)])])
        #expect(try reopened.entry(at: 151) == TestSupport.entry(151, size: 10, salt: 1))
        try reopened.close()
    }

    @Test("a second open of the same directory is refused with .locked")
    func lockFile() throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir)
        #expect(try SegmentStore.isLocked(directory: dir))
        do {
            _ = try TestSupport.open(dir)
            Issue.record("second open succeeded")
        } catch let error as SegmentLogError {
            guard case .locked = error.code else { Issue.record("wrong error \(error)"); return }
        }
        try store.close()
        #expect(try !SegmentStore.isLocked(directory: dir))
        try TestSupport.open(dir).close()
    }

    @Test("reads run concurrently with appends and only see acknowledged entries")
    func concurrentReads() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir, .init(segmentSize: 64 << 10, syncPolicy: .never))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<8 {
                group.addTask {
                    for i in 0..<200 {
                        let slot = UInt64(i * 8 + w + 1)
                        try await store.append([.accepted([TestSupport.entry(slot, size: 100)])])
                    }
                }
            }
            group.addTask {
                for _ in 0..<200 {
                    for e in try store.entries(from: 1, through: 1600) { #expect(e == TestSupport.entry(e.slot, size: 100)) }
                }
            }
            try await group.waitForAll()
        }
        #expect(store.state.entryCount == 1600)
        try store.close()
        do {
            _ = try store.entry(at: 1)
            Issue.record("read after close")
        } catch let error as SegmentLogError {
            #expect(error.code == .closed)
        }
    }

    @Test("callback appends and interval sync policy")
    func callbackAndInterval() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir, .init(syncPolicy: .interval(milliseconds: 5)))
        let results: [Result<Void, SegmentLogError>] = await withCheckedContinuation { continuation in
            let box = ResultBox(expected: 50) { continuation.resume(returning: $0) }
            for s in 1...50 {
                store.append([.accepted([TestSupport.entry(UInt64(s))])]) { box.add($0) }
            }
        }
        #expect(results.allSatisfy { (try? $0.get()) != nil })
        try store.close()
        let reopened = try TestSupport.open(dir)
        #expect(reopened.state.entryCount == 50)
        try reopened.close()
    }
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<Void, SegmentLogError>] = []
    private let expected: Int
    private let done: ([Result<Void, SegmentLogError>]) -> Void

    init(expected: Int, done: @escaping ([Result<Void, SegmentLogError>]) -> Void) {
        self.expected = expected
        self.done = done
    }

    func add(_ result: Result<Void, SegmentLogError>) {
        lock.lock()
        results.append(result)
        let finished = results.count == expected ? results : nil
        lock.unlock()
        if let finished { done(finished) }
    }
}
