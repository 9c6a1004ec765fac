import Atomics

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Streams a snapshot into a store chunk by chunk, so neither side needs the whole snapshot in
/// memory. Get one from ``SegmentStore/beginSnapshot(slot:)``.
///
/// Bytes go to a uniquely named temporary file as they arrive, at their final offsets after the
/// 40-byte header; the CRC is computed incrementally. ``commit(markChosen:)`` then writes the
/// header, `fdatasync`s, renames the file into place, `fsync`s the directory and only then
/// appends the snapshot marker: a crash at any step leaves either the old snapshot or the new
/// one, never half of one (recovery deletes `*.tmp` files and snapshot files no marker names).
///
/// Not for concurrent use: one task writes, then commits or aborts. A writer dropped without
/// either removes its temporary file.
public final class SnapshotWriter: @unchecked Sendable {
    /// The snapshot covers every slot through this one.
    public let slot: UInt64
    /// Data bytes written so far.
    public private(set) var length: UInt64 = 0
    /// crc32 of the data bytes written so far.
    public private(set) var checksum: UInt32 = 0
    /// When true the snapshot is a marker: it holds no data, and says the application's own
    /// durable storage holds the state through ``slot`` (an on-disk state machine). Written with
    /// snapshot format version 2. Set before committing; nothing may be written.
    public var holdsExternalState = false
    /// An export (``SegmentStore/beginExport(slot:)``): committed with ``commitExport()`` to a
    /// temporary file for transfers, never named by the log.
    let isExport: Bool

    let store: SegmentStore
    let path: String
    let temporaryPath: String
    private var fd: Int32?
    private var finished = false

    private static let counter = ManagedAtomic<UInt64>(0)

    init(store: SegmentStore, slot: UInt64, isExport: Bool = false) throws {
        self.store = store
        self.slot = slot
        self.isExport = isExport
        // Unique, so two writers (a local compaction and an incoming transfer) never share a file.
        let n = Self.counter.loadThenWrappingIncrement(ordering: .relaxed)
        if isExport {
            // A `.tmp` name: recovery deletes exports a crash left behind, as it should caches.
            path = store.directory + "/export-" + Format.snapshotFileName(slot) + ".\(getpid())-\(n)" + Format.temporarySuffix
            temporaryPath = path
        } else {
            path = store.directory + "/" + Format.snapshotFileName(slot)
            temporaryPath = path + ".\(getpid())-\(n)" + Format.temporarySuffix
        }
        do {
            let fd = try store.fileSystem.open(temporaryPath, mode: .createNew)
            self.fd = fd
        } catch {
            throw SegmentLogError.io(error, "open", temporaryPath)
        }
    }

    deinit {
        if !finished { abort() }
    }

    /// Bytes written between intermediate `fdatasync`s (like RocksDB's `bytes_per_sync`).
    ///
    /// Small steps keep the log's own `fdatasync` short: on ext4 (data=ordered) a journal
    /// commit the log needs may have to flush the snapshot's dirty pages first, so it waits for
    /// at most one step. The default, 1 MiB, suits a local compaction beside live appends; a
    /// snapshot received from a peer uses ``writesBehind`` instead. Set before writing.
    public var syncInterval: Int = 1 << 20

    /// When true, each ``syncInterval`` step only starts its writeback (`sync_file_range`)
    /// instead of waiting in `fdatasync`: the disk then works while the next bytes arrive,
    /// and only ``commit(expectedLength:expectedChecksum:markChosen:)`` waits. For a received
    /// snapshot, whose rate is bound by the disk; a local compaction waits at each step so its
    /// dirty data stays small. Set before writing.
    public var writesBehind = false

    /// When set, `write` sleeps as needed so the data goes to disk at most this fast, leaving
    /// the disk's bandwidth to the log (RocksDB's `rate_limiter`); the budget counts from the
    /// first write, so a slow producer is not slowed further. Nil: as fast as the disk takes
    /// it. Set before writing.
    public var bytesPerSecond: Int? = nil

    private var started: UInt64? = nil

