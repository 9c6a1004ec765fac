#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// State owned by the writer thread.
final class Writer: @unchecked Sendable {
    var active: SegmentFile! {
        didSet { mask = active.map { Format.segmentMask($0.sequence) } ?? 0 }
    }
    /// The CRC mask of `active`, XORed into every frame copied into it.
    private(set) var mask: UInt32
    /// Offset in `active` where the next frame goes.
    var end: Int
    /// Acceptor state including everything handed to `pwrite`: what a new segment's header says.
    var promised: LogBallot?
    var chosenThrough: UInt64?
    var snapshotSlot: UInt64?
    /// The group being assembled: frames with masked CRCs, written with one `pwrite`.
    var buffer: UnsafeMutableRawPointer
    var capacity: Int
    var used = 0
    var staged: [StagedOp] = []
    var frameOffsets: [Int] = []
    var frameLengths: [Int] = []
    /// `.interval` policy: data written since the last group that asked for a sync.
    var unsynced = false
    var lastSyncRequest: UInt64 = monotonicNanoseconds()
    /// Counters not yet added to the shared statistics.
    var bytesWritten = 0
    var rawPayloadBytes = 0
    var storedPayloadBytes = 0

    init(active: SegmentFile, end: Int, log: LogState) {
        self.active = active
        self.mask = Format.segmentMask(active.sequence)
        self.end = end
        self.promised = log.promised
        self.chosenThrough = log.chosenThrough
        self.snapshotSlot = log.snapshotSlot
        self.capacity = 1 << 20
        self.buffer = .allocate(byteCount: capacity, alignment: 4096)
    }

    deinit {
        buffer.deallocate()
    }

    func reserve(_ extra: Int) {
        guard used + extra > capacity else { return }
        var newCapacity = capacity * 2
        while newCapacity < used + extra { newCapacity *= 2 }
        let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 4096)
        grown.copyMemory(from: buffer, byteCount: used)
        buffer.deallocate()
        buffer = grown
        capacity = newCapacity
    }
}

enum StagedOp {
    case entry(UInt64, SlotLocation)
    case promise(LogBallot)
    case chosen(UInt64)
    case snapshot(UInt64)
    case truncateFrom(UInt64)
}

/// A written group on its way to durability: the syncer thread `fdatasync`s (if `needsSync`),
/// then publishes `staged` to readers and acknowledges `pending`, strictly in hand-off order.
struct SyncGroup {
    var pending: [SegmentStore.Pending]
    var staged: [StagedOp]
    var segment: SegmentFile
    var needsSync: Bool
    /// The writer's last group: sync whatever is unsynced, then the syncer exits.
    var isFinal = false
}

/// The hand-off between the writer and syncer threads; guarded by `SegmentStore.syncLock`.
struct SyncQueue {
    var groups: [SyncGroup] = []
    var syncerWaiting = false
    var writerWaiting = false
    /// Set by the syncer on the first failure; later groups fail with it.
    var failure: SegmentLogError?
    /// Segments written without a sync since (the `.interval`/`.never` policies), for close.
    var dirty: [SegmentFile] = []
    var closeError: SegmentLogError?
}

// Two threads make the commit pipeline: the writer copies queued appends into one buffer and
// `pwrite`s it, then hands the group to the syncer and goes straight back for the next group; the
// syncer runs `fdatasync` back to back. Before each sync the syncer also writes whatever queued up
// since the writer's last group (taking the writer's role under `writeLock`), so a sync covers every
// append that arrived before it started, not only those the writer happened to have written. Under
// `sync=always` an idle syncer is woken by the append itself and writes it, so at low concurrency a
// commit costs one thread hand-off fewer; the writer's part is writing during syncs.
extension SegmentStore {
    func writerLoop() {
        while true {
            // At most one written group waits for the syncer: while the syncer is busy with the
            // previous sync, appends pile up in the queue and go out as one write.
            syncLock.lock()
            while !syncQueue.groups.isEmpty {
                syncQueue.writerWaiting = true
                syncLock.wait()
            }
            syncLock.unlock()

            lock.lock()
            var syncDue = false
            while shared.queue.isEmpty && !shared.closing {
                if writer.unsynced, case .interval(let ms) = options.syncPolicy {
                    let deadline = writer.lastSyncRequest + UInt64(ms) * 1_000_000
                    if monotonicNanoseconds() >= deadline {
                        syncDue = true
                        break
                    }
                    shared.writerWaiting = true
                    lock.wait(untilNanoseconds: deadline)
                } else {
                    shared.writerWaiting = true
                    lock.wait()
                }
                shared.writerWaiting = false
            }
            lock.unlock()

            writeLock.lock()
            defer { writeLock.unlock() }
            if writeQueued() { continue }
            // The syncer may have written the queue meanwhile: look again before exiting or syncing.
            let exiting = lock.withLock { shared.queue.isEmpty && shared.closing }
            if exiting {
                handOff(SyncGroup(pending: [], staged: [], segment: writer.active, needsSync: true, isFinal: true))
                return
            } else if syncDue {
                writer.unsynced = false
                writer.lastSyncRequest = monotonicNanoseconds()
                handOff(SyncGroup(pending: [], staged: [], segment: writer.active, needsSync: true))
            }
        }
    }

