import MultiPaxos
import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import PaxosTransport

/// `PaxosClient` against stand-in servers on loopback: every call ends by its deadline, a stalled
/// replica or an unreachable redirect target sends it to the other addresses, and retries carry
/// the first attempt's identities. No assertion is about time: a client that waits forever trips
/// the suite's time limit instead.
@Suite(.timeLimit(.minutes(2))) struct PaxosClientRetryTests {
    func startServer(nodeID: NodeID, handler: @escaping ClientServer.Handler) async throws -> (ClientServer, PeerAddress) {
        let config = ClientServerConfiguration(nodeID: nodeID, clusterName: "test", listenAddress: PeerAddress(host: "127.0.0.1", port: 0))
        let server = ClientServer(configuration: config, group: testGroup, logger: quietLogger, handler: handler)
        let address = try await server.start()
        return (server, PeerAddress(host: "127.0.0.1", port: try #require(address.port)))
    }

    func client(_ addresses: [PeerAddress], attempt: TimeAmount = .seconds(3), request: TimeAmount = .seconds(30)) async throws -> PaxosClient {
        var configuration = PaxosClientConfiguration(addresses: addresses, clusterName: "test")
        configuration.attemptTimeout = attempt
        configuration.requestTimeout = request
        return try await PaxosClient.connect(configuration: configuration, group: testGroup, logger: quietLogger)
    }

    /// The identities a stand-in server was asked to append under, in order.
    final class Seen: Sendable {
        let ids = Mutex<[ProposalID]>([])
        let retries = Mutex<[Bool]>([])
        func note(_ request: ClientRequest) {
            if case .append(_, let id, let isRetry) = request {
                ids.withLock { $0.append(id) }
                retries.withLock { $0.append(isRetry) }
            }
        }
        var all: [ProposalID] { ids.withLock { $0 } }
        var retryFlags: [Bool] { retries.withLock { $0 } }
    }

    /// A replica that takes the request and never answers (a SIGSTOPped leader): the attempt
    /// times out and the next address answers the same identity.
    @Test func stalledReplicaTimesOutAndTheNextAddressAnswers() async throws {
        let stalledSeen = Seen(), nextSeen = Seen()
        let (stalled, stalledAddress) = try await startServer(nodeID: 1) { request in
            stalledSeen.note(request)
            try? await Task.sleep(for: .seconds(600))  // until shutdown cancels it
            return .error(ClientError(code: .shuttingDown, message: "stopped"))
        }
        let (next, nextAddress) = try await startServer(nodeID: 2) { request in
            nextSeen.note(request)
            guard case .append(let records, _, _) = request else { return .error(ClientError(code: .invalidRequest, message: "")) }
            return .appended(records.indices.map { Slot(40 + $0) })
        }
        let client = try await client([stalledAddress, nextAddress])
        #expect(client.connectedNodeID == 1)
        #expect(try await client.append([[1], [2]]) == [40, 41])
        #expect(client.connectedNodeID == 2)
        #expect(stalledSeen.all.count == 1)
        #expect(nextSeen.all == stalledSeen.all, "the retry must carry the first attempt's identity")
        #expect(stalledSeen.all.first?.client == client.clientID)
        await client.close()
        await stalled.shutdown()
        await next.shutdown()
    }

    /// Every replica stalled: the call ends at its deadline, says the records may have been
    /// appended, and names the identity to retry with.
    @Test func everyReplicaStalledEndsAtTheDeadlineWithAnUnknownOutcome() async throws {
        let (stalled, address) = try await startServer(nodeID: 1) { _ in
            try? await Task.sleep(for: .seconds(600))
            return .error(ClientError(code: .shuttingDown, message: "stopped"))
        }
        let client = try await client([address], attempt: .seconds(3), request: .seconds(8))
        let error = try await #require(throws: PaxosClientError.self) { try await client.append([[7]]) }
        #expect(error.code == .timeout)
        #expect(error.outcome == .unknown)
        #expect(error.cause?.code == .timeout)
        #expect(error.proposalID?.client == client.clientID)
        #expect(error.attempts >= 2)
        await client.close()
        await stalled.shutdown()
    }

    /// The stranding: a follower redirects to the leader at an address where nothing
    /// listens (the client port its membership implies), while the leader's real address is in
    /// the client's list. The client tries that list.
    @Test func unreachableRedirectTargetFallsBackToTheGivenAddresses() async throws {
        let dead = PeerAddress(host: "127.0.0.1", port: try await freePorts(1, group: testGroup)[0])
        let followerSeen = Seen(), leaderSeen = Seen()
        let (follower, followerAddress) = try await startServer(nodeID: 1) { request in
            followerSeen.note(request)
            return .redirect(leaderID: 3, leaderAddress: "\(dead)")
        }
        let (leader, leaderAddress) = try await startServer(nodeID: 3) { request in
            leaderSeen.note(request)
            guard case .append(let records, _, _) = request else { return .error(ClientError(code: .invalidRequest, message: "")) }
            return .appended(records.indices.map { Slot(7 + $0) })
        }
        let client = try await client([followerAddress, leaderAddress])
        #expect(try await client.append([[1]]) == [7])
        #expect(client.connectedNodeID == 3)
        #expect(followerSeen.all == leaderSeen.all)
        await client.close()
        await follower.shutdown()
        await leader.shutdown()
    }

    /// A server that answers "timeout, outcome unknown" once: the retry goes out with the same
    /// identity, and the next append's identities follow on.
    @Test func retriesReuseTheIdentityAndSequencesCountOn() async throws {
        let seen = Seen()
        let first = Mutex(true)
        let (server, address) = try await startServer(nodeID: 1) { request in
            seen.note(request)
            guard case .append(let records, _, _) = request else { return .error(ClientError(code: .invalidRequest, message: "")) }
            if first.withLock({ f in defer { f = false }; return f }) {
                return .error(ClientError(code: .timeout, message: "not chosen in time", outcome: .unknown))
            }
            return .appended(records.indices.map { Slot(1 + $0) })
        }
        let client = try await client([address])
        #expect(try await client.append([[1], [2], [3]]) == [1, 2, 3])
        #expect(try await client.append([[4]]) == [1])
        let ids = seen.all
        #expect(ids.count == 3)
        #expect(ids[0] == ids[1])
        #expect(ids[2] == ids[0].advanced(by: 3))
        // The second attempt says it is one, so the replicas look the identity up first.
        #expect(seen.retryFlags == [false, true, false])
        #expect(ids[0].client >> 63 == 0, "client ids keep the top bit clear")
        await client.close()
        await server.shutdown()
    }

    /// A replica that says "overloaded" (not appended) a few times, then refuses the request as
    /// asked: the call retries the same identity (an explicit one is sent as given), stops at the
    /// refusal without retrying it, and says not appended.
    @Test func notAppendedAnswersKeepTheOutcomeNotAppended() async throws {
        let seen = Seen()
        let (server, address) = try await startServer(nodeID: 1) { request in
            seen.note(request)
            if seen.all.count <= 3 { return .error(ClientError(code: .overloaded, message: "full", outcome: .notAppended)) }
            return .error(ClientError(code: .invalidRequest, message: "no", outcome: .notAppended))
        }
        let client = try await client([address])
        let id = ProposalID(client: 99, sequence: 1000)
        let error = try await #require(throws: PaxosClientError.self) { try await client.append([[1]], id: id) }
        #expect(error.code == .rejected)
        #expect(error.outcome == .notAppended)
        #expect(error.proposalID == id)
        #expect(error.serverError?.code == .invalidRequest)
        #expect(seen.all == Array(repeating: id, count: 4))
        await client.close()
        await server.shutdown()
    }

    /// The late answer of a timed-out request is dropped: it does not close the connection, which
    /// other calls share (before, a response to an unknown id closed it as a confused server's).
    @Test func lateAnswerAfterATimeoutKeepsTheConnection() async throws {
        let calls = Mutex(0)
        let (server, address) = try await startServer(nodeID: 1) { request in
            let n = calls.withLock { c in defer { c += 1 }; return c }
            if n == 0 { try? await Task.sleep(for: .seconds(5)) }
            return .appended([Slot(n + 1)])
        }
        let client = try await client([address], attempt: .seconds(3))
        #expect(try await client.append([[1]]) == [2])
        try await Task.sleep(for: .seconds(4))  // the late answer arrives meanwhile
        #expect(try await client.append([[2]]) == [3])
        #expect(server.counters.snapshot.connectionsEstablished == 1)
        await client.close()
        await server.shutdown()
    }

    /// A closed client fails calls at once, as not appended.
    @Test func closedClientFailsCallsAsNotAppended() async throws {
        let (server, address) = try await startServer(nodeID: 1) { _ in .appended([1]) }
        let client = try await client([address])
        await client.close()
        let error = try await #require(throws: PaxosClientError.self) { try await client.append([[1]]) }
        #expect(error.code == .closed && error.outcome == .notAppended)
        await server.shutdown()
    }
}
