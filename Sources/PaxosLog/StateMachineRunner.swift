import Logging
import NIOConcurrencyHelpers

/// When ``StateMachineRunner`` compacts: a snapshot is taken after this many applied entries or
/// bytes since the last one, whichever comes first (both nil: never), and the log is compacted
/// through it once ``retainedEntries`` more entries are applied.
public struct SnapshotPolicy: Hashable, Sendable {
    public var everyEntries: Int?
    public var everyBytes: Int?
    /// Chosen entries the log keeps above the snapshot position, at least, when the runner
    /// compacts: a follower fewer than this many entries behind catches up from the log
    /// instead of receiving the whole snapshot. Default 128.
    ///
    /// The runner takes the snapshot when the policy fires, holds its bytes in memory, and
    /// compacts through its position once this many more entries are applied (0: at once).
    /// Meanwhile the policy does not fire again, so at most one snapshot is held.
    public var retainedEntries: Int

    public init(everyEntries: Int? = nil, everyBytes: Int? = nil, retainedEntries: Int = 128) {
        self.everyEntries = everyEntries
        self.everyBytes = everyBytes
        self.retainedEntries = Swift.max(0, retainedEntries)
    }

    public static let never = SnapshotPolicy()
}

/// Applies a log's chosen entries to a ``ReplicatedStateMachine`` and compacts the log by a
/// ``SnapshotPolicy``: the snapshot provider the library calls on the application's behalf.
///
/// On start it restores the latest snapshot and applies the entries after it. When this replica
/// installs a newer snapshot from a peer (it lagged behind a compacted leader), reading the log
/// fails with `compacted`; the runner then restores that snapshot and continues after it.
public final class StateMachineRunner<Machine: ReplicatedStateMachine>: Sendable {
    public let log: PaxosLog
    public let policy: SnapshotPolicy
    private let current = NIOLockedValueBox<(machine: Machine, applied: PaxosLog.Position, compactions: Int)>((Machine(), 0, 0))

    public init(log: PaxosLog, policy: SnapshotPolicy) {
        self.log = log
        self.policy = policy
    }

    /// The state and the position it reflects (every entry through it applied).
    public var state: (machine: Machine, applied: PaxosLog.Position) {
        current.withLockedValue { ($0.machine, $0.applied) }
    }

    /// Compactions this runner made.
    public var compactions: Int { current.withLockedValue { $0.compactions } }

    /// Runs until the log is closed.
    /// - Throws: when the snapshot cannot be read or restored, or storage fails.
    public func run() async throws {
        while true {
            let restored = try restore()
            var applied = restored.1
            current.withLockedValue { $0.machine = restored.0; $0.applied = applied }
            var entriesSince = 0, bytesSince = 0
            // A snapshot taken, waiting for `retainedEntries` more entries before it compacts.
            var pending: (position: PaxosLog.Position, bytes: [UInt8])? = nil
            do {
                for try await entry in log.entries(from: applied + 1) {
                    applied = entry.position
                    // Applied inside the box, where the state is uniquely referenced: a copy kept
                    // outside would make every `apply` copy the whole state (quadratic).
                    current.withLockedValue { $0.machine.apply(entry.bytes); $0.applied = entry.position }
                    entriesSince += 1
                    bytesSince += entry.bytes.count
                    if pending == nil, due(entries: entriesSince, bytes: bytesSince) {
                        entriesSince = 0
                        bytesSince = 0
                        pending = (applied, current.withLockedValue { $0.machine.snapshot() })
                    }
                    if let p = pending, applied >= p.position + UInt64(policy.retainedEntries) {
                        pending = nil
                        do {
                            try await log.compact(through: p.position, snapshot: p.bytes)
                            current.withLockedValue { $0.compactions += 1 }
                        } catch let error as PaxosLogError where error.code == .closed {
                            return
                        } catch {
                            // Compaction is an optimisation: a newer snapshot installed meanwhile
                            // (the next read says so) or a failed deletion must not stop the
                            // state machine. A failed store fails the next read instead.
                            log.configuration.logger.warning("compaction skipped: \(error)")
                        }
                    }
                }
                return
            } catch let error as PaxosLogError where error.code == .closed {
                return
            } catch let error as PaxosLogError where error.code == .compacted {
                log.configuration.logger.info("log compacted under the state machine; restoring the latest snapshot")
                continue
            }
        }
    }

    private func due(entries: Int, bytes: Int) -> Bool {
        if let n = policy.everyEntries, entries >= n { return true }
        if let b = policy.everyBytes, bytes >= b { return true }
        return false
    }

    private func restore() throws -> (Machine, PaxosLog.Position) {
        guard let snapshot = try log.latestSnapshot() else { return (Machine(), 0) }
        return (try Machine(snapshot: try snapshot.readAll()), snapshot.position)
    }
}
