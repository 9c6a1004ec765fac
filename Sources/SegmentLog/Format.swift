// The on-disk byte layout of a SegmentLog directory, as constants.
// The grammar, the trade-offs and a worked example are in FORMAT.md beside this file; change both
// together, bump `version`, and regenerate the golden files in Tests/SegmentLogTests/Golden.

import CZlib

enum Format {
    /// Format version written in every segment header. Version 2 added segment-end records and
    /// recycled files; a version 1 segment has neither and reads the same way, so both are read.
    static let version: UInt16 = 2
    static let oldestReadableVersion: UInt16 = 1
    /// Format version of snapshot files with data (unchanged since version 1).
    static let snapshotVersion: UInt16 = 1
    /// Format version of a snapshot file with flags (FORMAT.md, "Snapshot file"): written only
    /// for a marker of state an application holds, so a build that knows only version 1 refuses
    /// it instead of restoring an empty state.
    static let snapshotFlagsVersion: UInt16 = 2
    /// Snapshot flag: no data; the application's own durable storage holds the state.
    static let snapshotFlagExternalState: UInt32 = 1

    // MARK: Segment files: `<20-digit decimal sequence>.seg`

    /// "PXLOGSEG": the first eight bytes of every segment file.
    static let segmentMagic: UInt64 = 0x4745_5347_4F4C_5850  // little-endian bytes "PXLOGSEG"
    static let segmentHeaderSize = 64
    /// No segment is larger (`Options.segmentSize`'s limit): a bigger file is not one the store
    /// wrote, and reading it whole could not fit in memory.
    static let maxSegmentSize = 1 << 31
    /// Segment sequences stay below this: the per-segment CRC mask is distinct only below it.
    static let maxSequence: UInt64 = 1 << 32
    /// Slots (and ballot rounds) above this are damage: no log reaches them, and slot arithmetic
    /// (`last - first + 1`, `base + count`) must not overflow.
    static let maxSlot: UInt64 = 1 << 62
    static let segmentSuffix = ".seg"

    // Segment header flag bits: which optional acceptor-state fields are present.
    static let flagPromised: UInt32 = 1 << 0
    static let flagChosen: UInt32 = 1 << 1
    static let flagSnapshot: UInt32 = 1 << 2
    /// The file held an earlier segment: stale records of that use may follow this one's records.
    static let flagRecycled: UInt32 = 1 << 3
    static let knownSegmentFlags: UInt32 = 0b1111

    // MARK: Records

    /// crc32 (4) + stored length (4) + raw length (4) + type (1) + codec (1) + reserved (2).
    static let recordHeaderSize = 16
    /// No record is larger than this, stored or raw: lengths are 32-bit and a corrupt length must
    /// never make a reader allocate gigabytes.
    static let maxRecordBytes = 1 << 30
    /// slot (8) + ballot round (8) + ballot node (4) + flags (1) + value length (4).
    static let entryHeaderSize = 25
    static let entryFlagNoop: UInt8 = 1 << 0
    /// The value starts with the proposal's identity (client u64, sequence u64), counted in `length`.
    static let entryFlagProposal: UInt8 = 1 << 1
    static let entryProposalSize = 16

    enum RecordType: UInt8 {
        case promise = 1  // payload: round u64, node u32
        case accepted = 2  // payload: count u32, then `count` entries
        case chosen = 3  // payload: through u64
        case snapshot = 4  // payload: slot u64
        case truncateSuffix = 5  // payload: first removed slot u64
        case segmentEnd = 6  // no payload: the segment's records end here (written before a roll)
    }

    enum Codec: UInt8 {
        case raw = 0
        case lz4 = 1
    }

    // MARK: Snapshot files: `snapshot-<20-digit decimal slot>.snap`

    /// "PXLOGSNP".
    static let snapshotMagic: UInt64 = 0x504E_5347_4F4C_5850
    static let snapshotHeaderSize = 40
    static let snapshotPrefix = "snapshot-"
    static let snapshotSuffix = ".snap"

    // MARK: Snapshot tables: `snapshot-<20-digit decimal slot>.table`

    /// "PXLOGTBL".
    static let tableMagic: UInt64 = 0x4C42_5447_4F4C_5850
    static let tableVersion: UInt16 = 1
    static let tableHeaderSize = 32
    static let tableSuffix = ".table"

    // MARK: Identity file: `IDENTITY`

