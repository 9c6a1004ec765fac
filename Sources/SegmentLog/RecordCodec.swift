import CLZ4

/// What an appender hands the writer thread: framed records ready to write, and what they do to
/// the slot index and acceptor state once durable.
///
/// Appenders encode (and compress, and checksum) on their own threads so the single writer only
/// copies bytes; the writer XORs each frame's CRC with its segment's mask as it copies, because
/// which segment a frame lands in is only known then (see `Format.segmentMask`).
struct EncodedBatch: Sendable {
    /// Concatenated frames; each CRC field holds the unmasked crc32.
    var bytes: [UInt8]
    /// Effects in record order; `frame` indexes the frames in `bytes`.
    var ops: [BatchOp]
    var rawPayloadBytes = 0
    var storedPayloadBytes = 0
}

enum BatchOp: Sendable {
    case entry(slot: UInt64, frame: UInt32, entryOffset: UInt32)
    case promise(LogBallot)
    case chosen(UInt64)
    case snapshot(UInt64)
    case truncateFrom(UInt64)
}

/// Encodes records into frames and decodes frame payloads. Pure functions over bytes.
enum RecordCodec {
    /// Frames `records`. Accepted batches larger than `maxRecordBytes` are split over several
    /// frames; payloads above `compressionThreshold` are LZ4-compressed when that shrinks them.
    /// - Throws: `.recordTooLarge` when one entry alone exceeds `maxRecordBytes`;
    ///   `.invalidArgument` for a slot, round or watermark above `Format.maxSlot`, which recovery
    ///   would refuse as damage.
    /// - Parameter gate: skips compressing while recent payloads did not compress (may be nil).
    static func encode(_ records: [LogRecord], compressionThreshold: Int, maxRecordBytes: Int,
                       gate: CompressionGate? = nil) throws -> EncodedBatch {
        func checkRange(_ value: UInt64) throws {
            if value > Format.maxSlot {
                throw SegmentLogError(.invalidArgument, "\(value) is above 2^62, the largest slot or round a log holds")
            }
        }
        // Pass 1: the exact size without compression (compression only ever shrinks a frame).
        var total = 0
        var opCount = 0
        for record in records {
            switch record {
            case .promise(let ballot):
                try checkRange(ballot.round)
                total += Format.recordHeaderSize + 12
                opCount += 1
            case .chosen(let value), .snapshot(let value), .suffixTruncated(let value):
                try checkRange(value)
                total += Format.recordHeaderSize + 8
                opCount += 1
            case .accepted(let entries):
                var chunk = 0
                for entry in entries {
                    try checkRange(Swift.max(entry.slot, entry.ballot.round))
                    let size = entry.encodedSize
                    if size + 4 > maxRecordBytes {
                        throw SegmentLogError(.recordTooLarge(size: size + 4, limit: maxRecordBytes),
                                              "entry for slot \(entry.slot)")
                    }
                    if chunk == 0 || chunk + size > maxRecordBytes {
                        total += chunk == 0 ? 0 : Format.recordHeaderSize + chunk
                        chunk = 4
                    }
                    chunk += size
                }
                if chunk > 0 { total += Format.recordHeaderSize + chunk }
                opCount += entries.count
            }
        }

        var ops: [BatchOp] = []
        ops.reserveCapacity(opCount)
        var rawBytes = 0
        var storedBytes = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: total) { buffer, count in
            var out = FrameWriter(out: UnsafeMutableRawBufferPointer(buffer), gate: gate)
            for record in records {
                switch record {
                case .promise(let ballot):
                    ops.append(.promise(ballot))
                    out.small(.promise, ballot.round, ballot.node)
                case .chosen(let through):
                    ops.append(.chosen(through))
                    out.small(.chosen, through, nil)
                case .snapshot(let slot):
                    ops.append(.snapshot(slot))
                    out.small(.snapshot, slot, nil)
                case .suffixTruncated(let from):
                    ops.append(.truncateFrom(from))
                    out.small(.truncateSuffix, from, nil)
                case .accepted(let entries):
                    var chunkStart = entries.startIndex
                    var chunk = 4
                    for i in entries.indices {
                        let size = entries[i].encodedSize
                        if i > chunkStart && chunk + size > maxRecordBytes {
                            out.accepted(entries[chunkStart..<i], rawSize: chunk, compress: chunk > compressionThreshold, ops: &ops)
                            chunkStart = i
                            chunk = 4
                        }
                        chunk += size
                    }
                    if chunkStart < entries.endIndex {
                        out.accepted(entries[chunkStart...], rawSize: chunk, compress: chunk > compressionThreshold, ops: &ops)
                    }
                }
            }
            count = out.pos
            rawBytes = out.rawBytes
            storedBytes = out.storedBytes
        }
        return EncodedBatch(bytes: bytes, ops: ops, rawPayloadBytes: rawBytes, storedPayloadBytes: storedBytes)
    }

    /// Writes frames one after another into a buffer sized by `encode`'s first pass. A struct with
    /// mutating methods rather than closures over locals: captured locals are boxed and every
    /// access to them is checked for exclusivity at run time, on the hot path of every append.
    private struct FrameWriter {
        let out: UnsafeMutableRawBufferPointer
        let gate: CompressionGate?
        var pos = 0
        var frame: UInt32 = 0
        var rawBytes = 0
        var storedBytes = 0

        init(out: UnsafeMutableRawBufferPointer, gate: CompressionGate?) {
            self.out = out
            self.gate = gate
        }

        mutating func finishFrame(start: Int, type: Format.RecordType, codec: Format.Codec, raw: Int, stored: Int) {
            out.putLE(UInt32(stored), at: start + 4)
            out.putLE(UInt32(raw), at: start + 8)
            out[start + 12] = type.rawValue
            out[start + 13] = codec.rawValue
            out.putLE(UInt16(0), at: start + 14)
            let crc = Format.crc(0, UnsafeRawBufferPointer(rebasing: out[(start + 4)..<(start + Format.recordHeaderSize + stored)]))
            out.putLE(crc, at: start)
            pos = start + Format.recordHeaderSize + stored
            frame += 1
            rawBytes += raw
            storedBytes += stored
        }

        mutating func small(_ type: Format.RecordType, _ a: UInt64, _ node: UInt32?) {
            let start = pos
            out.putLE(a, at: start + 16)
            var length = 8
            if let node {
                out.putLE(node, at: start + 24)
                length = 12
            }
            finishFrame(start: start, type: type, codec: .raw, raw: length, stored: length)
        }

        mutating func accepted(_ entries: ArraySlice<LogEntry>, rawSize: Int, compress wanted: Bool, ops: inout [BatchOp]) {
            let start = pos
            let payloadStart = start + Format.recordHeaderSize
            let compress = wanted && (gate?.shouldTry() ?? true)
            // Compressed frames are encoded into scratch memory first, then compressed into place.
            let scratch: UnsafeMutableRawBufferPointer = compress
                ? .allocate(byteCount: rawSize, alignment: 8)
                : UnsafeMutableRawBufferPointer(rebasing: out[payloadStart..<(payloadStart + rawSize)])
            defer { if compress { scratch.deallocate() } }
            scratch.putLE(UInt32(entries.count), at: 0)
            var p = 4
            for entry in entries {
                ops.append(.entry(slot: entry.slot, frame: frame, entryOffset: UInt32(p)))
                scratch.putLE(entry.slot, at: p)
                scratch.putLE(entry.ballot.round, at: p + 8)
                scratch.putLE(entry.ballot.node, at: p + 16)
                scratch[p + 20] = (entry.isNoop ? Format.entryFlagNoop : 0) | (entry.proposal == nil ? 0 : Format.entryFlagProposal)
                scratch.putLE(UInt32(entry.encodedSize - Format.entryHeaderSize), at: p + 21)
                p += Format.entryHeaderSize
                if let id = entry.proposal {
                    scratch.putLE(id.client, at: p)
                    scratch.putLE(id.sequence, at: p + 8)
                    p += Format.entryProposalSize
                }
                entry.payload.withUnsafeBytes { value in
                    if value.count > 0 {
                        UnsafeMutableRawBufferPointer(rebasing: scratch[p..<(p + value.count)]).copyMemory(from: value)
                    }
                }
                p += entry.payload.count
            }
            if compress {
                let packed = LZ4_compress_default(
                    scratch.baseAddress!.assumingMemoryBound(to: CChar.self),
                    (out.baseAddress! + payloadStart).assumingMemoryBound(to: CChar.self),
                    Int32(rawSize), Int32(rawSize - 1))
                gate?.record(raw: rawSize, packed: Int(packed))
                if packed > 0 {
                    finishFrame(start: start, type: .accepted, codec: .lz4, raw: rawSize, stored: Int(packed))
                    return
                }
                UnsafeMutableRawBufferPointer(rebasing: out[payloadStart..<(payloadStart + rawSize)])
                    .copyMemory(from: UnsafeRawBufferPointer(scratch))
            }
            finishFrame(start: start, type: .accepted, codec: .raw, raw: rawSize, stored: rawSize)
        }
    }

    /// Decompresses an LZ4 payload that must inflate to exactly `rawLength` bytes.
    static func decompress(_ stored: UnsafeRawBufferPointer, rawLength: Int) -> [UInt8]? {
        guard rawLength >= 0, rawLength <= Format.maxRecordBytes, stored.count > 0 else { return nil }
        var ok = false
        let raw = [UInt8](unsafeUninitializedCapacity: rawLength) { buffer, count in
            let n = LZ4_decompress_safe(
                stored.baseAddress!.assumingMemoryBound(to: CChar.self),
                UnsafeMutableRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self),
                Int32(stored.count), Int32(rawLength))
            ok = n == Int32(rawLength)
            count = ok ? rawLength : 0
        }
        return ok ? raw : nil
    }

    /// Calls `body(slot, offset)` for every entry of an accepted payload after checking its framing.
    /// - Returns: nil, or what is wrong with the payload.
    static func walkEntries(_ raw: UnsafeRawBufferPointer, _ body: (UInt64, Int) -> Void) -> String? {
        guard raw.count >= 4 else { return "accepted payload shorter than its count" }
        let count = Int(raw.le(0, as: UInt32.self))
        guard count <= (raw.count - 4) / Format.entryHeaderSize else {
            return "accepted count \(count) does not fit in \(raw.count) bytes"
        }
        var p = 4
        for _ in 0..<count {
            guard raw.count - p >= Format.entryHeaderSize else { return "entry header at payload offset \(p) truncated" }
            let length = Int(raw.le(p + 21, as: UInt32.self))
            let flags = raw[p + 20]
            guard flags & ~(Format.entryFlagNoop | Format.entryFlagProposal) == 0 else { return "unknown entry flags at payload offset \(p)" }
            guard length <= raw.count - p - Format.entryHeaderSize else {
                return "entry value of \(length) bytes at payload offset \(p) overruns the payload"
            }
            if flags & Format.entryFlagProposal != 0 {
                guard flags & Format.entryFlagNoop == 0 else { return "entry at payload offset \(p) is a no-op with a proposal identity" }
                guard length >= Format.entryProposalSize else {
                    return "entry at payload offset \(p) has a proposal identity but only \(length) bytes"
                }
            }
            let slot = raw.le(p, as: UInt64.self), round = raw.le(p + 8, as: UInt64.self)
            guard slot <= Format.maxSlot, round <= Format.maxSlot else {
                return "entry at payload offset \(p) has slot \(slot), round \(round): above 2^62, which no log reaches"
            }
            body(slot, p)
            p += Format.entryHeaderSize + length
        }
        return p == raw.count ? nil : "\(raw.count - p) trailing bytes after \(count) entries"
    }

    /// The entry at `offset` of an accepted payload already checked by `walkEntries`.
    static func entry(_ raw: UnsafeRawBufferPointer, at p: Int) -> LogEntry? {
        guard p >= 4, raw.count - p >= Format.entryHeaderSize else { return nil }
        let length = Int(raw.le(p + 21, as: UInt32.self))
        guard length <= raw.count - p - Format.entryHeaderSize else { return nil }
        var start = p + Format.entryHeaderSize
        let end = start + length
        var proposal: LogProposalID? = nil
        if raw[p + 20] & Format.entryFlagProposal != 0 {
            guard length >= Format.entryProposalSize else { return nil }
            proposal = LogProposalID(client: raw.le(start, as: UInt64.self), sequence: raw.le(start + 8, as: UInt64.self))
            start += Format.entryProposalSize
        }
        return LogEntry(
            slot: raw.le(p, as: UInt64.self),
            ballot: LogBallot(round: raw.le(p + 8, as: UInt64.self), node: raw.le(p + 16, as: UInt32.self)),
            isNoop: raw[p + 20] & Format.entryFlagNoop != 0,
            proposal: proposal,
            payload: Array(raw[start..<end]))
    }

    /// The segment-end record of segment `sequence`, CRC masked: what the writer puts after a
    /// segment's last record before it rolls to the next.
    static func segmentEndFrame(sequence: UInt64) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: Format.recordHeaderSize)
        frame[12] = Format.RecordType.segmentEnd.rawValue
        frame.withUnsafeMutableBytes { out in
            let crc = Format.crc(0, UnsafeRawBufferPointer(rebasing: out[4...])) ^ Format.segmentMask(sequence)
            out.putLE(crc, at: 0)
        }
        return frame
    }

    /// Decodes a whole raw payload into a record.
    /// - Returns: the record, or what is wrong with the payload.
    static func decode(type: Format.RecordType, raw: UnsafeRawBufferPointer) -> Result<LogRecord, DecodeFailure> {
        func need(_ n: Int) -> DecodeFailure? {
            if raw.count != n { return DecodeFailure(reason: "\(type) payload is \(raw.count) bytes, expected \(n)") }
            // The first field is a slot or a round either way.
            let value = raw.le(0, as: UInt64.self)
            return value <= Format.maxSlot + 1 ? nil : DecodeFailure(reason: "\(type) value \(value) is above 2^62, which no log reaches")
        }
        switch type {
        case .promise:
            if let f = need(12) { return .failure(f) }
            return .success(.promise(LogBallot(round: raw.le(0), node: raw.le(8))))
        case .chosen:
            if let f = need(8) { return .failure(f) }
            return .success(.chosen(through: raw.le(0)))
        case .snapshot:
            if let f = need(8) { return .failure(f) }
            return .success(.snapshot(slot: raw.le(0)))
        case .truncateSuffix:
            if let f = need(8) { return .failure(f) }
            return .success(.suffixTruncated(from: raw.le(0)))
        case .segmentEnd:
            // `SegmentParser` reports a segment-end record as `.sealed`, never as a frame.
            return .failure(DecodeFailure(reason: "a segment-end record holds no log record"))
        case .accepted:
            var offsets: [Int] = []
            if let reason = walkEntries(raw, { _, p in offsets.append(p) }) {
                return .failure(DecodeFailure(reason: reason))
            }
            return .success(.accepted(offsets.compactMap { entry(raw, at: $0) }))
        }
    }
}

struct DecodeFailure: Error {
    var reason: String
}
