import Foundation
import Testing
@testable import SegmentLog

@Suite("LogInspector")
struct InspectTests {
    @Test("inspect replays the acceptor state, slot range, superseded accepts and compression")
    func summary() async throws {
        let fixture = try await OfflineFixture.make()
        defer { TestSupport.remove(fixture.directory) }
        let report = try LogInspector(directory: fixture.directory).inspect()
        let state = try #require(report.state)
        #expect(state.promised == LogBallot(round: 2, node: 1))
        #expect(state.chosenThrough == 40)
        #expect(state.snapshotSlot == nil)
        #expect(state.firstSlot == 1)
        #expect(state.lastSlot == 42)
        #expect(state.entryCount == 42)
        #expect(state.supersededAccepts == 3)
        #expect(state.holes == 0)
        #expect(state.chosenWithoutEntry == 0)
        #expect(report.compressionRatio > 1)
        #expect(report.notes.contains { $0.contains("3 superseded accepts") })
        // Segment slot ranges cover every slot, and the per-segment sums are the totals.
        #expect(report.segments.compactMap(\.firstSlot).min() == 1)
        #expect(report.segments.compactMap(\.lastSlot).max() == 42)
        #expect(report.segments.reduce(0) { $0 + $1.entries } == 45)
        #expect(report.segments.reduce(0) { $0 + $1.records } == report.records)
        #expect(report.segments.map(\.sequence) == Array(1...UInt64(report.segments.count)))
    }

    @Test("chosen entries are the latest accept of each slot through the watermark, in slot order")
    func chosenEntries() async throws {
        let fixture = try await OfflineFixture.make()
        defer { TestSupport.remove(fixture.directory) }
        var entries: [LogEntry] = []
        let report = try LogInspector(directory: fixture.directory).chosenEntries { entries.append($0) }
        #expect(report.isClean)
        #expect(entries.map(\.slot) == Array(1...40))
        for entry in entries { #expect(entry == fixture.truth[entry.slot]) }
        #expect(entries[10].ballot == LogBallot(round: 2, node: 1))

        var ranged: [UInt64] = []
        _ = try LogInspector(directory: fixture.directory).chosenEntries(from: 5, through: 7) { ranged.append($0.slot) }
        #expect(ranged == [5, 6, 7])
        ranged = []
        _ = try LogInspector(directory: fixture.directory).chosenEntries(from: 39, through: 100) { ranged.append($0.slot) }
        #expect(ranged == [39, 40], "nothing above the chosen watermark")
    }

    @Test("all records come in file order with each accept's fate")
    func allRecords() async throws {
        let fixture = try await OfflineFixture.make()
        defer { TestSupport.remove(fixture.directory) }
        var records: [DumpedRecord] = []
        _ = try LogInspector(directory: fixture.directory).allRecords { records.append($0) }
        #expect(records.filter { $0.type == "promise" }.map(\.record) == [.promise(LogBallot(round: 1, node: 1)), .promise(LogBallot(round: 2, node: 1))])
        #expect(records.filter { $0.type == "chosen" }.map(\.record) == [.chosen(through: 40)])
        let accepts = records.filter { $0.entry != nil }
        #expect(accepts.count == 45)
        #expect(accepts.filter { $0.entryStatus == .superseded }.map { $0.entry?.slot } == [10, 11, 12])
        #expect(accepts.filter { $0.entryStatus == .current }.count == 42)
        #expect(accepts.contains { $0.entry?.isNoop == true && $0.entry?.slot == 42 })
        #expect(records.contains { $0.codec == "lz4" })
        // File order: (file, offset) never goes back.
        let keys = records.map { ($0.file, $0.offset) }
        #expect(zip(keys, keys.dropFirst()).allSatisfy { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 <= $1.1) })
    }

    @Test("on a damaged log, state and chosen entries come from the valid prefix; damage is in the report")
    func damagedPrefix() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let records = try fixture.records(1)
        OfflineFixture.flip(copy + "/" + fixture.segments[1].split(separator: "/").last!, at: records[0].offset + 30)
        var entries: [LogEntry] = []
        let report = try LogInspector(directory: copy).chosenEntries { entries.append($0) }
        #expect(!report.isClean)
        #expect(report.state?.chosenThrough == nil, "the chosen marker lies after the damage")
        #expect(entries.isEmpty)
        let inspected = try LogInspector(directory: copy).inspect()
        #expect(inspected.damage.count == 1)
        let lastKept = try #require(inspected.state?.lastSlot)
        #expect(lastKept < 40)
        var after = 0
        _ = try LogInspector(directory: copy).allRecords { if $0.entryStatus == .afterDamage { after += 1 } }
        #expect(after > 0)
    }

    @Test("snapshots: compacted slots are not dumped, the snapshot file is verified, stale ones noted")
    func snapshot() async throws {
        let fixture = try await OfflineFixture.make()
        defer { TestSupport.remove(fixture.directory) }
        let store = try TestSupport.open(fixture.directory, OfflineFixture.options, fileSystem: TestSupport.fastFileSystem)
        try await store.writeSnapshot(slot: 20, data: Array("state through 20".utf8))
        try store.close()
        var entries: [UInt64] = []
        let report = try LogInspector(directory: fixture.directory).chosenEntries { entries.append($0.slot) }
        #expect(report.isClean)
        #expect(report.state?.snapshotSlot == 20)
        #expect(entries == Array(21...40))

        let snapshotPath = fixture.directory + "/" + Format.snapshotFileName(20)
        OfflineFixture.flip(snapshotPath, at: Format.snapshotHeaderSize + 3)
        let damaged = try LogVerifier(directory: fixture.directory).verify()
        #expect(damaged.damage.map(\.kind) == [.snapshot])
        let plan = try LogRepair(directory: fixture.directory).run(truncateAfterCorruption: true, dryRun: true)
        #expect(plan.refusal != nil, "cutting the log cannot bring a snapshot back")
    }
}
