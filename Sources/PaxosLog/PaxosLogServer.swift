import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PaxosTransport

/// A replica that also serves clients (`paxlog append`, `read`, `status`) on its client port:
/// what `paxlog serve` runs.
public final class PaxosLogServer: Sendable {
    public let log: PaxosLog
    private let server: ClientServer
    /// Where clients connect (the bound address, useful with port 0).
    public let clientAddress: SocketAddress

    private init(log: PaxosLog, server: ClientServer, clientAddress: SocketAddress) {
        self.log = log
        self.server = server
        self.clientAddress = clientAddress
    }

    /// Opens the log and starts listening for clients on this member's client address.
    public static func start(_ configuration: PaxosLog.Configuration) async throws -> PaxosLogServer {
        let log = try await PaxosLog.open(configuration)
        guard let me = configuration.members.first(where: { $0.id == configuration.nodeID }) else {
            throw PaxosLogError(.invalidConfiguration, "node id \(configuration.nodeID) is not a member")
        }
        var sc = ClientServerConfiguration(nodeID: configuration.nodeID, clusterName: configuration.clusterName, listenAddress: me.clientAddress, secret: configuration.secret)
        sc.maxInFlightPerConnection = 4096
        sc.tls = configuration.tls
        let service = ClientService(log: log, listening: NIOLockedValueBox(nil))
        // Client connections run on the replica's own loop, like its peer connections: an append
        // then reaches the core, and its answer the socket, without a hop between threads (a
        // task, a wake-up and a context switch each way).
        let server = ClientServer(configuration: sc, group: log.driver.loop, logger: configuration.logger, direct: { request, respond in
            service.handleDirectly(request, respond: respond)
        }) { request in
            await service.handle(request)
        }
        do {
            let address = try await server.start()
            service.listening.withLockedValue { $0 = address }
            log.metrics.clientCounters.withLockedValue { $0 = server.counters }
            return PaxosLogServer(log: log, server: server, clientAddress: address)
        } catch {
            try? await log.close()
            throw PaxosLogError(.transport, "cannot listen for clients on \(me.clientAddress): \(error)")
        }
    }

    /// Stops taking clients, then closes the log (finishing in-flight syncs).
    public func shutdown() async throws {
        await server.shutdown()
        try await log.close()
    }
}

/// Answers client requests with a ``PaxosLog``.
struct ClientService: Sendable {
    let log: PaxosLog
    /// The address the client port is bound to, once it is: what status reports.
    let listening: NIOLockedValueBox<SocketAddress?>

    /// Takes appends without a task: the connection's loop hands them to the replica's loop, and
    /// the replica answers from there (``PaxosLog/append(contentsOf:id:completion:)``). Reads,
    /// barriers and status requests are declined: they go to ``handle(_:)``.
    func handleDirectly(_ request: ClientRequest, respond: @escaping @Sendable (ClientResponse) -> Void) -> Bool {
        guard case .append(let records, let id, let isRetry) = request else { return false }
        append(records, id: id, isRetry: isRetry, respond: respond)
        return true
    }

    /// Appends under the client's identities, so that a client retrying an unknown outcome gets
    /// the first attempt's positions instead of a second copy.
    private func append(_ records: [[UInt8]], id: ProposalID, isRetry: Bool, respond: @escaping @Sendable (ClientResponse) -> Void) {
        guard !records.isEmpty else { return respond(.error(ClientError(code: .invalidRequest, message: "empty append", outcome: .notAppended))) }
        log.append(contentsOf: records, id: id, isRetry: isRetry) { [self] result in
            switch result {
            case .success(let slots): respond(.appended(slots))
            case .failure(let error): respond(response(for: error))
            }
        }
    }

