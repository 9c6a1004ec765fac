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
    /// The runner captures the snapshot when the policy fires (a copy-on-write copy, or the
    /// machine's own capture) and writes it and compacts through its position once this many
    /// more entries are applied (0: at once); for an ``OnDiskStateMachine``, it compacts through
    /// the durable position less this many. One compaction at a time.
    public var retainedEntries: Int
    /// How long a captured snapshot waits for its ``retainedEntries`` while no entry at all is
    /// applied: after this much quiet it is written with fewer above it. Without it, the
    /// capture taken when a long compaction ends waits for entries that may never come once the
    /// load stops, and the latest snapshot stays behind by however many entries were applied
    /// during that compaction (tens of thousands under load). A quiet log has no follower
    /// catching up from those entries, and one that needs them gets the snapshot instead. nil:
    /// wait for the retained entries however long. Default 1 s.
    public var retainedWait: Duration?

    public init(everyEntries: Int? = nil, everyBytes: Int? = nil, retainedEntries: Int = 128, retainedWait: Duration? = .seconds(1)) {
        self.everyEntries = everyEntries
        self.everyBytes = everyBytes
        self.retainedEntries = Swift.max(0, retainedEntries)
        self.retainedWait = retainedWait.map { Swift.max(.zero, $0) }
    }

    public static let never = SnapshotPolicy()
}

/// Applies a log's chosen entries to a ``ReplicatedStateMachine`` value and compacts the log by a
/// ``SnapshotPolicy``: ``LogApplier`` over a ``ValueStateMachine``, for state that is a value.
///
/// On start it restores the latest snapshot and applies the entries after it; when this replica
/// installs a newer snapshot from a peer, it restores that one and continues after it.
/// Snapshots are written in the background while applying goes on.
public final class StateMachineRunner<Machine: ReplicatedStateMachine>: Sendable {
    public let log: PaxosLog
    public let policy: SnapshotPolicy
    /// The machine as the applier sees it.
    public let machine = ValueStateMachine<Machine>()
    public let applier: LogApplier<ValueStateMachine<Machine>>

    public init(log: PaxosLog, policy: SnapshotPolicy) {
        self.log = log
        self.policy = policy
        applier = LogApplier(log: log, machine: machine, policy: policy)
    }

    /// The state and the position it reflects (every entry through it applied).
    public var state: (machine: Machine, applied: PaxosLog.Position) { machine.state }

    /// Compactions this runner made.
    public var compactions: Int { applier.compactions }

    /// Runs until the log is closed.
    /// - Throws: when the snapshot cannot be read or restored, or storage fails.
    public func run() async throws {
        try await applier.run()
    }
}
