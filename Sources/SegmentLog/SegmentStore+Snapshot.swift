#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Snapshot files: a 40-byte header (see FORMAT.md) and the application's bytes.
enum SnapshotFile {
    static func encodeHeader(slot: UInt64, data: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Format.snapshotHeaderSize) { buffer, count in
            let out = UnsafeMutableRawBufferPointer(buffer)
            out.initializeMemory(as: UInt8.self, repeating: 0)
            out.putLE(Format.snapshotMagic, at: 0)
            out.putLE(Format.version, at: 8)
            out.putLE(UInt16(Format.snapshotHeaderSize), at: 10)
            out.putLE(slot, at: 16)
            out.putLE(UInt64(data.count), at: 24)
            out.putLE(Format.crc(0, data), at: 32)
            out.putLE(Format.crc(0, UnsafeRawBufferPointer(rebasing: out[0..<36])), at: 36)
            count = Format.snapshotHeaderSize
        }
    }

    /// Writes `data` durably as the snapshot for `slot`: temporary file, fdatasync, rename,
    /// directory fsync. Only then may a marker that points at it be appended.
    static func write(slot: UInt64, data: [UInt8], directory: String, fileSystem: any FileSystem) throws {
        let path = directory + "/" + Format.snapshotFileName(slot)
        let temporary = path + Format.temporarySuffix
        var step = "open"
        do {
            let fd = try fileSystem.open(temporary, mode: .readWriteCreate)
            defer { try? fileSystem.close(fd) }
            step = "ftruncate"
            try fileSystem.truncate(fd, to: 0)
            step = "pwrite"
            try data.withUnsafeBytes { bytes in
                try encodeHeader(slot: slot, data: bytes).withUnsafeBytes { try fileSystem.writeAll(fd, $0, at: 0) }
                try fileSystem.writeAll(fd, bytes, at: Int64(Format.snapshotHeaderSize))
            }
            step = "fdatasync"
            try fileSystem.fdatasync(fd)
            step = "rename"
            try fileSystem.rename(temporary, to: path)
            step = "directory fsync"
            try fileSystem.syncDirectory(directory)
        } catch {
            if step != "directory fsync" { try? fileSystem.remove(temporary) }
            let code = (error as? FileSystemError)?.errno ?? EIO
            if step == "fdatasync" || step == "directory fsync" {
                throw SegmentLogError(.syncFailed(errno: code, path: path), "writing snapshot: \(step)", cause: error as? FileSystemError)
            }
            throw SegmentLogError(.io(errno: code, path: temporary), "writing snapshot: \(step)", cause: error as? FileSystemError)
        }
    }

    /// Reads and verifies a snapshot file.
    /// - Parameter verifyData: also read the data and check its CRC (otherwise only the header
    ///   and the file length are checked, and `data` is empty).
    static func read(path: String, fileSystem: any FileSystem, verifyData: Bool) throws -> SegmentStore.Snapshot {
        let fd: Int32
        do { fd = try fileSystem.open(path, mode: .readOnly) } catch {
            if let e = error as? FileSystemError, e.errno == ENOENT {
                throw SegmentLogError.corruption(path, 0, "snapshot file named by the log is missing")
            }
            throw SegmentLogError.io(error, "open", path)
        }
        defer { try? fileSystem.close(fd) }
        var header = [UInt8](repeating: 0, count: Format.snapshotHeaderSize)
        let size: Int64
        let n: Int
        do {
            size = try fileSystem.size(fd)
            n = try header.withUnsafeMutableBytes { try fileSystem.readFully(fd, into: $0, at: 0) }
        } catch {
            throw SegmentLogError.io(error, "read", path)
        }
        guard n == Format.snapshotHeaderSize else { throw SegmentLogError.corruption(path, 0, "snapshot file shorter than its header") }
        let (slot, length, dataCRC): (UInt64, UInt64, UInt32) = try header.withUnsafeBytes { h in
            guard h.le(0, as: UInt64.self) == Format.snapshotMagic else { throw SegmentLogError.corruption(path, 0, "bad snapshot magic") }
            let stored = h.le(36, as: UInt32.self)
            let actual = Format.crc(0, UnsafeRawBufferPointer(rebasing: h[0..<36]))
            guard stored == actual else {
                throw SegmentLogError.corruption(path, 36, "snapshot header CRC mismatch: stored \(hex(stored)), computed \(hex(actual))")
            }
            guard h.le(8, as: UInt16.self) == Format.version else { throw SegmentLogError.corruption(path, 8, "unsupported snapshot version") }
            return (h.le(16), h.le(24), h.le(32))
        }
        guard UInt64(size) == UInt64(Format.snapshotHeaderSize) + length else {
            throw SegmentLogError.corruption(path, Int(Format.snapshotHeaderSize), "snapshot file is \(size) bytes, header says \(Format.snapshotHeaderSize) + \(length)")
        }
        guard verifyData else { return SegmentStore.Snapshot(slot: slot, data: []) }
        guard length <= UInt64(Int.max / 2) else { throw SegmentLogError.corruption(path, 24, "snapshot length \(length) is implausible") }
        var data = [UInt8](repeating: 0, count: Int(length))
        do {
            let got = try data.withUnsafeMutableBytes { try fileSystem.readFully(fd, into: $0, at: Int64(Format.snapshotHeaderSize)) }
            guard got == Int(length) else { throw SegmentLogError.corruption(path, Format.snapshotHeaderSize + got, "snapshot data truncated") }
        } catch let error as SegmentLogError {
            throw error
        } catch {
            throw SegmentLogError.io(error, "read", path)
        }
        let actual = data.withUnsafeBytes { Format.crc(0, $0) }
        guard actual == dataCRC else {
            throw SegmentLogError.corruption(path, Format.snapshotHeaderSize, "snapshot data CRC mismatch: stored \(hex(dataCRC)), computed \(hex(actual))")
        }
        return SegmentStore.Snapshot(slot: slot, data: data)
    }
}

