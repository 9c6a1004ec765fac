import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Snapshot files: a 40-byte header (see FORMAT.md) and the application's bytes.
enum SnapshotFile {
    static func encodeHeader(slot: UInt64, length: UInt64, dataCRC: UInt32, flags: UInt32 = 0) -> [UInt8] {
        // Version 1 has no flags (its reserved field is 0): files without flags stay readable
        // by older builds; a file with flags is version 2, which they refuse.
        let version = flags == 0 ? Format.snapshotVersion : Format.snapshotFlagsVersion
        return Format.encodeFixed(size: Format.snapshotHeaderSize, magic: Format.snapshotMagic, version: version) { out in
            if flags != 0 { out.putLE(flags, at: 12) }
            out.putLE(slot, at: 16)
            out.putLE(length, at: 24)
            out.putLE(dataCRC, at: 32)
        }
    }

    /// Opens a snapshot file and checks its header and length, and that the header's slot is the
    /// one a `snapshot-<slot>.snap` file name gives; the caller owns the returned fd.
    static func open(path: String, fileSystem: any FileSystem) throws -> (fd: Int32, slot: UInt64, length: UInt64, dataCRC: UInt32, flags: UInt32) {
        let fd: Int32
        do { fd = try fileSystem.open(path, mode: .readOnly) } catch {
            if let e = error as? FileSystemError, e.errno == ENOENT {
                throw SegmentLogError.corruption(path, 0, "snapshot file named by the log is missing")
            }
            throw SegmentLogError.io(error, "open", path)
        }
        do {
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
            let (slot, length, dataCRC, flags): (UInt64, UInt64, UInt32, UInt32) = try header.withUnsafeBytes { h in
                guard h.le(0, as: UInt64.self) == Format.snapshotMagic else { throw SegmentLogError.corruption(path, 0, "bad snapshot magic") }
                let stored = h.le(36, as: UInt32.self)
                let actual = Format.crc(0, UnsafeRawBufferPointer(rebasing: h[0..<36]))
                guard stored == actual else {
                    throw SegmentLogError.corruption(path, 36, "snapshot header CRC mismatch: stored \(hex(stored)), computed \(hex(actual))")
                }
                let version = h.le(8, as: UInt16.self)
                guard version == Format.snapshotVersion || version == Format.snapshotFlagsVersion else {
                    throw SegmentLogError.corruption(path, 8, "unsupported snapshot version \(version)")
                }
                let flags: UInt32 = version == Format.snapshotFlagsVersion ? h.le(12) : 0
                guard flags & ~Format.snapshotFlagExternalState == 0 else {
                    throw SegmentLogError.corruption(path, 12, "unknown snapshot flags \(hex(flags))")
                }
                if flags & Format.snapshotFlagExternalState != 0, h.le(24, as: UInt64.self) != 0 {
                    throw SegmentLogError.corruption(path, 24, "a marker of external state with \(h.le(24, as: UInt64.self)) data bytes")
                }
                return (h.le(16), h.le(24), h.le(32), flags)
            }
            // The file name is what the log's snapshot watermark points at: a header for another
            // slot (a file copied or renamed into place) would make the store serve the wrong state.
            let name = path.split(separator: "/").last.map(String.init) ?? path
            if let named = Format.snapshotSlot(fileName: name), named != slot {
                throw SegmentLogError.corruption(path, 16, "snapshot header names slot \(slot), the file name says \(named)")
            }
            guard length <= UInt64(Int64.max) - UInt64(Format.snapshotHeaderSize),
                  UInt64(size) == UInt64(Format.snapshotHeaderSize) + length else {
                throw SegmentLogError.corruption(path, Int(Format.snapshotHeaderSize), "snapshot file is \(size) bytes, header says \(Format.snapshotHeaderSize) + \(length)")
            }
            return (fd, slot, length, dataCRC, flags)
        } catch {
            try? fileSystem.close(fd)
            throw error
        }
    }

