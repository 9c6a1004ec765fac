import CZlib
import Foundation
import Testing
@testable import SegmentLog

#if canImport(Glibc)
import Glibc
#endif

/// Snapshots above 4 GiB (64-bit lengths, a CRC fed in steps) and markers of external state,
/// without writing gigabytes: sparse files and the kernel's zero page stand in for the data.
@Suite struct SnapshotSizeTests {
    static let large: Int = (4 << 30) + 4096 + 7

    /// crc32 of `count` zero bytes, from zlib's combine of 1 GiB steps (computed without
    /// ``Format/crc(_:_:)``, the code under test).
    static func zeroCRC(_ count: Int) -> UInt32 {
        let step = 1 << 28
        let zeros = [UInt8](repeating: 0, count: step)
        let full = zeros.withUnsafeBufferPointer { UInt(crc32(0, $0.baseAddress, UInt32(step))) }
        var crc: UInt = 0
        var left = count
        while left >= step { crc = UInt(crc32_combine(CZlib.uLong(crc), CZlib.uLong(full), off_t(step))); left -= step }
        if left > 0 {
            let tail = zeros.withUnsafeBufferPointer { UInt(crc32(0, $0.baseAddress, UInt32(left))) }
            crc = UInt(crc32_combine(CZlib.uLong(crc), CZlib.uLong(tail), off_t(left)))
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    @Test func crcOfABufferAbove4GiBDoesNotTrap() throws {
        // An anonymous private mapping reads as zeros and costs no memory until written.
        let n = Self.large
        let base = mmap(nil, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        try #require(base != MAP_FAILED)
        defer { munmap(base, n) }
        let crc = Format.crc(0, UnsafeRawBufferPointer(start: base, count: n))
        #expect(crc == Self.zeroCRC(n))
    }

    @Test func sparseSnapshotAbove4GiBOpensAndVerifies() throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        // Opened first: recovery deletes `*.tmp` files, as it should exports a crash left behind.
        let store = try TestSupport.open(dir)
        defer { try? store.close() }
        // A file with a real header and a hole for its data: 4 GiB + 4 KiB + 7 zero bytes.
        let length = UInt64(Self.large)
        let path = dir + "/export-big.snap.tmp"
        let header = SnapshotFile.encodeHeader(slot: 9, length: length, dataCRC: 0)
        TestSupport.write(path, header)
        #expect(truncate(path, off_t(Format.snapshotHeaderSize) + off_t(length)) == 0)
        let reader = try store.openSnapshotFile(atPath: path)
        #expect(reader.length == length)
        #expect(!reader.holdsExternalState)
        // Reads past 4 GiB land at their 64-bit offsets. (Verifying the whole data would read
        // 4 GiB, half a minute here; the CRC over more than 4 GiB is the test above.)
        #expect(try reader.read(at: length - 5, maxCount: 100) == [0, 0, 0, 0, 0])
        #expect(try reader.read(at: 1 << 32, maxCount: 3) == [0, 0, 0])
        #expect(throws: SegmentLogError.self) { _ = try reader.read(at: length + 1, maxCount: 1) }
        reader.close()
        // A header that claims one byte more than the file holds is refused at open.
        TestSupport.write(path, SnapshotFile.encodeHeader(slot: 9, length: length + 1, dataCRC: 0))
        #expect(truncate(path, off_t(Format.snapshotHeaderSize) + off_t(length)) == 0)
        #expect(throws: SegmentLogError.self) { _ = try store.openSnapshotFile(atPath: path) }
    }

    @Test func markerOfExternalStateIsVersion2AndHoldsNoData() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir)
        try await store.append([.accepted((1...30).map { TestSupport.entry($0, size: 100) }), .chosen(through: 30)])
        let data = try store.beginSnapshot(slot: 10)
        data.holdsExternalState = true
        try data.write([1])
        await #expect(throws: SegmentLogError.self) { try await data.commit() }
        let marker = try store.beginSnapshot(slot: 20)
        marker.holdsExternalState = true
        try await marker.commit()
        let reader = try #require(try store.openSnapshot())
        #expect(reader.holdsExternalState && reader.slot == 20 && reader.length == 0)
        // Handing back empty data would restore an empty state: refused with a reason.
        #expect(throws: SegmentLogError.self) { _ = try store.readSnapshot() }
        reader.close()
        try store.close()
        let bytes = TestSupport.read(dir + "/" + Format.snapshotFileName(20))
        #expect(bytes.withUnsafeBytes { $0.le(8, as: UInt16.self) } == 2)
        #expect(bytes.withUnsafeBytes { $0.le(12, as: UInt32.self) } == 1)
        let reopened = try TestSupport.open(dir)
        #expect(reopened.state.snapshotSlot == 20)
        #expect(try reopened.openSnapshot()?.holdsExternalState == true)
        #expect(try LogVerifier(directory: dir).verify().damage.isEmpty)
        try reopened.close()
    }

    @Test func unknownSnapshotFlagsAreCorruption() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir)
        let path = dir + "/export-flags.snap.tmp"
        TestSupport.write(path, SnapshotFile.encodeHeader(slot: 3, length: 0, dataCRC: 0, flags: 2))
        #expect(throws: SegmentLogError.self) { _ = try store.openSnapshotFile(atPath: path) }
        try store.close()
    }
}