    /// Appends `bytes` to the snapshot data. Blocks (writes, syncs every ``syncInterval``
    /// bytes, and sleeps under a ``bytesPerSecond`` budget): call it off the event loop and off
    /// Swift's cooperative pool.
    /// - Throws: `.io` if the write fails (the writer is then aborted), `.invalidArgument` after
    ///   `commit` or `abort`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let fd, !finished else { throw SegmentLogError(.invalidArgument, "snapshot writer already finished") }
        let step = UInt64(Swift.max(4096, syncInterval))
        if started == nil { started = monotonicNanoseconds() }
        var done = 0
        while done < bytes.count {
            let n = Swift.min(bytes.count - done, Int(step - length % step))
            let slice = UnsafeRawBufferPointer(rebasing: bytes[done..<done + n])
            do {
                try store.fileSystem.writeAll(fd, slice, at: Int64(Format.snapshotHeaderSize) + Int64(length))
                checksum = Format.crc(checksum, slice)
                length += UInt64(n)
                done += n
                if length % step == 0 {
                    if writesBehind {
                        store.fileSystem.startWriteback(fd, offset: Int64(Format.snapshotHeaderSize) + Int64(length - step), length: Int64(step))
                    } else {
                        try store.fileSystem.fdatasync(fd)
                    }
                    throttle()
                }
            } catch {
                abort()
                throw SegmentLogError.io(error, "pwrite", temporaryPath)
            }
        }
    }

    /// Sleeps until `length` bytes are within the ``bytesPerSecond`` budget since the first write.
    private func throttle() {
        guard let rate = bytesPerSecond, rate > 0, let started else { return }
        let due = started + length * 1_000_000_000 / UInt64(rate)
        let now = monotonicNanoseconds()
        if due > now { usleep(UInt32(Swift.min(due - now, 1_000_000_000) / 1000)) }
    }

    /// Appends `bytes` to the snapshot data.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Appends `bytes` to the snapshot data.
    public func write(_ bytes: ArraySlice<UInt8>) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Makes the snapshot durable and the store's snapshot: header, `fdatasync`, rename,
    /// directory `fsync`, then the marker record (and, with `markChosen`, a chosen record
    /// through `slot` in the same write). Superseded snapshot files are deleted afterwards.
    ///
    /// - Parameters:
    ///   - expectedLength: when set, the data must be exactly this long (a received transfer).
    ///   - expectedChecksum: when set, the data's crc32 must equal it.
    ///   - markChosen: also record every slot through `slot` as chosen — for a snapshot
    ///     installed from a peer, whose slots this replica never saw chosen.
    /// - Throws: `.invalidArgument` on a length or checksum mismatch or a slot below the current
    ///   snapshot; `.io`/`.syncFailed`; append errors. On error the temporary file is removed
    ///   (unless the rename already happened, in which case recovery removes the unnamed file).
    public func commit(expectedLength: UInt64? = nil, expectedChecksum: UInt32? = nil, markChosen: Bool = false) async throws {
        guard let fd, !finished else { throw SegmentLogError(.invalidArgument, "snapshot writer already finished") }
        guard !isExport else { throw SegmentLogError(.invalidArgument, "an export is finished with commitExport(), never named by the log") }
        if holdsExternalState, length != 0 {
            abort()
            throw SegmentLogError(.invalidArgument, "a marker of external state holds no data, but \(length) bytes were written")
        }
        if let expectedLength, expectedLength != length {
            abort()
            throw SegmentLogError(.invalidArgument, "snapshot has \(length) bytes, expected \(expectedLength)")
        }
        if let expectedChecksum, expectedChecksum != checksum {
            abort()
            throw SegmentLogError(.invalidArgument, "snapshot crc32 \(hex(checksum)) differs from the expected \(hex(expectedChecksum))")
        }
        // The header, syncs and rename block for as long as the disk takes: off the caller's
        // (cooperative) thread, so appends' continuations keep running meanwhile.
        try await offloaded { try self.finishFile(fd) }
        var records: [LogRecord] = [.snapshot(slot: slot)]
        if markChosen { records.append(.chosen(through: slot)) }
        let marker = try RecordCodec.encode(records, compressionThreshold: .max, maxRecordBytes: store.options.maxRecordBytes)
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
            store.enqueue(marker, .continuation(continuation))
        }
        try? await offloaded { [store] in store.removeSupersededSnapshots() }
        store.logger.info("wrote snapshot", metadata: ["slot": "\(slot)", "bytes": "\(length)"])
    }

    /// Header, `fdatasync`, rename, directory `fsync`: the file becomes the named snapshot.
    private func finishFile(_ fd: Int32) throws {
        let fs = store.fileSystem
        var step = "pwrite header"
        do {
            try store.checkSnapshotSlot(slot)
            let flags = holdsExternalState ? Format.snapshotFlagExternalState : 0
            try SnapshotFile.encodeHeader(slot: slot, length: length, dataCRC: checksum, flags: flags).withUnsafeBytes {
                try fs.writeAll(fd, $0, at: 0)
            }
            step = "fdatasync"
            try fs.fdatasync(fd)
            try? fs.close(fd)
            self.fd = nil
            step = "rename"
            try store.maintenance.withLock { try fs.rename(temporaryPath, to: path) }
            finished = true
            step = "directory fsync"
            try fs.syncDirectory(store.directory)
        } catch let error as SegmentLogError {
            if !finished { abort() }
            finished = true
            throw error
        } catch {
            if !finished { abort() }
            finished = true
            let code = (error as? FileSystemError)?.errno ?? EIO
            if step == "fdatasync" || step == "directory fsync" {
                throw SegmentLogError(.syncFailed(errno: code, path: path), "writing snapshot: \(step)", cause: error as? FileSystemError)
            }
            throw SegmentLogError(.io(errno: code, path: temporaryPath), "writing snapshot: \(step)", cause: error as? FileSystemError)
        }
    }

    /// Finishes an export (``SegmentStore/beginExport(slot:)``): writes the header and returns
    /// the file's path, for ``SegmentStore/openSnapshotFile(atPath:)``. Not synced: an export is
    /// a cache for transfers (a crash loses it, and recovery deletes what is left of it); the
    /// receiver checks its length and crc32. The caller removes the file when done with it.
    public func commitExport() throws -> String {
        guard let fd, !finished else { throw SegmentLogError(.invalidArgument, "snapshot writer already finished") }
        guard isExport else { throw SegmentLogError(.invalidArgument, "commitExport() is for exports only") }
        do {
            try SnapshotFile.encodeHeader(slot: slot, length: length, dataCRC: checksum, flags: 0).withUnsafeBytes {
                try store.fileSystem.writeAll(fd, $0, at: 0)
            }
        } catch {
            abort()
            throw SegmentLogError.io(error, "pwrite header", path)
        }
        try? store.fileSystem.close(fd)
        self.fd = nil
        finished = true
        return path
    }

    /// Discards the snapshot: closes and removes the temporary file. Safe to call twice.
    public func abort() {
        if let fd {
            try? store.fileSystem.close(fd)
            self.fd = nil
        }
        if !finished {
            finished = true
            try? store.fileSystem.remove(temporaryPath)
        }
    }
}

