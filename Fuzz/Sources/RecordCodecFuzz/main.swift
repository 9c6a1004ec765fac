// The record codec: `RecordCodec.decode` on any payload, and for every payload it accepts,
// decode(parse(encode(record))) == record, through the same `SegmentParser` recovery uses,
// both raw and LZ4-compressed.
//
// Input: byte 0 picks the record type (low 3 bits) and compression (bit 7); the rest is the payload.
import FuzzSupport
@testable import SegmentLog

let types: [Format.RecordType] = [.promise, .accepted, .chosen, .snapshot, .truncateSuffix, .segmentEnd]

/// Every record in `frames` (an encoded batch), read back as recovery reads a segment.
func parse(_ batch: EncodedBatch) -> [LogRecord] {
    var bytes = batch.bytes
    let sequence: UInt64 = 1
    // The writer masks each frame's CRC with its segment's mask as it copies (see `EncodedBatch`).
    var p = 0
    bytes.withUnsafeMutableBytes { out in
        while p < out.count {
            let crc: UInt32 = UnsafeRawBufferPointer(out).le(p)
            out.putLE(crc ^ Format.segmentMask(sequence), at: p)
            p += Format.recordHeaderSize + Int(UnsafeRawBufferPointer(out).le(p + 4, as: UInt32.self))
        }
    }
    fuzzCheck(p == bytes.count, "frames overrun the batch")
    var records: [LogRecord] = []
    bytes.withUnsafeBytes { raw in
        let parser = SegmentParser(bytes: raw, sequence: sequence)
        var offset = 0
        while true {
            switch parser.step(at: offset) {
            case .end:
                return
            case .frame(let frame):
                let payload: [UInt8]
                switch frame.codec {
                case .raw: payload = Array(frame.stored)
                case .lz4:
                    guard let inflated = RecordCodec.decompress(frame.stored, rawLength: frame.rawLength) else {
                        fatalError("an encoded LZ4 payload does not decompress")
                    }
                    payload = inflated
                }
                switch payload.withUnsafeBytes({ RecordCodec.decode(type: frame.type, raw: $0) }) {
                case .success(let record): records.append(record)
                case .failure(let failure): fatalError("an encoded frame does not decode: \(failure.reason)")
                }
                offset += frame.length
            case .sealed, .damage:
                fatalError("an encoded batch parses as \(parser.step(at: offset))")
            }
        }
    }
    return records
}

/// Accepted batches may be split over frames: compare entries, not frames.
func flatten(_ records: [LogRecord]) -> [LogRecord] {
    var out: [LogRecord] = []
    var entries: [LogEntry] = []
    for record in records {
        if case .accepted(let e) = record { entries += e } else { out.append(record) }
    }
    return entries.isEmpty ? out : out + [.accepted(entries)]
}

runFuzzer { input in
    guard let control = input.first else { return }
    let type = types[Int(control & 0x07) % types.count]
    let payload = UnsafeRawBufferPointer(rebasing: input[1...])
    if type == .accepted {
        // `walkEntries` is what the scanner and verifier call; it must agree with `decode`.
        let walked = RecordCodec.walkEntries(payload) { _, _ in }
        if case .success = RecordCodec.decode(type: type, raw: payload) {
            fuzzCheck(walked == nil, "decode accepts what walkEntries refuses: \(walked!)")
        } else {
            fuzzCheck(walked != nil, "walkEntries accepts what decode refuses")
        }
    }
    guard case .success(let record) = RecordCodec.decode(type: type, raw: payload) else { return }
    let batch: EncodedBatch
    do {
        batch = try RecordCodec.encode([record], compressionThreshold: control & 0x80 != 0 ? 0 : .max,
                                       maxRecordBytes: Format.maxRecordBytes)
    } catch let error as SegmentLogError {
        // Decode takes one past the largest slot (a watermark) that encode refuses.
        fuzzCheck(error.code == .invalidArgument, "encode of a decoded record threw \(error)")
        return
    } catch {
        fatalError("encode threw \(error)")
    }
    let back = parse(batch)
    if case .accepted(let entries) = record, entries.isEmpty {
        fuzzCheck(flatten(back).allSatisfy { if case .accepted(let e) = $0 { e.isEmpty } else { false } }, "empty accepted batch came back as \(back)")
    } else {
        fuzzCheck(flatten(back) == [record], "round trip: \(record) came back as \(back)")
    }
}
