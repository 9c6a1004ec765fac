import MultiPaxos
import NIOCore
import NIOEmbedded
import Testing
@testable import PaxosTransport

/// The handshake between two EmbeddedChannels, bytes shuttled by hand.
@Suite struct HandshakeTests {
    struct Pair {
        let initiator: EmbeddedSession
        let acceptor: EmbeddedSession
    }

    func handshake(
        initiatorRole: ConnectionRole = .peer(2), expected: NodeID? = 1, initiatorCluster: String = "test", initiatorSecret: [UInt8]? = nil,
        acceptorPeers: Set<NodeID>? = [2, 3], acceptorClients: Bool = true, acceptorCluster: String = "test", acceptorSecret: [UInt8]? = nil
    ) throws -> Pair {
        let initiator = try EmbeddedSession(.initiator(role: initiatorRole, expectedAcceptor: expected), cluster: initiatorCluster, secret: initiatorSecret)
        let acceptor = try EmbeddedSession(.acceptor(nodeID: 1, peers: acceptorPeers, clients: acceptorClients), cluster: acceptorCluster, secret: acceptorSecret)
        try acceptor.activate()
        try initiator.activate()
        pump(initiator, acceptor)
        return Pair(initiator: initiator, acceptor: acceptor)
    }

    func refusal(_ session: EmbeddedSession) -> RefusalReason? {
        guard case .failure(let error as TransportError)? = session.handshakeResult else { return nil }
        return error.refusal
    }

    /// A short-bytes field longer than its `u8` length can say is cut with its length, so the
    /// fields after it still decode (before, the length wrapped: 300 bytes wrote 44 as the length
    /// and then 255 bytes, and the frame no longer parsed).
    @Test func anOverlongShortBytesFieldIsCutConsistently() throws {
        let proof = [UInt8](repeating: 7, count: 300)
        let welcome = HandshakeMessage.welcome(HandshakeMessage.Welcome(version: 4, cluster: "c", nodeID: 1, nonce: [1, 2], authRequired: true, proof: proof))
        var body = ByteBuffer()
        welcome.encodeBody(into: &body)
        guard case .welcome(let decoded) = try HandshakeMessage.decode(type: .welcome, body: &body) else {
            Issue.record("not a welcome")
            return
        }
        #expect(decoded.proof == Array(proof.prefix(255)) && decoded.authRequired && decoded.nonce == [1, 2])
    }

    @Test func acceptsAMember() throws {
        let pair = try handshake()
        #expect(try pair.initiator.handshakeResult?.get() == SessionInfo(remote: .peer(1)))
        #expect(try pair.acceptor.handshakeResult?.get() == SessionInfo(remote: .peer(2)))
        // And messages flow both ways afterwards.
        let envelope = Envelope(from: 2, to: 1, message: .heartbeat(Heartbeat(ballot: Ballot(round: 1, node: 2), chosenThrough: 5)))
        try pair.initiator.channel.writeOutbound(OutboundFrame.envelope(envelope))
        pump(pair.initiator, pair.acceptor)
        guard case .envelope(let received)? = pair.acceptor.collector.messages.first else {
            Issue.record("no envelope delivered")
            return
        }
        #expect(received == envelope)
    }

    @Test func acceptsWithTheRightSecret() throws {
        let pair = try handshake(initiatorSecret: Array("s3cret".utf8), acceptorSecret: Array("s3cret".utf8))
        #expect(try pair.initiator.handshakeResult?.get() == SessionInfo(remote: .peer(1)))
        #expect(try pair.acceptor.handshakeResult?.get() == SessionInfo(remote: .peer(2)))
        #expect(pair.initiator.channel.isActive && pair.acceptor.channel.isActive)
    }

    @Test func acceptsAClient() throws {
        let pair = try handshake(initiatorRole: .client, expected: nil)
        #expect(try pair.acceptor.handshakeResult?.get() == SessionInfo(remote: .client))
    }

