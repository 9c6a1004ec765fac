import Testing
@testable import SegmentLog

/// LZ4 is skipped for a while after a payload does not compress, and only then.
@Suite("Compression gate")
struct CompressionGateTests {
    /// The codec byte of the single frame `records` encode to.
    func codec(_ entries: [LogEntry], _ gate: CompressionGate) throws -> UInt8 {
        let batch = try RecordCodec.encode([.accepted(entries)], compressionThreshold: 1024, maxRecordBytes: 1 << 20, gate: gate)
        return batch.bytes[13]
    }

    @Test("after an incompressible frame the next 16 are stored raw untried; compressible ones are unaffected")
    func skipsAfterMiss() throws {
        let gate = CompressionGate()
        let text = (0..<4).map { TestSupport.entry(UInt64($0), size: 2000, compressible: true) }
        let random = (0..<4).map { TestSupport.entry(UInt64($0), size: 2000, compressible: false) }
        for _ in 0..<50 { #expect(try codec(text, gate) == Format.Codec.lz4.rawValue) }
        _ = try codec(random, gate)  // saves less than 1/8 (stored either way, whichever is smaller)
        for _ in 0..<CompressionGate.skipAfterMiss {
            #expect(try codec(text, gate) == Format.Codec.raw.rawValue, "skipped after the miss")
        }
        #expect(try codec(text, gate) == Format.Codec.lz4.rawValue, "tries again after the skip")
        // Without a gate (or below the threshold) nothing changes.
        #expect(try RecordCodec.encode([.accepted(text)], compressionThreshold: 1024, maxRecordBytes: 1 << 20).bytes[13]
                == Format.Codec.lz4.rawValue)
    }
}
