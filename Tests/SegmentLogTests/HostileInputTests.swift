import Foundation
import Glibc
import MultiPaxos
import Testing
@testable import SegmentLog

/// Inputs a fuzzer built by hand (session 10): files that verify record by record but hold what
/// no store writes, or are not segments at all. Each once crashed, hung or passed as clean.
@Suite("Hostile input")
struct HostileInputTests {
    /// A v2 segment that later segments follow ends with a segment-end record; zeroing its last
    /// records (and that record) lost them, and verify and recovery both called the log clean.
    @Test func unsealedSegmentIsDamage() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let records = try fixture.records(0)
        let from = records[records.count - 2].offset
        let target = copy + "/" + fixture.segments[0].split(separator: "/").last!
        var bytes = TestSupport.read(target)
        for i in from..<bytes.count { bytes[i] = 0 }
        TestSupport.write(target, bytes)
        let report = try LogVerifier(directory: copy).verify()
        let damage = try #require(report.damage.first)
        #expect(damage.kind == .unsealedSegment && damage.file == target && damage.offset == Int64(from))
        #expect(!OfflineFixture.strictOpenSucceeds(copy))
    }

    /// A record whose CRC verifies but names slot 2^64 - 1 made inspect and dump overflow (and
    /// recovery's index); it is damage now, and the store refuses to write one.
    @Test func slotAboveTheLimitIsDamage() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let last = fixture.segments.count - 1
        let end = try #require(try fixture.records(last).last.map { $0.offset + Format.recordHeaderSize + $0.stored })
        let sequence = try #require(Format.segmentSequence(fileName: String(fixture.segments[last].split(separator: "/").last!)))
        let frame = try ResyncTests.frame(slot: .max, size: 32, sequence: sequence)
        let target = copy + "/" + fixture.segments[last].split(separator: "/").last!
        var bytes = TestSupport.read(target)
        bytes.replaceSubrange(end..<(end + frame.count), with: frame)
        TestSupport.write(target, bytes)

        let report = try LogVerifier(directory: copy).verify()
        let damage = try #require(report.damage.first)
        #expect(damage.kind == .payload && damage.offset == Int64(end))
        #expect(damage.reason.contains("above 2^62"))
        #expect(throws: Never.self) { try LogInspector(directory: copy).inspect() }
        #expect(!OfflineFixture.strictOpenSucceeds(copy))

        let fresh = TestSupport.temporaryDirectory("limit")
        defer { TestSupport.remove(fresh) }
        let store = try TestSupport.open(fresh, fileSystem: TestSupport.fastFileSystem)
        await #expect(throws: SegmentLogError.self) { try await store.append([.accepted([TestSupport.entry(Format.maxSlot + 1)])]) }
        await #expect(throws: SegmentLogError.self) { try await store.append([.chosen(through: .max)]) }
        try store.close()
    }

    /// No store writes a segment above 2 GiB; one was read whole into memory and aborted the tools.
    @Test func segmentAboveTwoGiBIsRefused() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let target = copy + "/" + fixture.segments.last!.split(separator: "/").last!
        #expect(truncate(target, 3 << 30) == 0)  // sparse
        let error = try #require(throws: OfflineToolError.self) { try LogVerifier(directory: copy).verify() }
        #expect(error.code == .io(errno: EFBIG, path: target))
        let open = try #require(throws: SegmentLogError.self) { try TestSupport.open(copy, OfflineFixture.options) }
        #expect(open.code == .io(errno: EFBIG, path: target))
    }

    /// A FIFO where a segment belongs blocked `open` forever. A writer opening it after 10 s
    /// keeps a regression from hanging the suite: the check then fails instead.
    @Test func fifoInPlaceOfASegmentIsRefused() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let target = copy + "/" + fixture.segments.last!.split(separator: "/").last!
        TestSupport.remove(target)
        #expect(mkfifo(target, 0o644) == 0)
        let unblock = Thread {
            Thread.sleep(forTimeInterval: 10)
            let fd = Glibc.open(target, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { Glibc.close(fd) }
        }
        unblock.start()
        let error = try #require(throws: OfflineToolError.self) { try LogVerifier(directory: copy).verify() }
        #expect(error.code == .io(errno: EINVAL, path: target))
    }

    /// Sequences from 2^32 on are not segment names (the CRC mask is distinct only below): one
    /// such file passed verify while dump read another file name.
    @Test func sequenceLimit() {
        #expect(Format.segmentSequence(fileName: "00000000004294967295.seg") == 4_294_967_295)
        #expect(Format.segmentSequence(fileName: "00000000004294967296.seg") == nil)
        #expect(Format.segmentSequence(fileName: "18446744073709551615.seg") == nil)
    }
}

