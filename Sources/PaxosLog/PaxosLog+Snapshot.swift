import MultiPaxos
import NIOConcurrencyHelpers
import NIOPosix
import SegmentLog

extension PaxosLog {
    /// What one compaction did.
    public struct CompactionResult: Hashable, Sendable {
        /// The snapshot now covers every position through this one.
        public var snapshotPosition: Position
        /// Snapshot data length in bytes.
        public var snapshotBytes: UInt64
        /// Segment files deleted (wholly below the snapshot and needed by no transfer).
        public var segmentsDeleted: Int
        /// Bytes those segment files held.
        public var bytesFreed: Int64
    }

    /// The latest durable snapshot of this replica, read in chunks; get it with
    /// ``PaxosLog/latestSnapshot()``. The file stays open while this value lives, so a later
    /// compaction does not pull it away mid-read.
    public struct Snapshot: Sendable {
        /// The snapshot covers every position through this one: apply entries from
        /// `position + 1` on top of it.
        public var position: Position { reader.slot }
        /// Data length in bytes.
        public var length: UInt64 { reader.length }
        /// crc32 (zlib) of the data.
        public var checksum: UInt32 { reader.checksum }
        /// A marker with no data: an ``OnDiskStateMachine``'s own storage holds the state
        /// through ``position`` (the log was compacted on its word, with no copy).
        public var holdsExternalState: Bool { reader.holdsExternalState }
        let reader: SnapshotReader

        /// Reads up to `maxCount` bytes at `offset`. Memory stays bounded by `maxCount`.
        /// - Throws: ``PaxosLogError`` (`storage`) if the file cannot be read.
        public func read(at offset: UInt64, maxCount: Int) throws(PaxosLogError) -> [UInt8] {
            do { return try reader.read(at: offset, maxCount: maxCount) } catch {
                throw PaxosLogError(.storage, "reading snapshot \(position): \(error)")
            }
        }

        /// Reads the whole snapshot and checks its crc32 (for snapshots that fit in memory).
        public func readAll() throws(PaxosLogError) -> [UInt8] {
            guard !holdsExternalState else {
                throw PaxosLogError(.invalidArgument, "snapshot \(position) holds no data: the application's own storage holds that state")
            }
            guard length <= UInt64(Int.max / 2) else { throw PaxosLogError(.invalidArgument, "snapshot of \(length) bytes does not fit in memory") }
            let data = try read(at: 0, maxCount: Int(length))
            let crc = data.withUnsafeBytes { snapshotChecksum(0, $0) }
            guard crc == checksum else { throw PaxosLogError(.storage, "snapshot \(position) fails its checksum") }
            return data
        }

        /// Reads the whole snapshot in chunks of `chunkSize` and checks its crc32.
        public func verify(chunkSize: Int = 1 << 20) throws(PaxosLogError) {
            do { try reader.verify(chunkSize: chunkSize) } catch {
                throw PaxosLogError(.storage, "snapshot \(position): \(error)")
            }
        }
    }

    /// The latest snapshot this replica holds (written by ``compact(through:snapshot:)`` or
    /// installed from a peer), or nil. On open, an application restores it and then applies
    /// ``entries(from:)`` from `snapshot.position + 1`.
    public func latestSnapshot() throws(PaxosLogError) -> Snapshot? {
        do {
            return try driver.store.openSnapshot().map(Snapshot.init)
        } catch {
            throw PaxosLogError(.storage, "opening the latest snapshot: \(error)")
        }
    }

    /// Hands the library a snapshot of the application's state after applying every entry
    /// through `position`, then truncates the log below it.
    ///
    /// The snapshot is written to a temporary file, synced, renamed and the directory synced;
    /// only then is it recorded in the log, and only then are whole segments below it deleted.
    /// Nothing that is not chosen and durable here is ever deleted, nor the log an in-progress
    /// transfer to a lagging replica still needs (those segments go at a later compaction).
    /// Each replica compacts its own log, independently. The snapshot is written at most
    /// ``Configuration/snapshotWriteBytesPerSecond`` fast (64 MiB/s by default), with an
    /// `fdatasync` every MiB, so appends meanwhile keep their latency.
    ///
    /// - Parameters:
    ///   - position: at most this replica's chosen (and durable) watermark.
    ///   - snapshot: the state's bytes, opaque to the library.
    /// - Throws: ``PaxosLogError``: `invalidArgument` for a position beyond the chosen watermark
    ///   or below the current snapshot, or while another compaction runs; `storage`; `closed`.
    @discardableResult
    public func compact(through position: Position, snapshot: [UInt8]) async throws -> CompactionResult {
        // The writes block (syncs every MiB, an optional rate limit): not on the cooperative pool.
        try await compact(through: position) { writer in try await NIOThreadPool.singleton.runIfActive { try writer.write(snapshot) } }
    }