    /// Writes everything queued as one group and hands it to the syncer. Caller holds `writeLock`,
    /// which keeps queue order: the queue is only taken, and written, under it.
    /// - Returns: whether there was anything to write.
    @discardableResult
    func writeQueued() -> Bool {
        let (batch, failure): ([Pending], SegmentLogError?) = lock.withLock {
            var batch: [Pending] = []
            swap(&batch, &shared.queue)
            return (batch, shared.failure)
        }
        guard !batch.isEmpty else { return false }
        if let failure {
            let error = SegmentLogError(.storeFailed, "", cause: failure)
            acknowledger.finish(batch.map(\.waiter), .failure(error))
        } else {
            process(batch)
        }
        return true
    }

    private func process(_ batch: [Pending]) {
        let headerSize = Format.segmentHeaderSize
        var groupStart = 0
        writer.used = 0
        writer.staged.removeAll(keepingCapacity: true)

        for k in batch.indices {
            let size = batch[k].batch.bytes.count
            if writer.end + writer.used + size + Format.recordHeaderSize > options.segmentSize && writer.end + writer.used > headerSize {
                // Roll. The new segment's header claims the state so far, so the old segment must
                // be durable first: write and seal it here, sync it, then hand its group over as
                // synced.
                do {
                    try flush()
                    try seal()
                    try syncActiveSegment()
                } catch {
                    fail(batch[groupStart...], poison(error))
                    return
                }
                handOff(SyncGroup(pending: Array(batch[groupStart..<k]), staged: writer.staged, segment: writer.active, needsSync: false))
                writer.staged.removeAll(keepingCapacity: true)
                groupStart = k
                do {
                    try roll()
                } catch {
                    let e = error as? SegmentLogError ?? SegmentLogError.io(error, "roll", directory)
                    if case .syncFailed = e.code { poison(e) }
                    fail(batch[k...], e)
                    return
                }
            }
            stage(batch[k].batch)
        }
        do {
            try flush()
        } catch {
            fail(batch[groupStart...], poison(error))
            return
        }
        let needsSync: Bool
        switch options.syncPolicy {
        case .always:
            needsSync = true
        case .interval(let ms):
            needsSync = monotonicNanoseconds() >= writer.lastSyncRequest + UInt64(ms) * 1_000_000
            if needsSync { writer.lastSyncRequest = monotonicNanoseconds() }
            writer.unsynced = !needsSync
        case .never:
            needsSync = false
        }
        handOff(SyncGroup(pending: groupStart == 0 ? batch : Array(batch[groupStart...]), staged: writer.staged,
                          segment: writer.active, needsSync: needsSync))
        writer.staged.removeAll(keepingCapacity: true)
    }

