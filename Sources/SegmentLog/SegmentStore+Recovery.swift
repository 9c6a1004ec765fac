import Dispatch
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `Recovery` hands to a new store.
struct RecoveredLog {
    var segments: [SegmentFile]
    var log: LogState
    /// Where appends continue in the last segment.
    var activeEnd: Int
    /// Paths of segment files compaction freed, kept for reuse (`<segment>.free`).
    var freeSegments: [String] = []
    /// The directory's identity after recovery (marked if tolerant recovery cut anything).
    var identity: DirectoryIdentity?
}

/// Rebuilds a store's state from its directory: verifies every segment header and record CRC,
/// cuts a torn tail of the last segment, and replays acceptor state into a fresh slot index.
///
/// Damage that a crashed append can leave (the last segment ends in a partial or zeroed record
/// and nothing valid follows it) is end-of-log. Anything else is corruption: strict mode fails
/// closed, tolerant mode keeps the valid prefix and sets the rest aside.
struct Recovery {
    let directory: String
    let options: SegmentStore.Options
    let fileSystem: any FileSystem
    let logger: Logger
    /// The identity the store opened with; replaced by the marked one when tolerant mode cuts.
    var identity: DirectoryIdentity?

    private func path(_ name: String) -> String { directory + "/" + name }

    /// Tolerant mode is about to cut records that may hold promises and votes: mark the directory
    /// first (see `DirectoryIdentity.markLostState`), so the cut can never outlive the mark.
    private mutating func markLostState() throws {
        identity = try DirectoryIdentity.markLostState(.tolerantRecovery, directory: directory, fileSystem: fileSystem, logger: logger)
    }

