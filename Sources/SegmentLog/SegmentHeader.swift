import CZlib
import HeapModule

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// 64 KiB of zeros to compare preallocated tails against; never written.
nonisolated(unsafe) private let zeroPage: UnsafeRawBufferPointer = {
    let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 4096)
    page.initializeMemory(as: UInt8.self, repeating: 0)
    return UnsafeRawBufferPointer(page)
}()

/// The fixed 64-byte header at the start of every segment file (see FORMAT.md).
///
/// It carries the acceptor state as of the segment's creation, so every segment before it can be
/// deleted without losing the promise, the chosen watermark or the snapshot slot.
struct SegmentHeader: Hashable, Sendable {
    var sequence: UInt64
    var promised: LogBallot?
    var chosenThrough: UInt64?
    var snapshotSlot: UInt64?
    /// The file was a segment before (compaction freed it): bytes after this segment's last record
    /// may be stale records of that use, which fail this sequence's CRC mask.
    var recycled = false
    /// The format version the segment was written in (encoding always writes the current one).
    /// From version 2 on, every segment but the last ends with a segment-end record.
    var formatVersion = Format.version

    func encoded() -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Format.segmentHeaderSize) { buffer, count in
            let out = UnsafeMutableRawBufferPointer(buffer)
            out.initializeMemory(as: UInt8.self, repeating: 0)
            var flags: UInt32 = 0
            if promised != nil { flags |= Format.flagPromised }
            if chosenThrough != nil { flags |= Format.flagChosen }
            if snapshotSlot != nil { flags |= Format.flagSnapshot }
            if recycled { flags |= Format.flagRecycled }
            out.putLE(Format.segmentMagic, at: 0)
            out.putLE(Format.version, at: 8)
            out.putLE(UInt16(Format.segmentHeaderSize), at: 10)
            out.putLE(flags, at: 12)
            out.putLE(sequence, at: 16)
            out.putLE(promised?.round ?? 0, at: 24)
            out.putLE(promised?.node ?? 0, at: 32)
            out.putLE(chosenThrough ?? 0, at: 40)
            out.putLE(snapshotSlot ?? 0, at: 48)
            out.putLE(Format.crc(0, UnsafeRawBufferPointer(rebasing: out[0..<60])), at: 60)
            count = Format.segmentHeaderSize
        }
    }

    /// Parses and verifies a header.
    /// - Returns: the header, or what is wrong with it.
    static func decode(_ raw: UnsafeRawBufferPointer) -> Result<SegmentHeader, DecodeFailure> {
        guard raw.count >= Format.segmentHeaderSize else {
            return .failure(DecodeFailure(reason: "file is \(raw.count) bytes, shorter than the \(Format.segmentHeaderSize)-byte segment header"))
        }
        guard raw.le(0, as: UInt64.self) == Format.segmentMagic else {
            return .failure(DecodeFailure(reason: "bad segment magic"))
        }
        let expected = raw.le(60, as: UInt32.self)
        let actual = Format.crc(0, UnsafeRawBufferPointer(rebasing: raw[0..<60]))
        guard expected == actual else {
            return .failure(DecodeFailure(reason: "segment header CRC mismatch: stored \(hex(expected)), computed \(hex(actual))"))
        }
        let version = raw.le(8, as: UInt16.self)
        guard (Format.oldestReadableVersion...Format.version).contains(version) else {
            return .failure(DecodeFailure(reason: "unsupported format version \(version) (this build reads \(Format.oldestReadableVersion) to \(Format.version))"))
        }
        guard raw.le(10, as: UInt16.self) == UInt16(Format.segmentHeaderSize) else {
            return .failure(DecodeFailure(reason: "unexpected segment header size \(raw.le(10, as: UInt16.self))"))
        }
        let flags = raw.le(12, as: UInt32.self)
        guard flags & ~Format.knownSegmentFlags == 0 else {
            return .failure(DecodeFailure(reason: "unknown segment header flags \(hex(flags))"))
        }
        for (offset, field) in [(24, "promised round"), (40, "chosen watermark"), (48, "snapshot slot")]
        where raw.le(offset, as: UInt64.self) > Format.maxSlot + 1 {
            return .failure(DecodeFailure(reason: "segment header \(field) \(raw.le(offset, as: UInt64.self)) is above 2^62, which no log reaches"))
        }
        return .success(SegmentHeader(
            sequence: raw.le(16),
            promised: flags & Format.flagPromised != 0 ? LogBallot(round: raw.le(24), node: raw.le(32)) : nil,
            chosenThrough: flags & Format.flagChosen != 0 ? raw.le(40) : nil,
            snapshotSlot: flags & Format.flagSnapshot != 0 ? raw.le(48) : nil,
            recycled: flags & Format.flagRecycled != 0,
            formatVersion: version))
    }
}

