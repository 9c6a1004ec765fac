/// Checks every byte of a data directory offline: segment headers, the sequence of segment files,
/// the acceptor state each header carries against the records before it, every record's header,
/// CRC and payload (LZ4 inflation, entry framing), and the snapshot the log names. Backs
/// `paxlog verify`.
///
/// It keeps going past damage, resynchronising at the next record whose header and CRC verify,
/// so one run reports all of it. It classifies as recovery does: a report with no `damage` means
/// a strict `SegmentStore.open` succeeds; an incomplete last append is reported as `tornTail`,
/// which recovery cuts (it was never acknowledged) and is not damage.
///
/// Never writes and never takes the directory's lock (files are opened read-only).
public struct LogVerifier: Sendable {
    public let directory: String
    private let fileSystem: any FileSystem

    public init(directory: String, fileSystem: any FileSystem = PosixFileSystem()) {
        self.directory = directory
        self.fileSystem = fileSystem
    }

    /// Whether a live store holds the directory (found without writing anything).
    public func isLocked() throws -> Bool {
        try probeLock(directory: directory, fileSystem: fileSystem)
    }

    /// Reads and checks the whole log.
    /// - Parameter progress: called after each segment with bytes done and bytes in all segments.
    /// - Returns: everything found; `isClean` when there is no damage. `state` is nil (no replay).
    /// - Throws: `OfflineToolError` when the directory cannot be examined at all: missing, not a
    ///   directory, no segment files, a newer format version, or an I/O error.
    public func verify(progress: ((Int64, Int64) -> Void)? = nil) throws -> LogReport {
        try LogWalker(directory: directory, fileSystem: fileSystem).walk(progress: progress).report
    }
}