    mutating func run() throws -> RecoveredLog {
        let names: [String]
        do { names = try fileSystem.listDirectory(directory) } catch { throw SegmentLogError.io(error, "readdir", directory) }

        // Files half-made before an atomic rename never became part of the log.
        let temporaries = names.filter { $0.hasSuffix(Format.temporarySuffix) }
        for name in temporaries {
            do { try fileSystem.remove(path(name)) } catch { throw SegmentLogError.io(error, "unlink", path(name)) }
            logger.info("removed leftover temporary file", metadata: ["file": "\(path(name))"])
        }
        if !temporaries.isEmpty { try syncDirectory() }

        var sequences = names.compactMap(Format.segmentSequence).sorted()
        for i in sequences.indices.dropFirst() where sequences[i] != sequences[i - 1] + 1 {
            let missing = path(Format.segmentFileName(sequences[i - 1] + 1))
            let reason = "segment file missing: sequence jumps from \(sequences[i - 1]) to \(sequences[i])"
            guard options.recoveryMode == .tolerant else { throw SegmentLogError.corruption(missing, 0, reason) }
            logger.warning("tolerant recovery: \(reason); setting later segments aside")
            try markLostState()
            try setAside(Array(sequences[i...]))
            sequences.removeSubrange(i...)
            break
        }

        var segments: [SegmentFile] = []
        var log = LogState()
        var activeEnd = Format.segmentHeaderSize
        var lastSealed = false

        // Segments are scanned (read, framed, CRC-checked, decoded) in parallel, a wave of one
        // per core at a time; their effects are then replayed in sequence order on this thread.
        let workers = max(1, min(8, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        var next = 0
        segmentLoop: while next < sequences.count {
            let wave = Array(sequences[next..<min(sequences.count, next + workers)])
            var files: [SegmentFile] = []
            for sequence in wave {
                let filePath = path(Format.segmentFileName(sequence))
                do {
                    let fd = try fileSystem.open(filePath, mode: .readWrite)
                    files.append(SegmentFile(sequence: sequence, path: filePath, fd: fd, fileSystem: fileSystem))
                } catch {
                    throw SegmentLogError.io(error, "open", filePath)
                }
            }
            let results = Self.scanInParallel(files, fileSystem: fileSystem)
            for (k, result) in results.enumerated() {
                let i = next + k
                let file = files[k]
                let isLast = i == sequences.count - 1
                if let ioError = result.ioError { throw ioError }
                // The header is synced before the file is renamed into place, so a bad header is
                // never a torn append.
                if let headerProblem = result.headerProblem {
                    guard options.recoveryMode == .tolerant else { throw SegmentLogError.corruption(file.path, 0, headerProblem) }
                    logger.warning("tolerant recovery: \(file.path): \(headerProblem); setting it and later segments aside")
                    try markLostState()
                    try setAside(Array(sequences[i...]))
                    break segmentLoop
                }
                if i == 0, let header = result.header { log = LogState(header: header) }
                for op in result.ops {
                    switch op {
                    case .entry(let slot, let location): log.setEntry(slot, location)
                    case .promise(let ballot): log.promise(ballot)
                    case .chosen(let through): log.chosen(through)
                    case .snapshot(let slot): log.snapshot(slot)
                    case .truncateFrom(let slot): log.truncate(from: slot)
                    }
                }
                file.maxSlot = result.maxSlot
                segments.append(file)
                activeEnd = result.end
                lastSealed = result.sealed

                if let damage = result.damage {
                    if isLast && damage.mayBeTorn && !result.validFrameAfterDamage && result.header?.recycled == true {
                        // Stale records of the file's earlier use fail this sequence's CRC mask, and so
                        // does a torn append: either way the log ends here. Nothing is cut: no later
                        // record can verify, and appends write over them.
                        logger.info("end of log in a recycled segment", metadata: [
                            "file": "\(file.path)", "offset": "\(damage.offset)", "reason": "\(damage.reason)",
                        ])
                    } else if isLast && damage.mayBeTorn && !result.validFrameAfterDamage {
                        logger.notice("torn tail at end of log; cutting it", metadata: [
                            "file": "\(file.path)", "offset": "\(damage.offset)", "reason": "\(damage.reason)",
                        ])
                        try cutTail(file, at: damage.offset)
                    } else if options.recoveryMode == .tolerant {
                        logger.warning("tolerant recovery: keeping the valid prefix", metadata: [
                            "file": "\(file.path)", "offset": "\(damage.offset)", "reason": "\(damage.reason)",
                        ])
                        try markLostState()
                        try cutTail(file, at: damage.offset)
                        try setAside(Array(sequences[(i + 1)...]))
                        break segmentLoop
                    } else {
                        throw SegmentLogError.corruption(file.path, damage.offset, damage.reason)
                    }
                } else if !isLast && !result.sealed && (result.header?.formatVersion ?? 1) >= 2 {
                    // Rule 3: the writer seals a segment before it rolls, so records after
                    // `result.end` were lost (a zeroed or truncated range), acknowledged ones too.
                    let reason = "segment ends without its segment-end record, yet a later segment follows: the records after offset \(result.end) are missing"
                    guard options.recoveryMode == .tolerant else { throw SegmentLogError.corruption(file.path, result.end, reason) }
                    logger.warning("tolerant recovery: \(file.path): \(reason); setting later segments aside")
                    try markLostState()
                    try setAside(Array(sequences[(i + 1)...]))
                    lastSealed = false
                    break segmentLoop
                }
            }
            next += wave.count
        }

        if segments.isEmpty || lastSealed {
            // A new log, or (tolerant mode) nothing valid was left: start after any set-aside file.
            // Or the writer sealed the last segment and crashed before the next one was in place.
            let sequence = (segments.last?.sequence ?? sequences.last ?? names.compactMap { Format.segmentSequence(fileName: $0) }.max() ?? 0) + 1
            let header = SegmentHeader(sequence: sequence, promised: log.promised,
                                       chosenThrough: log.chosenThrough, snapshotSlot: log.snapshotSlot)
            segments.append(try SegmentStore.createSegment(header, directory: directory, options: options, fileSystem: fileSystem))
            activeEnd = Format.segmentHeaderSize
        }
        try checkSnapshots(names: names, log: log)
        return RecoveredLog(segments: segments, log: log, activeEnd: activeEnd, freeSegments: try adoptFreeSegments(names), identity: identity)
    }

    /// Keeps up to `Options.recycleSegments` freed segment files for reuse and deletes the rest.
    /// Their contents do not matter: reuse rewrites the header, and the new sequence's CRC mask
    /// makes every old record invalid.
    private func adoptFreeSegments(_ names: [String]) throws -> [String] {
        let free = names.filter { $0.hasSuffix(Format.segmentSuffix + Format.freeSuffix) }.sorted()
        let kept = Array(free.prefix(options.recycleSegments))
        for name in free.dropFirst(kept.count) {
            do { try fileSystem.remove(path(name)) } catch { throw SegmentLogError.io(error, "unlink", path(name)) }
        }
        if kept.count < free.count { try syncDirectory() }
        return kept.map(path)
    }

    /// What scanning one segment found: its header, the effects of its records in order, and
    /// where and how its valid records end.
    struct SegmentScan {
        var header: SegmentHeader?
        var headerProblem: String?
        var ops: [StagedOp] = []
        var maxSlot: UInt64?
        var end = Format.segmentHeaderSize
        var damage: (offset: Int, reason: String, mayBeTorn: Bool)?
        /// Whether a valid record starts somewhere after the damage (then it cannot be a tear).
        var validFrameAfterDamage = false
        /// The records end at a segment-end record: the writer had rolled past this segment.
        var sealed = false
        var ioError: SegmentLogError?
    }

    static func scanInParallel(_ files: [SegmentFile], fileSystem: any FileSystem) -> [SegmentScan] {
        final class Slots: @unchecked Sendable {
            var results: [SegmentScan]
            init(_ n: Int) { results = Array(repeating: SegmentScan(), count: n) }
        }
        struct Work: @unchecked Sendable {
            let files: [SegmentFile]
            let fileSystem: any FileSystem
            let slots: Slots
        }
        let work = Work(files: files, fileSystem: fileSystem, slots: Slots(files.count))
        if files.count == 1 {
            work.slots.results[0] = scan(files[0], fileSystem: fileSystem)
        } else {
            // Each worker writes only its own element of the pre-sized array.
            work.slots.results.withUnsafeMutableBufferPointer { buffer in
                let out = UncheckedBuffer(buffer: buffer)
                DispatchQueue.concurrentPerform(iterations: files.count) { k in
                    out.buffer[k] = scan(work.files[k], fileSystem: work.fileSystem)
                }
            }
        }
        return work.slots.results
    }

    struct UncheckedBuffer: @unchecked Sendable {
        let buffer: UnsafeMutableBufferPointer<SegmentScan>
    }

    /// Reads one segment (mapped when the file system allows) and checks it completely: header,
    /// framing, CRCs, payloads. Touches nothing shared.
    static func scan(_ file: SegmentFile, fileSystem: any FileSystem) -> SegmentScan {
        var result = SegmentScan()
        let size: Int
        do { size = Int(try fileSystem.size(file.fd)) } catch {
            result.ioError = SegmentLogError.io(error, "fstat", file.path)
            return result
        }
        guard size <= Format.maxSegmentSize else {
            result.ioError = SegmentLogError(.io(errno: EFBIG, path: file.path), "segment of \(size) bytes, above the 2 GiB any segment can have")
            return result
        }
        var mapped: UnsafeRawBufferPointer?
        var owned: UnsafeMutableRawBufferPointer?
        defer {
            if let mapped { fileSystem.unmap(mapped) }
            owned?.deallocate()
        }
        let bytes: UnsafeRawBufferPointer
        if let region = fileSystem.mapReadOnly(file.fd, length: size) {
            mapped = region
            bytes = region
        } else {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 4096)
            owned = buffer
            do {
                let n = try fileSystem.readFully(file.fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]), at: 0)
                if n != size { throw FileSystemError(errno: EIO, function: "pread (file shrank while reading)") }
            } catch {
                result.ioError = SegmentLogError.io(error, "read", file.path)
                return result
            }
            bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<size])
        }
        var parser = SegmentParser(bytes: bytes, sequence: file.sequence)
        switch SegmentHeader.decode(parser.bytes) {
        case .failure(let failure):
            result.headerProblem = failure.reason
            return result
        case .success(let header):
            if header.sequence != file.sequence {
                result.headerProblem = "header names sequence \(header.sequence), file name says \(file.sequence)"
                return result
            }
            result.header = header
            parser.recycled = header.recycled
        }
        var offset = Format.segmentHeaderSize
        frames: while true {
            switch parser.step(at: offset) {
            case .end:
                break frames
            case .sealed:
                result.sealed = true
                break frames
            case .damage(let at, let reason, _):
                result.damage = (at, reason, true)
                break frames
            case .frame(let frame):
                if let reason = emit(frame, file: file, into: &result) {
                    // The CRC matched, so these bytes are what a writer wrote: not a tear.
                    result.damage = (frame.offset, reason, false)
                    break frames
                }
                offset += frame.length
            }
        }
        result.end = offset
        if let damage = result.damage {
            result.validFrameAfterDamage = parser.nextValidFrame(after: damage.offset) != nil
        }
        return result
    }

    /// Decodes one verified frame into ops. Returns what is wrong with its payload, if anything.
    private static func emit(_ frame: FrameView, file: SegmentFile, into result: inout SegmentScan) -> String? {
        if frame.codec == .lz4 {
            guard let raw = RecordCodec.decompress(frame.stored, rawLength: frame.rawLength) else {
                return "LZ4 payload does not inflate to \(frame.rawLength) bytes"
            }
            return raw.withUnsafeBytes { emit(frame, raw: $0, file: file, into: &result) }
        }
        return emit(frame, raw: frame.stored, file: file, into: &result)
    }

    private static func emit(_ frame: FrameView, raw: UnsafeRawBufferPointer, file: SegmentFile, into result: inout SegmentScan) -> String? {
        if frame.type == .accepted {
            // Check the whole payload before emitting any of it.
            if let reason = RecordCodec.walkEntries(raw, { _, _ in }) { return reason }
            let segment = UInt32(truncatingIfNeeded: file.sequence)
            var maxSlot = result.maxSlot
            _ = RecordCodec.walkEntries(raw) { slot, p in
                result.ops.append(.entry(slot, SlotLocation(segment: segment, frameOffset: UInt32(frame.offset),
                                                            frameLength: UInt32(frame.length), entryOffset: UInt32(p))))
                if maxSlot.map({ slot > $0 }) ?? true { maxSlot = slot }
            }
            result.maxSlot = maxSlot
            return nil
        }
        switch RecordCodec.decode(type: frame.type, raw: raw) {
        case .failure(let failure):
            return failure.reason
        case .success(.promise(let ballot)): result.ops.append(.promise(ballot))
        case .success(.chosen(let through)): result.ops.append(.chosen(through))
        case .success(.snapshot(let slot)): result.ops.append(.snapshot(slot))
        case .success(.suffixTruncated(let from)): result.ops.append(.truncateFrom(from))
        case .success(.accepted): break
        }
        return nil
    }

    /// Saves the bytes from `offset` to the last non-zero byte into `<segment>.torn-<offset>`,
    /// then zeroes them in the segment (keeping its preallocation) and syncs both.
    private func cutTail(_ file: SegmentFile, at offset: Int) throws {
        let tail: [UInt8]
        do {
            let size = Int(try fileSystem.size(file.fd))
            var bytes = [UInt8](repeating: 0, count: max(0, size - offset))
            let n = try bytes.withUnsafeMutableBytes { try fileSystem.readFully(file.fd, into: $0, at: Int64(offset)) }
            tail = Array(bytes[0..<n])
        } catch {
            throw SegmentLogError.io(error, "reading torn tail", file.path)
        }
        guard let last = tail.withUnsafeBytes({ SegmentParser(bytes: $0, sequence: file.sequence).lastNonZero(from: 0) }) else { return }
        let cut = tail[0...last]
        let sidePath = file.path + Format.tornSuffix + String(offset)
        do {
            let fd = try fileSystem.open(sidePath, mode: .readWriteCreate)
            defer { try? fileSystem.close(fd) }
            try fileSystem.truncate(fd, to: 0)
            try cut.withUnsafeBytes { try fileSystem.writeAll(fd, $0, at: 0) }
            try fileSystem.fdatasync(fd)
        } catch {
            throw SegmentLogError.io(error, "saving torn tail", sidePath)
        }
        let zeros = [UInt8](repeating: 0, count: min(cut.count, 1 << 20))
        do {
            var done = 0
            while done < cut.count {
                let n = min(zeros.count, cut.count - done)
                try zeros.withUnsafeBytes { try fileSystem.writeAll(file.fd, UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: Int64(offset + done)) }
                done += n
            }
            try fileSystem.fdatasync(file.fd)
        } catch {
            throw SegmentLogError.io(error, "zeroing torn tail", file.path)
        }
        try syncDirectory()
        logger.notice("saved cut bytes", metadata: ["file": "\(sidePath)", "bytes": "\(cut.count)"])
    }

    /// Tolerant mode: renames segments out of the log (`<name>.discarded`), keeping their bytes.
    private func setAside(_ sequences: [UInt64]) throws {
        for sequence in sequences {
            let from = path(Format.segmentFileName(sequence))
            // Never over an earlier set-aside file: a later segment may reuse this sequence number.
            var to = from + ".discarded"
            var n = 1
            while fileSystem.fileExists(to) {
                to = from + ".discarded.\(n)"
                n += 1
            }
            do { try fileSystem.rename(from, to: to) } catch { throw SegmentLogError.io(error, "rename", from) }
        }
        if !sequences.isEmpty { try syncDirectory() }
    }

    private func syncDirectory() throws {
        do { try fileSystem.syncDirectory(directory) } catch {
            let code = (error as? FileSystemError)?.errno ?? 5
            throw SegmentLogError(.syncFailed(errno: code, path: directory), "directory fsync", cause: error as? FileSystemError)
        }
    }

    /// The snapshot the log's watermark names must exist and verify; older snapshot files and
    /// newer ones whose marker never became durable are removed.
    private func checkSnapshots(names: [String], log: LogState) throws {
        let slots = names.compactMap(Format.snapshotSlot)
        if let wanted = log.snapshotSlot {
            let snapshotPath = path(Format.snapshotFileName(wanted))
            do {
                _ = try SnapshotFile.read(path: snapshotPath, fileSystem: fileSystem, verifyData: false)
            } catch let error as SegmentLogError {
                guard options.recoveryMode == .tolerant else { throw error }
                logger.warning("tolerant recovery: snapshot for slot \(wanted) unusable: \(error)")
                return
            }
        }
        var removed = false
        for slot in slots where slot != log.snapshotSlot {
            // A snapshot above the watermark was written but its marker never became durable.
            try? fileSystem.remove(path(Format.snapshotFileName(slot)))
            removed = true
        }
        // A table belongs to one snapshot; the others' are stale (or their snapshot never committed).
        if SegmentStore.removeSnapshotTables(in: directory, names: names, fileSystem: fileSystem, where: { $0 != log.snapshotSlot }) { removed = true }
        if removed { try? fileSystem.syncDirectory(directory) }
    }
}