/// Reads a durable snapshot in chunks: the file stays open, so a newer compaction that deletes
/// it does not cut a reader (a transfer to a lagging peer) short. Get one from
/// ``SegmentStore/openSnapshot()``; call ``close()`` when done (or drop it).
public final class SnapshotReader: @unchecked Sendable {
    /// The snapshot covers every slot through this one.
    public let slot: UInt64
    /// Data length in bytes.
    public let length: UInt64
    /// crc32 of the data, from the verified header.
    public let checksum: UInt32
    /// The snapshot is a marker with no data: the application's own durable storage holds the
    /// state through ``slot`` (see ``SnapshotWriter/holdsExternalState``).
    public let holdsExternalState: Bool
    public let path: String
    private let fileSystem: any FileSystem
    private let lock = PosixLock()
    private var fd: Int32?

    init(path: String, fileSystem: any FileSystem) throws {
        // Registered before the open, so a superseded file is never truncated under a reader
        // (see `SegmentStore.removeSupersededSnapshots`).
        OpenSnapshotFiles.shared.retain(path)
        let opened: (Int32, UInt64, UInt64, UInt32, UInt32)
        do { opened = try SnapshotFile.open(path: path, fileSystem: fileSystem) } catch {
            OpenSnapshotFiles.shared.release(path)
            throw error
        }
        let (fd, slot, length, checksum, flags) = opened
        self.holdsExternalState = flags & Format.snapshotFlagExternalState != 0
        self.fd = fd
        self.slot = slot
        self.length = length
        self.checksum = checksum
        self.path = path
        self.fileSystem = fileSystem
    }

    deinit { close() }

    /// Reads up to `maxCount` data bytes at `offset` (fewer only at the end of the data).
    /// - Throws: `.invalidArgument` for an offset beyond the data, `.corruption` if the file is
    ///   shorter than its header says, `.io`, `.closed` after `close()`.
    public func read(at offset: UInt64, maxCount: Int) throws -> [UInt8] {
        guard offset <= length else { throw SegmentLogError(.invalidArgument, "offset \(offset) is beyond the snapshot's \(length) bytes") }
        let count = Int(Swift.min(UInt64(Swift.max(maxCount, 0)), length - offset))
        return try lock.withLock {
            guard let fd else { throw SegmentLogError(.closed, "snapshot reader closed") }
            // Not zero-filled first: the read overwrites it (a transfer reads 100s of MB).
            var got = 0
            var failure: (any Error)?
            let out = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
                do {
                    got = try fileSystem.readFully(fd, into: UnsafeMutableRawBufferPointer(buffer), at: Int64(Format.snapshotHeaderSize) + Int64(offset))
                } catch {
                    failure = error
                }
                initialized = failure == nil ? got : 0
            }
            if let failure { throw SegmentLogError.io(failure, "pread", path) }
            guard got == count else {
                throw SegmentLogError.corruption(path, Format.snapshotHeaderSize + Int(offset) + got, "snapshot data truncated")
            }
            return out
        }
    }

    /// Reads the whole data in chunks of `chunkSize` and checks its crc32 against the header.
    /// - Throws: `.corruption` on a mismatch.
    public func verify(chunkSize: Int = 1 << 20) throws {
        var crc: UInt32 = 0
        var offset: UInt64 = 0
        while offset < length {
            let chunk = try read(at: offset, maxCount: chunkSize)
            crc = chunk.withUnsafeBytes { Format.crc(crc, $0) }
            offset += UInt64(chunk.count)
        }
        guard crc == checksum else {
            throw SegmentLogError.corruption(path, Format.snapshotHeaderSize, "snapshot data CRC mismatch: stored \(hex(checksum)), computed \(hex(crc))")
        }
    }

    public func close() {
        lock.withLock {
            if let fd {
                try? fileSystem.close(fd)
                OpenSnapshotFiles.shared.release(path)
            }
            fd = nil
        }
    }
}