/// Resynchronising after damage: the first offset after the damage where a record verifies.
@Suite("Resync after damage")
struct ResyncTests {
    /// A frame as segment `sequence` holds it (CRC masked): one raw entry of `size` bytes for
    /// `slot`, written in after encoding, since the encoder refuses slots above the limit.
    static func frame(slot: UInt64, size: Int, sequence: UInt64 = 1) throws -> [UInt8] {
        var frame = try RecordCodec.encode([.accepted([TestSupport.entry(1, size: size)])], compressionThreshold: .max, maxRecordBytes: 1 << 24).bytes
        frame.withUnsafeMutableBytes { out in
            out.putLE(slot, at: Format.recordHeaderSize + 4)  // after the entry count
            let crc = Format.crc(0, UnsafeRawBufferPointer(rebasing: out[4...])) ^ Format.segmentMask(sequence)
            out.putLE(crc, at: 0)
        }
        return frame
    }

    /// Something that passes every header check but the CRC, claiming `length` bytes.
    static func fakeHeader(_ bytes: inout [UInt8], at offset: Int, length: Int) {
        bytes.withUnsafeMutableBytes { out in
            out.putLE(UInt32(0x1234_5678), at: offset)
            out.putLE(UInt32(length), at: offset + 4)
            out.putLE(UInt32(length), at: offset + 8)
            out[offset + 12] = Format.RecordType.accepted.rawValue
            out[offset + 13] = 0
            out.putLE(UInt16(0), at: offset + 14)
        }
    }

    /// What resync computed before: every candidate's CRC over its claimed length.
    static func reference(_ parser: SegmentParser, after offset: Int) -> Int? {
        var o = offset + 1
        while o <= parser.bytes.count - Format.recordHeaderSize {
            if case .success(let frame) = parser.header(at: o), parser.computeCRC(frame) == frame.crcStored { return o }
            o += 1
        }
        return nil
    }

    @Test func findsWhatTheDirectSearchFinds() throws {
        var rng = SplitMix64(seed: 10)
        var found = 0
        for _ in 0..<60 {
            var bytes = (0..<4096).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            for _ in 0..<Int(rng.next() % 200) {
                let at = Int(rng.next() % 4000)
                Self.fakeHeader(&bytes, at: at, length: Int(rng.next() % UInt64(4096 - at - 16)))
            }
            for _ in 0..<Int(rng.next() % 3) {
                let real = try Self.frame(slot: 1 + rng.next() % 100, size: Int(rng.next() % 200))
                let at = Int(rng.next() % UInt64(4096 - real.count))
                bytes.replaceSubrange(at..<(at + real.count), with: real)
            }
            bytes.withUnsafeBytes { raw in
                let parser = SegmentParser(bytes: raw, sequence: 1)
                for after in [0, 100, 1000, 3000] {
                    let expected = Self.reference(parser, after: after)
                    #expect(parser.nextValidFrame(after: after) == expected)
                    if expected != nil { found += 1 }
                }
            }
        }
        #expect(found > 20, "the buffers must hold real frames for the comparison to mean something")
    }

    /// A 4 MiB value made of header-looking bytes, each claiming the rest of it: the direct search
    /// CRC'd ~n²/32 bytes (hours for a 64 MiB segment); this returns the record after it at once.
    @Test func headerLookingValueDoesNotMakeItQuadratic() throws {
        let value = 4 << 20
        var bytes = [UInt8](repeating: 0, count: value)
        for at in stride(from: 0, to: value - 16, by: 16) { Self.fakeHeader(&bytes, at: at, length: value - at - 16) }
        let real = try Self.frame(slot: 7, size: 10)
        bytes += real
        bytes.withUnsafeBytes { raw in
            #expect(SegmentParser(bytes: raw, sequence: 1).nextValidFrame(after: 0) == value)
        }
    }
}