    func handle(_ request: ClientRequest) async -> ClientResponse {
        switch request {
        case .append(let records, let id, let isRetry):
            return await withUnsafeContinuation { continuation in
                append(records, id: id, isRetry: isRetry) { continuation.resume(returning: $0) }
            }
        case .read(let from, let maxCount, let consistency):
            guard maxCount > 0 else { return .error(ClientError(code: .invalidRequest, message: "read of zero entries")) }
            do {
                // The answer must fit one frame: 4 MiB of payload, plus the record that crosses it
                // (at most 8 MiB) and 65,536 entries' headers, stays under the 16 MiB default.
                let page = try await log.readPage(from: from, maxCount: Int(Swift.min(maxCount, 65_536)), maxBytes: 4 << 20, consistency: consistency)
                return .entries(ReadResult(entries: page.entries.map { ClientEntry(slot: $0.position, bytes: $0.bytes) }, nextSlot: page.next, readThrough: page.through))
            } catch let error as PaxosLogError {
                return response(for: error, isAppend: false)
            } catch {
                return .error(ClientError(code: .internal, message: "\(error)"))
            }
        case .barrier:
            // Only the leader answers: a follower redirects rather than asking the leader on the
            // client's behalf, so a barrier request is never forwarded twice.
            do {
                return .barrier(try await log.readBarrier())
            } catch let error as PaxosLogError {
                return response(for: error, isAppend: false)
            } catch {
                return .error(ClientError(code: .internal, message: "\(error)"))
            }
        case .members:
            do {
                let members = try await log.members()
                // The positions are the leader's to tell: a follower that knows it sends the
                // client there (and, knowing none, answers its own list, without them).
                if let leader = members.first(where: { $0.role == .leader }), !leader.isSelf {
                    return .redirect(leaderID: leader.id, leaderAddress: "\(leader.clientAddress)")
                }
                return .members(members)
            } catch let error as PaxosLogError {
                return response(for: error, isAppend: false)
            } catch {
                return .error(ClientError(code: .internal, message: "\(error)"))
            }
        case .transferLeadership(let target):
            return await transferLeadership(to: target)
        case .status:
            do {
                let s = try await log.status()
                var details = [ClientStatus.Detail("is_leader", "\(s.isLeader)")]
                if let failure = s.failure { details.append(.init("failure", failure)) }
                let role = s.isLeader ? "leader" : (s.leader == nil ? "electing" : "follower")
                let directory = log.configuration.dataDirectory
                let size = (try? await NIOThreadPool.singleton.runIfActive { dataDirectoryBytes(directory) }) ?? 0
                details += [.init("role", role), .init("version", PaxosLog.version), .init("data_directory", directory),
                            .init("data_directory_bytes", "\(size)")]
                if let address = listening.withLockedValue({ $0 }) { details.append(.init("client_address", "\(address)")) }
                if let snapshot = log.driver.store.state.snapshotSlot { details.append(.init("snapshot_slot", "\(snapshot)")) }
                let st = log.storageStatistics
                details += [
                    .init("storage_appends", "\(st.appends)"), .init("storage_group_commits", "\(st.groupCommits)"),
                    .init("storage_fsyncs", "\(st.dataSyncs)"), .init("storage_bytes_written", "\(st.bytesWritten)"),
                    .init("storage_raw_payload_bytes", "\(st.rawPayloadBytes)"),
                    .init("storage_stored_payload_bytes", "\(st.storedPayloadBytes)"),
                ]
                return .status(ClientStatus(nodeID: s.nodeID, leaderID: s.leader, ballot: s.ballot, chosenThrough: s.chosenThrough, lastAccepted: s.lastAccepted, details: details))
            } catch {
                return .error(ClientError(code: .shuttingDown, message: "\(error)"))
            }
        }
    }

    /// Asks the log to hand leadership to `target`: a follower's `notLeader` becomes a redirect to
    /// the leader, a non-member's `invalidArgument` an `invalidRequest`, like any request's.
    private func transferLeadership(to target: NodeID) async -> ClientResponse {
        do {
            try await log.transferLeadership(to: target)
            return .leadershipTransferred(leaderID: target)
        } catch let error as PaxosLogError {
            return response(for: error, isAppend: false)
        } catch {
            return .error(ClientError(code: .internal, message: "\(error)"))
        }
    }


    /// The client protocol's answer for a failure. An append's error carries its outcome (an
    /// error that does not say is sent as unknown: the client must not take it for not appended).
    private func response(for error: PaxosLogError, isAppend: Bool = true) -> ClientResponse {
        let outcome: ClientError.Outcome? = isAppend ? (error.outcome == .notAppended ? .notAppended : .unknown) : nil
        func failure(_ code: ClientErrorCode, _ message: String) -> ClientResponse {
            .error(ClientError(code: code, message: message, outcome: outcome))
        }
        switch error.code {
        case .notLeader where outcome != .unknown:
            // The redirect names the leader's client address as the membership gives it; the
            // replicas refuse to start when their own client address disagrees with it (`paxlog
            // serve`), and a client that cannot reach it tries its other addresses.
            let address = error.leader.flatMap { id in log.configuration.members.first { $0.id == id } }.map { "\($0.clientAddress)" }
            return .redirect(leaderID: error.leader, leaderAddress: address)
        case .notLeader: return failure(.notLeader, error.message)
        case .overloaded: return failure(.overloaded, error.message)
        case .timeout: return failure(.timeout, error.message)
        case .superseded: return failure(.superseded, error.message)
        case .sessionExpired: return failure(.sessionExpired, error.message)
        case .closed: return failure(.shuttingDown, error.message)
        case .compacted: return failure(.compacted, error.message)
        case .invalidArgument: return failure(.invalidRequest, error.message)
        default: return failure(.internal, error.description)
        }
    }
}
