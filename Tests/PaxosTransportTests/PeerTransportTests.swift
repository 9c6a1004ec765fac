import Dispatch
import MultiPaxos
import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import PaxosTransport

/// Replicas talking over real loopback sockets.
@Suite struct PeerTransportTests {
    static func members(_ ports: [Int]) -> [NodeID: PeerAddress] {
        Dictionary(uniqueKeysWithValues: ports.enumerated().map { (NodeID($0.offset + 1), PeerAddress(host: "127.0.0.1", port: $0.element)) })
    }

    func heartbeat(_ from: NodeID, _ to: NodeID, _ n: UInt64) -> Envelope {
        Envelope(from: from, to: to, message: .heartbeat(Heartbeat(ballot: Ballot(round: n, node: from), chosenThrough: n)))
    }

    @Test func threeReplicasExchangeMessages() async throws {
        let members = Self.members(try await freePorts(3, group: testGroup))
        var collected: [NodeID: [Envelope]] = [:]
        let boxes = (1...3).map { _ in EnvelopeBox() }
        var transports: [PeerTransport] = []
        for id in NodeID(1)...3 {
            var config = PeerTransportConfiguration(nodeID: id, members: members, clusterName: "test")
            config.initialBackoff = .milliseconds(5)
            let box = boxes[Int(id) - 1]
            transports.append(try PeerTransport(configuration: config, group: testGroup, logger: quietLogger) { box.append($0) })
        }
        for transport in transports { try await transport.start() }
        // Sent at once: queued until the connections are up, then delivered in order.
        var rng = SeededRandom(seed: 3)
        let bigAccept = Accept(ballot: Ballot(round: 1, node: 1), firstSlot: 1, values: (0..<256).map { _ in .data(Gen.bytes(256, &rng)) }, chosenThrough: 0)
        for from in NodeID(1)...3 {
            for to in NodeID(1)...3 where to != from {
                for n in UInt64(1)...50 { transports[Int(from) - 1].send(heartbeat(from, to, n)) }
            }
        }
        transports[0].send(Envelope(from: 1, to: 2, message: .accept(bigAccept)))
        transports[0].send(heartbeat(1, 1, 0))  // to itself: delivered locally
        try await eventually("all messages delivered") {
            boxes[0].count == 101 && boxes[1].count == 101 && boxes[2].count == 100
        }
        for id in NodeID(1)...3 { collected[id] = boxes[Int(id) - 1].all }
        for to in NodeID(1)...3 {
            for from in NodeID(1)...3 where from != to {
                let rounds = collected[to]!.filter { $0.from == from && $0.to == to }.compactMap { envelope -> UInt64? in
                    if case .heartbeat(let h) = envelope.message { return h.chosenThrough }
                    return nil
                }
                #expect(rounds == Array(1...50), "order from \(from) to \(to)")
            }
        }
        #expect(collected[2]!.contains(Envelope(from: 1, to: 2, message: .accept(bigAccept))))
        #expect(collected[1]!.contains(heartbeat(1, 1, 0)))
        for transport in transports {
            #expect(transport.counters.snapshot.malformedFrames == 0)
            #expect(transport.counters.snapshot.droppedEnvelopes == 0)
        }
        for transport in transports { await transport.shutdown() }
    }

