import MultiPaxos
import NIOCore
import Testing
@testable import PaxosTransport

@Suite struct MessageCodecTests {
    /// Encode as a whole frame, decode the frame, decode the body: the full path a message takes.
    func roundTrip(_ envelope: Envelope) throws -> Envelope {
        var bytes = frameBytes(.envelope(envelope))
        let frame = try #require(try FrameDecoder.decodeFrame(from: &bytes, maxFrameSize: FrameFormat.defaultMaxFrameSize))
        #expect(bytes.readableBytes == 0)
        #expect(frame.type == .envelope)
        var payload = frame.payload
        #expect(payload.readableBytes == MessageCodec.encodedSize(envelope))
        return try MessageCodec.decode(&payload)
    }

    /// Golden bytes for the array-carrying bodies, written out from WIRE.md: encoding helpers may
    /// be refactored, the bytes may not change without a wire version bump.
    @Test func arrayBodiesGoldenBytes() throws {
        func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
        func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
        func body(_ envelope: Envelope) -> [UInt8] {
            var buffer = ByteBuffer()
            MessageCodec.encode(envelope, into: &buffer)
            return Array(buffer.readableBytesView)
        }
        let accept = Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: 7, node: 2), firstSlot: 10, values: [.noop, .data([0xFF])], chosenThrough: 9)))
        let acceptBytes: [UInt8] = u32(1) + u32(2) + [4] + u64(7) + u32(2) + u64(10) + u64(9) + u32(2) + [0] + [1] + u32(1) + [0xFF]
        #expect(body(accept) == acceptBytes)
        let reply = Envelope(from: 2, to: 1, message: .catchUpReply(CatchUpReply(entries: [Entry(slot: 5, ballot: Ballot(round: 7, node: 2), value: .data([0xAA]))], chosenThrough: 5)))
        let replyBytes: [UInt8] = u32(2) + u32(1) + [9] + u64(5) + u32(1) + u64(5) + u64(7) + u32(2) + [1] + u32(1) + [0xAA]
        #expect(body(reply) == replyBytes)
        // Version 2: the pre-vote pair (WIRE.md).
        let preVote = Envelope(from: 3, to: 1, message: .preVote(PreVote(ballot: Ballot(round: 8, node: 3), chosenThrough: 41)))
        #expect(body(preVote) == u32(3) + u32(1) + [13] + u64(8) + u32(3) + u64(41))
        let preVoteReply = Envelope(from: 1, to: 3, message: .preVoteReply(PreVoteReply(ballot: Ballot(round: 8, node: 3), granted: true, promised: Ballot(round: 7, node: 2), chosenThrough: 40)))
        #expect(body(preVoteReply) == u32(1) + u32(3) + [14] + u64(8) + u32(3) + [1] + u64(7) + u32(2) + u64(40))
        // Version 5: leadership transfer.
        let prepare = Envelope(from: 3, to: 1, message: .prepare(Prepare(ballot: Ballot(round: 8, node: 3), fromSlot: 41, leaderTransfer: true)))
        #expect(body(prepare) == u32(3) + u32(1) + [1] + u64(8) + u32(3) + u64(41) + [1])
        let timeoutNow = Envelope(from: 1, to: 3, message: .timeoutNow(TimeoutNow(ballot: Ballot(round: 7, node: 1), lastSlot: 40)))
        #expect(body(timeoutNow) == u32(1) + u32(3) + [15] + u64(7) + u32(1) + u64(40))
        var decoded = ByteBuffer(bytes: acceptBytes)
        #expect(try MessageCodec.decode(&decoded) == accept)
    }

    @Test func everyMessageFixed() throws {
        let b = Ballot(round: 7, node: 2)
        let entries = [Entry(slot: 5, ballot: b, value: .noop), Entry(slot: 6, ballot: .zero, value: .data([1, 2, 3])), Entry(slot: 7, ballot: b, value: .data([]))]
        let messages: [Message] = [
            .prepare(Prepare(ballot: b, fromSlot: 1)),
            .promise(Promise(ballot: b, fromSlot: 5, accepted: entries, chosenThrough: 4)),
            .promise(Promise(ballot: b, fromSlot: 5, accepted: [], chosenThrough: 0)),
            .reject(Reject(ballot: b, promised: Ballot(round: 9, node: 1))),
            .accept(Accept(ballot: b, firstSlot: 10, values: [.noop, .data([0xFF]), .data(Array(repeating: 0xAB, count: 1000))], chosenThrough: 9)),
            .accept(Accept(ballot: b, firstSlot: 10, values: [], chosenThrough: 9)),
            .accept(Accept(ballot: b, firstSlot: 10, values: [.data([]), .noop, .data([]), .data([1, 2, 3])], chosenThrough: 9)),
            .accepted(Accepted(ballot: b, firstSlot: 10, lastSlot: 12)),
            .heartbeat(Heartbeat(ballot: b, chosenThrough: Message.maxSlot)),
            .heartbeatReply(HeartbeatReply(ballot: b, chosenThrough: 3, lastAccepted: 4)),
            .catchUpRequest(CatchUpRequest(fromSlot: 1, throughSlot: 100)),
            .catchUpReply(CatchUpReply(entries: entries, chosenThrough: 7)),
            .snapshotOffer(SnapshotOffer(slot: 1000, length: 100 << 20, checksum: 0xDEAD_BEEF, chosenThrough: 1200)),
            .snapshotChunk(SnapshotChunk(slot: 1000, offset: 1 << 20, data: Array(repeating: 0x5A, count: 4096), done: false)),
            .snapshotChunk(SnapshotChunk(slot: 1000, offset: 0, data: [], done: true)),
            .snapshotAck(SnapshotAck(slot: 1000, nextOffset: 2 << 20, status: .next)),
            .snapshotAck(SnapshotAck(slot: 1000, nextOffset: 0, status: .resend)),
            .snapshotAck(SnapshotAck(slot: 1000, nextOffset: 100 << 20, status: .installed)),
            .snapshotAck(SnapshotAck(slot: 1000, nextOffset: 0, status: .refused)),
            .preVote(PreVote(ballot: b, chosenThrough: 41)),
            .preVoteReply(PreVoteReply(ballot: b, granted: true, promised: Ballot(round: 6, node: 3), chosenThrough: 40)),
            .preVoteReply(PreVoteReply(ballot: b, granted: false, promised: .zero, chosenThrough: Message.maxSlot)),
            .prepare(Prepare(ballot: b, fromSlot: 9, leaderTransfer: true)),
            .timeoutNow(TimeoutNow(ballot: b, lastSlot: 77)),
        ]
        // Every case is covered (a new case must be added here and in the codec).
        #expect(Set(messages.map { MessageCodec.messageType(of: $0) }) == Set(MessageCodec.MessageType.allCases))
        for message in messages {
            let envelope = Envelope(from: 1, to: 2, message: message)
            #expect(try roundTrip(envelope) == envelope)
        }
    }

    @Test(arguments: MessageCodec.MessageType.allCases)
    func randomizedRoundTrip(type: MessageCodec.MessageType) throws {
        var rng = SeededRandom(seed: 0xC0DEC + UInt64(type.rawValue))
        for _ in 0..<200 {
            let envelope = Gen.envelope(type, &rng)
            #expect(try roundTrip(envelope) == envelope)
        }
    }

    /// Every strict prefix of a body is truncated, and a body with an extra byte has trailing
    /// bytes: both must throw, never trap.
    @Test(arguments: MessageCodec.MessageType.allCases)
    func truncationAndTrailingBytesThrow(type: MessageCodec.MessageType) throws {
        var rng = SeededRandom(seed: 0x7A11 + UInt64(type.rawValue))
        for _ in 0..<10 {
            var body = ByteBuffer()
            MessageCodec.encode(Gen.envelope(type, &rng), into: &body)
            for cut in 0..<body.readableBytes {
                var prefix = body.getSlice(at: 0, length: cut)!
                #expect(throws: WireError.self) { try MessageCodec.decode(&prefix) }
            }
            var longer = body
            longer.writeInteger(UInt8(0))
            #expect(throws: WireError.self) { try MessageCodec.decode(&longer) }
        }
    }

    @Test func unknownTypesThrow() throws {
        var body = ByteBuffer()
        body.writeInteger(UInt32(1))
        body.writeInteger(UInt32(2))
        body.writeInteger(UInt8(200))  // no such message type
        let error = try #require(throws: WireError.self) { try MessageCodec.decode(&body) }
        #expect(error.kind == .unknownType)

        var badValue = ByteBuffer()
        MessageCodec.encode(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: .zero, firstSlot: 1, values: [.noop], chosenThrough: 0))), into: &badValue)
        badValue.setInteger(UInt8(9), at: badValue.writerIndex - 1)  // the value tag
        #expect(throws: WireError.self) { try MessageCodec.decode(&badValue) }

        // An unknown snapshot-ack status is malformed, not a crash.
        var badStatus = ByteBuffer()
        MessageCodec.encode(Envelope(from: 1, to: 2, message: .snapshotAck(SnapshotAck(slot: 1, nextOffset: 0, status: .next))), into: &badStatus)
        badStatus.setInteger(UInt8(77), at: badStatus.writerIndex - 1)
        #expect(throws: WireError.self) { try MessageCodec.decode(&badStatus) }
        // A chunk's `done` flag must be a boolean.
        var badDone = ByteBuffer()
        MessageCodec.encode(Envelope(from: 1, to: 2, message: .snapshotChunk(SnapshotChunk(slot: 1, offset: 0, data: [1], done: false))), into: &badDone)
        badDone.setInteger(UInt8(2), at: 4 + 4 + 1 + 8 + 8)
        #expect(throws: WireError.self) { try MessageCodec.decode(&badDone) }
    }

    /// Every proper prefix of an Accept body is truncated (the values are decoded in one pass
    /// that checks each length itself), and a whole body with one byte more has trailing bytes.
    @Test func everyAcceptPrefixIsTruncated() throws {
        var body = ByteBuffer()
        let values: [Value] = [.data([1, 2, 3]), .noop, .data([]), .data(Array(repeating: 7, count: 40))]
        MessageCodec.encode(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: 1, node: 1), firstSlot: 3, values: values, chosenThrough: 2))), into: &body)
        let bytes = Array(body.readableBytesView)
        for length in 0 ..< bytes.count {
            var prefix = ByteBuffer(bytes: bytes[..<length])
            let error = try #require(throws: WireError.self) { try MessageCodec.decode(&prefix) }
            #expect(error.kind == .truncated, "prefix of \(length) bytes")
        }
        var longer = ByteBuffer(bytes: bytes + [0])
        let error = try #require(throws: WireError.self) { try MessageCodec.decode(&longer) }
        #expect(error.kind == .trailingBytes)
    }

    /// A ballot round or slot no replica reaches is refused with its field named: the core would
    /// overflow on it (a promised round of 2^64 - 1 crashed every campaign after it, restarts too).
    @Test func outOfRangeNumbersAreRefused() throws {
        let huge = Message.maxSlot + 1
        let cases: [(Message, String)] = [
            (.heartbeat(Heartbeat(ballot: Ballot(round: .max, node: 2), chosenThrough: 0)), "heartbeat ballot round"),
            (.reject(Reject(ballot: Ballot(round: 1, node: 1), promised: Ballot(round: Message.maxRound + 1, node: 0))), "reject promised round"),
            (.accept(Accept(ballot: Ballot(round: 1, node: 1), firstSlot: .max, values: [.noop], chosenThrough: 0)), "accept firstSlot"),
            (.accept(Accept(ballot: Ballot(round: 1, node: 1), firstSlot: Message.maxSlot, values: [.noop, .noop], chosenThrough: 0)), "ends above"),
            (.promise(Promise(ballot: Ballot(round: 1, node: 1), fromSlot: 1, accepted: [Entry(slot: huge, ballot: Ballot(round: 1, node: 1), value: .noop)], chosenThrough: 0)), "promise entry"),
            (.catchUpReply(CatchUpReply(entries: [Entry(slot: 1, ballot: Ballot(round: .max, node: 1), value: .noop)], chosenThrough: 0)), "catchUpReply entry round"),
        ]
        for (message, field) in cases {
            var body = ByteBuffer()
            MessageCodec.encode(Envelope(from: 1, to: 2, message: message), into: &body)
            let error = try #require(throws: WireError.self) { try MessageCodec.decode(&body) }
            #expect(error.kind == .invalidValue && "\(error)".contains(field), "\(error)")
        }
        // The largest numbers still in range pass.
        var body = ByteBuffer()
        let edge = Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: Message.maxRound, node: 1), firstSlot: Message.maxSlot - 1, values: [.noop, .noop], chosenThrough: Message.maxSlot)))
        MessageCodec.encode(edge, into: &body)
        #expect(try MessageCodec.decode(&body) == edge)
    }

    /// A forged element count must fail before reserving memory for it.
    @Test func forgedCountIsRejected() throws {
        var body = ByteBuffer()
        MessageCodec.encode(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: .zero, firstSlot: 1, values: [], chosenThrough: 0))), into: &body)
        body.setInteger(UInt32.max, at: body.writerIndex - 4, endianness: .big)
        let error = try #require(throws: WireError.self) { try MessageCodec.decode(&body) }
        #expect(error.kind == .truncated)
    }

    @Test func randomBodiesNeverTrap() {
        var rng = SeededRandom(seed: 42)
        for _ in 0..<5000 {
            var body = ByteBuffer(bytes: Gen.bytes(Int.random(in: 0...64, using: &rng), &rng))
            // Make the type byte plausible half of the time so the bodies get exercised.
            if body.readableBytes > 8, Bool.random(using: &rng) {
                body.setInteger(UInt8.random(in: 1...9, using: &rng), at: 8)
            }
            var copy = body
            _ = try? MessageCodec.decode(&body)
            _ = try? ClientRequestFrame.decode(&copy)
            var copy2 = copy
            _ = try? ClientResponseFrame.decode(&copy2)
        }
    }
}

