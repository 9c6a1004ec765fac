import Foundation
import Testing
@testable import SegmentLog

/// Segment files that compaction frees are kept (`<segment>.free`) and reused for new segments.
/// A reused file still holds the records of its earlier use after the new ones: these tests pin
/// down that they are never read back, that recovery ends the log at them without cutting, and that
/// damage is still told apart from them.
@Suite("Recycled segments")
struct RecycleTests {
    static let options: SegmentStore.Options = {
        var options = SegmentStore.Options(segmentSize: 8192)
        options.recycleSegments = 4
        return options
    }()

    /// Appends slots `range` in batches of four, 200-byte entries (about two batches per KiB).
    static func fill(_ store: SegmentStore, _ range: ClosedRange<UInt64>, salt: UInt64 = 0) async throws {
        for s in stride(from: range.lowerBound, through: range.upperBound, by: 4) {
            let batch = (s...min(s + 3, range.upperBound)).map { TestSupport.entry($0, size: 200, salt: salt) }
            try await store.append([.accepted(batch), .chosen(through: batch.last!.slot)])
        }
    }

    /// A log of slots 1...600 whose segments have been compacted and reused several times: before
    /// each hundred slots, all but the last ten slots are compacted, so the files freed (about
    /// three) hold the next hundred. Left open; the snapshot covers slots through 490.
    static func recycledLog(_ dir: String) async throws -> SegmentStore {
        let store = try TestSupport.open(dir, options)
        for round in UInt64(0)..<6 {
            if round > 0 {
                let through = round * 100 - 10
                try await store.writeSnapshot(slot: through, data: Array("through \(through)".utf8))
                try store.truncatePrefix(below: through + 1)
            }
            try await fill(store, (round * 100 + 1)...(round * 100 + 100))
        }
        return store
    }

    /// Runs `body` on a closed `recycledLog` in a temporary directory, removed afterwards.
    static func withClosedRecycledLog(name: String = #function, _ body: (String) async throws -> Void) async throws {
        let dir = TestSupport.temporaryDirectory(name)
        defer { TestSupport.remove(dir) }
        try await recycledLog(dir).close()
        try await body(dir)
    }

    static func segments(_ dir: String) throws -> [(file: SegmentScanner.SegmentFileInfo, report: SegmentScanner.SegmentReport)] {
        let scanner = SegmentScanner(directory: dir)
        return try scanner.segmentFiles().map { ($0, try scanner.scan($0)) }
    }

    /// Writes `bytes` over the file at `offset`, in place.
    static func overwrite(_ path: String, at offset: Int64, with bytes: [UInt8]) {
        let fd = Glibc.open(path, O_WRONLY)
        precondition(fd >= 0, "cannot open \(path)")
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        Glibc.close(fd)
    }

    @Test("compaction keeps freed files, rolls reuse them, and every entry reads back after reopening")
    func reuseAndReopen() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try await Self.recycledLog(dir)
        let stats = store.statistics
        #expect(stats.segmentsRecycled >= 8)
        let free = TestSupport.files(dir).filter { $0.hasSuffix(".seg.free") }
        #expect(free.count <= 4)
        let expected = try store.entries(from: 491, through: 600)
        #expect(expected == (491...600).map { TestSupport.entry($0, size: 200) })
        try store.close()

        // The live segments include reused files whose bytes after the records are not zero.
        let live = try Self.segments(dir)
        let reused = live.filter { $0.report.header?.recycled == true }
        #expect(!reused.isEmpty)
        let stale = reused.contains { file, report in
            let bytes = TestSupport.read(file.path)
            return bytes[Int(report.validEnd)...].contains { $0 != 0 }
        }
        #expect(stale, "no reused segment holds bytes of its earlier use: the test does not exercise them")

        let reopened = try TestSupport.open(dir, Self.options)
        #expect(try reopened.entries(from: 491, through: 600) == expected)
        #expect(reopened.state.lastSlot == 600)
        try await Self.fill(reopened, 601...700)
        try reopened.close()
        let again = try TestSupport.open(dir, Self.options)
        #expect(try again.entries(from: 491, through: 700) == (491...700).map { TestSupport.entry($0, size: 200) })
        try again.close()

