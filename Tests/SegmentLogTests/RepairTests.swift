import Foundation
import Testing
@testable import SegmentLog

@Suite("LogRepair")
struct RepairTests {
    @Test("a clean log needs nothing")
    func clean() async throws {
        let fixture = try await OfflineFixture.make()
        defer { TestSupport.remove(fixture.directory) }
        let before = OfflineFixture.contents(fixture.directory)
        let plan = try LogRepair(directory: fixture.directory).run(truncateAfterCorruption: false, dryRun: false)
        #expect(plan.actions.isEmpty)
        #expect(!plan.cutsCorruption)
        #expect(OfflineFixture.contents(fixture.directory) == before)
    }

    @Test("a torn tail is cut into a side file without the flag; the log then verifies clean and opens")
    func tornTail() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let last = fixture.segments.count - 1
        let records = try fixture.records(last)
        let name = String(fixture.segments[last].split(separator: "/").last!)
        let tornAt = records[records.count - 1].offset
        // Garble the last record's tail, as a crash mid-write would, keeping the preallocation.
        OfflineFixture.flip(copy + "/" + name, at: tornAt + 16 + 3)
        let original = TestSupport.read(copy + "/" + name)
        // Trailing zero bytes of the record are indistinguishable from the preallocated space.
        let lastNonZero = try #require(original.lastIndex { $0 != 0 })
        let tornBytes = Array(original[tornAt...lastNonZero])

        let dry = try LogRepair(directory: copy).run(truncateAfterCorruption: false, dryRun: true)
        #expect(dry.actions == [.cutTail(file: copy + "/" + name, offset: Int64(tornAt), bytes: Int64(tornBytes.count),
                                         sideFile: copy + "/" + name + ".torn-\(tornAt)")])
        #expect(TestSupport.read(copy + "/" + name) == original, "a dry run writes nothing")

        var announced: RepairPlan?
        let plan = try LogRepair(directory: copy).run(truncateAfterCorruption: false, dryRun: false) { announced = $0 }
        #expect(announced?.actions == plan.actions)
        #expect(!plan.cutsCorruption)
        #expect(TestSupport.read(copy + "/" + name + ".torn-\(tornAt)") == tornBytes)
        let after = try LogVerifier(directory: copy).verify()
        #expect(after.isClean && after.tornTail == nil)
        #expect(TestSupport.read(copy + "/" + name).count == original.count, "the preallocation is kept")

        let store = try TestSupport.open(copy, OfflineFixture.options, fileSystem: TestSupport.fastFileSystem)
        defer { try? store.close() }
        #expect(try store.entry(at: 1) == fixture.truth[1])
    }

    @Test("mid-log corruption is refused without the flag, and nothing changes")
    func refusesCorruption() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let records = try fixture.records(0)
        OfflineFixture.flip(copy + "/" + fixture.segments[0].split(separator: "/").last!, at: records[2].offset + 30)
        let before = OfflineFixture.contents(copy)
        let plan = try LogRepair(directory: copy).run(truncateAfterCorruption: false, dryRun: false)
        #expect(plan.cutsCorruption)
        #expect(!plan.actions.isEmpty)
        #expect(OfflineFixture.contents(copy).filter { $0.key != "LOCK" } == before.filter { $0.key != "LOCK" })
    }

    @Test("damage in the first segment's header is refused even with the flag: the cut would leave no log")
    func refusesCuttingEverything() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        OfflineFixture.flip(copy + "/" + fixture.segments[0].split(separator: "/").last!, at: 20)
        let before = OfflineFixture.contents(copy)
        let plan = try LogRepair(directory: copy).run(truncateAfterCorruption: true, dryRun: false)
        #expect(plan.refusal?.contains("leave no log") == true)
        #expect(OfflineFixture.contents(copy).filter { $0.key != "LOCK" } == before.filter { $0.key != "LOCK" })
    }

    @Test("with the flag, the plan names exactly the slots lost, then the log is cut and opens clean")
    func truncatesAfterCorruption() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let names = fixture.segments.map { String($0.split(separator: "/").last!) }
        let records = try fixture.records(1)
        let cutAt = records[1].offset
        OfflineFixture.flip(copy + "/" + names[1], at: cutAt + 30)

        // Expected loss: every slot whose current entry lives at or after the damaged record.
        var location: [UInt64: (Int, Int)] = [:]
        let scanner = SegmentScanner(directory: fixture.directory)
        for (i, file) in try scanner.segmentFiles().enumerated() {
            _ = try scanner.scan(file, decode: true) { record in
                if case .accepted(let entries)? = record.record {
                    for e in entries { location[e.slot] = (i, Int(record.offset)) }
                }
            }
        }
        let expectedLost = location.filter { $0.value.0 > 1 || ($0.value.0 == 1 && $0.value.1 >= cutAt) }.keys.sorted()

        let plan = try LogRepair(directory: copy).run(truncateAfterCorruption: true, dryRun: false)
        #expect(plan.cutsCorruption)
        let named = Set(plan.lostSlots.flatMap { Array($0) } + plan.apparentLostSlots.flatMap { Array($0) })
        #expect(named.sorted() == expectedLost)
        #expect(plan.apparentLostSlots.count == 1, "the damaged record's slots, read despite its CRC")
        #expect(plan.stateRollback.contains { $0.hasPrefix("chosen watermark 40 -> ") })
        let setAside = names[2...].map { copy + "/" + $0 }
        #expect(plan.actions.compactMap { if case .setAside(let f, _) = $0 { return f } else { return nil } } == setAside.reversed())
        for name in names[2...] {
            #expect(FileManager.default.fileExists(atPath: copy + "/" + name + ".discarded"))
        }
        #expect(FileManager.default.fileExists(atPath: copy + "/" + names[1] + ".torn-\(cutAt)"))
        #expect(try LogVerifier(directory: copy).verify().isClean)

        let store = try TestSupport.open(copy, OfflineFixture.options, fileSystem: TestSupport.fastFileSystem)
        defer { try? store.close() }
        for slot in fixture.truth.keys.sorted() where !expectedLost.contains(slot) {
            #expect(try store.entry(at: slot) == fixture.truth[slot])
        }
        for slot in expectedLost { #expect(try store.entry(at: slot) != fixture.truth[slot]) }
    }

    @Test("a directory a live store holds is refused; a second repair keeps earlier side files")
    func lockedAndRepeated() async throws {
        let fixture = try await OfflineFixture.make()
        defer { TestSupport.remove(fixture.directory) }
        let store = try TestSupport.open(fixture.directory, OfflineFixture.options, fileSystem: TestSupport.fastFileSystem)
        do {
            _ = try LogRepair(directory: fixture.directory).run(truncateAfterCorruption: true, dryRun: false)
            Issue.record("repair ran on a locked directory")
        } catch let error as OfflineToolError {
            #expect(error.code == .locked(path: fixture.directory))
        }
        try store.close()

        #expect(RepairPlan.Action.cutTail(file: "a", offset: 1, bytes: 1, sideFile: "b") != .setAside(file: "a", to: "b"))
        #expect(LogRepair.unused("/d/x.torn-5", ["x.torn-5", "x.torn-5.1"]) == "/d/x.torn-5.2")
        #expect(LogRepair.unused("/d/x.torn-5", []) == "/d/x.torn-5")
    }

    @Test("an empty directory is not a log, and repair creates nothing in it")
    func notALog() throws {
        let empty = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(empty) }
        #expect(throws: OfflineToolError.self) { try LogRepair(directory: empty).run(truncateAfterCorruption: true, dryRun: false) }
        #expect(TestSupport.files(empty).isEmpty)
    }
}
