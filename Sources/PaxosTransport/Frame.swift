import CZlib
import MultiPaxos
import NIOCore
import Synchronization

// The frame layer: see WIRE.md beside this file for the byte layout and the rationale.
//
//   frame := length:u32 crc:u32 type:u8 payload
//   length = 1 + |payload|, 1 ... maxFrameSize
//   crc    = crc32(length bytes ++ type ++ payload)

/// The kind of a frame: the first byte after the frame header.
///
/// Frame types are never reused. Adding one is local: a constant here, an encoder case in
/// ``OutboundFrame``, a decoder case in `SessionHandler`.
public struct FrameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    // Handshake. `hello` (its leading version field) and `refuse` are frozen across versions so
    // that a peer of another version can always be told why it is refused.
    /// Initiator's first frame: version, cluster, role, nonce.
    public static let hello = FrameType(rawValue: 0x01)
    /// Acceptor's answer: its id, nonce, and proof when a secret is configured.
    public static let welcome = FrameType(rawValue: 0x02)
    /// Initiator's shared-secret proof.
    public static let auth = FrameType(rawValue: 0x03)
    /// Acceptor accepted the proof.
    public static let ready = FrameType(rawValue: 0x04)
    /// Why the handshake failed; the connection closes after it.
    public static let refuse = FrameType(rawValue: 0x05)
    // Between replicas.
    /// A consensus `Envelope` (``MessageCodec``).
    public static let envelope = FrameType(rawValue: 0x10)
    // Clients.
    /// A ``ClientRequestFrame``.
    public static let request = FrameType(rawValue: 0x20)
    /// A ``ClientResponseFrame``.
    public static let response = FrameType(rawValue: 0x21)

    public var description: String {
        switch self {
        case .hello: return "hello"
        case .welcome: return "welcome"
        case .auth: return "auth"
        case .ready: return "ready"
        case .refuse: return "refuse"
        case .envelope: return "envelope"
        case .request: return "request"
        case .response: return "response"
        default: return "frame type 0x\(String(rawValue, radix: 16))"
        }
    }
}

/// A checked frame as it comes off the wire: its type and its payload, a slice of the receive
/// buffer (not a copy).
public struct InboundFrame: Sendable, Hashable {
    public var type: FrameType
    public var payload: ByteBuffer

    public init(type: FrameType, payload: ByteBuffer) {
        self.type = type
        self.payload = payload
    }
}

/// Frame-layer constants.
public enum FrameFormat {
    /// Bytes before the type byte: length (4) and CRC (4).
    public static let headerSize = 8
    /// Default cap on `length`. An Accept of a few thousand 256-byte values is well below it; the
    /// cap exists so that a forged length cannot make a receiver buffer gigabytes.
    public static let defaultMaxFrameSize = 16 << 20

}

/// Splits a byte stream into ``InboundFrame``s, checking length and CRC.
///
/// Throws ``WireError`` on a bad length or checksum; `ByteToMessageHandler` then fires the error
/// down the pipeline, where `SessionHandler` counts it and closes the connection. The length is
/// checked as soon as its 4 bytes arrive, before buffering the body.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = InboundFrame

    public let maxFrameSize: Int
    /// Shared by a server's connections: bytes of frames begun and not yet complete.
    let budget: PartialFrameBudget?
    /// This connection's share of `budget`.
    private var held = 0

    public init(maxFrameSize: Int = FrameFormat.defaultMaxFrameSize) {
        self.init(maxFrameSize: maxFrameSize, budget: nil)
    }

    init(maxFrameSize: Int, budget: PartialFrameBudget?) {
        self.maxFrameSize = maxFrameSize
        self.budget = budget
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.decodeFrame(from: &buffer, maxFrameSize: maxFrameSize) else {
            try hold(buffer.readableBytes)
            return .needMoreData
        }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decoderRemoved(context: ChannelHandlerContext) {
        budget?.release(held)
        held = 0
    }

    /// Accounts this connection's partial frame; refuses it when all connections together hold
    /// more than the budget (each one alone is capped by `maxFrameSize`, their number is not).
    private mutating func hold(_ bytes: Int) throws(WireError) {
        // Most reads end on a frame boundary: nothing held before or after, no lock taken.
        guard let budget, bytes != held else { return }
        let total = budget.take(bytes - held)
        held = bytes
        if total > budget.limit && bytes > PartialFrameBudget.exempt {
            budget.release(held)
            held = 0
            throw WireError(.badLength, "a partial frame of \(bytes) bytes while all connections hold \(total), above the \(budget.limit)-byte budget")
        }
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A partial frame at EOF is the peer closing mid-write, not corruption: drop it quietly.
        try decode(context: context, buffer: &buffer)
    }

    /// Decodes one frame from the front of `buffer` if it is complete.
    ///
    /// - Returns: the frame, or `nil` if more bytes are needed (then `buffer` is unchanged).
    /// - Throws: ``WireError`` with kind `.badLength` or `.badChecksum`.
    public static func decodeFrame(from buffer: inout ByteBuffer, maxFrameSize: Int) throws(WireError) -> InboundFrame? {
        let start = buffer.readerIndex
        guard let length = buffer.getInteger(at: start, endianness: .big, as: UInt32.self) else {
            return nil
        }
        guard length >= 1, Int(length) <= maxFrameSize else {
            throw WireError(.badLength, "frame length \(length), limit \(maxFrameSize)")
        }
        let total = FrameFormat.headerSize + Int(length)
        guard buffer.readableBytes >= total else { return nil }
        guard let expected = buffer.getInteger(at: start + 4, endianness: .big, as: UInt32.self),
              let typeByte = buffer.getInteger(at: start + 8, as: UInt8.self)
        else { return nil }
        // CRC over length ++ body, skipping the CRC field itself: two zlib calls, no copy.
        let actual = buffer.withUnsafeReadableBytes { raw -> UInt32 in
            guard let base = raw.baseAddress else { return 0 }
            var crc = crc32(0, base.assumingMemoryBound(to: Bytef.self), 4)
            crc = crc32(crc, (base + 8).assumingMemoryBound(to: Bytef.self), uInt(length))
            return UInt32(truncatingIfNeeded: crc)
        }
        guard actual == expected else {
            throw WireError(.badChecksum, "frame of \(length) bytes: crc 0x\(String(actual, radix: 16)), expected 0x\(String(expected, radix: 16))")
        }
        buffer.moveReaderIndex(forwardBy: FrameFormat.headerSize + 1)
        guard let payload = buffer.readSlice(length: Int(length) - 1) else { return nil }
        return InboundFrame(type: FrameType(rawValue: typeByte), payload: payload)
    }
}