@Suite struct ClientProtocolCodecTests {
    @Test func requestsRoundTrip() throws {
        let requests: [ClientRequest] = [
            .append([], id: ProposalID(client: 0, sequence: 0)),
            .append([[1, 2, 3], [], Array(repeating: 7, count: 500)], id: ProposalID(client: .max, sequence: 1 << 40)),
            .read(fromSlot: 1, maxCount: 100, consistency: .local), .read(fromSlot: .max, maxCount: 0, consistency: .linearizable),
            .status, .barrier, .members, .transferLeadership(to: 3), .transferLeadership(to: .max),
        ]
        for (index, request) in requests.enumerated() {
            let frame = ClientRequestFrame(id: UInt64(index) &* 0x1_0000_0001, request: request)
            var bytes = frameBytes(.request(frame))
            let decoded = try #require(try FrameDecoder.decodeFrame(from: &bytes, maxFrameSize: 1 << 20))
            #expect(decoded.type == .request)
            var payload = decoded.payload
            #expect(try ClientRequestFrame.decode(&payload) == frame)
        }
    }

    @Test func responsesRoundTrip() throws {
        let responses: [ClientResponse] = [
            .appended([1, 2, .max]), .appended([]),
            .redirect(leaderID: 3, leaderAddress: "127.0.0.1:7103"), .redirect(leaderID: nil, leaderAddress: nil),
            .redirect(leaderID: 2, leaderAddress: nil),
            .error(ClientError(code: .overloaded, message: "too much")), .error(ClientError(code: ClientErrorCode(rawValue: 999), message: "ünïcode ✓")),
            .error(ClientError(code: .timeout, message: "slow", outcome: .unknown)),
            .error(ClientError(code: .overloaded, message: "full", outcome: .notAppended)),
            .barrier(0), .barrier(.max),
            .entries(ReadResult(entries: [ClientEntry(slot: 1, bytes: [9]), ClientEntry(slot: 3, bytes: [])], nextSlot: 4)),
            .entries(ReadResult(entries: [], nextSlot: 1)),
            .entries(ReadResult(entries: [ClientEntry(slot: 5, bytes: [1])], nextSlot: 6, readThrough: 90)),
            .status(ClientStatus(nodeID: 1, leaderID: 2, ballot: Ballot(round: 3, node: 2), chosenThrough: 10, lastAccepted: 12, details: [.init("role", "follower"), .init("", "")])),
            .status(ClientStatus(nodeID: 1, leaderID: nil, ballot: .zero, chosenThrough: 0, lastAccepted: 0)),
            .members(MembershipCodecTests.members), .members([]), .leadershipTransferred(leaderID: 2),
        ]
        for (index, response) in responses.enumerated() {
            let frame = ClientResponseFrame(id: UInt64(index), response: response)
            var bytes = frameBytes(.response(frame))
            let decoded = try #require(try FrameDecoder.decodeFrame(from: &bytes, maxFrameSize: 1 << 20))
            var payload = decoded.payload
            #expect(try ClientResponseFrame.decode(&payload) == frame)
            // Truncations throw.
            var body = ByteBuffer()
            frame.encode(into: &body)
            for cut in 0..<body.readableBytes {
                var prefix = body.getSlice(at: 0, length: cut)!
                #expect(throws: WireError.self) { try ClientResponseFrame.decode(&prefix) }
            }
        }
    }