/// crc32 (zlib, IEEE) of `bytes` continuing from `seed`: what ``SnapshotWriter/checksum`` and
/// ``SnapshotReader/checksum`` use, for callers that check a snapshot received elsewhere.
public func snapshotChecksum(_ seed: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
    Format.crc(seed, bytes)
}

extension SegmentStore {
    /// Starts streaming a snapshot covering every slot through `slot`.
    /// - Throws: `.invalidArgument` if `slot` is below the current snapshot; `.closed`,
    ///   `.storeFailed`; `.io` if the temporary file cannot be created.
    public func beginSnapshot(slot: UInt64) throws -> SnapshotWriter {
        try checkSnapshotSlot(slot)
        return try SnapshotWriter(store: self, slot: slot)
    }

    func checkSnapshotSlot(_ slot: UInt64) throws {
        let current: UInt64? = try lock.withLock {
            if shared.closing { throw SegmentLogError(.closed, "") }
            if let failure = shared.failure { throw SegmentLogError(.storeFailed, "", cause: failure) }
            return shared.log.snapshotSlot
        }
        if let current, slot < current {
            throw SegmentLogError(.invalidArgument, "snapshot slot \(slot) is below the current snapshot \(current)")
        }
    }

    /// Opens the latest durable snapshot for chunked reading (header verified, data not yet:
    /// see ``SnapshotReader/verify(chunkSize:)``), or nil when there is none.
    public func openSnapshot() throws -> SnapshotReader? {
        try withLatestSnapshotFile { path in try SnapshotReader(path: path, fileSystem: fileSystem) }
    }

    /// Starts an export: a snapshot file outside the log (a temporary file in the directory),
    /// for a transfer of state an application holds. Finish it with
    /// ``SnapshotWriter/commitExport()``.
    /// - Throws: `.closed`, `.storeFailed`; `.io` if the file cannot be created.
    public func beginExport(slot: UInt64) throws -> SnapshotWriter {
        try lock.withLock {
            if shared.closing { throw SegmentLogError(.closed, "") }
            if let failure = shared.failure { throw SegmentLogError(.storeFailed, "", cause: failure) }
        }
        return try SnapshotWriter(store: self, slot: slot, isExport: true)
    }

    /// Opens a snapshot file by path (an export) for chunked reading, header verified.
    public func openSnapshotFile(atPath path: String) throws -> SnapshotReader {
        try SnapshotReader(path: path, fileSystem: fileSystem)
    }

    /// One segment file that a prefix truncation would delete.
    public struct SegmentInfo: Sendable, Hashable {
        public var path: String
        public var sequence: UInt64
        public var bytes: Int64
        /// Highest slot with an entry in it, if any.
        public var maxSlot: UInt64?
    }

    /// How many segments, oldest first, hold no slot at or above `slot` (a segment's highest slot
    /// is nil when it holds no entry): those a snapshot through `slot - 1` lets go. The caller
    /// leaves the active segment out. The one rule for compaction and for `compact --dry-run`'s
    /// plan, which has no store open.
    public static func countWhollyBelow(_ slot: UInt64, maxSlots: some Sequence<UInt64?>) -> Int {
        var count = 0
        for maxSlot in maxSlots {
            if let maxSlot, maxSlot >= slot { break }
            count += 1
        }
        return count
    }

    /// The segments ``truncatePrefix(below:)`` would delete now, oldest first (for dry runs and
    /// reports); nothing is changed.
    public func segmentsWhollyBelow(_ slot: UInt64) throws -> [SegmentInfo] {
        let files: [(SegmentFile, UInt64?)] = try lock.withLock {
            if shared.closed { throw SegmentLogError(.closed, "") }
            let candidates = shared.segments.dropLast()
            return candidates.prefix(Self.countWhollyBelow(slot, maxSlots: candidates.lazy.map(\.maxSlot))).map { ($0, $0.maxSlot) }
        }
        return files.map { f, maxSlot in
            SegmentInfo(path: f.path, sequence: f.sequence, bytes: (try? fileSystem.size(f.fd)) ?? 0, maxSlot: maxSlot)
        }
    }
}
