#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The error a `FileSystem` throws: the C function that failed and its `errno`.
public struct FileSystemError: Error, CustomStringConvertible, Sendable, Hashable {
    public var errno: Int32
    public var function: String

    public init(errno: Int32, function: String) {
        self.errno = errno
        self.function = function
    }

    public var description: String { "\(function): \(SegmentLogError.errnoText(errno))" }
}

/// How `FileSystem.open` opens a file.
public enum FileOpenMode: Sendable, Hashable {
    /// `O_RDONLY`.
    case readOnly
    /// `O_RDWR`; the file must exist.
    case readWrite
    /// `O_RDWR | O_CREAT`.
    case readWriteCreate
    /// `O_RDWR | O_CREAT | O_EXCL`: fails if the file exists.
    case createNew
}

/// Every file operation SegmentLog performs, so tests can inject faults (ENOSPC, EIO, short
/// writes, failing syncs) and count syncs without a broken disk.
///
/// Implementations must be thread-safe: the store's writer thread, its readers and its
/// maintenance calls use one instance concurrently. Methods throw `FileSystemError`.
/// File descriptors are plain POSIX descriptors so a wrapper can delegate to `PosixFileSystem`.
public protocol FileSystem: Sendable {
    func open(_ path: String, mode: FileOpenMode) throws -> Int32
    func close(_ fd: Int32) throws
    /// Reads up to `buffer.count` bytes at `offset`; returns the count read (0 at end of file).
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int
    /// Writes up to `buffer.count` bytes at `offset`; returns the count written (may be short).
    func pwrite(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64) throws -> Int
    /// Flushes file data (and the metadata needed to read it back) to stable storage.
    func fdatasync(_ fd: Int32) throws
    /// Flushes a directory's entries to stable storage after a create, rename or unlink.
    func syncDirectory(_ path: String) throws
    func truncate(_ fd: Int32, to size: Int64) throws
    /// Reserves `length` bytes at `offset` without changing what reads return. Throws with
    /// `EOPNOTSUPP` where the file system cannot; callers fall back to growing on write.
    func allocate(_ fd: Int32, offset: Int64, length: Int64) throws
    func size(_ fd: Int32) throws -> Int64
    func rename(_ from: String, to: String) throws
    func remove(_ path: String) throws
    /// Names in the directory, without "." and "..".
    func listDirectory(_ path: String) throws -> [String]
    /// Creates the directory if it does not exist (not its parents).
    func createDirectory(_ path: String) throws
    func fileExists(_ path: String) -> Bool
    /// Takes an exclusive, non-blocking `flock` on an open file; throws `EWOULDBLOCK` if held.
    func lockExclusive(_ fd: Int32) throws
    /// Maps the first `length` bytes read-only for recovery's single pass, or returns nil to make
    /// the caller read with `pread` (the default, so wrappers see every read).
    func mapReadOnly(_ fd: Int32, length: Int) -> UnsafeRawBufferPointer?
    func unmap(_ region: UnsafeRawBufferPointer)
    /// Starts writing back the range's dirty pages without waiting (a hint, no durability: a
    /// later `fdatasync` then has less to do). The default does nothing.
    func startWriteback(_ fd: Int32, offset: Int64, length: Int64)
}

extension FileSystem {
    public func mapReadOnly(_ fd: Int32, length: Int) -> UnsafeRawBufferPointer? { nil }
    public func unmap(_ region: UnsafeRawBufferPointer) {}
    public func startWriteback(_ fd: Int32, offset: Int64, length: Int64) {}
}

/// The real file system: each method wraps one system call once, retrying on `EINTR`.
public struct PosixFileSystem: FileSystem {
    public init() {}

    @inline(__always)
    private func retrying<T: BinaryInteger>(_ function: String, _ call: () -> T) throws -> T {
        while true {
            let result = call()
            if result >= 0 { return result }
            let code = errno
            if code == EINTR { continue }
            throw FileSystemError(errno: code, function: function)
        }
    }

