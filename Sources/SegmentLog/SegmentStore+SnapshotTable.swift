#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small table of the log's user kept beside a snapshot: `snapshot-<slot>.table`, holding what
/// the user derives from the chosen log and cannot rebuild from the log above the snapshot once
/// the slots below are compacted (the replica's client sessions). Opaque to the store.
///
/// Written before the snapshot it belongs to is committed (temporary name, `fdatasync`, rename,
/// directory `fsync`), so a crash leaves either no table (the user treats that as unknown) or a
/// whole one. Tables of other slots are removed with superseded snapshots and on recovery.
extension SegmentStore {
    /// Makes `bytes` the durable table of the snapshot through `slot` (which may not be
    /// committed yet). Blocks: call it off the event loops.
    /// - Throws: `.io` / `.syncFailed`.
    public func writeSnapshotTable(slot: UInt64, bytes: [UInt8]) throws {
        precondition(bytes.count <= Int(UInt32.max), "a snapshot table of \(bytes.count) bytes")
        let path = directory + "/" + Format.tableFileName(slot)
        let temporary = path + ".\(getpid())" + Format.temporarySuffix
        let header = Format.encodeFixed(size: Format.tableHeaderSize, magic: Format.tableMagic, version: Format.tableVersion) { out in
            out.putLE(bytes.withUnsafeBytes { Format.crc(0, $0) }, at: 12)
            out.putLE(slot, at: 16)
            out.putLE(UInt32(bytes.count), at: 24)
        }
        var step = "open"
        do {
            let fd = try fileSystem.open(temporary, mode: .createNew)
            defer { try? fileSystem.close(fd) }
            step = "write"
            try header.withUnsafeBytes { try fileSystem.writeAll(fd, $0, at: 0) }
            try bytes.withUnsafeBytes { try fileSystem.writeAll(fd, $0, at: Int64(Format.tableHeaderSize)) }
            step = "fdatasync"
            try fileSystem.fdatasync(fd)
            step = "rename"
            try maintenance.withLock { try fileSystem.rename(temporary, to: path) }
            step = "directory fsync"
            try fileSystem.syncDirectory(directory)
        } catch {
            if step != "directory fsync" { try? fileSystem.remove(temporary) }
            let code = (error as? FileSystemError)?.errno ?? EIO
            if step == "fdatasync" || step == "directory fsync" {
                throw SegmentLogError(.syncFailed(errno: code, path: path), "writing snapshot table: \(step)", cause: error as? FileSystemError)
            }
            throw SegmentLogError(.io(errno: code, path: temporary), "writing snapshot table: \(step)", cause: error as? FileSystemError)
        }
    }

    /// The table of the snapshot through `slot`, verified, or nil when none was written.
    /// - Throws: `.corruption` naming the file and offset when it is damaged; `.io`.
    public func readSnapshotTable(slot: UInt64) throws -> [UInt8]? {
        try Self.readSnapshotTable(directory: directory, slot: slot, fileSystem: fileSystem)
    }

    static func readSnapshotTable(directory: String, slot: UInt64, fileSystem: any FileSystem) throws -> [UInt8]? {
        let path = directory + "/" + Format.tableFileName(slot)
        guard fileSystem.fileExists(path) else { return nil }
        let fd: Int32
        do { fd = try fileSystem.open(path, mode: .readOnly) } catch { throw SegmentLogError.io(error, "open", path) }
        defer { try? fileSystem.close(fd) }
        let size: Int64
        var header = [UInt8](repeating: 0, count: Format.tableHeaderSize)
        do {
            size = try fileSystem.size(fd)
            guard try header.withUnsafeMutableBytes({ try fileSystem.readFully(fd, into: $0, at: 0) }) == header.count else {
                throw SegmentLogError.corruption(path, 0, "snapshot table shorter than its header")
            }
        } catch let error as SegmentLogError { throw error } catch { throw SegmentLogError.io(error, "read", path) }
        let (length, dataCRC): (UInt32, UInt32) = try header.withUnsafeBytes { h in
            guard h.le(0, as: UInt64.self) == Format.tableMagic else { throw SegmentLogError.corruption(path, 0, "bad snapshot table magic") }
            let stored = h.le(28, as: UInt32.self), actual = Format.crc(0, UnsafeRawBufferPointer(rebasing: h[0..<28]))
            guard stored == actual else {
                throw SegmentLogError.corruption(path, 28, "snapshot table header CRC mismatch: stored \(hex(stored)), computed \(hex(actual))")
            }
            guard h.le(8, as: UInt16.self) == Format.tableVersion else {
                throw SegmentLogError.corruption(path, 8, "unsupported snapshot table version \(h.le(8, as: UInt16.self))")
            }
            guard h.le(16, as: UInt64.self) == slot else {
                throw SegmentLogError.corruption(path, 16, "snapshot table for slot \(h.le(16, as: UInt64.self)) in the file of slot \(slot)")
            }
            return (h.le(24), h.le(12))
        }
        guard Int64(length) == size - Int64(Format.tableHeaderSize) else {
            throw SegmentLogError.corruption(path, 24, "snapshot table of \(length) bytes in a file of \(size)")
        }
        var bytes = [UInt8](repeating: 0, count: Int(length))
        do {
            guard try bytes.withUnsafeMutableBytes({ try fileSystem.readFully(fd, into: $0, at: Int64(Format.tableHeaderSize)) }) == bytes.count else {
                throw SegmentLogError.corruption(path, Format.tableHeaderSize, "snapshot table shorter than its length")
            }
        } catch let error as SegmentLogError { throw error } catch { throw SegmentLogError.io(error, "read", path) }
        let actual = bytes.withUnsafeBytes { Format.crc(0, $0) }
        guard actual == dataCRC else {
            throw SegmentLogError.corruption(path, Format.tableHeaderSize, "snapshot table CRC mismatch: stored \(hex(dataCRC)), computed \(hex(actual))")
        }
        return bytes
    }

    /// Removes the tables named in `names` (in `directory`) whose slot `isStale` says is no
    /// longer wanted. - Returns: whether any was removed (the directory then needs an `fsync`).
    static func removeSnapshotTables(in directory: String, names: [String], fileSystem: any FileSystem,
                                     where isStale: (UInt64) -> Bool) -> Bool {
        var removed = false
        for name in names {
            guard let s = Format.tableSlot(fileName: name), isStale(s) else { continue }
            try? fileSystem.remove(directory + "/" + name)
            removed = true
        }
        return removed
    }
}
