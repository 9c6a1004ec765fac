import MultiPaxos
import NIOCore
import NIOEmbedded
import Testing
@testable import PaxosTransport

/// The frame layer and the session's handling of bad input, driven on EmbeddedChannel.
@Suite struct FrameDecoderTests {
    /// A session that has completed its handshake as acceptor node 1, talking to peer 2.
    func establishedAcceptor(maxFrameSize: Int = 1 << 20) throws -> EmbeddedSession {
        let session = try EmbeddedSession(.acceptor(nodeID: 1, peers: [2, 3], clients: false), maxFrameSize: maxFrameSize)
        try session.activate()
        session.feed(frameBytes(.handshake(.hello(.init(version: WireVersion.current, cluster: "test", role: .peer(2), nonce: [1])))))
        let frames = try session.outboundFrames()
        #expect(frames.map(\.type) == [.welcome])
        #expect(throws: Never.self) { try session.handshakeResult?.get() }
        return session
    }

    @Test func framesFedOneByteAtATime() throws {
        let session = try establishedAcceptor()
        var rng = SeededRandom(seed: 1)
        var envelopes: [Envelope] = []
        var stream = ByteBuffer()
        for type in MessageCodec.MessageType.allCases {
            let envelope = Envelope(from: 2, to: 1, message: Gen.message(type, &rng))
            envelopes.append(envelope)
            var frame = frameBytes(.envelope(envelope))
            stream.writeBuffer(&frame)
        }
        while let byte = stream.readSlice(length: 1) {
            try session.channel.writeInbound(byte)
        }
        let received = session.collector.messages.compactMap { message -> Envelope? in
            if case .envelope(let envelope) = message { return envelope }
            return nil
        }
        #expect(received == envelopes)
        #expect(session.channel.isActive)
        #expect(session.counters.snapshot.malformedFrames == 0)
    }

    @Test func badChecksumClosesAndCounts() throws {
        let session = try establishedAcceptor()
        var frame = frameBytes(.envelope(Envelope(from: 2, to: 1, message: .heartbeat(Heartbeat(ballot: .zero, chosenThrough: 1)))))
        let last = frame.writerIndex - 1
        frame.setInteger(frame.getInteger(at: last, as: UInt8.self)! ^ 0x01, at: last)
        session.feed(frame)
        #expect(!session.channel.isActive)
        #expect(session.counters.snapshot.malformedFrames == 1)
        #expect(session.collector.messages.isEmpty)
    }

    @Test func oversizeLengthClosesBeforeTheBodyArrives() throws {
        let session = try establishedAcceptor(maxFrameSize: 1024)
        var header = ByteBuffer()
        header.writeInteger(UInt32(1025))
        session.feed(header)
        #expect(!session.channel.isActive)
        #expect(session.counters.snapshot.malformedFrames == 1)
    }

    @Test func zeroLengthIsMalformed() throws {
        let session = try establishedAcceptor()
        session.feed(ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 0]))
        #expect(!session.channel.isActive)
        #expect(session.counters.snapshot.malformedFrames == 1)
    }

    /// A well-framed envelope whose body does not decode, and one with an unknown frame type.
    @Test(arguments: [0, 1, 2])
    func badBodiesCloseAndCount(variant: Int) throws {
        let session = try establishedAcceptor()
        var frame = ByteBuffer()
        switch variant {
        case 0:
            FrameEncoder.writeFrame(into: &frame, type: .envelope, sizeHint: 0) { $0.writeInteger(UInt32(2)) }  // truncated
        case 1:
            FrameEncoder.writeFrame(into: &frame, type: FrameType(rawValue: 0x7F), sizeHint: 0) { _ in }  // unknown type
        default:
            // A decodable envelope that claims another sender than the handshake proved.
            frame = frameBytes(.envelope(Envelope(from: 3, to: 1, message: .heartbeat(Heartbeat(ballot: .zero, chosenThrough: 0)))))
        }
        session.feed(frame)
        #expect(!session.channel.isActive)
        #expect(session.counters.snapshot.malformedFrames == 1)
        #expect(session.collector.messages.isEmpty)
    }

    /// Random garbage, before and after the handshake: never a trap; the connection is closed and
    /// the counter bumped. (The frame limit is small so that garbage cannot leave a frame pending.)
    @Test(arguments: 0..<40)
    func randomGarbage(seed: UInt64) throws {
        var rng = SeededRandom(seed: 0x6A4BA6E + seed)
        let session = seed.isMultiple(of: 2)
            ? try establishedAcceptor(maxFrameSize: 512)
            : try EmbeddedSession(.acceptor(nodeID: 1, peers: [2], clients: true), maxFrameSize: 512)
        if !seed.isMultiple(of: 2) { try session.activate() }
        var garbage = ByteBuffer(bytes: Gen.bytes(2048, &rng))
        // Feed in random-sized chunks, to vary where chunk boundaries fall.
        while garbage.readableBytes > 0, session.channel.isActive {
            let chunk = garbage.readSlice(length: min(garbage.readableBytes, Int.random(in: 1...64, using: &rng)))!
            session.feed(chunk)
        }
        #expect(!session.channel.isActive, "seed \(seed)")
        #expect(session.counters.snapshot.malformedFrames == 1, "seed \(seed)")
        #expect(session.collector.messages.isEmpty, "seed \(seed)")
    }

    /// Valid frames with one random byte flipped: each is rejected by the CRC (or the length check).
    @Test func singleBitFlipsAreDetected() throws {
        var rng = SeededRandom(seed: 99)
        let envelope = Envelope(from: 2, to: 1, message: Gen.message(.accept, &rng))
        let frame = frameBytes(.envelope(envelope))
        for index in stride(from: 0, to: frame.readableBytes, by: max(1, frame.readableBytes / 64)) {
            var corrupted = frame
            corrupted.setInteger(corrupted.getInteger(at: index, as: UInt8.self)! ^ (1 << UInt8.random(in: 0...7, using: &rng)), at: index)
            #expect(throws: WireError.self) {
                var bytes = corrupted
                // Only the length may change enough to need more bytes; pad so a frame completes.
                bytes.writeRepeatingByte(0, count: 1 << 16)
                _ = try FrameDecoder.decodeFrame(from: &bytes, maxFrameSize: 1 << 16)
            }
        }
    }
}
