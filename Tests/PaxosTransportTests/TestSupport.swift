#if canImport(Glibc)
import Glibc
#endif
import Logging
import MultiPaxos
import NIOCore
import NIOEmbedded
import NIOPosix
@testable import PaxosTransport

/// A small deterministic PRNG (SplitMix64) so randomized tests print a seed that reproduces them.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum Gen {
    static func bytes(_ count: Int, _ rng: inout SeededRandom) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    static func ballot(_ rng: inout SeededRandom) -> Ballot {
        Ballot(round: UInt64.random(in: 0...Message.maxRound, using: &rng), node: NodeID.random(in: 0...NodeID.max, using: &rng))
    }

    /// Up to half of `Message.maxSlot`, so that an Accept's last slot stays in range too.
    static func slot(_ rng: inout SeededRandom) -> Slot { Slot.random(in: 0...Message.maxSlot / 2, using: &rng) }

    static func value(_ rng: inout SeededRandom) -> Value {
        Bool.random(using: &rng) && Bool.random(using: &rng) ? .noop : .data(bytes(Int.random(in: 0...300, using: &rng), &rng))
    }

    static func entry(_ rng: inout SeededRandom) -> Entry {
        Entry(slot: slot(&rng), ballot: ballot(&rng), value: value(&rng))
    }

    static func entries(_ rng: inout SeededRandom) -> [Entry] {
        (0..<Int.random(in: 0...20, using: &rng)).map { _ in entry(&rng) }
    }

    /// One random message of the given type.
    static func message(_ type: MessageCodec.MessageType, _ rng: inout SeededRandom) -> Message {
        switch type {
        case .prepare: return .prepare(Prepare(ballot: ballot(&rng), fromSlot: slot(&rng), leaderTransfer: Bool.random(using: &rng)))
        case .promise: return .promise(Promise(ballot: ballot(&rng), fromSlot: slot(&rng), accepted: entries(&rng), chosenThrough: slot(&rng)))
        case .reject: return .reject(Reject(ballot: ballot(&rng), promised: ballot(&rng)))
        case .accept:
            let values = (0..<Int.random(in: 0...40, using: &rng)).map { _ in value(&rng) }
            return .accept(Accept(ballot: ballot(&rng), firstSlot: slot(&rng), values: values, chosenThrough: slot(&rng)))
        case .accepted: return .accepted(Accepted(ballot: ballot(&rng), firstSlot: slot(&rng), lastSlot: slot(&rng)))
        case .heartbeat: return .heartbeat(Heartbeat(ballot: ballot(&rng), chosenThrough: slot(&rng)))
        case .heartbeatReply: return .heartbeatReply(HeartbeatReply(ballot: ballot(&rng), chosenThrough: slot(&rng), lastAccepted: slot(&rng)))
        case .catchUpRequest: return .catchUpRequest(CatchUpRequest(fromSlot: slot(&rng), throughSlot: slot(&rng)))
        case .catchUpReply: return .catchUpReply(CatchUpReply(entries: entries(&rng), chosenThrough: slot(&rng)))
        case .snapshotOffer:
            return .snapshotOffer(SnapshotOffer(slot: slot(&rng), length: UInt64.random(in: 0...UInt64.max, using: &rng),
                                                checksum: UInt32.random(in: 0...UInt32.max, using: &rng), chosenThrough: slot(&rng)))
        case .snapshotChunk:
            return .snapshotChunk(SnapshotChunk(slot: slot(&rng), offset: UInt64.random(in: 0...UInt64.max, using: &rng),
                                                data: bytes(Int.random(in: 0...2000, using: &rng), &rng), done: Bool.random(using: &rng)))
        case .snapshotAck:
            let status = [SnapshotAck.Status.next, .resend, .installed, .refused][Int.random(in: 0...3, using: &rng)]
            return .snapshotAck(SnapshotAck(slot: slot(&rng), nextOffset: UInt64.random(in: 0...UInt64.max, using: &rng), status: status))
        case .preVote: return .preVote(PreVote(ballot: ballot(&rng), chosenThrough: slot(&rng)))
        case .preVoteReply:
            return .preVoteReply(PreVoteReply(ballot: ballot(&rng), granted: Bool.random(using: &rng), promised: ballot(&rng), chosenThrough: slot(&rng)))
        case .timeoutNow: return .timeoutNow(TimeoutNow(ballot: ballot(&rng), lastSlot: slot(&rng)))
        }
    }

    static func envelope(_ type: MessageCodec.MessageType, _ rng: inout SeededRandom) -> Envelope {
        Envelope(from: NodeID.random(in: 0...NodeID.max, using: &rng), to: NodeID.random(in: 0...NodeID.max, using: &rng), message: message(type, &rng))
    }
}