    /// `open(2)` with `O_CLOEXEC`, of a regular file only. A FIFO, socket or device put where a
    /// segment or the lock file belongs would otherwise block a reader forever: `O_NONBLOCK`
    /// keeps the open itself from waiting (it changes nothing for a regular file), and `fstat`
    /// refuses the rest.
    public func open(_ path: String, mode: FileOpenMode) throws -> Int32 {
        var flags: Int32 = O_CLOEXEC | O_NONBLOCK
        switch mode {
        case .readOnly: flags |= O_RDONLY
        case .readWrite: flags |= O_RDWR
        case .readWriteCreate: flags |= O_RDWR | O_CREAT
        case .createNew: flags |= O_RDWR | O_CREAT | O_EXCL
        }
        let fd = try retrying("open") { Glibc.open(path, flags, 0o644) }
        var st = stat()
        let type = fstat(fd, &st) == 0 ? st.st_mode & S_IFMT : S_IFREG
        guard type == S_IFREG else {
            Glibc.close(fd)
            throw FileSystemError(errno: type == S_IFDIR ? EISDIR : EINVAL, function: "open (not a regular file)")
        }
        return fd
    }

    /// `close(2)`; not retried on EINTR (Linux has already released the descriptor).
    public func close(_ fd: Int32) throws {
        if Glibc.close(fd) != 0 && errno != EINTR {
            throw FileSystemError(errno: errno, function: "close")
        }
    }

    /// `pread(2)`.
    public func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        return try retrying("pread") { Glibc.pread(fd, base, buffer.count, off_t(offset)) }
    }

    /// `pwrite(2)`.
    public func pwrite(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        return try retrying("pwrite") { Glibc.pwrite(fd, base, buffer.count, off_t(offset)) }
    }

    /// `fdatasync(2)`. EINTR is retried; any other failure is the caller's to treat as fatal.
    public func fdatasync(_ fd: Int32) throws {
        _ = try retrying("fdatasync") { Glibc.fdatasync(fd) }
    }

    /// `open(2)` + `fsync(2)` + `close(2)` on a directory.
    public func syncDirectory(_ path: String) throws {
        let fd = try retrying("open") { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { Glibc.close(fd) }
        _ = try retrying("fsync") { Glibc.fsync(fd) }
    }

    /// `sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`, looked up at run time (Glibc's
    /// Swift module does not export it); nothing where it is missing. Errors are ignored: a hint.
    public func startWriteback(_ fd: Int32, offset: Int64, length: Int64) {
        #if os(Linux)
        guard let symbol = UnsafeRawPointer(bitPattern: Self.syncFileRangeAddress) else { return }
        let call = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32).self)
        _ = call(fd, offset, length, 2 /* SYNC_FILE_RANGE_WRITE */)
        #endif
    }

    #if os(Linux)
    /// The address of libc's `sync_file_range`, or 0 (an integer, so the constant is Sendable).
    private static let syncFileRangeAddress: Int = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "sync_file_range") else { return 0 }
        return Int(bitPattern: symbol)
    }()
    #endif

    /// `ftruncate(2)`.
    public func truncate(_ fd: Int32, to size: Int64) throws {
        _ = try retrying("ftruncate") { Glibc.ftruncate(fd, off_t(size)) }
    }

    /// `posix_fallocate(3)` (glibc: `fallocate(2)` with mode 0, which extends the file size).
    public func allocate(_ fd: Int32, offset: Int64, length: Int64) throws {
        while true {
            let result = posix_fallocate(fd, off_t(offset), off_t(length))
            if result == 0 { return }
            if result == EINTR { continue }
            throw FileSystemError(errno: result, function: "posix_fallocate")
        }
    }

    /// `fstat(2)`'s `st_size`.
    public func size(_ fd: Int32) throws -> Int64 {
        var st = stat()
        _ = try retrying("fstat") { fstat(fd, &st) }
        return Int64(st.st_size)
    }

    /// `rename(2)`.
    public func rename(_ from: String, to: String) throws {
        _ = try retrying("rename") { Glibc.rename(from, to) }
    }

    /// `unlink(2)`.
    public func remove(_ path: String) throws {
        _ = try retrying("unlink") { Glibc.unlink(path) }
    }

    /// `opendir(3)`/`readdir(3)`.
    public func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw FileSystemError(errno: errno, function: "opendir") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// `mkdir(2)`; an existing directory is not an error.
    public func createDirectory(_ path: String) throws {
        if Glibc.mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw FileSystemError(errno: errno, function: "mkdir")
        }
    }

    /// `access(2)` with `F_OK`.
    public func fileExists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// `mmap(2)` with `PROT_READ`, `MAP_PRIVATE | MAP_POPULATE`: recovery reads every byte once,
    /// and mapping saves copying a gigabyte through `pread`.
    public func mapReadOnly(_ fd: Int32, length: Int) -> UnsafeRawBufferPointer? {
        guard length > 0 else { return nil }
        #if os(Linux)
        let flags = MAP_PRIVATE | MAP_POPULATE
        #else
        let flags = MAP_PRIVATE
        #endif
        guard let base = mmap(nil, length, PROT_READ, flags, fd, 0), base != MAP_FAILED else { return nil }
        madvise(base, length, MADV_SEQUENTIAL)
        return UnsafeRawBufferPointer(start: base, count: length)
    }

    /// `munmap(2)`.
    public func unmap(_ region: UnsafeRawBufferPointer) {
        if let base = region.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), region.count) }
    }

    /// `flock(2)` with `LOCK_EX | LOCK_NB`.
    public func lockExclusive(_ fd: Int32) throws {
        _ = try retrying("flock") { flock(fd, LOCK_EX | LOCK_NB) }
    }
}