    @Test func refusesAnotherCluster() throws {
        let pair = try handshake(initiatorCluster: "other")
        #expect(refusal(pair.acceptor) == .wrongCluster)
        #expect(refusal(pair.initiator) == .wrongCluster)  // told by the refuse frame
        #expect(!pair.acceptor.channel.isActive && !pair.initiator.channel.isActive)
        #expect(pair.acceptor.counters.snapshot.refusedHandshakes == 1)
    }

    @Test func refusesAStranger() throws {
        let pair = try handshake(initiatorRole: .peer(9))
        #expect(refusal(pair.acceptor) == .unknownNode)
        #expect(refusal(pair.initiator) == .unknownNode)
    }

    @Test func refusesItsOwnID() throws {
        let pair = try handshake(initiatorRole: .peer(1), acceptorPeers: [1, 2, 3])
        #expect(refusal(pair.acceptor) == .unknownNode)
    }

    @Test func refusesTheWrongRole() throws {
        let peerOnClientPort = try handshake(acceptorPeers: nil)
        #expect(refusal(peerOnClientPort.acceptor) == .wrongRole)
        let clientOnPeerPort = try handshake(initiatorRole: .client, expected: nil, acceptorClients: false)
        #expect(refusal(clientOnPeerPort.acceptor) == .wrongRole)
    }

    @Test func initiatorRefusesAnUnexpectedNode() throws {
        let pair = try handshake(expected: 3)
        #expect(refusal(pair.initiator) == .unexpectedNode)
        #expect(!pair.initiator.channel.isActive)
    }

    @Test func refusesTheWrongSecret() throws {
        let pair = try handshake(initiatorSecret: Array("wrong".utf8), acceptorSecret: Array("right".utf8))
        // The initiator sees first that the acceptor cannot prove *its* secret.
        #expect(refusal(pair.initiator) == .authenticationFailed)
        #expect(refusal(pair.acceptor) == .authenticationFailed)
        #expect(pair.acceptor.collector.messages.isEmpty)
    }

    /// A forged auth frame (an initiator that skips verifying the acceptor) is still refused.
    @Test func refusesAForgedProof() throws {
        let acceptor = try EmbeddedSession(.acceptor(nodeID: 1, peers: [2], clients: false), secret: Array("right".utf8))
        try acceptor.activate()
        acceptor.feed(frameBytes(.handshake(.hello(.init(version: WireVersion.current, cluster: "test", role: .peer(2), nonce: [1, 2, 3])))))
        #expect(try acceptor.outboundFrames().map(\.type) == [.welcome])
        acceptor.feed(frameBytes(.handshake(.auth(proof: Array(repeating: 0, count: 32)))))
        #expect(refusal(acceptor) == .authenticationFailed)
        #expect(try acceptor.outboundFrames().map(\.type) == [.refuse])
        #expect(!acceptor.channel.isActive)
    }

    @Test func refusesWhenOnlyOneSideHasASecret() throws {
        let acceptorOnly = try handshake(acceptorSecret: Array("x".utf8))
        #expect(refusal(acceptorOnly.initiator) == .authenticationFailed)
        #expect(refusal(acceptorOnly.acceptor) == .authenticationFailed)
        let initiatorOnly = try handshake(initiatorSecret: Array("x".utf8))
        #expect(refusal(initiatorOnly.initiator) == .authenticationFailed)
        #expect(!initiatorOnly.acceptor.channel.isActive)
    }

    @Test func refusesABadVersion() throws {
        let acceptor = try EmbeddedSession(.acceptor(nodeID: 1, peers: [2], clients: true))
        try acceptor.activate()
        // A future version's hello: the version, then fields this version cannot parse.
        var hello = ByteBuffer()
        FrameEncoder.writeFrame(into: &hello, type: .hello, sizeHint: 0) {
            $0.writeInteger(UInt16(99))
            $0.writeBytes([0xDE, 0xAD, 0xBE, 0xEF])
        }
        acceptor.feed(hello)
        #expect(refusal(acceptor) == .badVersion)
        let frames = try acceptor.outboundFrames()
        #expect(frames.map(\.type) == [.refuse])
        var payload = try #require(frames.first).payload
        guard case .refuse(let reason, let message) = try HandshakeMessage.decode(type: .refuse, body: &payload) else {
            Issue.record("not a refusal")
            return
        }
        #expect(reason == .badVersion)
        #expect(message.contains("99"))
        #expect(!acceptor.channel.isActive)
    }