    /// "PXLOGIDN".
    static let identityMagic: UInt64 = 0x4E44_4947_4F4C_5850
    static let identityVersion: UInt16 = 1
    static let identitySize = 64
    static let identityFileName = "IDENTITY"
    /// The acceptor state was cut; the directory must rejoin as a learner before it votes.
    static let identityFlagNeedsRejoin: UInt32 = 1 << 0

    // MARK: Other files

    static let lockFileName = "LOCK"
    /// Files being written before an atomic rename; leftovers are deleted on open.
    static let temporarySuffix = ".tmp"
    /// Bytes cut from a torn tail are kept in `<segment>.torn-<offset>` for post-mortems.
    static let tornSuffix = ".torn-"
    /// A segment freed by compaction, kept for reuse: `<segment>.free` (see `Options.recycleSegments`).
    static let freeSuffix = ".free"

    static func segmentFileName(_ sequence: UInt64) -> String {
        zeroPadded(sequence) + segmentSuffix
    }

    static func snapshotFileName(_ slot: UInt64) -> String {
        snapshotPrefix + zeroPadded(slot) + snapshotSuffix
    }

    /// The sequence number of a segment file name, or nil if the name is not one.
    static func segmentSequence(fileName: String) -> UInt64? {
        guard fileName.hasSuffix(segmentSuffix) else { return nil }
        let digits = fileName.dropLast(segmentSuffix.count)
        guard digits.count == 20, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              let sequence = UInt64(digits), sequence < maxSequence else { return nil }
        return sequence
    }

    static func tableFileName(_ slot: UInt64) -> String {
        snapshotPrefix + zeroPadded(slot) + tableSuffix
    }

    static func tableSlot(fileName: String) -> UInt64? {
        slot(fileName, suffix: tableSuffix)
    }

    static func snapshotSlot(fileName: String) -> UInt64? {
        slot(fileName, suffix: snapshotSuffix)
    }

    private static func slot(_ fileName: String, suffix: String) -> UInt64? {
        guard fileName.hasPrefix(snapshotPrefix), fileName.hasSuffix(suffix) else { return nil }
        let digits = fileName.dropFirst(snapshotPrefix.count).dropLast(suffix.count)
        guard digits.count == 20, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return UInt64(digits)
    }

    private static func zeroPadded(_ value: UInt64) -> String {
        let s = String(value)
        return String(repeating: "0", count: max(0, 20 - s.count)) + s
    }

    /// XORed into every record CRC of segment `sequence`, so a record copied into another segment
    /// (a recycled or misplaced file) fails verification. crc32 of the sequence as 8 little-endian
    /// bytes: distinct for every sequence below 2^32 (CRC-32 detects every burst of ≤ 32 bits).
    static func segmentMask(_ sequence: UInt64) -> UInt32 {
        withUnsafeBytes(of: sequence.littleEndian) { crc(0, $0) }
    }

    /// A fixed-size header (or whole small file): zeros, then `magic`, `version` and `size` at
    /// offsets 0, 8 and 10, the fields `fill` stores, and crc32 of all but the last four bytes
    /// in those four bytes. Snapshot headers and identity files share this shape.
    static func encodeFixed(size: Int, magic: UInt64, version: UInt16, _ fill: (UnsafeMutableRawBufferPointer) -> Void) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            let out = UnsafeMutableRawBufferPointer(buffer)
            out.initializeMemory(as: UInt8.self, repeating: 0)
            out.putLE(magic, at: 0)
            out.putLE(version, at: 8)
            out.putLE(UInt16(size), at: 10)
            fill(out)
            out.putLE(crc(0, UnsafeRawBufferPointer(rebasing: out[0..<size - 4])), at: size - 4)
            count = size
        }
    }

    /// zlib's crc32, continuing from `seed`.
    ///
    /// zlib takes a 32-bit length: longer buffers (a snapshot chunk may be any size) go in steps
    /// of ``crcStep`` instead of trapping on the conversion.
    @inline(__always)
    static func crc(_ seed: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return seed }
        var crc = UInt(seed)
        var offset = 0
        while offset < bytes.count {
            let n = Swift.min(bytes.count - offset, crcStep)
            crc = crc32(crc, (base + offset).assumingMemoryBound(to: UInt8.self), UInt32(n))
            offset += n
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    /// Bytes handed to zlib's `crc32` per call: below its 32-bit `uInt` length.
    static let crcStep = 1 << 30
}

// Little-endian access to raw bytes, unaligned (the format has no alignment).
extension UnsafeRawBufferPointer {
    @inline(__always)
    func le<T: FixedWidthInteger>(_ offset: Int, as type: T.Type = T.self) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func putLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}
