#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// State owned by the writer thread.
final class Writer: @unchecked Sendable {
    var active: SegmentFile!
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
    var unsynced = false
    var lastSync: UInt64 = monotonicNanoseconds()
    /// Set on the first write-path failure; every later append fails with it as the cause.
    var failure: SegmentLogError?
    var closeError: SegmentLogError?
    var stats = SegmentStore.Statistics()

    enum StagedOp {
        case entry(UInt64, SlotLocation)
        case promise(LogBallot)
        case chosen(UInt64)
        case snapshot(UInt64)
        case truncateFrom(UInt64)
    }

    init(active: SegmentFile, end: Int, log: LogState) {
        self.active = active
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

extension SegmentStore {
    /// The writer thread: takes everything queued, writes it with one `pwrite`, syncs per policy,
    /// publishes it to readers, then acknowledges. Runs until `close` and the queue is drained.
    func writerLoop() {
        var batch: [Pending] = []
        while true {
            lock.lock()
            var syncDue = false
            while shared.queue.isEmpty && !shared.closing {
                if writer.unsynced, case .interval(let ms) = options.syncPolicy {
                    let deadline = writer.lastSync + UInt64(ms) * 1_000_000
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
            let exiting = shared.queue.isEmpty && shared.closing
            swap(&batch, &shared.queue)
            lock.unlock()

            if !batch.isEmpty {
                process(&batch)
                batch.removeAll(keepingCapacity: true)
            } else if exiting {
                finalSync()
                return
            } else if syncDue {
                do { try sync() } catch { poison(error as? SegmentLogError ?? SegmentLogError.io(error, "fdatasync", writer.active.path)) }
                publishStats()
            }
        }
    }

    private func process(_ batch: inout [Pending]) {
        if let failure = writer.failure {
            let error = SegmentLogError(.storeFailed, "", cause: failure)
            for p in batch { p.waiter.finish(.failure(error)) }
            return
        }
        let headerSize = Format.segmentHeaderSize
        var firstUnpublished = 0
        writer.used = 0
        writer.staged.removeAll(keepingCapacity: true)

        for k in batch.indices {
            let size = batch[k].batch.bytes.count
            if writer.end + writer.used + size > options.segmentSize && writer.end + writer.used > headerSize {
                // Roll: make what is already assembled durable in the old segment, acknowledge it,
                // and start a new segment whose header carries the state so far.
                do {
                    try flush()
                    try sync()
                } catch {
                    fail(batch[firstUnpublished...], poison(error))
                    return
                }
                publish(batch[firstUnpublished..<k])
                firstUnpublished = k
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
            switch options.syncPolicy {
            case .always:
                try sync()
            case .interval(let ms):
                if monotonicNanoseconds() >= writer.lastSync + UInt64(ms) * 1_000_000 { try sync() }
            case .never:
                break
            }
        } catch {
            fail(batch[firstUnpublished...], poison(error))
            return
        }
        publish(batch[firstUnpublished...])
    }

    /// Copies one append's frames into the group buffer, masking CRCs for the active segment, and
    /// stages its index and state effects at their final file offsets.
    private func stage(_ encoded: EncodedBatch) {
        let size = encoded.bytes.count
        writer.reserve(size)
        let base = writer.end + writer.used
        let mask = Format.segmentMask(writer.active.sequence)
        let out = UnsafeMutableRawBufferPointer(start: writer.buffer + writer.used, count: size)
        encoded.bytes.withUnsafeBytes { out.copyMemory(from: $0) }
        writer.frameOffsets.removeAll(keepingCapacity: true)
        writer.frameLengths.removeAll(keepingCapacity: true)
        var p = 0
        while p < size {
            let stored = Int(UnsafeRawBufferPointer(out).le(p + 4, as: UInt32.self))
            out.putLE(UnsafeRawBufferPointer(out).le(p, as: UInt32.self) ^ mask, at: p)
            writer.frameOffsets.append(base + p)
            writer.frameLengths.append(Format.recordHeaderSize + stored)
            writer.stats.rawPayloadBytes += Int(UnsafeRawBufferPointer(out).le(p + 8, as: UInt32.self))
            writer.stats.storedPayloadBytes += stored
            p += Format.recordHeaderSize + stored
        }
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
        writer.stats.bytesWritten += writer.used
        writer.used = 0
        writer.unsynced = true
    }

    /// `fdatasync`s the active segment if anything is unsynced. A failure is fatal (no retry):
    /// the kernel may have dropped the dirty pages and a second fsync could report success.
    func sync() throws {
        guard writer.unsynced else { return }
        do {
            try fileSystem.fdatasync(writer.active.fd)
        } catch {
            let code = (error as? FileSystemError)?.errno ?? EIO
            throw SegmentLogError(.syncFailed(errno: code, path: writer.active.path), "fdatasync", cause: error as? FileSystemError)
        }
        writer.stats.dataSyncs += 1
        writer.unsynced = false
        writer.lastSync = monotonicNanoseconds()
    }

    /// Starts the next segment: header written and synced under a temporary name, renamed into
    /// place, directory synced, so a segment file always has a complete header.
    private func roll() throws {
        let sequence = writer.active.sequence + 1
        let header = SegmentHeader(sequence: sequence, promised: writer.promised,
                                   chosenThrough: writer.chosenThrough, snapshotSlot: writer.snapshotSlot)
        let file = try Self.createSegment(header, directory: directory, options: options, fileSystem: fileSystem)
        lock.withLock { shared.segments.append(file) }
        writer.active = file
        writer.end = Format.segmentHeaderSize
        writer.stats.segmentsCreated += 1
        logger.debug("rolled to a new segment", metadata: ["segment": "\(file.path)"])
    }

    static func createSegment(_ header: SegmentHeader, directory: String, options: Options,
                              fileSystem: any FileSystem) throws -> SegmentFile {
        guard header.sequence <= UInt64(UInt32.max) else {
            throw SegmentLogError(.invalidArgument, "segment sequence space exhausted")
        }
        let path = directory + "/" + Format.segmentFileName(header.sequence)
        let temporary = path + Format.temporarySuffix
        let fd: Int32
        do { fd = try fileSystem.open(temporary, mode: .readWriteCreate) } catch { throw SegmentLogError.io(error, "open", temporary) }
        var step = "ftruncate"
        do {
            try fileSystem.truncate(fd, to: 0)
            if options.preallocate {
                step = "fallocate"
                do {
                    try fileSystem.allocate(fd, offset: 0, length: Int64(options.segmentSize))
                } catch let error as FileSystemError where error.errno == EOPNOTSUPP || error.errno == ENOSYS || error.errno == EINVAL {
                    // The file system cannot reserve space; appends extend the file instead.
                }
            }
            step = "pwrite"
            try header.encoded().withUnsafeBytes { try fileSystem.writeAll(fd, $0, at: 0) }
            step = "fdatasync"
            try fileSystem.fdatasync(fd)
            step = "rename"
            try fileSystem.rename(temporary, to: path)
            step = "directory fsync"
            try fileSystem.syncDirectory(directory)
        } catch {
            try? fileSystem.close(fd)
            if step != "directory fsync" { try? fileSystem.remove(temporary) }
            let code = (error as? FileSystemError)?.errno ?? EIO
            if step == "fdatasync" || step == "directory fsync" {
                throw SegmentLogError(.syncFailed(errno: code, path: step == "fdatasync" ? temporary : directory), step,
                                      cause: error as? FileSystemError)
            }
            throw SegmentLogError(.io(errno: code, path: temporary), "creating segment: \(step)", cause: error as? FileSystemError)
        }
        return SegmentFile(sequence: header.sequence, path: path, fd: fd, fileSystem: fileSystem)
    }

    /// Makes `staged` visible to readers and acknowledges `pending`. Only called after the group is
    /// durable under the policy.
    private func publish(_ pending: ArraySlice<Pending>) {
        writer.stats.groupCommits += 1
        writer.stats.appends += pending.count
        lock.withLock {
            let active = writer.active!
            for op in writer.staged {
                switch op {
                case .entry(let slot, let location):
                    shared.log.setEntry(slot, location)
                    active.noteSlot(slot)
                case .promise(let ballot): shared.log.promise(ballot)
                case .chosen(let through): shared.log.chosen(through)
                case .snapshot(let slot): shared.log.snapshot(slot)
                case .truncateFrom(let slot): shared.log.truncate(from: slot)
                }
            }
            shared.stats = writer.stats
        }
        writer.staged.removeAll(keepingCapacity: true)
        for p in pending { p.waiter.finish(.success(())) }
    }

    private func publishStats() {
        lock.withLock { shared.stats = writer.stats }
    }

    private func fail(_ pending: ArraySlice<Pending>, _ error: SegmentLogError) {
        writer.staged.removeAll(keepingCapacity: true)
        writer.used = 0
        for p in pending { p.waiter.finish(.failure(error)) }
    }

    /// Records a write-path failure: from now on the store refuses writes.
    @discardableResult
    private func poison(_ error: any Error) -> SegmentLogError {
        let e = error as? SegmentLogError ?? SegmentLogError.io(error, "write", writer.active.path)
        if writer.failure == nil {
            writer.failure = e
            logger.error("segment log refuses further writes", metadata: ["error": "\(e)"])
        }
        lock.withLock { shared.failure = writer.failure }
        return e
    }

    private func finalSync() {
        guard writer.failure == nil else { return }
        do { try sync() } catch { writer.closeError = poison(error) }
        publishStats()
    }
}
