import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import SegmentLog

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Snapshots exported from an ``OnDiskStateMachine`` for lagging peers.
///
/// An on-disk machine's log is compacted through a marker, not a copy of the state; when a peer
/// needs a snapshot, the replica's storage asks here for a file it can send. The first ask finds
/// none and starts an export (the machine's ``StateMachine/prepareSnapshot()`` streamed to a
/// temporary file); the peer repeats its catch-up request until answered, and a later ask finds
/// the file. One export file at a time: a newer one replaces it, and closing the log (or the
/// next open's recovery) deletes it.
final class ExternalSnapshotExports: @unchecked Sendable {
    typealias Prepare = @Sendable () async throws -> any StateSnapshot
    let store: SegmentStore
    private let lock = NIOLock()
    private var prepare: Prepare?
    private var latest: (slot: Slot, path: String)?
    private var exporting = false
    /// The registered machine's log's logger.
    private var logger: Logger?
    /// Exports written since open (for tests).
    private(set) var exportsWritten = 0

    init(store: SegmentStore) { self.store = store }

    /// Makes `prepare` the source of exports (one machine at a time).
    func register(logger: Logger, _ prepare: @escaping Prepare) {
        lock.withLock {
            self.prepare = prepare
            self.logger = logger
        }
    }

    /// Stops exporting and deletes the export file.
    func unregister() {
        let old = lock.withLock { () -> String? in
            prepare = nil
            defer { latest = nil }
            return latest?.path
        }
        if let old { unlink(old) }
    }

    var written: Int { lock.withLock { exportsWritten } }

    /// An open reader of an export covering at least `slot`, or nil: then an export is started
    /// if none runs and a machine is registered. Called on the replica's executor: never blocks
    /// on more than the open of a file.
    func open(atLeast slot: Slot) throws -> SnapshotReader? {
        enum Next { case open(String), start(Prepare), wait, none }
        let next: Next = lock.withLock {
            if let latest, latest.slot >= slot { return .open(latest.path) }
            guard let prepare else { return .none }
            if exporting { return .wait }
            exporting = true
            return .start(prepare)
        }
        switch next {
        case .open(let path):
            return try store.openSnapshotFile(atPath: path)
        case .start(let prepare):
            Task { await self.export(prepare) }
            return nil
        case .wait:
            return nil
        case .none:
            lock.withLock { logger }?.warning("a peer needs a snapshot, but the log is compacted through a marker of state an application holds, and no on-disk state machine is running to export it", metadata: ["slot": "\(slot)"])
            return nil
        }
    }

    private func export(_ prepare: Prepare) async {
        defer { lock.withLock { exporting = false } }
        var writer: SnapshotWriter? = nil
        do {
            let snapshot = try await prepare()
            let w = try store.beginExport(slot: snapshot.position)
            writer = w
            try await snapshot.save(to: SnapshotOutput(w))
            let path = try w.commitExport()
            let old: String? = lock.withLock {
                defer { latest = (snapshot.position, path); exportsWritten += 1 }
                return latest?.path
            }
            // A transfer still reading the old file keeps it (its descriptor stays open).
            if let old { unlink(old) }
            lock.withLock { logger }?.info("exported state machine snapshot for transfers", metadata: ["slot": "\(snapshot.position)", "bytes": "\(w.length)"])
        } catch {
            writer?.abort()
            lock.withLock { logger }?.warning("exporting a state machine snapshot failed: \(error)")
        }
    }
}
