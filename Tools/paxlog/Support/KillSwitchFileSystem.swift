import Foundation
import NIOConcurrencyHelpers
import SegmentLog

/// A file system that SIGKILLs this process at a named step of a compaction, for crash tests
/// (hidden: `PAXLOG_KILL_AT=<step>` in the environment of `paxlog compact`). Steps, in the order
/// a compaction reaches them:
///
/// - `snapshot-write`: before the first byte of the snapshot's temporary file is written;
/// - `snapshot-sync`: data and header written, before the temporary file's `fdatasync`;
/// - `snapshot-rename`: synced, before the rename into place;
/// - `snapshot-renamed`: right after the rename, before the directory `fsync` and the marker;
/// - `record`: before the `fdatasync` that makes the snapshot marker record durable;
/// - `recorded`: marker durable, before the first segment is deleted;
/// - `delete:N`: right after the N-th segment file is deleted;
/// - `deleted`: at the directory `fsync` after the first deletion (truncation syncs the directory
///   after each segment it removes, so a crash never keeps a later one removed and an earlier one).
struct KillSwitchFileSystem: FileSystem {
    let step: String
    let base = PosixFileSystem()
    private let state = NIOLockedValueBox(State())

    struct State {
        var paths: [Int32: String] = [:]
        var renamed = false
        var deletes = 0
    }

    init(step: String) { self.step = step }

    private func die(_ at: String) {
        guard at == step else { return }
        FileHandle.standardError.write(Data("paxlog: killed at \(at) (PAXLOG_KILL_AT)\n".utf8))
        kill(getpid(), SIGKILL)
        while true { pause() }
    }

    private func isSnapshotTemporary(_ fd: Int32) -> Bool {
        state.withLockedValue { $0.paths[fd] }.map { $0.contains(".snap.") && $0.hasSuffix(".tmp") } ?? false
    }

    func open(_ path: String, mode: FileOpenMode) throws -> Int32 {
        let fd = try base.open(path, mode: mode)
        state.withLockedValue { $0.paths[fd] = path }
        return fd
    }

    func close(_ fd: Int32) throws {
        state.withLockedValue { _ = $0.paths.removeValue(forKey: fd) }
        try base.close(fd)
    }

    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        try base.pread(fd, into: buffer, at: offset)
    }

    func pwrite(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        if isSnapshotTemporary(fd) { die("snapshot-write") }
        return try base.pwrite(fd, buffer, at: offset)
    }

    func fdatasync(_ fd: Int32) throws {
        if isSnapshotTemporary(fd) { die("snapshot-sync") }
        let (renamed, path) = state.withLockedValue { ($0.renamed, $0.paths[fd] ?? "") }
        if renamed, path.hasSuffix(".seg") { die("record") }
        try base.fdatasync(fd)
    }

    func syncDirectory(_ path: String) throws {
        if state.withLockedValue({ $0.deletes > 0 }) { die("deleted") }
        try base.syncDirectory(path)
    }

    func truncate(_ fd: Int32, to size: Int64) throws { try base.truncate(fd, to: size) }
    func allocate(_ fd: Int32, offset: Int64, length: Int64) throws { try base.allocate(fd, offset: offset, length: length) }
    func size(_ fd: Int32) throws -> Int64 { try base.size(fd) }

    func rename(_ from: String, to: String) throws {
        let snapshot = from.contains(".snap.") && from.hasSuffix(".tmp")
        if snapshot { die("snapshot-rename") }
        try base.rename(from, to: to)
        if snapshot {
            state.withLockedValue { $0.renamed = true }
            die("snapshot-renamed")
        }
    }

    func remove(_ path: String) throws {
        guard path.hasSuffix(".seg") else { return try base.remove(path) }
        if state.withLockedValue({ $0.deletes == 0 }) { die("recorded") }
        try base.remove(path)
        let n = state.withLockedValue { s -> Int in
            s.deletes += 1
            return s.deletes
        }
        die("delete:\(n)")
    }

    func listDirectory(_ path: String) throws -> [String] { try base.listDirectory(path) }
    func createDirectory(_ path: String) throws { try base.createDirectory(path) }
    func fileExists(_ path: String) -> Bool { base.fileExists(path) }
    func lockExclusive(_ fd: Int32) throws { try base.lockExclusive(fd) }
}