extension SegmentStore {
    /// Makes `data` the durable snapshot of every slot through `slot`, then compacts: entries at or
    /// below `slot` answer `.compacted`, and `truncatePrefix(below:)` may delete segments holding
    /// only such entries.
    ///
    /// Order: the snapshot file is written and synced under a temporary name, renamed, and the
    /// directory synced; only then is the marker record appended (group-committed like any
    /// append). Older snapshot files are deleted after the marker is durable.
    /// - Throws: `.invalidArgument` if `slot` is below the current snapshot; `.io`/`.syncFailed`.
    public func writeSnapshot(slot: UInt64, data: [UInt8]) async throws {
        let current: UInt64? = try lock.withLock {
            if shared.closing { throw SegmentLogError(.closed, "") }
            if let failure = shared.failure { throw SegmentLogError(.storeFailed, "", cause: failure) }
            return shared.log.snapshotSlot
        }
        if let current, slot < current {
            throw SegmentLogError(.invalidArgument, "snapshot slot \(slot) is below the current snapshot \(current)")
        }
        try maintenance.withLock {
            try SnapshotFile.write(slot: slot, data: data, directory: directory, fileSystem: fileSystem)
        }
        let marker = try RecordCodec.encode([.snapshot(slot: slot)], compressionThreshold: .max, maxRecordBytes: options.maxRecordBytes)
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
            enqueue(marker, .continuation(continuation))
        }
        // The marker is durable: snapshots it supersedes are garbage.
        maintenance.withLock {
            let now = lock.withLock { shared.log.snapshotSlot } ?? slot
            guard let names = try? fileSystem.listDirectory(directory) else { return }
            var removed = false
            for name in names {
                if let s = Format.snapshotSlot(fileName: name), s < now {
                    try? fileSystem.remove(directory + "/" + name)
                    removed = true
                }
            }
            if removed { try? fileSystem.syncDirectory(directory) }
        }
        logger.info("wrote snapshot", metadata: ["slot": "\(slot)", "bytes": "\(data.count)"])
    }

    /// The latest durable snapshot, read and verified, or nil if there is none.
    public func readSnapshot() throws -> Snapshot? {
        var attempts = 0
        while true {
            let slot: UInt64? = try lock.withLock {
                if shared.closed { throw SegmentLogError(.closed, "") }
                return shared.log.snapshotSlot
            }
            guard let slot else { return nil }
            do {
                return try SnapshotFile.read(path: directory + "/" + Format.snapshotFileName(slot), fileSystem: fileSystem, verifyData: true)
            } catch {
                // A newer snapshot may have replaced this one between the two steps.
                attempts += 1
                let now = lock.withLock { shared.log.snapshotSlot }
                if now == slot || attempts >= 3 { throw error }
            }
        }
    }

    /// Deletes whole segments, oldest first, that hold no entry at or above `slot` (and no
    /// newer state than the next segment's header carries). The active segment is never deleted.
    ///
    /// - Parameter slot: the compaction watermark; must be at most `snapshotSlot + 1`, so the
    ///   deleted entries are covered by a durable snapshot.
    /// - Returns: how many segment files were deleted.
    /// - Throws: `.invalidArgument` if no snapshot covers `slot - 1`; `.io` if an unlink fails
    ///   (files before it are gone, files after it remain: the log stays a contiguous run).
    @discardableResult
    public func truncatePrefix(below slot: UInt64) throws -> Int {
        try maintenance.withLock {
            let victims: [SegmentFile] = try lock.withLock {
                if shared.closing { throw SegmentLogError(.closed, "") }
                guard slot == 0 || (shared.log.snapshotSlot.map { slot - 1 <= $0 } ?? false) else {
                    throw SegmentLogError(.invalidArgument,
                                          "no durable snapshot covers slots below \(slot) (snapshot: \(shared.log.snapshotSlot.map(String.init) ?? "none"))")
                }
                var count = 0
                for file in shared.segments.dropLast() {
                    if let m = file.maxSlot, m >= slot { break }
                    count += 1
                }
                let victims = Array(shared.segments.prefix(count))
                shared.segments.removeFirst(count)
                return victims
            }
            guard !victims.isEmpty else { return 0 }
            var deleted = 0
            defer {
                lock.withLock { shared.segmentsDeleted += deleted }
            }
            for file in victims {
                do { try fileSystem.remove(file.path) } catch { throw SegmentLogError.io(error, "unlink", file.path) }
                deleted += 1
            }
            do { try fileSystem.syncDirectory(directory) } catch {
                throw SegmentLogError(.syncFailed(errno: (error as? FileSystemError)?.errno ?? EIO, path: directory),
                                      "directory fsync after deleting segments", cause: error as? FileSystemError)
            }
            logger.info("truncated log prefix", metadata: ["below": "\(slot)", "segments": "\(deleted)"])
            return deleted
        }
    }

    /// Discards the entries of every slot after `slot`, durably (a marker record is appended, so
    /// recovery replays the truncation). Promise, chosen watermark and snapshot are unchanged.
    /// - Throws: `.invalidArgument` if `slot` is below the snapshot; see `append(_:)`.
    public func truncateSuffix(after slot: UInt64) async throws {
        if let s = lock.withLock({ shared.log.snapshotSlot }), slot < s {
            throw SegmentLogError(.invalidArgument, "cannot truncate after \(slot): the snapshot covers through \(s)")
        }
        guard slot < .max else { return }
        try await append([.suffixTruncated(from: slot + 1)])
    }
}
