import MultiPaxos
import SegmentLog

/// A snapshot transfer's stream with the sender's client-session table after the snapshot's
/// data (WIRE.md, "Snapshot transfer"), so a replica that installs a snapshot recognises the
/// same repeats of retried records as the one that took it (``DuplicateSlots``).
///
/// The table is small (24 bytes per remembered identity) and read whole; the data is streamed
/// by the storage's own source and sink, which never see the table.
final class TabledSnapshotSource: SnapshotSource {
    let inner: any SnapshotSource
    let table: [UInt8]
    let tableChecksum: UInt32

    init(_ inner: any SnapshotSource, table: [UInt8]) {
        self.inner = inner
        self.table = table
        self.tableChecksum = table.withUnsafeBytes { snapshotChecksum(0, $0) }
    }

    var slot: Slot { inner.slot }
    var length: UInt64 { inner.length + UInt64(table.count) }
    var checksum: UInt32 { inner.checksum }

    func read(at offset: UInt64, count: Int, completion: @escaping @Sendable (Result<[UInt8], any Error>) -> Void) {
        let dataLength = inner.length
        guard offset < dataLength else { return completion(.success(tableBytes(at: offset - dataLength, count: count))) }
        inner.read(at: offset, count: count) { result in
            // A chunk that reaches past the data takes the table's first bytes.
            guard case .success(var bytes) = result, offset + UInt64(bytes.count) == dataLength, bytes.count < count else {
                return completion(result)
            }
            bytes += self.tableBytes(at: 0, count: count - bytes.count)
            completion(.success(bytes))
        }
    }

    private func tableBytes(at offset: UInt64, count: Int) -> [UInt8] {
        let start = Int(Swift.min(offset, UInt64(table.count)))
        return Array(table[start..<Swift.min(start + count, table.count)])
    }

    func close() { inner.close() }
}

/// Receives a tabled stream: the data into the storage's sink, the table into memory; on commit
/// checks the table and makes it durable before the snapshot is committed.
final class TabledSnapshotSink: SnapshotSink, @unchecked Sendable {
    let inner: any SnapshotSink
    let offer: SnapshotOffer
    let storage: any ReplicaStorage
    /// Bytes received so far, and the table's part of them (touched on the replica's executor only).
    private var received: UInt64 = 0
    private var table: [UInt8] = []

    /// - Throws: ``PaxosLogError`` `invalidArgument` when the offer's table cannot be one.
    init(_ inner: any SnapshotSink, offer: SnapshotOffer, storage: any ReplicaStorage, maxTableBytes: Int) throws {
        guard offer.tableLength <= offer.length, offer.tableLength <= UInt64(maxTableBytes) else {
            throw PaxosLogError(.invalidArgument, "snapshot offer \(offer.slot) names a table of \(offer.tableLength) bytes in a stream of \(offer.length) (at most \(maxTableBytes))")
        }
        self.inner = inner
        self.offer = offer
        self.storage = storage
        table.reserveCapacity(Int(offer.tableLength))
    }

    private var dataLength: UInt64 { offer.length - offer.tableLength }

    func write(_ bytes: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        let start = received
        received += UInt64(bytes.count)
        let split = Int(Swift.min(UInt64(bytes.count), dataLength > start ? dataLength - start : 0))
        table += bytes[split...]
        guard split > 0 else { return completion(nil) }
        inner.write(split == bytes.count ? bytes : Array(bytes[..<split]), completion: completion)
    }

    func commit(expectedLength: UInt64, expectedChecksum: UInt32, completion: @escaping @Sendable ((any Error)?) -> Void) {
        guard expectedLength == offer.length, UInt64(table.count) == offer.tableLength,
              table.withUnsafeBytes({ snapshotChecksum(0, $0) }) == offer.tableChecksum else {
            return completion(PaxosLogError(.storage, "the client-session table of snapshot \(offer.slot) does not match its offer"))
        }
        let (inner, dataLength, slot) = (self.inner, self.dataLength, offer.slot)
        let commitData = { @Sendable in inner.commit(expectedLength: dataLength, expectedChecksum: expectedChecksum, completion: completion) }
        guard !table.isEmpty else { return commitData() }
        storage.saveSnapshotTable(slot: slot, bytes: table) { error in
            if let error { return completion(error) }
            commitData()
        }
    }

    func abort() { inner.abort() }
}
