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

    private func path(_ name: String) -> String { directory + "/" + name }

    func run() throws -> RecoveredLog {
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
            try setAside(Array(sequences[i...]))
            sequences.removeSubrange(i...)
            break
        }

        var segments: [SegmentFile] = []
        var log = LogState()
        var activeEnd = Format.segmentHeaderSize
        var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 4096)
        defer { buffer.deallocate() }

        segmentLoop: for (i, sequence) in sequences.enumerated() {
            let filePath = path(Format.segmentFileName(sequence))
            let isLast = i == sequences.count - 1
            let fd: Int32
            let size: Int
            do {
                fd = try fileSystem.open(filePath, mode: .readWrite)
            } catch {
                throw SegmentLogError.io(error, "open", filePath)
            }
            let file = SegmentFile(sequence: sequence, path: filePath, fd: fd, fileSystem: fileSystem)
            var mapped: UnsafeRawBufferPointer?
            defer { if let mapped { fileSystem.unmap(mapped) } }
            let bytes: UnsafeRawBufferPointer
            do {
                size = Int(try fileSystem.size(fd))
                if let region = fileSystem.mapReadOnly(fd, length: size) {
                    mapped = region
                    bytes = region
                } else {
                    if size > buffer.count {
                        buffer.deallocate()
                        buffer = .allocate(byteCount: size, alignment: 4096)
                    }
                    let n = try fileSystem.readFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]), at: 0)
                    if n != size { throw FileSystemError(errno: EIO, function: "pread (file shrank while reading)") }
                    bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<size])
                }
            } catch {
                throw SegmentLogError.io(error, "read", filePath)
            }
            let parser = SegmentParser(bytes: bytes, sequence: sequence)

            // The header is synced before the file is renamed into place, so a bad header is
            // never a torn append.
            var headerProblem: String?
            switch SegmentHeader.decode(parser.bytes) {
            case .failure(let failure):
                headerProblem = failure.reason
            case .success(let header):
                if header.sequence != sequence {
                    headerProblem = "header names sequence \(header.sequence), file name says \(sequence)"
                } else if i == 0 {
                    log = LogState(header: header)
                }
            }
            if let headerProblem {
                guard options.recoveryMode == .tolerant else { throw SegmentLogError.corruption(filePath, 0, headerProblem) }
                logger.warning("tolerant recovery: \(filePath): \(headerProblem); setting it and later segments aside")
                try setAside(Array(sequences[i...]))
                break segmentLoop
            }

            // Frame first (header checks only), verify CRCs on all cores, then replay in order.
            var frames: [Int] = []
            var offset = Format.segmentHeaderSize
            var damage: (offset: Int, reason: String, mayBeTorn: Bool)?
            framing: while true {
                switch parser.step(at: offset, verifyCRC: false) {
                case .end:
                    break framing
                case .damage(let at, let reason, _):
                    damage = (at, reason, true)
                    break framing
                case .frame(let frame):
                    frames.append(frame.offset)
                    offset += frame.length
                }
            }
            let verified = Self.verifyCRCs(parser, frames)
            if verified < frames.count {
                let bad = frames[verified]
                if case .success(let frame) = parser.header(at: bad) {
                    damage = (bad, "record CRC mismatch: stored \(hex(frame.crcStored)), computed \(hex(parser.computeCRC(frame)))", true)
                } else {
                    damage = (bad, "record header unreadable", true)
                }
                offset = bad
            }
            for i in 0..<verified {
                guard case .success(let frame) = parser.header(at: frames[i]) else { break }
                if let reason = apply(frame, to: &log, file: file) {
                    // The CRC matched, so these bytes are what a writer wrote: not a tear.
                    damage = (frame.offset, reason, false)
                    offset = frame.offset
                    break
                }
            }
            segments.append(file)
            activeEnd = offset

            if let damage {
                if isLast && damage.mayBeTorn, parser.nextValidFrame(after: damage.offset) == nil {
                    logger.notice("torn tail at end of log; cutting it", metadata: [
                        "file": "\(filePath)", "offset": "\(damage.offset)", "reason": "\(damage.reason)",
                    ])
                    try cutTail(file, at: damage.offset, parser: parser)
                } else if options.recoveryMode == .tolerant {
                    logger.warning("tolerant recovery: keeping the valid prefix", metadata: [
                        "file": "\(filePath)", "offset": "\(damage.offset)", "reason": "\(damage.reason)",
                    ])
                    try cutTail(file, at: damage.offset, parser: parser)
                    try setAside(Array(sequences[(i + 1)...]))
                    break segmentLoop
                } else {
                    throw SegmentLogError.corruption(filePath, damage.offset, damage.reason)
                }
            }
        }

        if segments.isEmpty {
            // A new log, or (tolerant mode) nothing valid was left: start after any set-aside file.
            let sequence = (sequences.last ?? names.compactMap { Format.segmentSequence(fileName: $0) }.max() ?? 0) + 1
            let header = SegmentHeader(sequence: sequence, promised: log.promised,
                                       chosenThrough: log.chosenThrough, snapshotSlot: log.snapshotSlot)
            segments.append(try SegmentStore.createSegment(header, directory: directory, options: options, fileSystem: fileSystem))
            activeEnd = Format.segmentHeaderSize
        }
        try checkSnapshots(names: names, log: log)
        return RecoveredLog(segments: segments, log: log, activeEnd: activeEnd)
    }

    /// Verifies the CRC of every frame, splitting the work over the machine's cores (CRC is most
    /// of recovery's cost). Returns the index of the first frame that fails, or `frames.count`.
    static func verifyCRCs(_ parser: SegmentParser, _ frames: [Int]) -> Int {
        let workers = frames.count < 1024 ? 1 : max(1, min(8, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        let chunk = (frames.count + workers - 1) / max(workers, 1)
        let firstBad = UnsafeMutableBufferPointer<Int>.allocate(capacity: workers)
        defer { firstBad.deallocate() }
        firstBad.initialize(repeating: frames.count)
        // The buffers are read-only for the duration; each worker writes only its own slot.
        struct Work: @unchecked Sendable {
            let parser: SegmentParser
            let offsets: UnsafeBufferPointer<Int>
            let firstBad: UnsafeMutableBufferPointer<Int>
            let chunk: Int

            func verify(_ w: Int) {
                let lo = w * chunk
                let hi = min(offsets.count, lo + chunk)
                guard lo < hi else { return }
                for i in lo..<hi {
                    guard case .success(let frame) = parser.header(at: offsets[i]),
                          parser.computeCRC(frame) == frame.crcStored else {
                        firstBad[w] = i
                        return
                    }
                }
            }
        }
        frames.withUnsafeBufferPointer { offsets in
            let work = Work(parser: parser, offsets: offsets, firstBad: firstBad, chunk: chunk)
            if workers == 1 {
                work.verify(0)
            } else {
                DispatchQueue.concurrentPerform(iterations: workers) { work.verify($0) }
            }
        }
        return firstBad.min() ?? frames.count
    }

    /// Replays one verified frame. Returns what is wrong with its payload, if anything.
    private func apply(_ frame: FrameView, to log: inout LogState, file: SegmentFile) -> String? {
        if frame.codec == .lz4 {
            guard let raw = RecordCodec.decompress(frame.stored, rawLength: frame.rawLength) else {
                return "LZ4 payload does not inflate to \(frame.rawLength) bytes"
            }
            return raw.withUnsafeBytes { apply(frame, raw: $0, to: &log, file: file) }
        }
        return apply(frame, raw: frame.stored, to: &log, file: file)
    }

    private func apply(_ frame: FrameView, raw: UnsafeRawBufferPointer, to log: inout LogState, file: SegmentFile) -> String? {
        if frame.type == .accepted {
            // Check the whole payload before indexing any of it.
            if let reason = RecordCodec.walkEntries(raw, { _, _ in }) { return reason }
            let segment = UInt32(truncatingIfNeeded: file.sequence)
            _ = RecordCodec.walkEntries(raw) { slot, p in
                log.setEntry(slot, SlotLocation(segment: segment, frameOffset: UInt32(frame.offset),
                                                frameLength: UInt32(frame.length), entryOffset: UInt32(p)))
                file.noteSlot(slot)
            }
            return nil
        }
        switch RecordCodec.decode(type: frame.type, raw: raw) {
        case .failure(let failure):
            return failure.reason
        case .success(.promise(let ballot)): log.promise(ballot)
        case .success(.chosen(let through)): log.chosen(through)
        case .success(.snapshot(let slot)): log.snapshot(slot)
        case .success(.suffixTruncated(let from)): log.truncate(from: from)
        case .success(.accepted): break
        }
        return nil
    }

    /// Saves the bytes from `offset` to the last non-zero byte into `<segment>.torn-<offset>`,
    /// then zeroes them in the segment (keeping its preallocation) and syncs both.
    private func cutTail(_ file: SegmentFile, at offset: Int, parser: SegmentParser) throws {
        guard let last = parser.lastNonZero(from: offset) else { return }
        let cut = UnsafeRawBufferPointer(rebasing: parser.bytes[offset...last])
        let sidePath = file.path + Format.tornSuffix + String(offset)
        do {
            let fd = try fileSystem.open(sidePath, mode: .readWriteCreate)
            defer { try? fileSystem.close(fd) }
            try fileSystem.truncate(fd, to: 0)
            try fileSystem.writeAll(fd, cut, at: 0)
            try fileSystem.fdatasync(fd)
        } catch {
            throw SegmentLogError.io(error, "saving torn tail", sidePath)
        }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: min(cut.count, 1 << 20), alignment: 8)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        do {
            var done = 0
            while done < cut.count {
                let n = min(zeros.count, cut.count - done)
                try fileSystem.writeAll(file.fd, UnsafeRawBufferPointer(rebasing: zeros[0..<n]), at: Int64(offset + done))
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
            do { try fileSystem.rename(from, to: from + ".discarded") } catch { throw SegmentLogError.io(error, "rename", from) }
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
        if removed { try? fileSystem.syncDirectory(directory) }
    }
}