func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}

/// One frame as found in a segment buffer; `stored` points into that buffer.
struct FrameView {
    var offset: Int
    var type: Format.RecordType
    var codec: Format.Codec
    var storedLength: Int
    var rawLength: Int
    var crcStored: UInt32
    var crcComputed: UInt32
    var stored: UnsafeRawBufferPointer

    var length: Int { Format.recordHeaderSize + storedLength }
}

/// What is at one offset of a segment.
enum ParseStep {
    case frame(FrameView)
    /// No more records: the file ends here, or only zero bytes follow (preallocated space).
    case end
    /// A segment-end record at `offset`: the writer rolled to the next segment after it. What
    /// follows is zero-fill or, in a recycled file, stale bytes of its earlier use.
    case sealed(offset: Int)
    /// Not a valid record. `frame` is set when only the CRC failed.
    case damage(offset: Int, reason: String, frame: FrameView?)
}

/// Reads frames out of a whole segment held in memory. Never writes; shared by recovery and
/// `SegmentScanner`.
struct SegmentParser {
    let bytes: UnsafeRawBufferPointer
    let mask: UInt32
    /// From the segment's header: stale bytes, not zeros, may follow a segment-end record.
    var recycled = false

    init(bytes: UnsafeRawBufferPointer, sequence: UInt64) {
        self.bytes = bytes
        self.mask = Format.segmentMask(sequence)
    }

    /// The frame at `offset`, checked (header and CRC), or the end of the records, or damage.
    func step(at offset: Int) -> ParseStep {
        let remaining = bytes.count - offset
        if remaining == 0 { return .end }
        if remaining < Format.recordHeaderSize {
            return isZero(from: offset) ? .end
                : .damage(offset: offset, reason: "\(remaining) bytes at end of file, too short for a record header", frame: nil)
        }
        if bytes.le(offset, as: UInt64.self) == 0 && bytes.le(offset + 8, as: UInt64.self) == 0 {
            if isZero(from: offset) { return .end }
            return .damage(offset: offset, reason: "zero-filled record header followed by non-zero bytes", frame: nil)
        }
        switch header(at: offset) {
        case .failure(let failure):
            return .damage(offset: offset, reason: failure.reason, frame: nil)
        case .success(var frame):
            frame.crcComputed = computeCRC(frame)
            if frame.crcComputed != frame.crcStored {
                return .damage(offset: offset,
                               reason: "record CRC mismatch: stored \(hex(frame.crcStored)), computed \(hex(frame.crcComputed))",
                               frame: frame)
            }
            if frame.type == .segmentEnd {
                // A fresh file is zero after its seal: anything else was written by something else.
                let after = offset + frame.length
                if !recycled && !isZero(from: after) {
                    return .damage(offset: after, reason: "non-zero bytes after the segment-end record", frame: nil)
                }
                return .sealed(offset: offset)
            }
            return .frame(frame)
        }
    }

    /// Decodes a record header and checks it is self-consistent and fits in the file (no CRC).
    func header(at offset: Int) -> Result<FrameView, DecodeFailure> {
        let typeByte = bytes[offset + 12]
        guard let type = Format.RecordType(rawValue: typeByte) else {
            return .failure(DecodeFailure(reason: "unknown record type \(typeByte)"))
        }
        let codecByte = bytes[offset + 13]
        guard let codec = Format.Codec(rawValue: codecByte) else {
            return .failure(DecodeFailure(reason: "unknown codec \(codecByte)"))
        }
        guard bytes.le(offset + 14, as: UInt16.self) == 0 else {
            return .failure(DecodeFailure(reason: "non-zero reserved record header bytes"))
        }
        let stored = Int(bytes.le(offset + 4, as: UInt32.self))
        let raw = Int(bytes.le(offset + 8, as: UInt32.self))
        guard stored <= bytes.count - offset - Format.recordHeaderSize else {
            return .failure(DecodeFailure(reason: "record of \(stored) bytes runs past the end of the file (\(bytes.count - offset - Format.recordHeaderSize) bytes left)"))
        }
        guard stored <= Format.maxRecordBytes, raw <= Format.maxRecordBytes else {
            return .failure(DecodeFailure(reason: "record length above the \(Format.maxRecordBytes)-byte limit"))
        }
        if codec == .raw && raw != stored {
            return .failure(DecodeFailure(reason: "raw record with raw length \(raw) != stored length \(stored)"))
        }
        if type == .segmentEnd && (raw != 0 || codec != .raw) {
            return .failure(DecodeFailure(reason: "segment-end record with a \(raw)-byte payload"))
        }
        let payloadStart = offset + Format.recordHeaderSize
        return .success(FrameView(
            offset: offset, type: type, codec: codec, storedLength: stored, rawLength: raw,
            crcStored: bytes.le(offset, as: UInt32.self), crcComputed: 0,
            stored: UnsafeRawBufferPointer(rebasing: bytes[payloadStart..<(payloadStart + stored)])))
    }

