import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A durable, segmented log of one acceptor's state: promises, accepted entries per slot, the
/// chosen watermark and snapshots. The on-disk format is described in FORMAT.md.
///
/// Thread-safe: any number of tasks or threads may append and read concurrently. Appends are
/// group-committed by one writer thread: every append queued while a write is in flight goes into
/// the next single `pwrite` and `fdatasync`, and nobody is acknowledged before the sync that covers
/// its records has returned. Reads see exactly the acknowledged records.
///
/// A store owns its directory (an `flock` on `LOCK`) until `close()`, which must be called: the
/// writer thread keeps the store alive until then.
public final class SegmentStore: @unchecked Sendable {
    // Thread-safety: `shared` is guarded by `lock`; `writer` by `writeLock` (and belongs to
    // `open`/`close`, before the threads start and after they are joined); the rest is immutable.

    /// The data directory.
    public let directory: String
    /// The directory's identity as of open: checked against the `IdentityRequirement` given to
    /// `open`, or found on disk without one (nil if the directory has none).
    public let identity: DirectoryIdentity?
    public let options: Options
    let fileSystem: any FileSystem
    let logger: Logger
    let lock = PosixLock()
    var shared: Shared
    let writer: Writer
    private var thread: OSThread?
    private var syncerThread: OSThread?
    /// Finishes appends for the syncer thread, in commit order.
    let acknowledger: Acknowledger
    /// Held while taking the queue and writing it (by the writer thread, or the syncer just before
    /// a sync): guards `writer` and keeps appends in queue order.
    let writeLock = PosixLock()
    /// Guards `syncQueue`, the hand-off from the writer thread to the syncer thread.
    let syncLock = PosixLock()
    var syncQueue = SyncQueue()
    private let lockFD: Int32
    let compressionGate = CompressionGate()
    /// Serializes snapshot and truncation file work (not appends).
    let maintenance = PosixLock()

    struct Shared {
        var log: LogState
        var segments: [SegmentFile]
        var queue: [Pending] = []
        var writerWaiting = false
        /// The syncer waits for work with nothing to sync (`sync=always` only): the next append
        /// wakes it instead of the writer, and it writes and syncs that append itself.
        var syncerIdle = false
        var closing = false
        var closed = false
        var failure: SegmentLogError?
        var stats = Statistics()
        var segmentsDeleted = 0
        /// Paths of freed segment files waiting for reuse (`<segment>.free`), oldest first.
        var freeSegments: [String]
        /// Told about every group commit (``observeCommits(_:)``).
        var commitObserver: (@Sendable (CommitObservation) -> Void)?
    }

    struct Pending {
        var batch: EncodedBatch
        var waiter: Waiter
    }

    enum Waiter: Sendable {
        case continuation(UnsafeContinuation<Void, any Error>)
        case callback(@Sendable (Result<Void, SegmentLogError>) -> Void)

        func finish(_ result: Result<Void, SegmentLogError>) {
            switch self {
            case .continuation(let c):
                switch result {
                case .success: c.resume()
                case .failure(let error): c.resume(throwing: error)
                }
            case .callback(let f):
                f(result)
            }
        }
    }

    private init(directory: String, options: Options, fileSystem: any FileSystem, logger: Logger,
                 lockFD: Int32, recovered: RecoveredLog) throws {
        self.directory = directory
        self.identity = recovered.identity
        self.options = options
        self.fileSystem = fileSystem
        self.logger = logger
        self.lockFD = lockFD
        self.shared = Shared(log: recovered.log, segments: recovered.segments, freeSegments: recovered.freeSegments)
        self.writer = Writer(active: recovered.segments.last!, end: recovered.activeEnd, log: recovered.log)
        self.acknowledger = try Acknowledger(nice: options.commitThreadNice)
    }

