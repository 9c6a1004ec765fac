import Dispatch
import MultiPaxos
import NIOCore
import SegmentLog

/// `SegmentStore` as a replica's storage: blocking work (reads, snapshot files) runs on a serial
/// I/O queue or the global pool, and every completion hops back onto the replica's loop.
final class SegmentStoreStorage: ReplicaStorage {
    let store: SegmentStore
    let loop: any EventLoop
    /// Serial queue for snapshot file I/O, so chunks are read and written in order and never
    /// block the event loop.
    let snapshotIO = DispatchQueue(label: "paxoslog.snapshot-io")
    /// A received snapshot starts the writeback of every this many bytes without waiting for it.
    let receivedSnapshotSyncInterval: Int
    /// Where a transfer finds the state when the log's snapshot is only a marker (an on-disk
    /// state machine's).
    let exports: ExternalSnapshotExports

    init(store: SegmentStore, loop: any EventLoop, receivedSnapshotSyncInterval: Int) {
        self.store = store
        self.loop = loop
        self.receivedSnapshotSyncInterval = receivedSnapshotSyncInterval
        exports = ExternalSnapshotExports(store: store)
    }

    func append(_ records: [LogRecord], completion: @escaping @Sendable (Result<Void, SegmentLogError>) -> Void) {
        let loop = self.loop
        store.append(records) { result in loop.execute { completion(result) } }
    }

    func entries(from: Slot, through: Slot, maxBytes: Int) throws -> [LogEntry] {
        try store.entries(from: from, through: through, maxBytes: maxBytes)
    }

    func readChosen(from: Slot, through: Slot, maxBytes: Int, completion: @escaping @Sendable (Result<[LogEntry], any Error>) -> Void) {
        let (store, loop) = (self.store, self.loop)
        // Storage reads block: off the event loop.
        DispatchQueue.global().async {
            let result = Result { try store.entries(from: from, through: through, maxBytes: maxBytes) }
            loop.execute { completion(result) }
        }
    }

    var snapshotSlot: Slot? { store.state.snapshotSlot }

    func snapshotTable(slot: Slot) throws -> [UInt8]? {
        try store.readSnapshotTable(slot: slot)
    }

    func saveSnapshotTable(slot: Slot, bytes: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        let (store, loop) = (self.store, self.loop)
        snapshotIO.async {
            let failure: (any Error)?
            do { try store.writeSnapshotTable(slot: slot, bytes: bytes); failure = nil } catch { failure = error }
            loop.execute { completion(failure) }
        }
    }

    func openSnapshotSource() throws -> (any SnapshotSource)? {
        guard let reader = try store.openSnapshot() else { return nil }
        guard reader.holdsExternalState else { return StoredSnapshotSource(reader: reader, storage: self) }
        // Only a marker: the application holds the state. Send an export of it, or start one and
        // send nothing yet (the peer asks again).
        let slot = reader.slot
        reader.close()
        return try exports.open(atLeast: slot).map { StoredSnapshotSource(reader: $0, storage: self) }
    }

    func beginSnapshotSink(slot: Slot) throws -> any SnapshotSink {
        let writer = try store.beginSnapshot(slot: slot)
        writer.syncInterval = receivedSnapshotSyncInterval
        writer.writesBehind = true
        return ReceivedSnapshotSink(writer: writer, storage: self)
    }
}

/// A snapshot file read in chunks on the I/O queue.
final class StoredSnapshotSource: SnapshotSource {
    let reader: SnapshotReader
    let storage: SegmentStoreStorage

    init(reader: SnapshotReader, storage: SegmentStoreStorage) {
        self.reader = reader
        self.storage = storage
    }

    var slot: Slot { reader.slot }
    var length: UInt64 { reader.length }
    var checksum: UInt32 { reader.checksum }

    func read(at offset: UInt64, count: Int, completion: @escaping @Sendable (Result<[UInt8], any Error>) -> Void) {
        let (reader, loop) = (self.reader, storage.loop)
        storage.snapshotIO.async {
            let result = Result { try reader.read(at: offset, maxCount: count) }
            loop.execute { completion(result) }
        }
    }

    func close() {
        let reader = self.reader
        storage.snapshotIO.async { reader.close() }
    }
}

/// A snapshot from a peer written on the I/O queue, in arrival order.
final class ReceivedSnapshotSink: SnapshotSink {
    let writer: SnapshotWriter
    let storage: SegmentStoreStorage

    init(writer: SnapshotWriter, storage: SegmentStoreStorage) {
        self.writer = writer
        self.storage = storage
    }

    func write(_ bytes: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        let (writer, loop) = (self.writer, storage.loop)
        storage.snapshotIO.async {
            let failure: (any Error)?
            do { try writer.write(bytes); failure = nil } catch { failure = error }
            loop.execute { completion(failure) }
        }
    }

    func commit(expectedLength: UInt64, expectedChecksum: UInt32, completion: @escaping @Sendable ((any Error)?) -> Void) {
        let (writer, loop) = (self.writer, storage.loop)
        // Behind every write queued before it.
        storage.snapshotIO.async {
            Task {
                let failure: (any Error)?
                do {
                    try await writer.commit(expectedLength: expectedLength, expectedChecksum: expectedChecksum, markChosen: true)
                    failure = nil
                } catch {
                    failure = error
                }
                loop.execute { completion(failure) }
            }
        }
    }

    func abort() {
        let writer = self.writer
        storage.snapshotIO.async { writer.abort() }
    }
}