    @Test func reconnectsAfterThePeerRestarts() async throws {
        let members = Self.members(try await freePorts(2, group: testGroup))
        let boxA = EnvelopeBox(), boxB = EnvelopeBox()
        func make(_ id: NodeID, _ box: EnvelopeBox) throws -> PeerTransport {
            var config = PeerTransportConfiguration(nodeID: id, members: members, clusterName: "test", secret: Array("k".utf8))
            config.initialBackoff = .milliseconds(5)
            config.maxBackoff = .milliseconds(50)
            return try PeerTransport(configuration: config, group: testGroup, logger: quietLogger) { box.append($0) }
        }
        let a = try make(1, boxA)
        let b = try make(2, boxB)
        try await a.start()
        try await b.start()
        a.send(heartbeat(1, 2, 1))
        try await eventually("first delivery") { boxB.count == 1 }

        await b.shutdown()
        try await eventually("A notices") { !a.isConnected(to: 2) }
        let boxB2 = EnvelopeBox()
        let b2 = try make(2, boxB2)
        try await b2.start()
        // Keep sending until the restarted peer hears A: messages sent while the link was down or
        // into the dying connection may be lost, which Paxos tolerates.
        var n: UInt64 = 2
        try await eventually("delivery after restart") {
            a.send(heartbeat(1, 2, n))
            n += 1
            return boxB2.count > 0
        }
        #expect(a.counters.snapshot.connectFailures >= 1)
        // And the other direction works on the new incarnation too.
        b2.send(heartbeat(2, 1, 7))
        try await eventually("reverse delivery") { boxA.all.contains(heartbeat(2, 1, 7)) }
        await a.shutdown()
        await b2.shutdown()
    }

    @Test func queueIsBoundedWhilePeerIsDown() async throws {
        let members = Self.members(try await freePorts(2, group: testGroup))
        var config = PeerTransportConfiguration(nodeID: 1, members: members, clusterName: "test")
        config.outboundQueueLimit = 10
        let a = try PeerTransport(configuration: config, group: testGroup, logger: quietLogger) { _ in }
        // Not started, so nothing connects: everything waits in the queue.
        for n in UInt64(1)...25 { a.send(heartbeat(1, 2, n)) }
        a.send(heartbeat(1, 42, 0))  // unknown node
        #expect(a.counters.snapshot.droppedEnvelopes == 16)
        #expect(a.queueDepth(to: 2) == 10)
        await a.shutdown()
    }

