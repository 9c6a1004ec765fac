import Foundation
import Testing
@testable import SegmentLog

/// Streaming snapshots: chunked writes and reads, the commit protocol, and what a crash or an
/// abort leaves behind.
@Suite struct SnapshotStreamTests {
    func fill(_ store: SegmentStore, through last: UInt64, size: Int = 200) async throws {
        for slot in stride(from: UInt64(1), through: last, by: 10) {
            try await store.append([.accepted((slot..<Swift.min(slot + 10, last + 1)).map { TestSupport.entry($0, size: size) })])
        }
        try await store.append([.chosen(through: last)])
    }

    @Test func chunkedWriteAndReadRoundTrip() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        var options = SegmentStore.Options()
        options.segmentSize = 4096
        let store = try TestSupport.open(dir, options)
        try await fill(store, through: 200)
        let data = TestSupport.payload(slot: 7, size: 300_001)
        let writer = try store.beginSnapshot(slot: 150)
        for start in stride(from: 0, to: data.count, by: 65_536) {
            try writer.write(data[start..<Swift.min(start + 65_536, data.count)])
        }
        try await writer.commit()
        let reader = try #require(try store.openSnapshot())
        #expect(reader.slot == 150)
        #expect(reader.length == UInt64(data.count))
        try reader.verify(chunkSize: 10_000)
        var back: [UInt8] = []
        while UInt64(back.count) < reader.length { back += try reader.read(at: UInt64(back.count), maxCount: 70_000) }
        #expect(back == data)
        #expect(try store.readSnapshot()?.data == data)
        // Entries at or below the snapshot are compacted; the rest are readable.
        #expect(throws: SegmentLogError.self) { _ = try store.entries(from: 150, through: 151) }
        #expect(try store.entries(from: 151, through: 200).map(\.slot) == Array(151...200))
        // Segments wholly below 151 can go, and exactly those go.
        let plan = try store.segmentsWhollyBelow(151)
        #expect(!plan.isEmpty)
        #expect(try store.truncatePrefix(below: 151) == plan.count)
        reader.close()
        try store.close()

        let reopened = try TestSupport.open(dir, options)
        defer { try? reopened.close() }
        #expect(reopened.state.snapshotSlot == 150)
        #expect(try reopened.readSnapshot()?.data == data)
        #expect(try reopened.entries(from: 151, through: 200).count == 50)
    }

    @Test func abortAndFailedChecksLeaveNothing() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir)
        try await fill(store, through: 20)
        let a = try store.beginSnapshot(slot: 10)
        try a.write([1, 2, 3])
        a.abort()
        let b = try store.beginSnapshot(slot: 10)
        try b.write([1, 2, 3])
        await #expect(throws: SegmentLogError.self) { try await b.commit(expectedLength: 3, expectedChecksum: 12345) }
        let c = try store.beginSnapshot(slot: 10)
        try c.write([1, 2, 3])
        await #expect(throws: SegmentLogError.self) { try await c.commit(expectedLength: 4) }
        do { _ = try store.beginSnapshot(slot: 11) }  // dropped without commit: removed by deinit
        #expect(store.state.snapshotSlot == nil)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(!names.contains { $0.contains(".snap") }, "left behind: \(names)")
        try store.close()
    }

    @Test func installedSnapshotMarksItsSlotsChosen() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir)
        try await fill(store, through: 5)
        let data = Array("peer state".utf8)
        let w = try store.beginSnapshot(slot: 40)
        try w.write(data)
        let crc = data.withUnsafeBytes { snapshotChecksum(0, $0) }
        try await w.commit(expectedLength: UInt64(data.count), expectedChecksum: crc, markChosen: true)
        #expect(store.state.chosenThrough == 40)
        #expect(store.state.snapshotSlot == 40)
        #expect(store.state.entryCount == 0)
        try store.close()
        let reopened = try TestSupport.open(dir)
        #expect(reopened.state.chosenThrough == 40)
        try reopened.close()
    }

    @Test func readerSurvivesANewerSnapshotDeletingItsFile() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir)
        try await fill(store, through: 30)
        let old = TestSupport.payload(slot: 1, size: 50_000)
        try await store.writeSnapshot(slot: 10, data: old)
        let reader = try #require(try store.openSnapshot())
        try await store.writeSnapshot(slot: 20, data: [9])
        #expect(!FileManager.default.fileExists(atPath: reader.path))
        #expect(try reader.read(at: 0, maxCount: old.count) == old)
        try reader.verify()
        try store.close()
    }

    @Test func leftoverTemporaryAndUnrecordedSnapshotsAreRemovedOnOpen() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        do {
            let store = try TestSupport.open(dir)
            try await fill(store, through: 30)
            try await store.writeSnapshot(slot: 10, data: [1])
            // A crash mid-stream: the temporary file stays (the writer is leaked on purpose).
            let w = try store.beginSnapshot(slot: 20)
            try w.write([2, 3])
            withExtendedLifetime(w) {}
            try store.close()
            _ = Unmanaged.passRetained(w)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.hasSuffix(".tmp") })
        let store = try TestSupport.open(dir)
        defer { try? store.close() }
        #expect(store.state.snapshotSlot == 10)
        #expect(try store.readSnapshot()?.data == [1])
        #expect(try !FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.hasSuffix(".tmp") })
    }

    /// A snapshot file whose header (CRC intact) names another slot than its file name: the log's
    /// watermark would point at the wrong state. Verify reports it, a strict open refuses it.
    @Test func snapshotHeaderSlotMustMatchItsFileName() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        do {
            let store = try TestSupport.open(dir)
            try await fill(store, through: 30)
            try await store.writeSnapshot(slot: 20, data: [1, 2, 3])
            try store.close()
        }
        let path = dir + "/" + Format.snapshotFileName(20)
        var bytes = TestSupport.read(path)
        let header = SnapshotFile.encodeHeader(slot: 7, length: 3, dataCRC: bytes.withUnsafeBytes { h in h.le(32, as: UInt32.self) })
        bytes.replaceSubrange(0..<Format.snapshotHeaderSize, with: header)
        TestSupport.write(path, bytes)

        let report = try LogVerifier(directory: dir).verify()
        #expect(report.damage.map(\.kind) == [.snapshot])
        #expect(report.damage.first?.reason.contains("names slot 7, the file name says 20") == true, "\(report.damage)")
        #expect(throws: SegmentLogError.self) { _ = try TestSupport.open(dir) }
    }
}
