import CZlib
import MultiPaxos
import NIOCore
import Testing
import PaxosTransport

/// A measurement, not a test: it asserts nothing about time. It runs only when PAXOS_BENCH is set,
/// and is meant for a release build:
///
///     PAXOS_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter CodecSpeedTests
@Suite struct CodecSpeedTests {
    @Test func acceptOf256Values() throws {
        guard ProcessInfoLite.environment("PAXOS_BENCH") != nil else { return }
        var rng = SeededRandom(seed: 256)
        let values: [Value] = (0..<256).map { _ in .data(Gen.bytes(256, &rng)) }
        let envelope = Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: 3, node: 1), firstSlot: 1000, values: values, chosenThrough: 999)))
        // Best of several short rounds: the machine is shared, and the minimum is the least noisy
        // estimate of what the code costs.
        let iterations = 2_000
        let rounds = 10
        let clock = ContinuousClock()
        func best(_ body: () throws -> Void) rethrows -> Duration {
            var best = Duration.seconds(1000)
            for _ in 0..<rounds { best = min(best, try clock.measure(body)) }
            return best
        }

        var out = ByteBuffer()
        FrameEncoder.encode(.envelope(envelope), into: &out)
        let frameSize = out.readableBytes
        // Encode: frame header + body + CRC into a reused buffer, as MessageToByteHandler does.
        let encodeTime = best {
            for _ in 0..<iterations {
                out.clear()
                FrameEncoder.encode(.envelope(envelope), into: &out)
            }
        }
        // Decode: CRC check + frame split + body decode into fresh [UInt8] arrays.
        var checksum = 0
        let decodeTime = try best {
            for _ in 0..<iterations {
                var input = out
                guard let frame = try FrameDecoder.decodeFrame(from: &input, maxFrameSize: 1 << 20) else { throw TestFailure("short") }
                var payload = frame.payload
                let decoded = try MessageCodec.decode(&payload)
                if case .accept(let accept) = decoded.message { checksum &+= accept.values.count }
            }
        }
        #expect(checksum == rounds * iterations * 256)
        // The CRC alone, for scale: the part of both paths that is zlib's, not the codec's.
        var crcs: UInt = 0
        let crcTime = best {
            for _ in 0..<iterations {
                crcs &+= out.withUnsafeReadableBytes { raw in
                    UInt(crc32(0, raw.baseAddress?.assumingMemoryBound(to: Bytef.self), uInt(raw.count)))
                }
            }
        }
        #expect(crcs != 0)
        func report(_ name: String, _ duration: Duration) {
            let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
            let perMessage = seconds / Double(iterations) * 1e6
            let mbps = Double(frameSize * iterations) / seconds / 1e6
            let valuesPerSecond = Double(256 * iterations) / seconds
            func fixed(_ x: Double, _ digits: Double) -> Double { (x * digits).rounded() / digits }
            print("\(name): \(fixed(perMessage, 10)) µs per Accept(256 × 256 B, \(frameSize) B frame), \(Int(mbps)) MB/s, \(fixed(valuesPerSecond / 1e6, 100)) M values/s")
        }
        report("encode", encodeTime)
        report("decode", decodeTime)
        report("crc32 only", crcTime)
    }
}