    /// Large envelopes are bounded by bytes too: ten 1 MiB Accepts for a peer that is down keep
    /// at most `outboundQueueBytes` of them, the newest.
    @Test func queueIsBoundedInBytesWhilePeerIsDown() async throws {
        let members = Self.members(try await freePorts(2, group: testGroup))
        var config = PeerTransportConfiguration(nodeID: 1, members: members, clusterName: "test")
        config.outboundQueueBytes = 3 << 20 + 4096
        let a = try PeerTransport(configuration: config, group: testGroup, logger: quietLogger) { _ in }
        let value = Value.data(Array(repeating: 7, count: 1 << 20))
        for n in UInt64(1)...10 {
            a.send(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: 1, node: 1), firstSlot: n, values: [value], chosenThrough: 0))))
        }
        #expect(a.queueDepth(to: 2) == 3)
        #expect(a.counters.snapshot.droppedEnvelopes == 7)
        await a.shutdown()
    }

    /// A peer that stops reading: the sender's socket fills, it stops writing (writability), its
    /// queue stays within the limit by dropping the oldest, and the newest gets through once the
    /// peer reads again.
    @Test func slowPeerBoundsTheQueueAndKeepsTheNewest() async throws {
        let receiverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let members = Self.members(try await freePorts(2, group: testGroup))
        let gate = DispatchSemaphore(value: 0)
        let box = EnvelopeBox()
        let receiver = try PeerTransport(configuration: PeerTransportConfiguration(nodeID: 2, members: members, clusterName: "test"), group: receiverGroup, logger: quietLogger) { envelope in
            box.append(envelope)
            // Block the receiver's only event loop on the first message: it stops reading.
            if box.count == 1 { gate.wait() }
        }
        var config = PeerTransportConfiguration(nodeID: 1, members: members, clusterName: "test")
        config.outboundQueueLimit = 50
        let sender = try PeerTransport(configuration: config, group: testGroup, logger: quietLogger) { _ in }
        try await receiver.start()
        try await sender.start()
        sender.send(heartbeat(1, 2, 0))
        try await eventually("receiver blocked") { box.count == 1 }

        let value = Value.data(Array(repeating: 0x5A, count: 4096))
        let total: UInt64 = 600
        for n in 1...total {
            sender.send(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: 1, node: 1), firstSlot: n * 16, values: Array(repeating: value, count: 16), chosenThrough: n))))
            #expect(sender.queueDepth(to: 2) <= 50)
        }
        try await eventually("drops counted") { sender.counters.snapshot.droppedEnvelopes > 0 }
        gate.signal()
        try await eventually("the newest arrives") {
            box.all.contains { if case .accept(let a) = $0.message { return a.chosenThrough == total } else { return false } }
        }
        let snapshot = sender.counters.snapshot
        #expect(snapshot.sentEnvelopes + snapshot.droppedEnvelopes == Int(total) + 1)
        await sender.shutdown()
        await receiver.shutdown()
        try await receiverGroup.shutdownGracefully()
    }

    /// Strangers, other clusters, wrong secrets and random bytes on the peer port are refused or
    /// counted, deliver nothing, and do not disturb the replica.
    @Test func refusesIntrudersOnLoopback() async throws {
        let ports = try await freePorts(2, group: testGroup)
        let members = Self.members(ports)
        let box = EnvelopeBox()
        let a = try PeerTransport(configuration: PeerTransportConfiguration(nodeID: 1, members: members, clusterName: "test", secret: Array("right".utf8)), group: testGroup, logger: quietLogger) { box.append($0) }
        try await a.start()

        func intruder(id: NodeID, members: [NodeID: PeerAddress], cluster: String, secret: [UInt8]?) async throws -> PeerTransport {
            var config = PeerTransportConfiguration(nodeID: id, members: members, clusterName: cluster, secret: secret)
            config.listenAddress = PeerAddress(host: "127.0.0.1", port: 0)
            config.initialBackoff = .milliseconds(5)
            let transport = try PeerTransport(configuration: config, group: testGroup, logger: quietLogger) { _ in }
            try await transport.start()
            transport.send(heartbeat(id, 1, 1))
            return transport
        }
        var expectedRefusals = 0
        for (id, cluster, secret) in [(NodeID(2), "other", Array("right".utf8)), (NodeID(9), "test", Array("right".utf8)), (NodeID(2), "test", Array("wrong".utf8)), (NodeID(2), "test", nil)] as [(NodeID, String, [UInt8]?)] {
            var intruderMembers = members
            intruderMembers[id] = PeerAddress(host: "127.0.0.1", port: 0)
            let transport = try await intruder(id: id, members: intruderMembers, cluster: cluster, secret: secret)
            expectedRefusals += 1
            try await eventually("refusal of \(id)/\(cluster)") { a.counters.snapshot.refusedHandshakes >= expectedRefusals }
            await transport.shutdown()
        }

        // Random bytes straight to the port.
        let raw = try await ClientBootstrap(group: testGroup).connect(host: "127.0.0.1", port: ports[0]).get()
        var rng = SeededRandom(seed: 5)
        try await raw.writeAndFlush(ByteBuffer(bytes: Gen.bytes(4096, &rng)))
        try await eventually("garbage counted") { a.counters.snapshot.malformedFrames == 1 }
        try await raw.closeFuture.get()  // the replica closed it

        #expect(box.count == 0)
        // The genuine member still gets through.
        let b = try PeerTransport(configuration: PeerTransportConfiguration(nodeID: 2, members: members, clusterName: "test", secret: Array("right".utf8)), group: testGroup, logger: quietLogger) { _ in }
        try await b.start()
        b.send(heartbeat(2, 1, 1))
        try await eventually("member delivery") { box.count == 1 }
        await a.shutdown()
        await b.shutdown()
    }
}

/// A thread-safe list of received envelopes (the transport calls back on event-loop threads).
final class EnvelopeBox: Sendable {
    private let envelopes = Mutex<[Envelope]>([])
    func append(_ envelope: Envelope) { envelopes.withLock { $0.append(envelope) } }
    var count: Int { envelopes.withLock { $0.count } }
    var all: [Envelope] { envelopes.withLock { $0 } }
}
