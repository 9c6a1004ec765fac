#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every error SegmentLog throws or reports: a growable `code`, a human `message`, the underlying
/// `cause` if any, and the source location that raised it.
///
/// Switch on `code` to react (new codes may be added; keep a `default`), print the error for
/// humans. Errors are values: the same error is given to every appender a failure affects.
public struct SegmentLogError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable, Hashable {
        /// Bytes on disk are not what the writer wrote: `file` (a path), byte `offset`, what was wrong.
        case corruption(file: String, offset: Int64, reason: String)
        /// A system call failed with `errno` on `path`.
        case io(errno: Int32, path: String)
        /// `fdatasync`/`fsync` failed. Fatal for the store: the kernel may have dropped the dirty
        /// pages, so a retry could report success over lost data. Close and reopen to recover.
        case syncFailed(errno: Int32, path: String)
        /// An earlier write-path failure (see `cause`) made the store refuse writes. Reads still work.
        case storeFailed
        /// The slot lies at or below the snapshot; its entry was compacted away.
        case compacted(slot: UInt64)
        /// The store was closed.
        case closed
        /// Another process (or another open store in this process) holds the directory's LOCK file.
        case locked(path: String)
        /// A record or entry exceeds `Options.maxRecordBytes`.
        case recordTooLarge(size: Int, limit: Int)
        /// The caller asked for something the store cannot do (the message says what).
        case invalidArgument
        /// The directory's identity (`IDENTITY`) names another node or cluster than the one opening it.
        case wrongIdentity(directory: String, recorded: DirectoryIdentity, expectedNode: UInt32, expectedCluster: ClusterID?)
        /// The directory has no identity and no log, and the caller did not ask to bootstrap it.
        case uninitialized(directory: String)
        /// The directory records an identity but its log is gone: its acceptor state was lost.
        case logMissing(directory: String, identity: DirectoryIdentity)
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?
    /// Where in SegmentLog the error was raised, as `file:line`.
    public var location: String

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil,
                fileID: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.cause = cause
        self.location = "\(fileID):\(line)"
    }

    public var description: String {
        var text: String
        switch code {
        case .corruption(let file, let offset, let reason):
            text = "corruption in \(file) at offset \(offset): \(reason)"
        case .io(let errno, let path):
            text = "I/O error on \(path): \(Self.errnoText(errno))"
        case .syncFailed(let errno, let path):
            text = "sync failed on \(path): \(Self.errnoText(errno)); the store refuses further writes"
        case .storeFailed:
            text = "the store refuses writes after an earlier failure"
        case .compacted(let slot):
            text = "slot \(slot) was compacted into a snapshot"
        case .closed:
            text = "the store is closed"
        case .locked(let path):
            text = "\(path) is locked by another process or store"
        case .recordTooLarge(let size, let limit):
            text = "record of \(size) bytes exceeds the limit of \(limit) bytes"
        case .invalidArgument:
            text = "invalid argument"
        case .wrongIdentity(let directory, let recorded, let node, let cluster):
            text = "\(directory) belongs to \(recorded), but node \(node)\(cluster.map { " of cluster \($0)" } ?? "") is opening it"
        case .uninitialized(let directory):
            text = "\(directory) holds no log and no identity, and was not to be bootstrapped"
        case .logMissing(let directory, let identity):
            text = "\(directory) records \(identity) but its log files are gone: its acceptor state was lost"
        }
        if !message.isEmpty { text += " (\(message))" }
        if let cause { text += "; caused by: \(cause)" }
        return text
    }

    static func errnoText(_ code: Int32) -> String {
        "\(String(cString: strerror(code))) (errno \(code))"
    }

    // Shorthands used across the module.
    static func corruption(_ file: String, _ offset: Int, _ reason: String,
                           fileID: String = #fileID, line: Int = #line) -> SegmentLogError {
        SegmentLogError(.corruption(file: file, offset: Int64(offset), reason: reason), "",
                        fileID: fileID, line: line)
    }

    static func io(_ error: any Error, _ operation: String, _ path: String,
                   fileID: String = #fileID, line: Int = #line) -> SegmentLogError {
        if let e = error as? SegmentLogError { return e }
        let code = (error as? FileSystemError)?.errno ?? EIO
        return SegmentLogError(.io(errno: code, path: path), operation, fileID: fileID, line: line)
    }
}