    /// The peer and client ports are versioned apart: each role's `hello` is checked against its
    /// own version; a version-2 client (whose appends carry no identity) is refused.
    @Test func clientAndPeerVersionsAreCheckedApart() throws {
        // Each role's own version is accepted, an older one refused; the other role's version
        // only when it differs (today both are 3).
        // A server takes clients as old as `oldestClient` (version 3, without members and
        // transfer requests), and answers in their version.
        var cases: [(ConnectionRole, UInt16, Bool)] = [(.client, WireVersion.client, true), (.client, 2, false),
                                                      (.client, WireVersion.oldestClient, true), (.client, WireVersion.client + 1, false),
                                                      (.peer(2), WireVersion.current, true), (.peer(2), WireVersion.current - 1, false)]
        if WireVersion.current != WireVersion.client {
            cases += [(.client, WireVersion.current, false), (.peer(2), WireVersion.client, false)]
        }
        for (role, version, accepted) in cases {
            let acceptor = try EmbeddedSession(.acceptor(nodeID: 1, peers: [2], clients: true))
            try acceptor.activate()
            acceptor.feed(frameBytes(.handshake(.hello(.init(version: version, cluster: "test", role: role, nonce: [1])))))
            let frames = try acceptor.outboundFrames()
            if accepted {
                #expect(frames.map(\.type) == [.welcome], "\(role) v\(version)")
                var payload = try #require(frames.first).payload
                guard case .welcome(let welcome) = try HandshakeMessage.decode(type: .welcome, body: &payload) else { continue }
                #expect(welcome.version == version)
            } else {
                #expect(refusal(acceptor) == .badVersion, "\(role) v\(version)")
                #expect(frames.map(\.type) == [.refuse])
            }
        }
        // And a real client and server agree end to end.
        let pair = try handshake(initiatorRole: .client, expected: nil)
        #expect(pair.acceptor.channel.isActive && pair.initiator.channel.isActive)
    }

    @Test func refusesDataBeforeTheHandshake() throws {
        let acceptor = try EmbeddedSession(.acceptor(nodeID: 1, peers: [2], clients: true))
        try acceptor.activate()
        acceptor.feed(frameBytes(.envelope(Envelope(from: 2, to: 1, message: .heartbeat(Heartbeat(ballot: .zero, chosenThrough: 0))))))
        #expect(refusal(acceptor) == .protocolViolation)
        #expect(acceptor.collector.messages.isEmpty)
        #expect(!acceptor.channel.isActive)
    }

    @Test func clientsCannotSendEnvelopesNorPeersRequests() throws {
        let client = try handshake(initiatorRole: .client, expected: nil)
        try client.initiator.channel.writeOutbound(OutboundFrame.envelope(Envelope(from: 0, to: 1, message: .heartbeat(Heartbeat(ballot: .zero, chosenThrough: 0)))))
        pump(client.initiator, client.acceptor)
        #expect(!client.acceptor.channel.isActive)
        #expect(client.acceptor.counters.snapshot.malformedFrames == 1)

        let peer = try handshake()
        try peer.initiator.channel.writeOutbound(OutboundFrame.request(ClientRequestFrame(id: 1, request: .status)))
        pump(peer.initiator, peer.acceptor)
        #expect(!peer.acceptor.channel.isActive)
        #expect(peer.acceptor.collector.messages.isEmpty)
    }

    @Test func handshakeTimesOut() throws {
        let acceptor = try EmbeddedSession(.acceptor(nodeID: 1, peers: [2], clients: true))
        try acceptor.activate()
        acceptor.channel.embeddedEventLoop.advanceTime(by: .seconds(6))
        #expect(!acceptor.channel.isActive)
        guard case .failure(let error as TransportError)? = acceptor.handshakeResult else {
            Issue.record("handshake did not fail")
            return
        }
        #expect(error.code == .handshakeTimeout)
    }
}
