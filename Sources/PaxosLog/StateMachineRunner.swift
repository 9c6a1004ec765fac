import Logging
import NIOConcurrencyHelpers

/// When ``StateMachineRunner`` compacts: after this many applied entries or bytes since the last
/// snapshot, whichever comes first. Both nil: never.
public struct SnapshotPolicy: Hashable, Sendable {
    public var everyEntries: Int?
    public var everyBytes: Int?

    public init(everyEntries: Int? = nil, everyBytes: Int? = nil) {
        self.everyEntries = everyEntries
        self.everyBytes = everyBytes
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
            var (machine, applied) = try restore()
            current.withLockedValue { $0.machine = machine; $0.applied = applied }
            var entriesSince = 0, bytesSince = 0
            do {
                for try await entry in log.entries(from: applied + 1) {
                    machine.apply(entry.bytes)
                    applied = entry.position
                    entriesSince += 1
                    bytesSince += entry.bytes.count
                    current.withLockedValue { $0.machine = machine; $0.applied = applied }
                    if due(entries: entriesSince, bytes: bytesSince) {
                        entriesSince = 0
                        bytesSince = 0
                        do {
                            try await log.compact(through: applied, snapshot: machine.snapshot())
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