    /// Copies one append's frames into the group buffer, masking CRCs for the active segment, and
    /// stages its index and state effects at their final file offsets.
    private func stage(_ encoded: EncodedBatch) {
        let size = encoded.bytes.count
        writer.reserve(size)
        let base = writer.end + writer.used
        let mask = writer.mask
        let out = UnsafeMutableRawBufferPointer(start: writer.buffer + writer.used, count: size)
        encoded.bytes.withUnsafeBytes { out.copyMemory(from: $0) }
        let view = UnsafeRawBufferPointer(out)
        writer.frameOffsets.removeAll(keepingCapacity: true)
        writer.frameLengths.removeAll(keepingCapacity: true)
        var p = 0
        while p < size {
            let stored = Int(view.le(p + 4, as: UInt32.self))
            out.putLE(view.le(p, as: UInt32.self) ^ mask, at: p)
            writer.frameOffsets.append(base + p)
            writer.frameLengths.append(Format.recordHeaderSize + stored)
            p += Format.recordHeaderSize + stored
        }
        writer.rawPayloadBytes += encoded.rawPayloadBytes
        writer.storedPayloadBytes += encoded.storedPayloadBytes
        writer.used += size
        let segment = UInt32(truncatingIfNeeded: writer.active.sequence)
        for op in encoded.ops {
            switch op {
            case .entry(let slot, let frame, let entryOffset):
                let f = Int(frame)
                writer.staged.append(.entry(slot, SlotLocation(
                    segment: segment, frameOffset: UInt32(writer.frameOffsets[f]),
                    frameLength: UInt32(writer.frameLengths[f]), entryOffset: entryOffset)))
            case .promise(let ballot):
                writer.promised = ballot
                writer.staged.append(.promise(ballot))
            case .chosen(let through):
                if writer.chosenThrough.map({ through > $0 }) ?? true { writer.chosenThrough = through }
                writer.staged.append(.chosen(through))
            case .snapshot(let slot):
                if writer.snapshotSlot.map({ slot > $0 }) ?? true { writer.snapshotSlot = slot }
                writer.staged.append(.snapshot(slot))
            case .truncateFrom(let slot):
                writer.staged.append(.truncateFrom(slot))
            }
        }
    }

    /// Writes the assembled group at the end of the active segment.
    private func flush() throws {
        guard writer.used > 0 else { return }
        do {
            try fileSystem.writeAll(writer.active.fd, UnsafeRawBufferPointer(start: writer.buffer, count: writer.used),
                                    at: Int64(writer.end))
        } catch {
            throw SegmentLogError.io(error, "pwrite", writer.active.path)
        }
        writer.end += writer.used
        writer.bytesWritten += writer.used
        writer.used = 0
    }

    /// Ends the active segment with a segment-end record, so recovery knows where its records end
    /// even when stale records of a recycled file's earlier use follow them.
    private func seal() throws {
        do {
            try RecordCodec.segmentEndFrame(sequence: writer.active.sequence).withUnsafeBytes {
                try fileSystem.writeAll(writer.active.fd, $0, at: Int64(writer.end))
            }
        } catch {
            throw SegmentLogError.io(error, "pwrite", writer.active.path)
        }
    }

    /// `fdatasync` on the writer thread, before a roll.
    private func syncActiveSegment() throws {
        try Self.dataSync(writer.active, fileSystem: fileSystem)
        lock.withLock { shared.stats.dataSyncs += 1 }
    }

    /// `fdatasync`. A failure is fatal for the store (no retry): the kernel may have dropped the
    /// dirty pages, and a second fsync could report success over lost data.
    static func dataSync(_ segment: SegmentFile, fileSystem: any FileSystem) throws {
        do {
            try fileSystem.fdatasync(segment.fd)
        } catch {
            let code = (error as? FileSystemError)?.errno ?? EIO
            throw SegmentLogError(.syncFailed(errno: code, path: segment.path), "fdatasync", cause: error as? FileSystemError)
        }
    }

    /// Starts the next segment, in a file compaction freed if there is one.
    private func roll() throws {
        let sequence = writer.active.sequence + 1
        guard sequence < Format.maxSequence else {
            throw SegmentLogError(.io(errno: EOVERFLOW, path: directory), "segment sequence limit 2^32 reached")
        }
        var header = SegmentHeader(sequence: sequence, promised: writer.promised,
                                   chosenThrough: writer.chosenThrough, snapshotSlot: writer.snapshotSlot)
        let file: SegmentFile
        if let free = lock.withLock({ shared.freeSegments.popLast() }) {
            header.recycled = true
            file = try Self.reuseSegment(free, header, directory: directory, fileSystem: fileSystem)
        } else {
            file = try Self.createSegment(header, directory: directory, options: options, fileSystem: fileSystem)
        }
        lock.withLock {
            shared.segments.append(file)
            shared.stats.segmentsCreated += 1
            if header.recycled { shared.stats.segmentsRecycled += 1 }
        }
        writer.active = file
        writer.end = Format.segmentHeaderSize
        logger.debug("rolled to a new segment", metadata: ["segment": "\(file.path)"])
    }