    /// Reads and verifies a snapshot file.
    /// - Parameter verifyData: also read the data and check its CRC (otherwise only the header
    ///   and the file length are checked, and `data` is empty).
    static func read(path: String, fileSystem: any FileSystem, verifyData: Bool, refuseExternalState: Bool = false) throws -> SegmentStore.Snapshot {
        let (fd, slot, length, dataCRC, flags) = try open(path: path, fileSystem: fileSystem)
        defer { try? fileSystem.close(fd) }
        guard verifyData else { return SegmentStore.Snapshot(slot: slot, data: []) }
        if refuseExternalState, flags & Format.snapshotFlagExternalState != 0 {
            // Handing back empty data would restore an empty state: a silent wrong answer.
            throw SegmentLogError(.invalidArgument, "snapshot \(slot) at \(path) holds no data: the application's own storage holds that state (an on-disk state machine)")
        }
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
        let writer = try beginSnapshot(slot: slot)
        do {
            try writer.write(data)
            try await writer.commit()
        } catch {
            writer.abort()
            throw error
        }
    }

    /// Deletes snapshot files older than the current snapshot, once the marker naming a newer
    /// one is durable. An open ``SnapshotReader`` on a deleted file keeps reading it (POSIX
    /// unlink semantics), so a transfer in progress is not cut short; a file nobody reads is
    /// released in steps (see ``releaseGradually(_:)``).
    func removeSupersededSnapshots() {
        maintenance.withLock {
            guard let now = lock.withLock({ shared.log.snapshotSlot }) else { return }
            guard let names = try? fileSystem.listDirectory(directory) else { return }
            var removed = false
            for name in names {
                guard let s = Format.snapshotSlot(fileName: name), s < now else { continue }
                let path = directory + "/" + name
                // Decided under the registry's lock: a reader opening the file now waits, then
                // finds no file; one that registered first keeps the whole file until it closes.
                let fd: Int32? = OpenSnapshotFiles.shared.ifUnread(path) {
                    let fd = try? fileSystem.open(path, mode: .readWrite)
                    try? fileSystem.remove(path)
                    return fd
                } ?? nil
                if let fd {
                    releaseGradually(fd)
                    try? fileSystem.close(fd)
                } else {
                    try? fileSystem.remove(path)
                }
                removed = true
            }
            // Not those above `now`: a compaction may have written its table before its snapshot.
            if Self.removeSnapshotTables(in: directory, names: names, fileSystem: fileSystem, where: { $0 < now }) { removed = true }
            if removed { try? fileSystem.syncDirectory(directory) }
        }
    }

    /// Bytes freed per step when a deleted file's blocks are released.
    static let releaseStep: Int64 = 8 << 20

    /// Shrinks an unlinked file to nothing in ``releaseStep`` steps before it is closed.
    ///
    /// Freeing a 64 MiB segment or a 100 MB snapshot in one `close` is one long file-system
    /// transaction (ext4 frees every extent under one journal handle); the log's next
    /// `fdatasync` needs a journal commit and waits for it. Small truncations let those commits
    /// slip in between (RocksDB's `bytes_max_delete_chunk`). Only for files no one else reads.
    func releaseGradually(_ fd: Int32) {
        guard var size = try? fileSystem.size(fd) else { return }
        while size > 0 {
            size = Swift.max(0, size - Self.releaseStep)
            if (try? fileSystem.truncate(fd, to: size)) == nil { return }
            sched_yield()
        }
    }

    /// The latest durable snapshot, read and verified, or nil if there is none.
    public func readSnapshot() throws -> Snapshot? {
        try withLatestSnapshotFile { path in
            try SnapshotFile.read(path: path, fileSystem: fileSystem, verifyData: true, refuseExternalState: true)
        }
    }

    /// Calls `open` with the path of the latest durable snapshot (nil when there is none). If it
    /// fails while a newer snapshot replaced that one in between, tries again with the newer one.
    func withLatestSnapshotFile<T>(_ open: (String) throws -> T) throws -> T? {
        var attempts = 0
        while true {
            let slot: UInt64? = try lock.withLock {
                if shared.closed { throw SegmentLogError(.closed, "") }
                return shared.log.snapshotSlot
            }
            guard let slot else { return nil }
            do {
                return try open(directory + "/" + Format.snapshotFileName(slot))
            } catch {
                attempts += 1
                let now = lock.withLock { shared.log.snapshotSlot }
                if now == slot || attempts >= 3 { throw error }
            }
        }
    }

