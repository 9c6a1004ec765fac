import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOPosix
import PaxosTransport

/// Forwards appends from a non-leader to the leader's client port (``PaxosLog/NonLeaderAppends/forward``).
final class Forwarder: Sendable {
    private let configuration: PaxosLog.Configuration
    private let clients = NIOLockedValueBox<[NodeID: PaxosClient]>([:])

    init(configuration: PaxosLog.Configuration) {
        self.configuration = configuration
    }

    /// Appends at the leader's client port.
    /// - Parameters:
    ///   - id: the identities the records were appended under (a retried identity then answers
    ///     the first attempt's positions); nil: the forwarding client's own.
    ///   - isRetry: whether the caller retries them (only a retry is looked up at the leader).
    /// - Throws: ``PaxosLogError`` `.transport` with the outcome the client reported.
    func append(_ records: [[UInt8]], id: ProposalID? = nil, isRetry: Bool = false, to leader: NodeID) async throws -> [Slot] {
        guard let member = configuration.members.first(where: { $0.id == leader }) else {
            throw PaxosLogError(.notLeader, "leader \(leader) is not a member", leader: leader)
        }
        let client: PaxosClient
        if let existing = clients.withLockedValue({ $0[leader] }) {
            client = existing
        } else {
            var c = PaxosClientConfiguration(addresses: [member.clientAddress], clusterName: configuration.clusterName, secret: configuration.secret)
            c.tls = configuration.tls
            c.maxRedirects = 0
            // The follower's caller waits for this: within the time an append has.
            c.requestTimeout = configuration.appendTimeout
            c.attemptTimeout = configuration.appendTimeout
            do {
                client = try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: configuration.logger)
            } catch {
                throw PaxosLogError(.transport, "cannot forward to leader \(leader) at \(member.clientAddress): \(error)", leader: leader)
            }
            clients.withLockedValue { $0[leader] = client }
        }
        do {
            if let id { return try await client.append(records, id: id, isRetry: isRetry) }
            return try await client.append(records)
        } catch {
            clients.withLockedValue { _ = $0.removeValue(forKey: leader) }
            await client.close()
            throw PaxosLogError(.transport, "forwarding to leader \(leader) failed: \(error)", leader: leader,
                                outcome: error.outcome == .notAppended ? .notAppended : .unknown)
        }
    }

    func close() async {
        let all = clients.withLockedValue { c -> [PaxosClient] in
            defer { c = [:] }
            return Array(c.values)
        }
        for c in all { await c.close() }
    }
}