    /// A new segment file: reserved (`fallocate`), header written and synced under a temporary
    /// name, renamed into place, directory synced, so a segment file always has a complete header.
    static func createSegment(_ header: SegmentHeader, directory: String, options: Options,
                              fileSystem: any FileSystem) throws -> SegmentFile {
        let path = directory + "/" + Format.segmentFileName(header.sequence)
        let temporary = path + Format.temporarySuffix
        return try install(header, from: temporary, to: path, mode: .readWriteCreate, directory: directory,
                           fileSystem: fileSystem) { fd, step in
            step = "ftruncate"
            try fileSystem.truncate(fd, to: 0)
            guard options.preallocate else { return }
            step = "fallocate"
            do {
                try fileSystem.allocate(fd, offset: 0, length: Int64(options.segmentSize))
            } catch let error as FileSystemError where error.errno == EOPNOTSUPP || error.errno == ENOSYS || error.errno == EINVAL {
                // The file system cannot reserve space; appends extend the file instead.
            }
        }
    }

    /// A new segment in a file compaction freed: the same steps as `createSegment`, without the
    /// reservation. The file keeps its blocks and stale records; `header` must say `recycled`.
    static func reuseSegment(_ free: String, _ header: SegmentHeader, directory: String,
                             fileSystem: any FileSystem) throws -> SegmentFile {
        try install(header, from: free, to: directory + "/" + Format.segmentFileName(header.sequence), mode: .readWrite,
                    directory: directory, fileSystem: fileSystem) { _, _ in }
    }

    /// Opens `source`, runs `prepare`, writes and syncs `header`, renames the file to `path` and
    /// syncs the directory (``FileSystem/installDurably(from:to:mode:directory:purpose:prepare:)``).
    private static func install(_ header: SegmentHeader, from source: String, to path: String, mode: FileOpenMode,
                                directory: String, fileSystem: any FileSystem,
                                prepare: (Int32, inout String) throws -> Void) throws -> SegmentFile {
        guard header.sequence <= UInt64(UInt32.max) else {
            throw SegmentLogError(.invalidArgument, "segment sequence space exhausted")
        }
        let fd = try fileSystem.installDurably(from: source, to: path, mode: mode, directory: directory,
                                               purpose: "creating segment") { fd, step in
            try prepare(fd, &step)
            step = "pwrite"
            try header.encoded().withUnsafeBytes { try fileSystem.writeAll(fd, $0, at: 0) }
        }
        return SegmentFile(sequence: header.sequence, path: path, fd: fd, fileSystem: fileSystem)
    }

    private func handOff(_ group: SyncGroup) {
        let counters = (writer.bytesWritten, writer.rawPayloadBytes, writer.storedPayloadBytes)
        writer.bytesWritten = 0
        writer.rawPayloadBytes = 0
        writer.storedPayloadBytes = 0
        lock.withLock {
            shared.stats.bytesWritten += counters.0
            shared.stats.rawPayloadBytes += counters.1
            shared.stats.storedPayloadBytes += counters.2
        }
        syncLock.lock()
        syncQueue.groups.append(group)
        let wake = syncQueue.syncerWaiting
        syncQueue.syncerWaiting = false
        syncLock.unlock()
        // Writer and syncer wait on the same condition with different predicates: broadcast.
        if wake { syncLock.broadcast() }
    }

    private func fail(_ pending: ArraySlice<Pending>, _ error: SegmentLogError) {
        writer.staged.removeAll(keepingCapacity: true)
        writer.used = 0
        acknowledger.finish(pending.map(\.waiter), .failure(error))
    }

    /// Records a write-path failure: from now on the store refuses writes.
    @discardableResult
    func poison(_ error: any Error) -> SegmentLogError {
        let e = error as? SegmentLogError ?? SegmentLogError.io(error, "write", directory)
        let first: Bool = lock.withLock {
            if shared.failure == nil {
                shared.failure = e
                return true
            }
            return false
        }
        if first { logger.error("segment log refuses further writes", metadata: ["error": "\(e)"]) }
        return e
    }

    // MARK: Syncer thread