    /// The version-3 layouts byte for byte (WIRE.md's worked example): an append carries its
    /// first record's identity before the records, a read its consistency after the count, an
    /// error its outcome after the message.
    @Test func clientProtocolVersion3Layout() throws {
        var append = ByteBuffer()
        ClientRequestFrame(id: 7, request: .append([[0x61, 0x62], []], id: ProposalID(client: 0xABCD, sequence: 5), isRetry: true)).encode(into: &append)
        #expect(Array(append.readableBytesView) == [
            0, 0, 0, 0, 0, 0, 0, 7,                 // request id
            1,                                      // kind: append
            0, 0, 0, 0, 0, 0, 0xAB, 0xCD,           // client id
            0, 0, 0, 0, 0, 0, 0, 5,                 // sequence of the first record
            1,                                      // a retry
            0, 0, 0, 2,                             // two records
            0, 0, 0, 2, 0x61, 0x62,                 // "ab"
            0, 0, 0, 0,                             // ""
        ])
        var read = ByteBuffer()
        ClientRequestFrame(id: 1, request: .read(fromSlot: 3, maxCount: 2, consistency: .linearizable)).encode(into: &read)
        #expect(Array(read.readableBytesView) == [0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2, 1])
        var error = ByteBuffer()
        ClientResponseFrame(id: 1, response: .error(ClientError(code: .timeout, message: "t", outcome: .unknown))).encode(into: &error)
        #expect(Array(error.readableBytesView) == [0, 0, 0, 0, 0, 0, 0, 1, 3, 0, 8, 0, 1, 0x74, 2])
        var barrier = ByteBuffer()
        ClientResponseFrame(id: 1, response: .barrier(9)).encode(into: &barrier)
        #expect(Array(barrier.readableBytesView) == [0, 0, 0, 0, 0, 0, 0, 1, 6, 0, 0, 0, 0, 0, 0, 0, 9])
    }

    /// An unknown consistency or outcome byte is malformed, not guessed at.
    @Test func unknownConsistencyAndOutcomeAreMalformed() throws {
        var read = ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2, 2])
        #expect(throws: WireError.self) { try ClientRequestFrame.decode(&read) }
        var error = ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 1, 3, 0, 8, 0, 1, 0x74, 3])
        #expect(throws: WireError.self) { try ClientResponseFrame.decode(&error) }
        // A version-2 append (no identity) does not decode as version 3.
        var old = ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x61])
        #expect(throws: WireError.self) { try ClientRequestFrame.decode(&old) }
    }

    @Test func handshakeMessagesRoundTrip() throws {
        let messages: [HandshakeMessage] = [
            .hello(.init(version: WireVersion.current, cluster: "c", role: .peer(3), nonce: [1, 2])),
            .hello(.init(version: WireVersion.client, cluster: "", role: .client, nonce: [])),
            .welcome(.init(version: 1, cluster: "c", nodeID: 2, nonce: [3], authRequired: true, proof: Array(repeating: 1, count: 32))),
            .auth(proof: [1, 2, 3]), .ready, .refuse(.wrongCluster, "no"),
        ]
        for message in messages {
            var bytes = frameBytes(.handshake(message))
            let frame = try #require(try FrameDecoder.decodeFrame(from: &bytes, maxFrameSize: 1 << 20))
            var payload = frame.payload
            #expect(try HandshakeMessage.decode(type: frame.type, body: &payload) == message)
        }
    }
}