/// Everything this module writes, one case per frame kind. The encoder serialises straight into
/// the outgoing buffer, so an Accept's values are copied once, from their arrays to the socket buffer.
public enum OutboundFrame: Sendable {
    case handshake(HandshakeMessage)
    case envelope(Envelope)
    case request(ClientRequestFrame)
    case response(ClientResponseFrame)
}

/// Writes ``OutboundFrame``s as frames: reserves the header, encodes the body in place, then
/// patches length and CRC.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = OutboundFrame

    public init() {}

    public func encode(data: OutboundFrame, out: inout ByteBuffer) throws {
        Self.encode(data, into: &out)
    }

    /// Appends one frame holding `frame` to `out`.
    public static func encode(_ frame: OutboundFrame, into out: inout ByteBuffer) {
        switch frame {
        case .handshake(let message):
            writeFrame(into: &out, type: message.frameType, sizeHint: 64) { message.encodeBody(into: &$0) }
        case .envelope(let envelope):
            writeFrame(into: &out, type: .envelope, sizeHint: MessageCodec.encodedSize(envelope)) {
                MessageCodec.encode(envelope, into: &$0)
            }
        case .request(let request):
            writeFrame(into: &out, type: .request, sizeHint: request.encodedSizeHint) { request.encode(into: &$0) }
        case .response(let response):
            writeFrame(into: &out, type: .response, sizeHint: response.encodedSizeHint) { response.encode(into: &$0) }
        }
    }

    static func writeFrame(into out: inout ByteBuffer, type: FrameType, sizeHint: Int, _ body: (inout ByteBuffer) -> Void) {
        let start = out.writerIndex
        out.reserveCapacity(minimumWritableBytes: FrameFormat.headerSize + 1 + sizeHint)
        out.writeInteger(UInt32(0), as: UInt32.self)  // length, patched below
        out.writeInteger(UInt32(0), as: UInt32.self)  // crc, patched below
        out.writeInteger(type.rawValue, as: UInt8.self)
        body(&out)
        let length = UInt32(truncatingIfNeeded: out.writerIndex - start - FrameFormat.headerSize)
        out.setInteger(length, at: start, endianness: .big, as: UInt32.self)
        // The readable bytes start at the reader index; the frame starts `offset` bytes in.
        let offset = start - out.readerIndex
        let crc = out.withUnsafeReadableBytes { raw -> UInt32 in
            guard let base = raw.baseAddress else { return 0 }
            let frame = base + offset
            var crc = crc32(0, frame.assumingMemoryBound(to: Bytef.self), 4)
            crc = crc32(crc, (frame + 8).assumingMemoryBound(to: Bytef.self), uInt(length))
            return UInt32(truncatingIfNeeded: crc)
        }
        out.setInteger(crc, at: start + 4, endianness: .big, as: UInt32.self)
    }
}

/// Bytes of partial frames that a server's connections may hold together. A frame begun may
/// wait for its last bytes for as long as the sender likes, so without a total, many connections
/// each holding an almost complete 16 MiB frame grow the server without bound.
final class PartialFrameBudget: Sendable {
    /// Partial frames up to this size are never refused: ordinary traffic never waits on the budget.
    static let exempt = 64 << 10
    let limit: Int
    private let used = Mutex(0)

    init(limit: Int) { self.limit = limit }

    /// Adds `bytes` (negative to give back) and returns the new total.
    func take(_ bytes: Int) -> Int { used.withLock { $0 += bytes; return $0 } }
    func release(_ bytes: Int) { _ = take(-bytes) }
}