    /// Opens (creating if needed) the log in `directory`, recovering it: verifies every record,
    /// cuts a torn tail of the last segment (keeping the cut bytes in a side file), and rebuilds
    /// the slot index.
    ///
    /// - Parameters:
    ///   - directory: the data directory; only this store may use it while open.
    ///   - options: segment size, compression, sync policy, recovery mode.
    ///   - fileSystem: where files live; tests pass a fault-injecting one.
    ///   - logger: recovery and failures are logged at `info`/`notice`/`warning`/`error`.
    ///   - identity: what the directory's identity must be, checked (or, for a new or older
    ///     directory, written) under the lock before recovery writes anything. Nil: identities are
    ///     not checked, only read, and tolerant recovery still marks a directory it cuts.
    /// - Throws: `SegmentLogError` — `.locked` if another store holds the directory, `.corruption`
    ///   (strict mode) naming the damaged file, offset and reason, `.io` on system-call failures;
    ///   with `identity`: `.wrongIdentity`, `.uninitialized`, `.logMissing`, `.corruption` of the
    ///   identity file.
    public static func open(directory: String, options: Options = .init(),
                            fileSystem: any FileSystem = PosixFileSystem(), logger: Logger,
                            identity requirement: IdentityRequirement? = nil) throws -> SegmentStore {
        guard options.segmentSize >= 256, options.segmentSize <= Format.maxSegmentSize else {
            throw SegmentLogError(.invalidArgument, "segmentSize must be between 256 bytes and 2 GiB")
        }
        guard (0...100_000).contains(options.commitDelayMicroseconds), options.commitDelayMinimumAppends >= 1 else {
            throw SegmentLogError(.invalidArgument, "commitDelayMicroseconds must be 0…100000 and commitDelayMinimumAppends positive")
        }
        guard options.recycleSegments >= 0 else {
            throw SegmentLogError(.invalidArgument, "recycleSegments must not be negative")
        }
        guard options.maxRecordBytes >= 64, options.maxRecordBytes <= Format.maxRecordBytes else {
            throw SegmentLogError(.invalidArgument, "maxRecordBytes must be between 64 bytes and 1 GiB")
        }
        if case .interval(let ms) = options.syncPolicy, ms <= 0 {
            throw SegmentLogError(.invalidArgument, "sync interval must be positive")
        }
        if options.createIfMissing {
            do { try fileSystem.createDirectory(directory) } catch { throw SegmentLogError.io(error, "mkdir", directory) }
        }
        let lockFD = try acquireLock(directory: directory, fileSystem: fileSystem)
        do {
            let identity = try requirement?.establish(directory: directory, fileSystem: fileSystem, logger: logger)
                ?? DirectoryIdentity.read(directory: directory, fileSystem: fileSystem)
            var recovery = Recovery(directory: directory, options: options, fileSystem: fileSystem, logger: logger, identity: identity)
            let recovered = try recovery.run()
            let store = try SegmentStore(directory: directory, options: options, fileSystem: fileSystem, logger: logger,
                                     lockFD: lockFD, recovered: recovered)
            store.syncerThread = try OSThread.start(name: "paxlog-sync") { [store] in
                store.prioritizeCurrentThread(reporting: false)
                store.syncerLoop()
            }
            store.thread = try OSThread.start(name: "paxlog-writer") { [store] in
                store.prioritizeCurrentThread(reporting: true)
                store.writerLoop()
            }
            logger.info("opened segment log", metadata: [
                "directory": "\(directory)", "segments": "\(recovered.segments.count)",
                "entries": "\(recovered.log.index.count)",
            ])
            return store
        } catch {
            try? fileSystem.close(lockFD)
            throw error
        }
    }

    /// Applies `commitThreadNice` to the calling (writer or syncer) thread; one of them reports a
    /// refusal.
    private func prioritizeCurrentThread(reporting: Bool) {
        guard let nice = options.commitThreadNice, let error = setCurrentThreadNice(nice) else { return }
        if reporting {
            logger.notice("commit threads keep the default priority", metadata: [
                "nice": "\(nice)", "errno": "\(error)",
                "hint": "needs CAP_SYS_NICE or RLIMIT_NICE; set Options.commitThreadNice = nil to not ask",
            ])
        }
    }

