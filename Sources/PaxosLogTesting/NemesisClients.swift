import Logging
import MultiPaxos
import NIOPosix
import PaxosTransport

/// Closed-loop clients for a nemesis run: appenders append unique records one at a time through
/// the client ports, readers read chosen entries from random replicas, and every operation goes
/// into a ``NemesisHistory`` with its outcome. Nothing is retried (a retry could duplicate), and
/// every operation is bounded by ``operationTimeout`` (the client is closed under it, which
/// fails it as "unknown"), so ``stop()`` ends the loops within that time even if a replica is
/// frozen with SIGSTOP.
public final class NemesisClients: Sendable {
    public let history: NemesisHistory
    public let addresses: [PeerAddress]
    public let clusterName: String
    /// Seconds one operation may take before it is abandoned as "unknown". Default 4.
    public let operationTimeout: Double
    private let stopped = LockedValue(false)
    private let logger = Logger(label: "nemesis.client")

    public init(cluster: LocalCluster, history: NemesisHistory, operationTimeout: Double = 4) {
        precondition(operationTimeout > 0)
        self.history = history
        self.addresses = cluster.clientAddresses
        self.clusterName = cluster.clusterName
        self.operationTimeout = operationTimeout
    }

    /// Runs `appenders` append loops and `readers` read loops until ``stop()``.
    /// - Parameter seed: the readers' choice of replica and start slot.
    public func run(appenders: Int, readers: Int, seed: UInt64) async {
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<appenders { group.addTask { await self.appendLoop(i) } }
            for i in 0..<readers { group.addTask { await self.readLoop(appenders + i, seed: seed &+ UInt64(i)) } }
        }
    }

    public func stop() { stopped.withLock { $0 = true } }
    private var isStopped: Bool { stopped.withLock { $0 } }

    /// One append through a fresh client (recorded as client -1), to see whether the cluster
    /// takes appends. - Returns: its slot, or nil if it was not acknowledged.
    public func probe() async -> Slot? {
        guard let client = await connect(addresses, first: 0) else { return nil }
        defer { Task { await client.close() } }
        return await append(with: client, as: -1)
    }

    private func appendLoop(_ index: Int) async {
        var client: PaxosClient?
        var attempt = 0
        while !isStopped {
            if client == nil {
                attempt += 1
                client = await connect(addresses, first: index + attempt)
                if client == nil { try? await Task.sleep(nanoseconds: 50_000_000); continue }
            }
            if await append(with: client!, as: index) == nil {
                await client!.close()
                client = nil
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
        }
        await client?.close()
    }

    /// Appends one fresh value and records the outcome. - Returns: the slot if acknowledged.
    private func append(with client: PaxosClient, as index: Int) async -> Slot? {
        let (id, value) = history.invokeAppend(client: index)
        do {
            let slots = try await bounded(client) { try await client.append([value]) }
            guard slots.count == 1 else {
                history.complete(id, .unknown("answered \(slots.count) slots for one record"))
                return nil
            }
            history.complete(id, .appended(slots[0]))
            return slots[0]
        } catch {
            history.complete(id, Self.outcome(of: error))
            return nil
        }
    }

    private func readLoop(_ index: Int, seed: UInt64) async {
        var rng = SplitMix64(seed: seed)
        while !isStopped {
            let address = addresses[rng.below(addresses.count)]
            guard let client = await connect([address], first: 0) else {
                try? await Task.sleep(nanoseconds: 50_000_000)
                continue
            }
            let top = history.highestAcknowledgedSlot
            let from = Slot(1 + rng.below(Int(top) + 1))
            let maxCount: UInt32 = 32
            // Half the reads are linearizable: the checker holds them to every acknowledgement
            // made before they began.
            let linearizable = rng.chance(0.5)
            let id = history.invokeRead(client: index, from: from, linearizable: linearizable)
            do {
                let result = try await bounded(client) {
                    try await client.read(from: from, maxCount: maxCount, consistency: linearizable ? .linearizable : .local)
                }
                var entries: [Slot: [UInt8]] = [:]
                for e in result.entries { entries[e.slot] = e.bytes }
                // Cut short when it stopped before the position it reflects (maxCount counts
                // positions, no-ops included).
                history.complete(id, .read(entries: entries, nextSlot: result.nextSlot, truncated: result.nextSlot <= result.readThrough))
            } catch {
                history.complete(id, .readFailed("\(error)"))
            }
            await client.close()
            try? await Task.sleep(nanoseconds: 30_000_000)
        }
    }

    /// Connects to the first of `addresses` (rotated to start at `first`) that answers the handshake.
    private func connect(_ addresses: [PeerAddress], first: Int) async -> PaxosClient? {
        let k = first % addresses.count
        var c = PaxosClientConfiguration(addresses: Array(addresses[k...] + addresses[..<k]), clusterName: clusterName)
        c.connectTimeout = .milliseconds(300)
        c.handshakeTimeout = .milliseconds(500)
        // The client gives up (and says what it did) before the harness's own bound.
        c.requestTimeout = .milliseconds(Int64(operationTimeout * 1000) - 500)
        c.attemptTimeout = .seconds(1)
        return try? await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
    }

    /// Runs `body`, giving up after ``operationTimeout``: the caller gets ``DeadlineExceeded`` at
    /// once and `client` is closed, so a call stuck on a frozen replica never holds the loop.
    private func bounded<T: Sendable>(_ client: PaxosClient, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withDeadline(operationTimeout, onTimeout: { await client.close() }, body)
    }

    /// What a failed append means for the log. Only answers that say the record was never
    /// proposed are "not appended"; everything else may have reached a leader.
    public static func outcome(of error: any Error) -> NemesisOperation.Outcome {
        // The client's own verdict, after its retries with the same identity.
        if let e = error as? PaxosClientError {
            return e.outcome == .notAppended ? .notAppended("\(e)") : .unknown("\(e)")
        }
        guard let e = error as? TransportError else { return .unknown("\(error)") }
        switch e.code {
        case .connectFailed, .refused, .handshakeTimeout, .redirect:
            // Never sent, or answered with a redirect (and the next hop never took it).
            return .notAppended("\(e)")
        case .serverError:
            switch e.serverError?.code {
            case .overloaded?, .notLeader?, .invalidRequest?, .superseded?: return .notAppended("\(e)")
            default: return .unknown("\(e)")
            }
        default:
            return .unknown("\(e)")
        }
    }
}

