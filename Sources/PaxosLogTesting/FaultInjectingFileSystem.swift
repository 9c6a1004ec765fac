import SegmentLog

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A `FileSystem` that delegates to another one (the real disk by default) and injects faults on
/// request: errors such as ENOSPC or EIO, short writes, torn writes that fail halfway, failing
/// syncs. It also counts calls and tracks, per file, how far data was synced, so tests can check
/// that nothing was acknowledged before the sync that covers it returned.
///
/// Thread-safe: the store's writer thread and the test thread use it at once.
public final class FaultInjectingFileSystem: FileSystem, @unchecked Sendable {
    public enum Operation: String, Sendable, Hashable, CaseIterable {
        case open, close, read, write, dataSync, directorySync, truncate, allocate, size, rename, remove, list, mkdir, lock
    }

    public enum Fault: Sendable, Hashable {
        /// The call fails with this errno and has no effect.
        case error(Int32)
        /// A write writes at most this many bytes and returns that count (a legal short write).
        case shortWrite(maxBytes: Int)
        /// A write writes this many bytes, then fails with the errno (a torn write).
        case partialWrite(bytes: Int, errno: Int32)
    }

    private struct Rule {
        var operation: Operation
        var pathContains: String?
        var skip: Int
        var remaining: Int
        var fault: Fault
    }

    private let base: any FileSystem
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var rules: [Rule] = []
    private var counts: [Operation: Int] = [:]
    private var paths: [Int32: String] = [:]
    private var written: [String: Int64] = [:]
    private var synced: [String: Int64] = [:]
    private var beforeSync: (@Sendable (String) -> Void)?

    private let skipSyncs: Bool

    /// - Parameter skipSyncs: make `fdatasync` and directory syncs no-ops that still count, for
    ///   tests that reopen logs thousands of times and do not test durability.
    public init(base: any FileSystem = PosixFileSystem(), skipSyncs: Bool = false) {
        self.base = base
        self.skipSyncs = skipSyncs
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Makes the `skip + 1`-th through `skip + times`-th matching calls fail with `fault`.
    /// - Parameter pathContains: only calls on a path containing this string match.
    public func inject(_ fault: Fault, on operation: Operation, pathContains: String? = nil, after skip: Int = 0, times: Int = 1) {
        locked { rules.append(Rule(operation: operation, pathContains: pathContains, skip: skip, remaining: times, fault: fault)) }
    }

    public func removeAllFaults() {
        locked { rules.removeAll() }
    }

    /// Called (outside the lock) before every `fdatasync`, with the file's path.
    public func onDataSync(_ hook: (@Sendable (String) -> Void)?) {
        locked { beforeSync = hook }
    }

    /// How many calls of `operation` were made (including failed ones).
    public func count(_ operation: Operation) -> Int {
        locked { counts[operation, default: 0] }
    }

    /// `fdatasync` calls made so far.
    public var dataSyncCount: Int { count(.dataSync) }

    /// The highest byte offset written to `path` before its last successful `fdatasync` returned.
    public func syncedThrough(_ path: String) -> Int64 {
        locked { synced[path, default: 0] }
    }

    private func fault(_ operation: Operation, _ path: String?) -> Fault? {
        locked {
            counts[operation, default: 0] += 1
            for i in rules.indices where rules[i].operation == operation && rules[i].remaining > 0 {
                if let p = rules[i].pathContains, !(path?.contains(p) ?? false) { continue }
                if rules[i].skip > 0 {
                    rules[i].skip -= 1
                    continue
                }
                rules[i].remaining -= 1
                return rules[i].fault
            }
            return nil
        }
    }

    private func path(_ fd: Int32) -> String? { locked { paths[fd] } }

    private func failIfError(_ fault: Fault?, _ function: String) throws {
        if case .error(let code) = fault { throw FileSystemError(errno: code, function: function) }
    }

    public func open(_ path: String, mode: FileOpenMode) throws -> Int32 {
        try failIfError(fault(.open, path), "open")
        let fd = try base.open(path, mode: mode)
        locked { paths[fd] = path }
        return fd
    }

    public func close(_ fd: Int32) throws {
        let p = path(fd)
        locked { paths[fd] = nil }
        try failIfError(fault(.close, p), "close")
        try base.close(fd)
    }

    public func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        try failIfError(fault(.read, path(fd)), "pread")
        return try base.pread(fd, into: buffer, at: offset)
    }

    public func pwrite(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        let p = path(fd)
        var toWrite = buffer
        var thenFail: Int32?
        switch fault(.write, p) {
        case .error(let code)?: throw FileSystemError(errno: code, function: "pwrite")
        case .shortWrite(let max)?: toWrite = UnsafeRawBufferPointer(rebasing: buffer[0..<min(max, buffer.count)])
        case .partialWrite(let bytes, let code)?:
            toWrite = UnsafeRawBufferPointer(rebasing: buffer[0..<min(bytes, buffer.count)])
            thenFail = code
        case nil: break
        }
        let n = try base.pwrite(fd, toWrite, at: offset)
        if let p { locked { written[p] = max(written[p, default: 0], offset + Int64(n)) } }
        if let thenFail { throw FileSystemError(errno: thenFail, function: "pwrite") }
        return n
    }

    public func fdatasync(_ fd: Int32) throws {
        let p = path(fd)
        if let hook = locked({ beforeSync }) { hook(p ?? "") }
        let mark = locked { p.map { written[$0, default: 0] } ?? 0 }
        try failIfError(fault(.dataSync, p), "fdatasync")
        if !skipSyncs { try base.fdatasync(fd) }
        if let p { locked { synced[p] = max(synced[p, default: 0], mark) } }
    }

    public func syncDirectory(_ path: String) throws {
        try failIfError(fault(.directorySync, path), "fsync")
        if !skipSyncs { try base.syncDirectory(path) }
    }

    public func truncate(_ fd: Int32, to size: Int64) throws {
        try failIfError(fault(.truncate, path(fd)), "ftruncate")
        try base.truncate(fd, to: size)
    }

    public func allocate(_ fd: Int32, offset: Int64, length: Int64) throws {
        try failIfError(fault(.allocate, path(fd)), "posix_fallocate")
        try base.allocate(fd, offset: offset, length: length)
    }

    public func size(_ fd: Int32) throws -> Int64 {
        try failIfError(fault(.size, path(fd)), "fstat")
        return try base.size(fd)
    }

    public func rename(_ from: String, to: String) throws {
        try failIfError(fault(.rename, from), "rename")
        try base.rename(from, to: to)
        locked {
            for (fd, p) in paths where p == from { paths[fd] = to }
            if let w = written.removeValue(forKey: from) { written[to] = w }
            if let s = synced.removeValue(forKey: from) { synced[to] = s }
        }
    }

    public func remove(_ path: String) throws {
        try failIfError(fault(.remove, path), "unlink")
        try base.remove(path)
    }

    public func listDirectory(_ path: String) throws -> [String] {
        try failIfError(fault(.list, path), "opendir")
        return try base.listDirectory(path)
    }

    public func createDirectory(_ path: String) throws {
        try failIfError(fault(.mkdir, path), "mkdir")
        try base.createDirectory(path)
    }

    public func fileExists(_ path: String) -> Bool {
        base.fileExists(path)
    }

    public func lockExclusive(_ fd: Int32) throws {
        try failIfError(fault(.lock, path(fd)), "flock")
        try base.lockExclusive(fd)
    }
}