    /// Deletes whole segments, oldest first, that hold no entry at or above `slot` (and no
    /// newer state than the next segment's header carries). The active segment is never deleted.
    /// Up to `Options.recycleSegments` of the files are kept (`<segment>.free`) for new segments.
    ///
    /// - Parameter slot: the compaction watermark; must be at most `snapshotSlot + 1`, so the
    ///   deleted entries are covered by a durable snapshot.
    /// - Returns: how many segments left the log (deleted or kept for reuse).
    /// - Throws: `.invalidArgument` if no snapshot covers `slot - 1`; `.io` if an unlink fails
    ///   (files before it are gone, files after it remain: the log stays a contiguous run).
    @discardableResult
    public func truncatePrefix(below slot: UInt64) throws -> Int {
        try maintenance.withLock {
            var victims: [SegmentFile] = try lock.withLock {
                if shared.closing { throw SegmentLogError(.closed, "") }
                guard slot == 0 || (shared.log.snapshotSlot.map { slot - 1 <= $0 } ?? false) else {
                    throw SegmentLogError(.invalidArgument,
                                          "no durable snapshot covers slots below \(slot) (snapshot: \(shared.log.snapshotSlot.map(String.init) ?? "none"))")
                }
                let candidates = shared.segments.dropLast()
                let count = Self.countWhollyBelow(slot, maxSlots: candidates.lazy.map(\.maxSlot))
                let victims = Array(shared.segments.prefix(count))
                shared.segments.removeFirst(count)
                return victims
            }
            guard !victims.isEmpty else { return 0 }
            var deleted = 0
            defer {
                lock.withLock { shared.segmentsDeleted += deleted }
            }
            // Taken out of the array one by one, so `file` is the only reference the store holds.
            var recycled = 0
            while !victims.isEmpty {
                var file = victims.removeFirst()
                // A reader that still holds the file keeps it whole; it is freed when it closes.
                let unread = isKnownUniquelyReferenced(&file)
                let free = file.path + Format.freeSuffix
                if unread && lock.withLock({ shared.freeSegments.count < options.recycleSegments }) && !fileSystem.fileExists(free) {
                    do { try fileSystem.rename(file.path, to: free) } catch { throw SegmentLogError.io(error, "rename", file.path) }
                    lock.withLock { shared.freeSegments.append(free) }
                    recycled += 1
                } else {
                    do { try fileSystem.remove(file.path) } catch { throw SegmentLogError.io(error, "unlink", file.path) }
                    if unread { releaseGradually(file.fd) }
                }
                deleted += 1
                // One file at a time: a crash must not make a later removal durable without an
                // earlier one, which would leave a gap in the sequence.
                do { try fileSystem.syncDirectory(directory) } catch {
                    throw SegmentLogError(.syncFailed(errno: (error as? FileSystemError)?.errno ?? EIO, path: directory),
                                          "directory fsync after removing \(file.path)", cause: error as? FileSystemError)
                }
            }
            logger.info("truncated log prefix", metadata: ["below": "\(slot)", "segments": "\(deleted)", "kept for reuse": "\(recycled)"])
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

/// Paths of snapshot files some ``SnapshotReader`` has open (a count per path), so deleting a
/// superseded snapshot never truncates a file a transfer is still sending. Process-wide: two
/// stores never share a directory (the LOCK file).
final class OpenSnapshotFiles: @unchecked Sendable {
    static let shared = OpenSnapshotFiles()
    private let lock = PosixLock()
    private var counts: [String: Int] = [:]

    func retain(_ path: String) {
        lock.withLock { counts[path, default: 0] += 1 }
    }

    func release(_ path: String) {
        lock.withLock {
            let n = (counts[path] ?? 1) - 1
            counts[path] = n > 0 ? n : nil
        }
    }

    /// Runs `body` with the registry locked when no reader has `path` open; nil otherwise.
    func ifUnread<T>(_ path: String, _ body: () throws -> T) rethrows -> T? {
        try lock.withLock { counts[path] == nil ? try body() : nil }
    }
}

/// Runs blocking file work (syncs, renames, unlinks) on a Dispatch thread, so an async caller
/// does not hold one of the few threads of Swift's cooperative pool for as long as the disk takes.
func offloaded<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withUnsafeThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}