extension FileSystem {
    /// Writes all of `buffer` at `offset`, continuing after short writes.
    func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64) throws {
        var done = 0
        while done < buffer.count {
            let n = try pwrite(fd, UnsafeRawBufferPointer(rebasing: buffer[done...]), at: offset + Int64(done))
            if n <= 0 { throw FileSystemError(errno: EIO, function: "pwrite (wrote 0 bytes)") }
            done += n
        }
    }

    /// Reads exactly `buffer.count` bytes at `offset` or returns how many were read before EOF.
    func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try pread(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), at: offset + Int64(done))
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Makes `source` the file at `path`, durably: opens it with `mode`, runs `prepare` (which
    /// writes the content, naming each step in its second argument), `fdatasync`s it, renames it
    /// to `path` and `fsync`s `directory`. A crash leaves either the old file at `path` or the new
    /// one, complete and synced, never a mix. On failure before the rename, `source` is removed:
    /// a half-made file is never worth keeping.
    /// - Parameter purpose: what the file is for, in error messages ("creating segment").
    /// - Returns: the open descriptor of the file now at `path`; the caller closes it.
    /// - Throws: `SegmentLogError`: `.syncFailed` if a sync failed (the data may be lost), else `.io`.
    func installDurably(from source: String, to path: String, mode: FileOpenMode, directory: String, purpose: String,
                        prepare: (Int32, inout String) throws -> Void) throws -> Int32 {
        let fd: Int32
        do { fd = try open(source, mode: mode) } catch { throw SegmentLogError.io(error, "open", source) }
        var step = "open"
        do {
            try prepare(fd, &step)
            step = "fdatasync"
            try fdatasync(fd)
            step = "rename"
            try rename(source, to: path)
            step = "directory fsync"
            try syncDirectory(directory)
        } catch {
            try? close(fd)
            if step != "directory fsync" { try? remove(source) }
            let code = (error as? FileSystemError)?.errno ?? EIO
            if step == "fdatasync" || step == "directory fsync" {
                throw SegmentLogError(.syncFailed(errno: code, path: step == "fdatasync" ? source : directory), step,
                                      cause: error as? FileSystemError)
            }
            throw SegmentLogError(.io(errno: code, path: source), "\(purpose): \(step)", cause: error as? FileSystemError)
        }
        return fd
    }
}
