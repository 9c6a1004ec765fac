#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why an offline tool (`LogVerifier`, `LogInspector`, `LogRepair`) could not examine a
/// directory at all, as opposed to damage it found inside a log (which is reported, not thrown).
///
/// `description` is one line, fit for `paxlog: <description>` on stderr. Switch on `code` to
/// react; new codes may be added, so keep a `default`.
public struct OfflineToolError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable, Hashable {
        /// The path does not exist.
        case notFound(path: String)
        /// The path exists but is not a directory (e.g. a segment file was passed instead).
        case notADirectory(path: String)
        /// The directory holds no segment files: it is not a SegmentLog data directory.
        case notALog(path: String)
        /// A segment was written by a newer format version than this build reads.
        case newerFormat(file: String, version: UInt16, supported: UInt16)
        /// A live store holds the directory's LOCK; a command that writes refuses to run.
        case locked(path: String)
        /// A system call failed (`errno`) on `path`.
        case io(errno: Int32, path: String)
        /// A repair cannot proceed; the message says why and what to do.
        case refused
    }

    public var code: Code
    public var message: String
    public var location: String

    public init(_ code: Code, _ message: String = "", fileID: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.location = "\(fileID):\(line)"
    }

    public var description: String {
        var text: String
        switch code {
        case .notFound(let path):
            text = "\(path): no such directory"
        case .notADirectory(let path):
            text = "\(path): not a directory (pass the data directory that holds the .seg files)"
        case .notALog(let path):
            text = "\(path): not a PaxosLog data directory (no segment files)"
        case .newerFormat(let file, let version, let supported):
            text = "\(file): format version \(version) is newer than this paxlog reads (\(supported)); use a newer paxlog"
        case .locked(let path):
            text = "\(path) is held by a live replica (LOCK is taken); stop it first"
        case .io(let errno, let path):
            text = "I/O error on \(path): \(SegmentLogError.errnoText(errno))"
        case .refused:
            return message.isEmpty ? "refused" : message
        }
        if !message.isEmpty { text += " (\(message))" }
        return text
    }

    static func io(_ error: any Error, _ path: String, fileID: String = #fileID, line: Int = #line) -> OfflineToolError {
        if let e = error as? OfflineToolError { return e }
        if let e = error as? SegmentLogError, case .io(let errno, let p) = e.code {
            return OfflineToolError(.io(errno: errno, path: p), e.message, fileID: fileID, line: line)
        }
        let code = (error as? FileSystemError)?.errno ?? EIO
        let function = (error as? FileSystemError)?.function ?? ""
        return OfflineToolError(.io(errno: code, path: path), function, fileID: fileID, line: line)
    }
}

/// Whether a live store holds `directory`, found without writing anything: `LOCK` is opened
/// read-only (a missing `LOCK` means no store ever held it) and an exclusive `flock` is tried and
/// dropped at once.
///
/// Unlike `SegmentStore.isLocked(directory:)`, this never creates `LOCK`, so read-only commands
/// leave no trace. A store starting in the microseconds the probe holds the lock fails its own
/// `open` with `.locked` and can retry; it never sees a half-examined directory.
/// - Throws: `OfflineToolError.io` if `LOCK` exists but cannot be opened or locked.
func probeLock(directory: String, fileSystem: any FileSystem) throws -> Bool {
    let path = directory + "/" + Format.lockFileName
    let fd: Int32
    do {
        fd = try fileSystem.open(path, mode: .readOnly)
    } catch let error as FileSystemError where error.errno == ENOENT {
        return false
    } catch {
        throw OfflineToolError.io(error, path)
    }
    defer { try? fileSystem.close(fd) }
    do {
        try fileSystem.lockExclusive(fd)
        return false
    } catch let error as FileSystemError where error.errno == EWOULDBLOCK || error.errno == EAGAIN {
        return true
    } catch {
        throw OfflineToolError.io(error, path)
    }
}