    @inline(__always)
    func computeCRC(_ frame: FrameView) -> UInt32 {
        let covered = UnsafeRawBufferPointer(rebasing: bytes[(frame.offset + 4)..<(frame.offset + frame.length)])
        return Format.crc(0, covered) ^ mask
    }

    /// The offset of the first frame after `offset` that has a valid header and CRC, if any.
    /// Damage followed by a valid record cannot be a torn append, so it is corruption.
    ///
    /// Linear in the bytes after `offset` however many of them look like record headers (a
    /// record's value can be made of such bytes): one running CRC from `offset` on, and each
    /// candidate's CRC derived from the running CRC at the two ends of what it covers, instead of
    /// computed over its claimed length, which was quadratic (a 2 MiB value: over 30 s).
    func nextValidFrame(after offset: Int) -> Int? {
        let start = offset + 1
        let last = bytes.count - Format.recordHeaderSize
        guard start <= last, let base = bytes.baseAddress else { return nil }
        // crc32 of bytes[start ..< position].
        var running: UInt = 0
        var position = start
        func advance(to target: Int) {
            running = crc32(running, (base + position).assumingMemoryBound(to: Bytef.self), uInt(target - position))
            position = target
        }
        // Candidates whose covered range [o + 4, end) is not yet read through, by end.
        var pending = Heap<Candidate>()
        var best: Int?
        func resolve(through limit: Int) {
            while let next = pending.min, next.end <= limit {
                pending.removeMin()
                if let best, next.offset > best { continue }
                advance(to: next.end)
                let covered = running ^ crc32_combine(next.crcAtStart, 0, off_t(next.end - next.offset - 4))
                if UInt32(truncatingIfNeeded: covered) == next.expected { best = next.offset }
            }
        }
        var o = start
        while o <= last, best.map({ o < $0 }) ?? true {
            // Cheap filters first: most candidate offsets fail on the type or reserved bytes.
            let type = bytes[o + 12]
            if type != 0, type <= 6, bytes[o + 13] <= 1, bytes[o + 14] == 0, bytes[o + 15] == 0,
               case .success(let frame) = header(at: o) {
                resolve(through: o + 4)
                advance(to: o + 4)
                pending.insert(Candidate(end: o + frame.length, offset: o, crcAtStart: running, expected: frame.crcStored ^ mask))
            }
            o += 1
        }
        resolve(through: .max)
        return best
    }

    private struct Candidate: Comparable {
        var end: Int
        var offset: Int
        var crcAtStart: UInt
        var expected: UInt32
        static func < (a: Candidate, b: Candidate) -> Bool { (a.end, a.offset) < (b.end, b.offset) }
    }

    /// Whether every byte from `offset` to the end of the buffer is zero.
    func isZero(from offset: Int) -> Bool {
        lastNonZero(from: offset) == nil
    }

    /// The offset of the last non-zero byte at or after `offset`. Preallocated segments end in
    /// up to a segment of zeros, so this compares page-sized chunks with `memcmp`.
    func lastNonZero(from offset: Int) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        var end = bytes.count
        let page = zeroPage.count
        while end - offset >= page {
            if memcmp(base + (end - page), zeroPage.baseAddress!, page) != 0 { break }
            end -= page
        }
        while end > offset {
            if bytes[end - 1] != 0 { return end - 1 }
            end -= 1
        }
        return nil
    }
}
