import Dispatch
import MultiPaxos
import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import PaxosTransport

/// The client protocol over real loopback sockets.
@Suite struct ClientServerTests {
    func startServer(nodeID: NodeID = 1, cluster: String = "test", secret: [UInt8]? = nil, handler: @escaping ClientServer.Handler) async throws -> (ClientServer, PeerAddress) {
        let config = ClientServerConfiguration(nodeID: nodeID, clusterName: cluster, listenAddress: PeerAddress(host: "127.0.0.1", port: 0), secret: secret)
        let server = ClientServer(configuration: config, group: testGroup, logger: quietLogger, handler: handler)
        let address = try await server.start()
        return (server, PeerAddress(host: "127.0.0.1", port: try #require(address.port)))
    }

    func connect(_ addresses: [PeerAddress], cluster: String = "test", secret: [UInt8]? = nil) async throws(TransportError) -> PaxosClient {
        try await PaxosClient.connect(configuration: PaxosClientConfiguration(addresses: addresses, clusterName: cluster, secret: secret), group: testGroup, logger: quietLogger)
    }

    /// Many concurrent requests on one connection, answered out of order, each matched to its caller.
    @Test func pipelinedRequestsAnsweredOutOfOrder() async throws {
        let (server, address) = try await startServer(secret: Array("k".utf8)) { request in
            guard case .append(let records, _, _) = request else { return .error(ClientError(code: .invalidRequest, message: "append only")) }
            // Finish in a scrambled order: later requests often overtake earlier ones.
            try? await Task.sleep(for: .microseconds(Int.random(in: 0...3000)))
            return .appended(records.map { Slot($0[0]) << 32 | Slot($0[1]) })
        }
        let client = try await connect([address], secret: Array("k".utf8))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<400 {
                group.addTask {
                    let records: [[UInt8]] = [[UInt8(i % 256), 1], [UInt8(i % 256), 2]]
                    let slots = try await client.append(records)
                    #expect(slots == [Slot(i % 256) << 32 | 1, Slot(i % 256) << 32 | 2])
                }
            }
            try await group.waitForAll()
        }
        #expect(client.connectedNodeID == 1)
        await client.close()
        await server.shutdown()
    }

    /// Pipelined requests beyond the per-connection limit wait; they are not all run at once.
    @Test func inFlightLimitPerConnection() async throws {
        let running = Mutex((now: 0, peak: 0))
        var config = ClientServerConfiguration(nodeID: 1, clusterName: "test", listenAddress: PeerAddress(host: "127.0.0.1", port: 0))
        config.maxInFlightPerConnection = 4
        let server = ClientServer(configuration: config, group: testGroup, logger: quietLogger) { _ in
            running.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
            try? await Task.sleep(for: .milliseconds(2))
            running.withLock { $0.now -= 1 }
            return .appended([1])
        }
        let port = try #require(try await server.start().port)
        let client = try await connect([PeerAddress(host: "127.0.0.1", port: port)])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<100 {
                group.addTask {
                    // `send`, not `append`: appends on one client share requests, and this test
                    // needs 100 separate requests in flight.
                    let response = try await client.send(.append([[0]], id: ProposalID(client: 1, sequence: 1)))
                    #expect(response == .appended([1]))
                }
            }
            try await group.waitForAll()
        }
        #expect(running.withLock { $0.peak } <= 4)
        await client.close()
        await server.shutdown()
    }