        // Nothing was cut as a torn tail, and the offline verifier agrees the log is clean.
        #expect(!TestSupport.files(dir).contains { $0.contains(".torn-") })
        let report = try LogVerifier(directory: dir).verify()
        #expect(report.isClean && report.tornTail == nil)
    }

    @Test("an append cut short in a reused file ends the log there; appends continue over it")
    func tornAppendInReusedFile() async throws {
        try await Self.withClosedRecycledLog { dir in
            let (last, report) = try #require(try Self.segments(dir).last)
            try #require(report.header?.recycled == true)
            // Half a record header where the next append would go: what a crash mid-write leaves.
            Self.overwrite(last.path, at: report.validEnd, with: [0xde, 0xad, 0xbe, 0xef, 0x40, 0x00, 0x00])

            let store = try TestSupport.open(dir, Self.options)
            #expect(store.state.lastSlot == 600)
            try await Self.fill(store, 601...640, salt: 7)
            try store.close()
            let reopened = try TestSupport.open(dir, Self.options)
            #expect(try reopened.entries(from: 601, through: 640) == (601...640).map { TestSupport.entry($0, size: 200, salt: 7) })
            try reopened.close()
        }
    }

    @Test("damage before valid records in a reused file is corruption, not its end")
    func damageInReusedFile() async throws {
        try await Self.withClosedRecycledLog { dir in
            let (last, _) = try #require(try Self.segments(dir).last)
            var bytes = TestSupport.read(last.path)
            bytes[Format.segmentHeaderSize + 20] ^= 0x40  // inside the first record; later records verify
            TestSupport.write(last.path, bytes)
            let error = #expect(throws: SegmentLogError.self) { try TestSupport.open(dir, Self.options).close() }
            #expect(error?.code.corruptionFile == last.path)
        }
    }

    @Test("a reused segment that is not the last must end in its segment-end record")
    func sealRequired() async throws {
        try await Self.withClosedRecycledLog { dir in
            let segments = try Self.segments(dir)
            let sealed = try #require(segments.dropLast().first { $0.report.header?.recycled == true })
            var bytes = TestSupport.read(sealed.file.path)
            let end = Int(sealed.report.validEnd)
            #expect(bytes[end + 12] == Format.RecordType.segmentEnd.rawValue)
            bytes[end + 12] = 0x7f  // the seal no longer parses: stale bytes would follow the records
            TestSupport.write(sealed.file.path, bytes)
            let error = #expect(throws: SegmentLogError.self) { try TestSupport.open(dir, Self.options).close() }
            #expect(error?.code.corruptionFile == sealed.file.path)
        }
    }

    @Test("a crash after sealing a segment, before the next existed: the log continues in a new one")
    func sealedLastSegment() async throws {
        try await Self.withClosedRecycledLog { dir in
            let (last, report) = try #require(try Self.segments(dir).last)
            // What a roll leaves when it dies after syncing the seal, before the next segment's rename.
            Self.overwrite(last.path, at: report.validEnd, with: RecordCodec.segmentEndFrame(sequence: last.sequence))

            let store = try TestSupport.open(dir, Self.options)
            #expect(store.state.lastSlot == 600)
            try await Self.fill(store, 601...608, salt: 3)
            try store.close()
            let reopened = try TestSupport.open(dir, Self.options)
            #expect(try reopened.entries(from: 591, through: 608) == (591...600).map { TestSupport.entry($0, size: 200) }
                + (601...608).map { TestSupport.entry($0, size: 200, salt: 3) })
            try reopened.close()
            // The sealed segment was not written to again: the appends went to a new one.
            let after = try Self.segments(dir)
            #expect(after.first { $0.file.sequence == last.sequence }?.report.validEnd == report.validEnd)
            #expect(after.last?.file.sequence == last.sequence + 1)
        }
    }

    @Test("recycleSegments 0 deletes freed files; extra .free files are deleted on open")
    func poolLimit() async throws {
        try await Self.withClosedRecycledLog { dir in
            for n in 0..<3 { TestSupport.write(dir + "/0000000000000000099\(n).seg.free", [1, 2, 3]) }
            var options = Self.options
            options.recycleSegments = 1
            let store = try TestSupport.open(dir, options)
            #expect(TestSupport.files(dir).filter { $0.hasSuffix(".free") }.count == 1)
            try store.close()
            options.recycleSegments = 0
            let none = try TestSupport.open(dir, options)
            try await Self.fill(none, 601...700)
            try await none.writeSnapshot(slot: 690, data: [1])
            #expect(try none.truncatePrefix(below: 691) > 0)
            #expect(TestSupport.files(dir).filter { $0.hasSuffix(".free") }.isEmpty)
            #expect(none.statistics.segmentsRecycled == 0)
            try none.close()
        }
    }
}