    /// Like ``compact(through:snapshot:)``, streaming: the chunks of `snapshot` are written as
    /// they arrive, so the whole snapshot is never in memory.
    @discardableResult
    public func compact<Chunks: AsyncSequence>(through position: Position, snapshot: Chunks) async throws -> CompactionResult
    where Chunks.Element == [UInt8] {
        try await compact(through: position) { writer in
            for try await chunk in snapshot {
                try await NIOThreadPool.singleton.runIfActive { try writer.write(chunk) }
            }
        }
    }

    /// Compacts through `position` on the word of an ``OnDiskStateMachine``: its own storage
    /// holds the state through `position` durably, so the log keeps no copy, only a marker (a
    /// snapshot file of no data, format version 2) and its log record. ``LogApplier`` calls this
    /// after ``OnDiskStateMachine/sync()``; the same ordering and deletion rules as
    /// ``compact(through:snapshot:)`` hold. A peer that needs the compacted prefix gets a
    /// snapshot exported from the running machine.
    ///
    /// - Precondition: the application's state through `position` is durable: a machine that
    ///   reopens behind it cannot be replayed (the applier refuses to start).
    @discardableResult
    public func compactOnDurableState(through position: Position) async throws -> CompactionResult {
        try await compact(through: position, holdsExternalState: true) { _ in }
    }

    /// The exports of an on-disk state machine's snapshots for lagging peers.
    var snapshotExports: ExternalSnapshotExports? {
        (driver.replica.storage as? SegmentStoreStorage)?.exports
    }

    /// Exports written for transfers since open (an on-disk state machine's): for tests.
    public var snapshotExportsWritten: Int { snapshotExports?.written ?? 0 }

    /// The compaction steps around a snapshot producer that writes into `writer`.
    func compact(through position: Position, holdsExternalState: Bool = false, produce: (SnapshotWriter) async throws -> Void) async throws -> CompactionResult {
        guard compacting.withLockedValue({ busy in
            if busy { return false }
            busy = true
            return true
        }) else {
            throw PaxosLogError(.invalidArgument, "another compaction is running")
        }
        defer { compacting.withLockedValue { $0 = false } }
        let store = driver.store
        guard position >= 1, try await driver.chosenAndReadable(position) else {
            let chosen = try await driver.status().get().chosenThrough
            throw PaxosLogError(.invalidArgument, "position \(position) is beyond the chosen watermark \(chosen)")
        }
        if let current = store.state.snapshotSlot, position < current {
            throw PaxosLogError(.invalidArgument, "position \(position) is below the current snapshot \(current)")
        }
        // The client sessions as of `position`, durable before the snapshot that needs them.
        if let table = try await driver.sessionTable(through: position).get() {
            do {
                try await NIOThreadPool.singleton.runIfActive { try store.writeSnapshotTable(slot: position, bytes: table) }
            } catch {
                throw PaxosLogError(.storage, "writing the client-session table of the snapshot through \(position): \(error)")
            }
        }
        let writer: SnapshotWriter
        do { writer = try store.beginSnapshot(slot: position) } catch {
            throw PaxosLogError(.storage, "starting snapshot: \(error)")
        }
        writer.bytesPerSecond = configuration.snapshotWriteBytesPerSecond
        writer.holdsExternalState = holdsExternalState
        do {
            try await produce(writer)
            try await writer.commit()
        } catch {
            writer.abort()
            if let e = error as? PaxosLogError { throw e }
            if let e = error as? SegmentLogError, e.isClosed { throw PaxosLogError(.closed, "the log was closed during compaction") }
            throw PaxosLogError(.storage, "writing snapshot through \(position): \(error)")
        }
        let below = try await driver.compacted(through: position).get()
        let deleted: Int, freed: Int64
        do {
            (deleted, freed) = try await NIOThreadPool.singleton.runIfActive {
                let victims = try store.segmentsWhollyBelow(below)
                let n = try store.truncatePrefix(below: below)
                return (n, victims.prefix(n).reduce(0) { $0 + $1.bytes })
            }
        } catch let error as SegmentLogError where error.isClosed {
            throw PaxosLogError(.closed, "the log was closed during compaction (the snapshot through \(position) is durable)")
        } catch {
            throw PaxosLogError(.storage, "deleting segments below \(below) (the snapshot through \(position) is durable): \(error)")
        }
        configuration.logger.info("compacted", metadata: [
            "through": "\(position)", "snapshot_bytes": "\(writer.length)", "segments_deleted": "\(deleted)", "bytes_freed": "\(freed)",
        ])
        return CompactionResult(snapshotPosition: position, snapshotBytes: writer.length, segmentsDeleted: deleted, bytesFreed: freed)
    }

    /// Counters of snapshot transfers since open: bytes this replica sent, snapshots it
    /// installed from peers, transfers in progress. For tests and benchmarks.
    public func snapshotTransferCounters() async throws -> (sentBytes: UInt64, installed: Int, sending: Int) {
        try await driver.snapshotCounters().get()
    }
}