/// Encodes one frame to bytes, as the encoder would put it on the wire.
func frameBytes(_ frame: OutboundFrame) -> ByteBuffer {
    var buffer = ByteBuffer()
    FrameEncoder.encode(frame, into: &buffer)
    return buffer
}

/// Collects what a session hands to the rest of the pipeline.
final class Collector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = SessionMessage
    var messages: [SessionMessage] = []
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        messages.append(unwrapInboundIn(data))
    }
}

/// An EmbeddedChannel with the session pipeline a real connection has.
struct EmbeddedSession {
    let channel: EmbeddedChannel
    let collector = Collector()
    let counters = TransportCounters()
    let established: EventLoopPromise<SessionInfo>

    init(_ side: SessionConfiguration.Side, cluster: String = "test", secret: [UInt8]? = nil, maxFrameSize: Int = 1 << 20) throws {
        channel = EmbeddedChannel()
        established = channel.eventLoop.makePromise()
        let session = SessionConfiguration(side: side, cluster: cluster, key: secret)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(MessageToByteHandler(FrameEncoder()))
        try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: maxFrameSize)))
        try sync.addHandler(SessionHandler(configuration: session, counters: counters, logger: quietLogger, established: established))
        try sync.addHandler(collector)
    }

    func activate() throws {
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    /// Feeds bytes, ignoring the error a closed channel reports.
    func feed(_ bytes: ByteBuffer) {
        _ = try? channel.writeInbound(bytes)
    }

    /// Bytes the session wrote, concatenated.
    func drainOutbound() -> ByteBuffer {
        var all = ByteBuffer()
        while let chunk = try? channel.readOutbound(as: ByteBuffer.self) {
            var chunk = chunk
            all.writeBuffer(&chunk)
        }
        return all
    }

    /// Frames the session wrote.
    func outboundFrames() throws -> [InboundFrame] {
        var bytes = drainOutbound()
        var frames: [InboundFrame] = []
        while let frame = try FrameDecoder.decodeFrame(from: &bytes, maxFrameSize: 1 << 20) { frames.append(frame) }
        return frames
    }

    var handshakeResult: Result<SessionInfo, any Error>? {
        // EmbeddedEventLoop runs callbacks inline, on this thread: the box is never shared.
        final class Box: @unchecked Sendable { var result: Result<SessionInfo, any Error>? }
        let box = Box()
        established.futureResult.whenComplete { box.result = $0 }
        return box.result
    }
}

/// Shuttles bytes between two embedded sessions until neither has anything to say.
func pump(_ a: EmbeddedSession, _ b: EmbeddedSession) {
    for _ in 0..<20 {
        let fromA = a.drainOutbound()
        let fromB = b.drainOutbound()
        if fromA.readableBytes == 0, fromB.readableBytes == 0 { return }
        if fromA.readableBytes > 0, b.channel.isActive { b.feed(fromA) }
        if fromB.readableBytes > 0, a.channel.isActive { a.feed(fromB) }
    }
}

/// Free loopback ports: bind to port 0, note the port, close. Good enough on a test machine.
func freePorts(_ count: Int, group: any EventLoopGroup) async throws -> [Int] {
    var channels: [any Channel] = []
    for _ in 0..<count {
        channels.append(try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0).get())
    }
    let ports = channels.compactMap { $0.localAddress?.port }
    for channel in channels { try await channel.close() }
    return ports
}

/// Waits until `condition` holds; the deadline only guards against a hang (no timing is asserted).
func eventually(timeout: Duration = .seconds(20), _ what: String = "condition", _ condition: () async throws -> Bool) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TestFailure("timed out waiting for \(what)")
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One event loop group for all loopback tests in the process.
let testGroup = MultiThreadedEventLoopGroup(numberOfThreads: 2)

/// Tests check counters and results, not log lines; keep the test output readable.
/// Set PAXOS_TEST_LOG=debug to see the transport's logs while debugging a test.
let quietLogger: Logger = {
    guard let level = ProcessInfoLite.environment("PAXOS_TEST_LOG").flatMap(Logger.Level.init(rawValue:)) else {
        return Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    }
    var logger = Logger(label: "test", factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = level
    return logger
}()

enum ProcessInfoLite {
    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}