    private static func acquireLock(directory: String, fileSystem: any FileSystem) throws -> Int32 {
        let path = directory + "/" + Format.lockFileName
        let fd: Int32
        do { fd = try fileSystem.open(path, mode: .readWriteCreate) } catch { throw SegmentLogError.io(error, "open", path) }
        do {
            try fileSystem.lockExclusive(fd)
        } catch {
            try? fileSystem.close(fd)
            if let e = error as? FileSystemError, e.errno == EWOULDBLOCK || e.errno == EAGAIN {
                throw SegmentLogError(.locked(path: path), "a store is already open on \(directory)")
            }
            throw SegmentLogError.io(error, "flock", path)
        }
        return fd
    }

    /// Whether a live store (in any process) holds `directory`. Offline tools call this to refuse
    /// a directory in use; it takes and drops the lock, and never creates anything but `LOCK`.
    public static func isLocked(directory: String, fileSystem: any FileSystem = PosixFileSystem()) throws -> Bool {
        do {
            let fd = try acquireLock(directory: directory, fileSystem: fileSystem)
            try? fileSystem.close(fd)
            return false
        } catch let error as SegmentLogError {
            if case .locked = error.code { return true }
            throw error
        }
    }

    // MARK: Appending

    /// Appends `records` in order and returns once they are durable under the sync policy.
    ///
    /// Concurrent calls are group-committed. Records of one call are written contiguously and in
    /// order; calls are ordered by the time they enter the queue.
    /// - Throws: `SegmentLogError`: `.recordTooLarge`, `.invalidArgument` (a `.snapshot` record:
    ///   use `writeSnapshot`), `.closed`, `.io`/`.syncFailed` from the write that carried them, or
    ///   `.storeFailed` once an earlier failure made the store refuse writes. On error the records
    ///   may or may not be on disk; they are not readable from this store.
    public func append(_ records: [LogRecord]) async throws {
        let batch = try encodeForAppend(records)
        if batch.bytes.isEmpty { return }
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
            enqueue(batch, .continuation(continuation))
        }
    }

    /// Like `append(_:)`, for event-loop callers: `completion` runs on one of the store's threads
    /// once the records are durable (or failed), so it must be quick and must not block.
    public func append(_ records: [LogRecord], completion: @escaping @Sendable (Result<Void, SegmentLogError>) -> Void) {
        let batch: EncodedBatch
        do {
            batch = try encodeForAppend(records)
        } catch {
            completion(.failure(error as? SegmentLogError ?? SegmentLogError(.invalidArgument, "\(error)")))
            return
        }
        if batch.bytes.isEmpty {
            completion(.success(()))
            return
        }
        enqueue(batch, .callback(completion))
    }

    private func encodeForAppend(_ records: [LogRecord]) throws -> EncodedBatch {
        for record in records {
            if case .snapshot = record {
                throw SegmentLogError(.invalidArgument, "snapshot markers are written by writeSnapshot(slot:data:)")
            }
        }
        return try RecordCodec.encode(records, compressionThreshold: options.compressionThreshold,
                                      maxRecordBytes: options.maxRecordBytes, gate: compressionGate)
    }

    func enqueue(_ batch: EncodedBatch, _ waiter: Waiter) {
        lock.lock()
        if shared.closing {
            lock.unlock()
            waiter.finish(.failure(SegmentLogError(.closed, "")))
            return
        }
        if let failure = shared.failure {
            lock.unlock()
            // After the acknowledgements of earlier appends, which may still be on their way.
            acknowledger.finish([waiter], .failure(SegmentLogError(.storeFailed, "", cause: failure)))
            return
        }
        shared.queue.append(Pending(batch: batch, waiter: waiter))
        // An idle syncer takes the append itself: one thread hand-off fewer than writer → syncer.
        let wakeSyncer = shared.syncerIdle
        let wakeWriter = !wakeSyncer && shared.writerWaiting
        if wakeSyncer { shared.syncerIdle = false } else if wakeWriter { shared.writerWaiting = false }
        lock.unlock()
        if wakeWriter { lock.signal() }
        if wakeSyncer { syncLock.withLock { syncLock.broadcast() } }
    }

    // MARK: Reading

    /// The latest accepted entry for `slot`, or nil if the slot has none.
    /// - Throws: `.compacted` for a slot at or below the snapshot, `.corruption` if the bytes on
    ///   disk no longer verify, `.io`, `.closed`.
    public func entry(at slot: UInt64) throws -> LogEntry? {
        let (location, file): (SlotLocation?, SegmentFile?) = try lock.withLock {
            try checkReadable()
            if let s = shared.log.snapshotSlot, slot <= s { throw SegmentLogError(.compacted(slot: slot), "") }
            guard let location = shared.log.index.get(slot) else { return (nil, nil) }
            return (location, segment(location.segment))
        }
        guard let location, let file else { return nil }
        let raw = try readPayload(file, location)
        return try raw.withUnsafeBytes { raw in
            guard let entry = RecordCodec.entry(raw, at: Int(location.entryOffset)), entry.slot == slot else {
                throw SegmentLogError.corruption(file.path, Int(location.frameOffset), "index points at no entry for slot \(slot)")
            }
            return entry
        }
    }

    /// The latest accepted entries for the occupied slots in `from...through`, in slot order
    /// (slots without an entry are skipped). Each record is read and verified once.
    /// - Parameter maxBytes: stop after the entry that brings the payload bytes to this or more,
    ///   so a range of large entries does not have to fit in memory at once.
    /// - Throws: `.compacted(from)` if `from` is at or below the snapshot; see `entry(at:)`.
    public func entries(from: UInt64, through: UInt64, maxBytes: Int = .max) throws -> [LogEntry] {
        let (locations, files): ([(UInt64, SlotLocation)], [SegmentFile]) = try lock.withLock {
            try checkReadable()
            if let s = shared.log.snapshotSlot, from <= s { throw SegmentLogError(.compacted(slot: from), "") }
            return (shared.log.index.locations(from: from, through: through), shared.segments)
        }
        var result: [LogEntry] = []
        result.reserveCapacity(locations.count)
        var cachedKey: (UInt32, UInt32) = (0, 0)
        var cached: [UInt8] = []
        var bytes = 0
        for (slot, location) in locations where bytes < maxBytes {
            guard let file = Self.segment(location.segment, in: files) else {
                throw SegmentLogError.corruption(directory, 0, "index names segment \(location.segment), which is gone")
            }
            if cachedKey != (location.segment, location.frameOffset) {
                cached = try readPayload(file, location)
                cachedKey = (location.segment, location.frameOffset)
            }
            let entry = cached.withUnsafeBytes { RecordCodec.entry($0, at: Int(location.entryOffset)) }
            guard let entry, entry.slot == slot else {
                throw SegmentLogError.corruption(file.path, Int(location.frameOffset), "index points at no entry for slot \(slot)")
            }
            result.append(entry)
            bytes += entry.payload.count
        }
        return result
    }

    /// The acceptor state as of the last acknowledged append.
    public var state: AcceptorState {
        lock.withLock {
            var s = AcceptorState()
            s.promised = shared.log.promised
            s.chosenThrough = shared.log.chosenThrough
            s.snapshotSlot = shared.log.snapshotSlot
            s.firstSlot = shared.log.index.first
            s.lastSlot = shared.log.index.last
            s.entryCount = shared.log.index.count
            s.firstSegment = shared.segments.first?.sequence ?? 0
            s.lastSegment = shared.segments.last?.sequence ?? 0
            return s
        }
    }

    /// What one group commit did: reported to ``observeCommits(_:)`` by the syncer thread after
    /// the appends it covered were acknowledged.
    public struct CommitObservation: Sendable, Hashable {
        /// Time spent in `fdatasync` for this commit (0 when the sync policy skipped it).
        public var syncNanoseconds: UInt64
        /// `fdatasync` calls made.
        public var syncs: Int
        /// Appends acknowledged by this commit: the group-commit size.
        public var appends: Int
    }

    /// Calls `observer` after every group commit, on the syncer thread (it must be quick and must
    /// not call back into the store); `nil` stops the calls. For metrics: fsync latency and
    /// group-commit size, which the cumulative ``statistics`` cannot give as distributions.
    public func observeCommits(_ observer: (@Sendable (CommitObservation) -> Void)?) {
        lock.withLock { shared.commitObserver = observer }
    }

    /// Counters since open.
    public var statistics: Statistics {
        lock.withLock {
            var stats = shared.stats
            stats.segmentsDeleted = shared.segmentsDeleted
            return stats
        }
    }

    /// Caller holds `lock`.
    private func checkReadable() throws {
        if shared.closed { throw SegmentLogError(.closed, "") }
    }

    /// Caller holds `lock`.
    func segment(_ sequence: UInt32) -> SegmentFile? {
        Self.segment(sequence, in: shared.segments)
    }

    static func segment(_ sequence: UInt32, in files: [SegmentFile]) -> SegmentFile? {
        guard let first = files.first, UInt64(sequence) >= first.sequence else { return nil }
        let i = Int(UInt64(sequence) - first.sequence)
        return i < files.count ? files[i] : nil
    }

    /// Reads, verifies and (if needed) decompresses the accepted frame at `location`.
    private func readPayload(_ file: SegmentFile, _ location: SlotLocation) throws -> [UInt8] {
        let length = Int(location.frameLength)
        var frame = [UInt8](repeating: 0, count: length)
        let n: Int
        do {
            n = try frame.withUnsafeMutableBytes { try fileSystem.readFully(file.fd, into: $0, at: Int64(location.frameOffset)) }
        } catch {
            throw SegmentLogError.io(error, "pread", file.path)
        }
        guard n == length else {
            throw SegmentLogError.corruption(file.path, Int(location.frameOffset), "record truncated: read \(n) of \(length) bytes")
        }
        return try frame.withUnsafeBytes { bytes in
            let parser = SegmentParser(bytes: bytes, sequence: file.sequence)
            switch parser.step(at: 0) {
            case .frame(let view) where view.length == length && view.type == .accepted:
                if view.codec == .raw { return Array(view.stored) }
                guard let raw = RecordCodec.decompress(view.stored, rawLength: view.rawLength) else {
                    throw SegmentLogError.corruption(file.path, Int(location.frameOffset), "LZ4 payload does not inflate to \(view.rawLength) bytes")
                }
                return raw
            case .frame:
                throw SegmentLogError.corruption(file.path, Int(location.frameOffset), "record changed type or length since it was indexed")
            case .end:
                throw SegmentLogError.corruption(file.path, Int(location.frameOffset), "record is now zero bytes")
            case .sealed:
                throw SegmentLogError.corruption(file.path, Int(location.frameOffset), "record is now a segment-end record")
            case .damage(_, let reason, _):
                throw SegmentLogError.corruption(file.path, Int(location.frameOffset), reason)
            }
        }
    }

    // MARK: Closing

    /// Waits for queued appends, syncs, closes files and releases the directory lock. Later calls
    /// (appends, reads, a second `close`) fail with `.closed`.
    /// - Throws: `.syncFailed` if the final sync failed (the last appends under `.interval` or
    ///   `.never` may then be lost).
    public func close() throws {
        let alreadyClosing: Bool = lock.withLock {
            let was = shared.closing
            shared.closing = true
            return was
        }
        if alreadyClosing { throw SegmentLogError(.closed, "close called twice") }
        lock.signal()
        thread?.join()
        thread = nil
        syncerThread?.join()
        syncerThread = nil
        acknowledger.stop()
        lock.withLock {
            shared.closed = true
            shared.segments = []
            shared.log = LogState()
        }
        writer.active = nil
        try? fileSystem.close(lockFD)
        if let error = syncLock.withLock({ syncQueue.closeError }) { throw error }
        logger.info("closed segment log", metadata: ["directory": "\(directory)"])
    }
}
