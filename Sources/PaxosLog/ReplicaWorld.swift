import MultiPaxos
import NIOCore
import SegmentLog

// The seams between a ``Replica`` and the world around it. Production plugs in SwiftNIO and
// `SegmentStore` (ReplicaDriver.swift, SegmentStore+ReplicaStorage.swift); PaxosLogTesting plugs
// in a simulated network, a simulated storage with a fault model, and simulated time. Every
// decision about what is sent, persisted, acknowledged or readable is the replica's, in both.

/// Where a replica runs: its one thread of control, and its clock.
///
/// Every ``Replica`` method is called on this executor, and every completion a ``ReplicaStorage``
/// reports is delivered on it, so the replica needs no locks.
package protocol ReplicaExecutor: AnyObject, Sendable {
    /// The current time (the simulator's is simulated).
    var now: NIODeadline { get }
    /// Runs `body` on the executor after the event being handled (never inside it).
    func execute(_ body: @escaping @Sendable () -> Void)
    /// Whether the caller runs on the executor (the replica asserts its confinement with it).
    var inExecutor: Bool { get }
}

/// Where a replica's messages go. Delivery is best effort: messages may be lost, duplicated or
/// reordered, and the protocol copes.
package protocol ReplicaNetwork: AnyObject, Sendable {
    func send(_ envelope: Envelope)
}

/// What a replica persists and reads back. A log of records that become durable as a prefix,
/// plus one snapshot file.
///
/// Completions run on the replica's ``ReplicaExecutor``. A failed append is fatal for the store
/// (an `fdatasync` failure may have dropped pages): the replica stops voting and never retries.
package protocol ReplicaStorage: AnyObject, Sendable {
    /// Appends `records` after every record appended before; `completion` runs once they (and
    /// all before them) are durable, or with the error that failed the store.
    func append(_ records: [LogRecord], completion: @escaping @Sendable (Result<Void, SegmentLogError>) -> Void)
    /// Reads the stored entries of slots `from ... through` in slot order, stopping after the
    /// entry whose payload brings the total to `maxBytes`. Blocking: readers call it off the
    /// executor; the replica reads through ``readChosen(from:through:maxBytes:completion:)``.
    /// - Throws: `SegmentLogError` (`.compacted` below the snapshot, `.corruption`, `.io`, `.closed`).
    func entries(from: Slot, through: Slot, maxBytes: Int) throws -> [LogEntry]
    /// ``entries(from:through:maxBytes:)`` done where blocking is allowed; `completion` on the executor.
    func readChosen(from: Slot, through: Slot, maxBytes: Int, completion: @escaping @Sendable (Result<[LogEntry], any Error>) -> Void)
    /// The slot the durable snapshot covers, if any.
    var snapshotSlot: Slot? { get }
    /// The client-session table saved beside the snapshot through `slot`, or nil when none was.
    /// - Throws: `SegmentLogError` `.corruption` when it is damaged, `.io`.
    func snapshotTable(slot: Slot) throws -> [UInt8]?
    /// Makes `bytes` the table of the snapshot through `slot` (received with it), durably, before
    /// that snapshot is committed; completes on the replica's executor.
    func saveSnapshotTable(slot: Slot, bytes: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void)
    /// Opens the latest durable snapshot for a transfer, or nil when there is none.
    func openSnapshotSource() throws -> (any SnapshotSource)?
    /// Starts receiving a snapshot through `slot` from a peer.
    func beginSnapshotSink(slot: Slot) throws -> any SnapshotSink
}

/// A durable snapshot being read for a transfer. Reads complete on the replica's executor.
package protocol SnapshotSource: AnyObject, Sendable {
    var slot: Slot { get }
    var length: UInt64 { get }
    var checksum: UInt32 { get }
    func read(at offset: UInt64, count: Int, completion: @escaping @Sendable (Result<[UInt8], any Error>) -> Void)
    func close()
}

/// A snapshot being received from a peer. Writes complete in order, on the replica's executor.
package protocol SnapshotSink: AnyObject, Sendable {
    func write(_ bytes: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void)
    /// Makes the snapshot durable (file, rename, directory), then records a marker and the
    /// chosen watermark through its slot behind every record already appended, and completes
    /// once that marker is durable. Only then may the replica act on the snapshot.
    func commit(expectedLength: UInt64, expectedChecksum: UInt32, completion: @escaping @Sendable ((any Error)?) -> Void)
    func abort()
}
