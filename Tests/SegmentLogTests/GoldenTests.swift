import Foundation
import PaxosLogTesting
import Testing
@testable import SegmentLog

/// Committed log files that must decode to known contents, and that the current writer must
/// reproduce byte for byte, so the format cannot change by accident.
/// Regenerate after a deliberate format change: `SEGMENTLOG_REGENERATE_GOLDEN=1 swift test --filter GoldenTests`.
@Suite("Golden files")
struct GoldenTests {
    static let options: SegmentStore.Options = {
        var o = SegmentStore.Options(segmentSize: 256, compressionThreshold: 128)
        o.preallocate = false
        return o
    }()

    static let ballot = LogBallot(round: 7, node: 3)

    static func entry(_ slot: UInt64, _ text: String, noop: Bool = false) -> LogEntry {
        LogEntry(slot: slot, ballot: ballot, isNoop: noop, payload: Array(text.utf8))
    }

    static let longText = String(repeating: "golden compressible value; ", count: 12)

    /// Writes the golden log: appends one at a time so the layout is deterministic.
    static func write(_ dir: String) async throws {
        let store = try TestSupport.open(dir, options, fileSystem: TestSupport.fastFileSystem)
        try await store.append([.promise(ballot)])
        try await store.append([.accepted([entry(1, "one"), entry(2, ""), entry(3, "three")])])
        try await store.append([.chosen(through: 2)])
        try await store.append([.accepted([entry(4, longText)])])  // LZ4
        try await store.append([.accepted([entry(5, "", noop: true), entry(6, "six")]), .chosen(through: 4)])
        try await store.append([.accepted([entry(3, "three again")])])  // supersedes slot 3
        try await store.writeSnapshot(slot: 1, data: Array("snapshot through 1".utf8))
        try await store.truncateSuffix(after: 5)  // drops slot 6
        try await store.append([.accepted([entry(6, "six again"), entry(7, "seven")]), .promise(LogBallot(round: 8, node: 1))])
        try store.close()
    }

    /// What the golden log must decode to.
    static func expectContents(_ store: SegmentStore) throws {
        let state = store.state
        #expect(state.promised == LogBallot(round: 8, node: 1))
        #expect(state.chosenThrough == 4)
        #expect(state.snapshotSlot == 1)
        #expect(state.firstSlot == 2 && state.lastSlot == 7 && state.entryCount == 6)
        #expect(try store.entries(from: 2, through: 100) == [
            entry(2, ""), entry(3, "three again"), entry(4, longText), entry(5, "", noop: true),
            entry(6, "six again"), entry(7, "seven"),
        ])
        #expect(try store.readSnapshot() == SegmentStore.Snapshot(slot: 1, data: Array("snapshot through 1".utf8)))
    }

    static var goldenDirectory: String {
        Bundle.module.url(forResource: "Golden", withExtension: nil)!.path
    }

    static var sourceGoldenDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden").path
    }

    static func logFiles(_ dir: String) -> [String] {
        TestSupport.files(dir).filter { $0.hasSuffix(".seg") || $0.hasSuffix(".snap") }
    }

    /// `Golden/` holds the current format; `Golden/v1/` the same log as format version 1 wrote it
    /// (no segment-end records), which this build still reads.
    @Test("the committed golden logs decode to the known contents", arguments: ["", "/v1"])
    func decodesGolden(version: String) throws {
        if ProcessInfo.processInfo.environment["SEGMENTLOG_REGENERATE_GOLDEN"] != nil { return }
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let source = Self.goldenDirectory + version
        let golden = Self.logFiles(source)
        #expect(golden.count >= 4, "golden files missing from the test bundle")
        for name in golden { TestSupport.write(dir + "/" + name, TestSupport.read(source + "/" + name)) }
        let store = try TestSupport.open(dir, Self.options, fileSystem: TestSupport.fastFileSystem)
        try Self.expectContents(store)
        try store.close()
        // And record by record, as the offline tools will see it.
        let scanner = SegmentScanner(directory: dir)
        var kinds: [SegmentScanner.RecordKind] = []
        var codecs: [String] = []
        for file in try scanner.segmentFiles() {
            let report = try scanner.scan(file) { kinds.append($0.kind); codecs.append($0.codec) }
            #expect(report.end == .clean)
        }
        #expect(kinds == [.promise, .accepted, .chosen, .accepted, .accepted, .chosen, .accepted, .snapshot,
                          .suffixTruncated, .accepted, .promise])
        #expect(codecs[3] == "lz4")
    }

    @Test("the writer reproduces the golden files byte for byte")
    func reproducesGolden() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        try await Self.write(dir)
        let reopened = try TestSupport.open(dir, Self.options, fileSystem: TestSupport.fastFileSystem)
        try Self.expectContents(reopened)
        try reopened.close()
        let produced = Self.logFiles(dir)
        if ProcessInfo.processInfo.environment["SEGMENTLOG_REGENERATE_GOLDEN"] != nil {
            let target = Self.sourceGoldenDirectory
            for name in Self.logFiles(target) { TestSupport.remove(target + "/" + name) }
            for name in produced { TestSupport.write(target + "/" + name, TestSupport.read(dir + "/" + name)) }
            return
        }
        #expect(produced == Self.logFiles(Self.goldenDirectory))
        for name in produced {
            #expect(TestSupport.read(dir + "/" + name) == TestSupport.read(Self.goldenDirectory + "/" + name), "\(name) differs")
        }
    }

    @Test("FORMAT.md's worked example")
    func workedExample() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir, .init(segmentSize: 1 << 20), fileSystem: TestSupport.fastFileSystem)
        try await store.append([.promise(LogBallot(round: 3, node: 2)),
                                .accepted([LogEntry(slot: 1, ballot: LogBallot(round: 3, node: 2), payload: Array("hi".utf8))])])
        try store.close()
        let bytes = TestSupport.read(dir + "/00000000000000000001.seg")
        #expect(Array(bytes[0..<0x18]) == Array("PXLOGSEG".utf8) + [2, 0, 0x40, 0, 0, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(bytes[0x44..<0x5c]) == [0x0c, 0, 0, 0, 0x0c, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0])
        #expect(Array(bytes[0x60..<0x8b]) == [0x1f, 0, 0, 0, 0x1f, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0,
                                              1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0,
                                              2, 0, 0, 0, 0x68, 0x69])
        #expect(bytes[0x8b...].allSatisfy { $0 == 0 })
    }
}
