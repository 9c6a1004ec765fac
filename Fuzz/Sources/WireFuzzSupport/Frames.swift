import FuzzSupport
import NIOCore
import PaxosTransport

/// zlib's crc32 (IEEE), bitwise: the frame checksum, without importing zlib here.
func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}

/// Rewrites the CRC of every frame in a byte stream (big-endian length, then a CRC over the
/// length and the body; see WIRE.md) so that mutations reach the body decoders.
func fixFrameCRCs(_ stream: inout [UInt8]) {
    var p = 0
    while stream.count - p >= 9 {
        let length = stream[p..<(p + 4)].reduce(0) { $0 << 8 | Int($1) }
        guard length >= 1, length <= stream.count - p - 8 else { return }
        let crc = crc32(Array(stream[p..<(p + 4)]) + stream[(p + 8)..<(p + 8 + length)])
        for i in 0..<4 { stream[p + 4 + i] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * i)) }
        p += 8 + length
    }
}

/// `frame` encoded, then decoded again as the one frame the bytes hold.
public func reframe(_ frame: OutboundFrame) -> InboundFrame {
    var out = ByteBuffer()
    FrameEncoder.encode(frame, into: &out)
    do {
        guard let back = try FrameDecoder.decodeFrame(from: &out, maxFrameSize: .max) else { fatalError("encoded frame is incomplete") }
        fuzzCheck(out.readableBytes == 0, "encoder wrote bytes after the frame")
        return back
    } catch {
        fatalError("encoded frame does not decode: \(error)")
    }
}

/// Runs libFuzzer on byte streams as a peer or client sends them: frames back to back.
///
/// Input: byte 0 is control; bit 0 rewrites each frame's CRC to match. Every frame
/// `FrameDecoder.decodeFrame` returns goes to `check`; a `WireError` ends the stream, as it
/// closes the connection.
public func runStreamFuzzer(_ check: @escaping (InboundFrame) -> Void) -> Never {
    runFuzzer { input in
        guard let control = input.first else { return }
        var stream = Array(input[1...])
        if control & 1 != 0 { fixFrameCRCs(&stream) }
        var buffer = ByteBuffer(bytes: stream)
        while buffer.readableBytes > 0 {
            let before = buffer
            let frame: InboundFrame?
            do {
                frame = try FrameDecoder.decodeFrame(from: &buffer, maxFrameSize: 1 << 20)
            } catch {
                return
            }
            guard let frame else {
                fuzzCheck(buffer == before, "an incomplete frame moved the reader")
                return
            }
            check(frame)
        }
    }
}
