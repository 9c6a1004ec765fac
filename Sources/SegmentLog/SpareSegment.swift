#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The next segment, made ahead of time on a background thread: a temporary file of
/// `segmentSize` zero bytes actually written and synced.
///
/// Why written zeros and not only `fallocate`: `fallocate` leaves *unwritten* extents, and the
/// first write into one changes the file's extent map, so each `fdatasync` also commits a journal
/// transaction. Overwriting blocks that are already written is a pure data flush: on ext4 here it
/// gives about 1.5× the `fdatasync` rate (PostgreSQL zero-fills its WAL segments for the same
/// reason). The cost is one extra sequential write of each segment, off the commit path.
///
/// The file is named like the segment's own temporary file, so a crash leaves nothing recovery
/// does not already remove. The writer thread takes it at the roll: it writes the header over the
/// first bytes, syncs, and renames it into place (`SegmentStore.createSegment`).
final class SpareSegment: @unchecked Sendable {
    let sequence: UInt64
    let temporaryPath: String
    private let fileSystem: any FileSystem
    private var thread: OSThread?
    /// Set by the preparing thread before it exits; read after `join`.
    private var result: Result<Int32, any Error> = .failure(SegmentLogError(.invalidArgument, "not prepared"))

    /// Starts preparing the spare for `sequence` in `directory`; returns nil if no thread starts.
    static func prepare(sequence: UInt64, directory: String, size: Int, fileSystem: any FileSystem) -> SpareSegment? {
        let spare = SpareSegment(sequence: sequence, directory: directory, fileSystem: fileSystem)
        do {
            spare.thread = try OSThread.start { [spare] in spare.result = Result { try spare.fill(size: size) } }
        } catch {
            return nil
        }
        return spare
    }

    private init(sequence: UInt64, directory: String, fileSystem: any FileSystem) {
        self.sequence = sequence
        self.temporaryPath = directory + "/" + Format.segmentFileName(sequence) + Format.temporarySuffix
        self.fileSystem = fileSystem
    }

    private func fill(size: Int) throws -> Int32 {
        let fd = try fileSystem.open(temporaryPath, mode: .readWriteCreate)
        do {
            try fileSystem.truncate(fd, to: 0)
            // Reserve first: a full disk fails here at once rather than after writing most of it.
            do {
                try fileSystem.allocate(fd, offset: 0, length: Int64(size))
            } catch let error as FileSystemError where error.errno == EOPNOTSUPP || error.errno == ENOSYS || error.errno == EINVAL {
                // The file system cannot reserve space; the zeros below still do.
            }
            let chunk = 1 << 20
            let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            defer { zeros.deallocate() }
            zeros.initializeMemory(as: UInt8.self, repeating: 0)
            var offset = 0
            while offset < size {
                let n = min(chunk, size - offset)
                try fileSystem.writeAll(fd, UnsafeRawBufferPointer(rebasing: zeros[..<n]), at: Int64(offset))
                offset += n
            }
            try fileSystem.fdatasync(fd)
            return fd
        } catch {
            try? fileSystem.close(fd)
            try? fileSystem.remove(temporaryPath)
            throw error
        }
    }

    /// Waits for the preparation; the open descriptor of the finished file, or nil if it failed
    /// (the caller then makes the segment the ordinary way).
    func take() -> Int32? {
        thread?.join()
        thread = nil
        return try? result.get()
    }

    /// Waits for the preparation and removes the file.
    func discard() {
        guard let fd = take() else { return }
        try? fileSystem.close(fd)
        try? fileSystem.remove(temporaryPath)
    }
}