    /// Concurrent appends of one client keep at most `appendRequestsInFlight` requests out (one by
    /// default) and merge the rest; every caller still gets its own slot.
    @Test(arguments: [nil, 3])
    func appendRequestsInFlightPerClient(limit: Int?) async throws {
        let running = Mutex((now: 0, peak: 0, requests: 0))
        let (server, address) = try await startServer { request in
            guard case .append(let records, _, _) = request else { return .error(ClientError(code: .invalidRequest, message: "append only")) }
            running.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now); $0.requests += 1 }
            try? await Task.sleep(for: .milliseconds(20))
            running.withLock { $0.now -= 1 }
            return .appended(records.map { Slot($0[0]) })
        }
        var configuration = PaxosClientConfiguration(addresses: [address], clusterName: "test")
        if let limit { configuration.appendRequestsInFlight = limit }
        let client = try await PaxosClient.connect(configuration: configuration, group: testGroup, logger: quietLogger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<100 {
                group.addTask {
                    let slots = try await client.append([[UInt8(i)]])
                    #expect(slots == [Slot(i)])
                }
            }
            try await group.waitForAll()
        }
        let seen = running.withLock { $0 }
        if let limit {
            #expect(seen.peak > 1 && seen.peak <= limit, "\(seen)")
        } else {
            #expect(seen.peak == 1, "\(seen)")
        }
        #expect(seen.requests < 100, "appends were not merged: \(seen)")
        await client.close()
        await server.shutdown()
    }

    /// A direct handler answers at once (inside the read that decoded the request), later from
    /// another thread, or declines to the async handler; under a small in-flight limit, every
    /// pipelined request still gets its own answer.
    @Test func directHandlerAnswersNowLaterOrDeclines() async throws {
        let taken = Mutex((now: 0, later: 0, declined: 0))
        var config = ClientServerConfiguration(nodeID: 1, clusterName: "test", listenAddress: PeerAddress(host: "127.0.0.1", port: 0))
        config.maxInFlightPerConnection = 2
        let server = ClientServer(configuration: config, group: testGroup, logger: quietLogger, direct: { request, respond in
            guard case .append(let records, _, _) = request else { return false }
            let n = Slot(records[0][0]) << 8 | Slot(records[0][1])
            switch n % 3 {
            case 0:
                taken.withLock { $0.now += 1 }
                respond(.appended([n]))
                return true
            case 1:
                taken.withLock { $0.later += 1 }
                DispatchQueue.global().asyncAfter(deadline: .now() + .microseconds(Int.random(in: 0...2000))) { respond(.appended([n])) }
                return true
            default:
                return false
            }
        }) { request in
            guard case .append(let records, _, _) = request else { return .error(ClientError(code: .invalidRequest, message: "append only")) }
            taken.withLock { $0.declined += 1 }
            return .appended([Slot(records[0][0]) << 8 | Slot(records[0][1])])
        }
        let port = try #require(try await server.start().port)
        let client = try await connect([PeerAddress(host: "127.0.0.1", port: port)])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<600 {
                group.addTask {
                    // `send`: separate requests, so that many wait behind the limit of 2.
                    let response = try await client.send(.append([[UInt8(i >> 8), UInt8(i & 0xFF)]], id: ProposalID(client: 1, sequence: UInt64(i))))
                    #expect(response == .appended([Slot(i)]))
                }
            }
            try await group.waitForAll()
        }
        #expect(taken.withLock { $0 } == (now: 200, later: 200, declined: 200))
        await client.close()
        await server.shutdown()
    }

    @Test func readAndStatus() async throws {
        let status = ClientStatus(nodeID: 1, leaderID: 1, ballot: Ballot(round: 2, node: 1), chosenThrough: 9, lastAccepted: 10, details: [.init("role", "leader")])
        let members = [MemberStatus(id: 1, peerAddress: PeerAddress(host: "127.0.0.1", port: 7101), clientAddress: PeerAddress(host: "127.0.0.1", port: 8101),
                                    role: .leader, isSelf: true, acknowledgedThrough: 10, chosenThrough: 9)]
        let (server, address) = try await startServer { request in
            switch request {
            case .read(let from, let max, _):
                return .entries(ReadResult(entries: (0..<Slot(max)).map { ClientEntry(slot: from + $0, bytes: [UInt8(truncatingIfNeeded: from + $0)]) }, nextSlot: from + Slot(max)))
            case .status: return .status(status)
            case .barrier: return .barrier(9)
            case .append: return .error(ClientError(code: .noQuorum, message: "no majority", outcome: .unknown))
            case .members: return .members(members)
            case .transferLeadership(let to) where to == 7: return .error(ClientError(code: .invalidRequest, message: "node 7 is not a member"))
            case .transferLeadership(let to): return .leadershipTransferred(leaderID: to)
            }
        }
        var configuration = PaxosClientConfiguration(addresses: [address], clusterName: "test")
        configuration.requestTimeout = .seconds(5)
        let client = try await PaxosClient.connect(configuration: configuration, group: testGroup, logger: quietLogger)
        let page = try await client.read(from: 5, maxCount: 3)
        #expect(page == ReadResult(entries: [ClientEntry(slot: 5, bytes: [5]), ClientEntry(slot: 6, bytes: [6]), ClientEntry(slot: 7, bytes: [7])], nextSlot: 8))
        #expect(try await client.status() == status)
        #expect(try await client.readBarrier() == 9)
        #expect(try await client.members() == members)
        #expect(try await client.transferLeadership(to: 3) == 3)
        let refused = try await #require(throws: PaxosClientError.self) { try await client.transferLeadership(to: 7) }
        #expect(refused.code == .rejected && refused.serverError?.message == "node 7 is not a member")
        // Retried (a server timeout may be cured by another replica) until the call's time runs out.
        let error = try await #require(throws: PaxosClientError.self) { try await client.append([[1]]) }
        #expect(error.code == .timeout)
        // The last attempt's failure: the server's answer, or the deadline cutting it short.
        #expect(error.serverError?.code == .noQuorum || error.cause?.code == .timeout)
        #expect(error.outcome == .unknown)
        #expect(error.proposalID?.client == client.clientID)
        await client.close()
        await server.shutdown()
    }

    @Test func followsRedirectsToTheLeader() async throws {
        let (leader, leaderAddress) = try await startServer(nodeID: 2) { request in
            guard case .append(let records, _, _) = request else { return .error(ClientError(code: .invalidRequest, message: "")) }
            return .appended(records.indices.map { Slot($0 + 100) })
        }
        let (follower, followerAddress) = try await startServer(nodeID: 1) { _ in
            .redirect(leaderID: 2, leaderAddress: "\(leaderAddress)")
        }
        let client = try await connect([followerAddress])
        #expect(client.connectedNodeID == 1)
        #expect(try await client.append([[1], [2]]) == [100, 101])
        #expect(client.connectedNodeID == 2)

        // A redirect that names nobody (an election) is retried after a pause, at the same
        // replica when it is the only one, until someone leads.
        let redirects = Mutex(0)
        let (lost, lostAddress) = try await startServer(nodeID: 3) { _ in
            if redirects.withLock({ n in defer { n += 1 }; return n < 3 }) { return .redirect(leaderID: nil, leaderAddress: nil) }
            return .appended([9])
        }
        let other = try await connect([lostAddress])
        #expect(try await other.append([[1]]) == [9])
        #expect(redirects.withLock { $0 } == 4)
        await client.close()
        await other.close()
        for server in [leader, follower, lost] { await server.shutdown() }
    }

    @Test func triesTheNextAddress() async throws {
        let dead = PeerAddress(host: "127.0.0.1", port: try await freePorts(1, group: testGroup)[0])
        let (server, address) = try await startServer(nodeID: 3) { _ in .appended([1]) }
        let client = try await connect([dead, address])
        #expect(client.connectedNodeID == 3)
        await client.close()
        await server.shutdown()
    }

    @Test func refusesTheWrongSecretOrCluster() async throws {
        let (server, address) = try await startServer(secret: Array("right".utf8)) { _ in .appended([]) }
        for (cluster, secret) in [("test", Array("wrong".utf8)), ("other", Array("right".utf8)), ("test", nil)] as [(String, [UInt8]?)] {
            let error = try await #require(throws: TransportError.self) { try await connect([address], cluster: cluster, secret: secret) }
            #expect(error.code == .refused, "\(cluster) \(String(describing: secret))")
        }
        try await eventually("refusals counted") { server.counters.snapshot.refusedHandshakes >= 2 }
        // A peer on the client port is refused too.
        let box = EnvelopeBox()
        var config = PeerTransportConfiguration(nodeID: 2, members: [1: address, 2: PeerAddress(host: "127.0.0.1", port: 0)], clusterName: "test", secret: Array("right".utf8))
        config.initialBackoff = .milliseconds(5)
        let peer = try PeerTransport(configuration: config, group: testGroup, logger: quietLogger) { box.append($0) }
        try await peer.start()
        let before = server.counters.snapshot.refusedHandshakes
        try await eventually("peer refused") { server.counters.snapshot.refusedHandshakes > before }
        await peer.shutdown()
        await server.shutdown()
    }

    @Test func garbageOnTheClientPortIsCountedAndHarmless() async throws {
        let (server, address) = try await startServer { _ in .appended([7]) }
        let raw = try await ClientBootstrap(group: testGroup).connect(host: address.host, port: address.port).get()
        var rng = SeededRandom(seed: 77)
        try await raw.writeAndFlush(ByteBuffer(bytes: Gen.bytes(1000, &rng)))
        try await raw.closeFuture.get()
        #expect(server.counters.snapshot.malformedFrames == 1)
        let client = try await connect([address])
        #expect(try await client.append([[1]]) == [7])
        await client.close()
        await server.shutdown()
    }

    /// A client that pipelines requests but never reads the answers gets no more of them run
    /// once the socket stops taking output: before, every answer was buffered (gigabytes of RSS
    /// for large reads).
    /// Reads (whose answers can be megabytes) are capped at a few per connection even when many
    /// more requests may run; other requests wait for the socket's writability.
    @Test(arguments: [false, true])
    func clientThatDoesNotReadIsNotAnsweredWithoutBound(reads: Bool) async throws {
        let handled = Mutex(0)
        let answer = ClientResponse.entries(ReadResult(entries: [ClientEntry(slot: 1, bytes: Array(repeating: 7, count: 1 << 20))], nextSlot: 2))
        var config = ClientServerConfiguration(nodeID: 1, clusterName: "test", listenAddress: PeerAddress(host: "127.0.0.1", port: 0))
        if !reads { config.maxInFlightPerConnection = 8 }
        let server = ClientServer(configuration: config, group: testGroup, logger: quietLogger) { _ in
            handled.withLock { $0 += 1 }
            return answer
        }
        let address = PeerAddress(host: "127.0.0.1", port: try #require(try await server.start().port))
        let raw = try await ClientBootstrap(group: testGroup).channelOption(.autoRead, value: false)
            .connect(host: address.host, port: address.port).get()
        let hello = HandshakeMessage.hello(.init(version: WireVersion.client, cluster: "test", role: .client, nonce: []))
        var bytes = frameBytes(.handshake(hello))
        let requests = 400
        for id in 0..<requests {
            var request = frameBytes(.request(ClientRequestFrame(id: UInt64(id), request: reads ? .read(fromSlot: 1, maxCount: 1, consistency: .local) : .status)))
            bytes.writeBuffer(&request)
        }
        try await raw.writeAndFlush(bytes)
        // Wait until the server stops starting requests (or has started them all).
        var last = -1
        while true {
            try await Task.sleep(for: .milliseconds(500))
            let now = handled.withLock { $0 }
            if now == last || now == requests { break }
            last = now
        }
        // Loopback socket buffers hold a few MiB: a few answers of 1 MiB, not hundreds.
        #expect(handled.withLock { $0 } < requests / 4)
        try await raw.close()
        await server.shutdown()
    }

    /// Connections that each hold most of a large frame are closed once their partial frames
    /// together pass the server's budget (150 such connections took a replica to 2.5 GB), and
    /// other clients are still served.
    @Test func partialFramesShareABudget() async throws {
        var config = ClientServerConfiguration(nodeID: 1, clusterName: "test", listenAddress: PeerAddress(host: "127.0.0.1", port: 0))
        config.maxPartialFrameBytes = 4 << 20
        let server = ClientServer(configuration: config, group: testGroup, logger: quietLogger) { _ in .appended([1]) }
        let address = PeerAddress(host: "127.0.0.1", port: try #require(try await server.start().port))
        let hello = HandshakeMessage.hello(.init(version: WireVersion.client, cluster: "test", role: .client, nonce: []))
        var raws: [any Channel] = []
        for _ in 0..<4 {
            let raw = try await ClientBootstrap(group: testGroup).connect(host: address.host, port: address.port).get()
            var bytes = frameBytes(.handshake(hello))
            bytes.writeInteger(UInt32((16 << 20) - 100))  // length
            bytes.writeInteger(UInt32(0))  // CRC
            bytes.writeRepeatingByte(0, count: 2 << 20)  // 2 MiB of the frame, the rest never comes
            try await raw.writeAndFlush(bytes)
            raws.append(raw)
        }
        // 4 x 2 MiB against 4 MiB: two of them at least must go.
        try await eventually("connections over the budget closed") { server.counters.snapshot.malformedFrames >= 2 }
        let client = try await connect([address])
        #expect(try await client.append([[1]]) == [1])
        await client.close()
        for raw in raws { try? await raw.close() }
        await server.shutdown()
    }

    /// Shutdown cancels handlers still running and fails the client's requests in flight.
    @Test func shutdownWithRequestsInFlight() async throws {
        let started = Mutex(0)
        let (server, address) = try await startServer { _ in
            started.withLock { $0 += 1 }
            try? await Task.sleep(for: .seconds(600))  // until cancelled
            return .error(ClientError(code: .shuttingDown, message: "cancelled"))
        }
        let client = try await connect([address])
        let pending = Task { () async -> TransportError? in
            do {
                _ = try await client.send(.append([[1]], id: ProposalID(client: 1, sequence: 1)))
                return nil
            } catch let error as TransportError {
                return error
            } catch {
                return TransportError(.malformed, "untyped \(error)")
            }
        }
        try await eventually("handler running") { started.withLock { $0 } == 1 }
        await server.shutdown()
        let error = await pending.value
        #expect(error?.code == .connectionClosed)
        await client.close()
    }
}
