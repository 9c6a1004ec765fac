/// A state machine a database implements to have ``LogApplier`` apply the log to it.
///
/// The applier calls ``open()`` once, then ``apply(_:)`` with batches of chosen entries in log
/// order, and ``restore(from:)`` when this replica installed a snapshot from a peer (it lagged
/// behind a leader that had compacted what it needed). Snapshots are streamed both ways: the
/// machine writes to a ``SnapshotOutput`` and reads from a ``SnapshotInput``, so no side needs
/// the whole state in one array.
///
/// Conform with an actor or a class that synchronises itself: ``prepareSnapshot()`` (and, for an
/// ``OnDiskStateMachine``, ``OnDiskStateMachine/sync()``) may run on another task while
/// ``apply(_:)`` runs.
///
/// For a machine whose state is a value, ``ReplicatedStateMachine`` with ``StateMachineRunner``
/// is simpler; this protocol is for state that is large, lives in a database, or must be saved
/// while applying goes on.
public protocol StateMachine: AnyObject, Sendable {
    /// Opens the state and returns the position it already reflects: every entry through it is
    /// applied (0: the empty state). Called once, before anything else.
    ///
    /// A machine kept only in memory returns 0; the applier then restores the log's latest
    /// snapshot into it and applies the entries after it. A machine that persists its state
    /// returns the position it stored with it, and replay starts right after.
    /// - Throws: when the state cannot be opened; the applier stops with the error.
    func open() async throws -> PaxosLog.Position

    /// Applies chosen entries, in order, every one after the last position applied (no-ops are
    /// skipped, so positions may jump). Must be deterministic: every replica applies the same
    /// entries in the same order and must reach the same state. Bad input is the application's
    /// to handle (ignore it, record an error in the state): a throw stops the applier.
    func apply(_ entries: [PaxosLog.Entry]) async throws

    /// Captures the state as it is now, cheaply (a copy-on-write copy, a database read
    /// transaction), for ``StateSnapshot/save(to:)`` to write while applying goes on.
    func prepareSnapshot() async throws -> any StateSnapshot

    /// Replaces the whole state with the one a snapshot holds; afterwards the state reflects
    /// every entry through `input.position`, and the applier goes on with the entries after it.
    ///
    /// Read `input` to its end before committing anything: the end is where its checksum is
    /// checked, and a corrupt snapshot throws there.
    func restore(from input: SnapshotInput) async throws
}

/// A state captured by ``StateMachine/prepareSnapshot()``, to be written out.
public protocol StateSnapshot: Sendable {
    /// The captured state reflects every entry through this position.
    var position: PaxosLog.Position { get }
    /// Writes the captured state to `output`, in as many chunks as suits it.
    /// `StateMachine.restore(from:)` of what it wrote must give back an equal state.
    func save(to output: SnapshotOutput) async throws
}

/// A state machine whose own storage is durable, like dragonboat's `IOnDiskStateMachine`: a
/// database that applies entries to its own files and records the position applied in the same
/// transaction.
///
/// The log then needs no copy of the state to compact: the applier asks ``sync()`` how far the
/// application's storage is durable and compacts the log through that position, recording only a
/// marker (a snapshot file of no data that says the application holds the state). A lagging
/// replica that needs a snapshot gets one streamed from the application's storage
/// (``StateMachine/prepareSnapshot()`` and ``StateSnapshot/save(to:)``), written to a temporary
/// file only while a transfer needs it.
///
/// What it costs per append: nothing on the append path; the applier calls ``sync()`` once per
/// ``SnapshotPolicy`` interval, and compaction writes one 40-byte file and one log record.
///
/// Must hold: the position ``StateMachine/open()`` returns after a crash is at least the last one
/// ``sync()`` returned. The log has deleted the entries through that position; a machine that
/// comes back behind it (its files lost or restored from an old backup) cannot be replayed, and
/// the applier stops with an error naming both positions.
public protocol OnDiskStateMachine: StateMachine {
    /// Makes every applied entry durable in the application's storage (or reports how far it
    /// already is) and returns that position. May run while ``StateMachine/apply(_:)`` runs.
    func sync() async throws -> PaxosLog.Position
}
