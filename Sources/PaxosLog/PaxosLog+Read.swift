import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PaxosTransport

extension PaxosLog {
    /// How fresh a read must be: `.local` (what this replica has, possibly stale) or
    /// `.linearizable` (every append acknowledged before the read, by any replica).
    public typealias ReadConsistency = PaxosTransport.ReadConsistency

    /// Chosen records from `position` on (at most `maxCount` positions, and none after the one
    /// whose record brings the bytes read to `maxBytes`), as fresh as `consistency` asks.
    ///
    /// `.local` is ``read(from:maxCount:maxBytes:)``: what this replica has now, without waiting,
    /// possibly stale. `.linearizable` first takes a read barrier: on the leader its own
    /// (``readBarrier()``); on a follower the leader's, asked over the members' client ports
    /// (the follower then waits until it has applied through it, so the leader serves a round
    /// per batch of barriers, and the followers the reads). Either way the answer holds every
    /// append acknowledged before the call started. It waits at most
    /// ``Configuration/appendTimeout`` for the barrier and for this replica to catch up.
    /// - Returns: the records and the position to continue from.
    /// - Throws: ``PaxosLogError``: for a linearizable read `notLeader` (no leader known, or the
    ///   one asked is not: naming the leader if known), `timeout`, `transport` (the leader could
    ///   not be asked), `overloaded`, `closed`, `storage`; `compacted` as for a local read.
    ///   Retrying is always safe.
    public func read(from position: Position, maxCount: Int, maxBytes: Int = .max, consistency: ReadConsistency) async throws -> (entries: [Entry], next: Position) {
        let page = try await readPage(from: position, maxCount: maxCount, maxBytes: maxBytes, consistency: consistency)
        return (page.entries, page.next)
    }

    /// ``read(from:maxCount:maxBytes:consistency:)``, also saying through which position the
    /// read reflects the log (the readable watermark it read under): what the client protocol
    /// sends, so that a reader knows when it has everything.
    func readPage(from position: Position, maxCount: Int, maxBytes: Int, consistency: ReadConsistency) async throws -> (entries: [Entry], next: Position, through: Position) {
        let readable: Position
        switch consistency {
        case .local:
            readable = try await driver.status().get().chosenThrough
        case .linearizable:
            readable = try await linearizableWatermark(until: NIODeadline.now() + configuration.appendTimeout)
        }
        let (entries, next) = try Entries.read(storage: driver.replica.storage, skipping: driver.replica.duplicates, from: Swift.max(position, 1), through: readable, maxCount: maxCount, maxBytes: maxBytes)
        return (entries, next, readable)
    }

    /// A readable watermark at or above a read barrier taken after the call started.
    func linearizableWatermark(until deadline: NIODeadline) async throws -> Position {
        let barrier: Position
        do {
            // On the leader, the barrier is readable here when it returns.
            barrier = try await readBarrier()
        } catch let error as PaxosLogError where error.code == .notLeader {
            barrier = try await leaderLink.barrier(leader: error.leader)
        }
        return try await waitReadable(through: barrier, until: deadline)
    }

    /// Waits until this replica can read through `position`; returns its readable watermark.
    /// - Throws: `timeout` at `deadline`, `closed`, or the replica's storage failure.
    func waitReadable(through position: Position, until deadline: NIODeadline) async throws -> Position {
        let driver = self.driver
        let nodeID = configuration.nodeID
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Position, any Error>) in
            // Resumed once: by the replica, or by the timer (the replica's waiter then stays
            // until the watermark moves or the log closes, and answers nobody).
            let pending = NIOLockedValueBox<CheckedContinuation<Position, any Error>?>(continuation)
            let take = { @Sendable in pending.withLockedValue { c -> CheckedContinuation<Position, any Error>? in defer { c = nil }; return c } }
            driver.loop.execute {
                let timer = driver.loop.scheduleTask(deadline: deadline) {
                    take()?.resume(throwing: PaxosLogError(.timeout, "node \(nodeID) did not catch up to the read barrier at position \(position) in time"))
                }
                driver.replica.waitReadable(after: position - 1) { readable in
                    timer.cancel()
                    guard let c = take() else { return }
                    if let readable { return c.resume(returning: readable) }
                    c.resume(throwing: driver.replica.failure ?? PaxosLogError(.closed, "the log was closed"))
                }
            }
        }
    }
}

/// Asks the leader for read barriers over the client ports (a follower's linearizable reads):
/// one ``PaxosClient`` to the members' client addresses, the leader's first, which follows
/// redirects as leadership moves. Barrier requests are answered only by a leader, never
/// forwarded again, so no request goes round in circles.
final class LeaderLink: Sendable {
    private let configuration: PaxosLog.Configuration
    private let state = NIOLockedValueBox(State())

    private struct State {
        var client: PaxosClient?
        var closed = false
    }

    init(configuration: PaxosLog.Configuration) {
        self.configuration = configuration
    }

    /// The leader's barrier position.
    /// - Parameter leader: whom this replica believes leads (asked first), if anyone.
    func barrier(leader: NodeID?) async throws -> Slot {
        let client = try await client(preferring: leader)
        do {
            return try await client.readBarrier()
        } catch {
            switch error.code {
            case .timeout:
                throw PaxosLogError(.timeout, "no read barrier from the leader in time: \(error)", leader: leader)
            case .closed:
                throw PaxosLogError(.closed, "the log was closed")
            default:
                throw PaxosLogError(.transport, "cannot get a read barrier from the leader: \(error)", leader: leader)
            }
        }
    }

    private func client(preferring leader: NodeID?) async throws -> PaxosClient {
        let existing = state.withLockedValue { s -> (PaxosClient?, Bool) in (s.client, s.closed) }
        if existing.1 { throw PaxosLogError(.closed, "the log was closed") }
        if let client = existing.0 { return client }
        let others = configuration.members.filter { $0.id != configuration.nodeID }
        let ordered = others.filter { $0.id == leader } + others.filter { $0.id != leader }
        var c = PaxosClientConfiguration(addresses: ordered.map(\.clientAddress), clusterName: configuration.clusterName, secret: configuration.secret)
        c.tls = configuration.tls
        // One client serves every later barrier too: its calls get the log's append timeout.
        c.requestTimeout = configuration.appendTimeout
        c.attemptTimeout = Swift.min(c.attemptTimeout, c.requestTimeout)
        let fresh: PaxosClient
        do {
            fresh = try await PaxosClient.connect(configuration: c, group: MultiThreadedEventLoopGroup.singleton, logger: configuration.logger)
        } catch {
            throw PaxosLogError(.transport, "cannot reach the leader's client port for a read barrier: \(error)", leader: leader)
        }
        let (winner, closed) = state.withLockedValue { s -> (PaxosClient, Bool) in
            if let other = s.client { return (other, s.closed) }
            s.client = fresh
            return (fresh, s.closed)
        }
        if winner !== fresh || closed { await fresh.close() }
        if closed { throw PaxosLogError(.closed, "the log was closed") }
        return winner
    }

    func close() async {
        let client = state.withLockedValue { s -> PaxosClient? in
            s.closed = true
            defer { s.client = nil }
            return s.client
        }
        await client?.close()
    }
}