    func syncerLoop() {
        var groups: [SyncGroup] = []
        var lastAcknowledged = 0
        // Under `sync=always` every write is followed by a sync, so when there is nothing to sync
        // the syncer itself waits for appends and writes them (below); the writer thread is only
        // woken while a sync runs, to write what arrives meanwhile.
        let writesWhenIdle = options.syncPolicy == .always
        while true {
            syncLock.lock()
            while syncQueue.groups.isEmpty {
                if writesWhenIdle {
                    // Under `syncLock`, which an appender takes to wake us: no lost wake-up.
                    let queued = lock.withLock {
                        if !shared.queue.isEmpty { return true }
                        shared.syncerIdle = true
                        return false
                    }
                    if queued { break }
                }
                syncQueue.syncerWaiting = true
                syncLock.wait()
            }
            syncLock.unlock()
            if writesWhenIdle { lock.withLock { shared.syncerIdle = false } }
            if options.commitDelayMicroseconds > 0 && lastAcknowledged >= options.commitDelayMinimumAppends {
                usleep(UInt32(options.commitDelayMicroseconds))
                lock.withLock { shared.stats.delayedCommits += 1 }
            }
            // Write what queued up since the writer's last group, so this sync covers it too.
            // (The writer waits for the syncer to take its group, so without this, appends that
            // arrived during the previous sync would wait a whole extra sync.)
            writeLock.withLock { _ = writeQueued() }
            syncLock.lock()
            swap(&groups, &syncQueue.groups)
            let failure = syncQueue.failure
            let wakeWriter = syncQueue.writerWaiting
            syncQueue.writerWaiting = false
            syncLock.unlock()
            if wakeWriter { syncLock.broadcast() }

            if groups.isEmpty { continue }  // the writer took and handed on what woke us
            let final = groups.last?.isFinal ?? false
            if let failure {
                failAll(groups, SegmentLogError(.storeFailed, "", cause: failure))
            } else {
                lastAcknowledged = commit(groups)
            }
            groups.removeAll(keepingCapacity: true)
            if final { return }
        }
    }

    /// Syncs what the groups need, then publishes and acknowledges them in order.
    /// - Returns: how many appends it acknowledged.
    @discardableResult
    private func commit(_ groups: [SyncGroup]) -> Int {
        var syncs = 0
        let syncStart = monotonicNanoseconds()
        do {
            var synced: [ObjectIdentifier] = []
            var dirty: [SegmentFile] = []
            for group in groups {
                let id = ObjectIdentifier(group.segment)
                if group.isFinal {
                    // Close: whatever `.interval`/`.never` left unsynced.
                    let pendingDirty = syncLock.withLock { syncQueue.dirty } + dirty
                    for segment in pendingDirty where !synced.contains(ObjectIdentifier(segment)) {
                        try Self.dataSync(segment, fileSystem: fileSystem)
                        synced.append(ObjectIdentifier(segment))
                        syncs += 1
                    }
                } else if group.needsSync && !synced.contains(id) {
                    try Self.dataSync(group.segment, fileSystem: fileSystem)
                    synced.append(id)
                    syncs += 1
                } else if !group.needsSync && !group.pending.isEmpty && !dirty.contains(where: { $0 === group.segment }) {
                    dirty.append(group.segment)
                }
            }
            syncLock.withLock {
                syncQueue.dirty.removeAll { s in synced.contains(ObjectIdentifier(s)) }
                for d in dirty where !syncQueue.dirty.contains(where: { $0 === d }) && !synced.contains(ObjectIdentifier(d)) {
                    syncQueue.dirty.append(d)
                }
            }
        } catch {
            let e = poison(error)
            syncLock.withLock {
                syncQueue.failure = e
                if groups.last?.isFinal ?? false { syncQueue.closeError = e }
            }
            failAll(groups, e)
            return 0
        }
        let syncNanoseconds = syncs > 0 ? monotonicNanoseconds() &- syncStart : 0
        var acknowledged = 0
        let observer = lock.withLock {
            shared.stats.dataSyncs += syncs
            for group in groups {
                shared.apply(group.staged, segment: group.segment)
                acknowledged += group.pending.count
            }
            // One commit per sync, however many written groups it covered.
            if acknowledged > 0 { shared.stats.groupCommits += 1 }
            shared.stats.appends += acknowledged
            return shared.commitObserver
        }
        acknowledger.finish(groups.flatMap { $0.pending.map(\.waiter) }, .success(()))
        if let observer, acknowledged > 0 || syncs > 0 {
            observer(SegmentStore.CommitObservation(syncNanoseconds: syncNanoseconds, syncs: syncs, appends: acknowledged))
        }
        return acknowledged
    }

    private func failAll(_ groups: [SyncGroup], _ error: SegmentLogError) {
        acknowledger.finish(groups.flatMap { $0.pending.map(\.waiter) }, .failure(error))
    }
}

extension SegmentStore.Shared {
    /// Applies a durable group's effects; one exclusive access for the whole group.
    mutating func apply(_ staged: [StagedOp], segment: SegmentFile) {
        for op in staged {
            switch op {
            case .entry(let slot, let location):
                log.setEntry(slot, location)
                segment.noteSlot(slot)
            case .promise(let ballot): log.promise(ballot)
            case .chosen(let through): log.chosen(through)
            case .snapshot(let slot): log.snapshot(slot)
            case .truncateFrom(let slot): log.truncate(from: slot)
            }
        }
    }
}
