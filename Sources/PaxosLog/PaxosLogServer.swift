import Logging
import MultiPaxos
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
        let service = ClientService(log: log)
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

    /// Takes appends without a task: the connection's loop hands them to the replica's loop, and
    /// the replica answers from there (``PaxosLog/append(contentsOf:completion:)``). Reads and
    /// status requests are declined: they go to ``handle(_:)``.
    func handleDirectly(_ request: ClientRequest, respond: @escaping @Sendable (ClientResponse) -> Void) -> Bool {
        guard case .append(let records) = request else { return false }
        append(records, respond: respond)
        return true
    }

    private func append(_ records: [[UInt8]], respond: @escaping @Sendable (ClientResponse) -> Void) {
        guard !records.isEmpty else { return respond(.error(ClientError(code: .invalidRequest, message: "empty append"))) }
        log.append(contentsOf: records) { [self] result in
            switch result {
            case .success(let slots): respond(.appended(slots))
            case .failure(let error): respond(response(for: error))
            }
        }
    }

    func handle(_ request: ClientRequest) async -> ClientResponse {
        switch request {
        case .append(let records):
            return await withUnsafeContinuation { continuation in
                append(records) { continuation.resume(returning: $0) }
            }
        case .read(let from, let maxCount):
            guard maxCount > 0 else { return .error(ClientError(code: .invalidRequest, message: "read of zero entries")) }
            do {
                // The answer must fit one frame: 4 MiB of payload, plus the record that crosses it
                // (at most 8 MiB) and 65,536 entries' headers, stays under the 16 MiB default.
                let (entries, next) = try await log.read(from: from, maxCount: Int(Swift.min(maxCount, 65_536)), maxBytes: 4 << 20)
                return .entries(ReadResult(entries: entries.map { ClientEntry(slot: $0.position, bytes: $0.bytes) }, nextSlot: next))
            } catch let error as PaxosLogError {
                return response(for: error)
            } catch {
                return .error(ClientError(code: .internal, message: "\(error)"))
            }
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

    private func response(for error: PaxosLogError) -> ClientResponse {
        switch error.code {
        case .notLeader:
            let address = error.leader.flatMap { id in log.configuration.members.first { $0.id == id } }.map { "\($0.clientAddress)" }
            return .redirect(leaderID: error.leader, leaderAddress: address)
        case .overloaded: return .error(ClientError(code: .overloaded, message: error.message))
        case .timeout: return .error(ClientError(code: .timeout, message: error.message))
        case .superseded: return .error(ClientError(code: .superseded, message: error.message))
        case .closed: return .error(ClientError(code: .shuttingDown, message: error.message))
        case .compacted: return .error(ClientError(code: .compacted, message: error.message))
        case .invalidArgument: return .error(ClientError(code: .invalidRequest, message: error.message))
        default: return .error(ClientError(code: .internal, message: error.description))
        }
    }
}
