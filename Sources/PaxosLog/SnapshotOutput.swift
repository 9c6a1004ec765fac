import NIOPosix
import SegmentLog

/// Where a ``StateSnapshot`` writes its bytes: a snapshot file being streamed to disk (by a
/// compaction, or an export for a lagging peer). Chunks may have any size; each is written before
/// `write` returns, so memory stays bounded by the chunk the caller holds.
///
/// Not for concurrent use: write chunks one after another.
public final class SnapshotOutput: @unchecked Sendable {
    let writer: SnapshotWriter

    init(_ writer: SnapshotWriter) { self.writer = writer }

    /// Bytes written so far (64-bit: a snapshot may be larger than memory, or than 4 GiB).
    public var bytesWritten: UInt64 { writer.length }

    /// Appends `bytes` to the snapshot. The write blocks on the disk (and a rate limit), so it
    /// runs on NIO's thread pool, not on Swift's cooperative pool.
    /// - Throws: ``PaxosLogError`` (`storage`) naming the file, or `closed`.
    public func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        let writer = self.writer
        do {
            try await NIOThreadPool.singleton.runIfActive { try writer.write(bytes) }
        } catch let error as SegmentLogError {
            throw PaxosLogError(.storage, "writing snapshot through \(writer.slot): \(error)")
        }
    }
}

/// A snapshot read in order, in chunks, for ``StateMachine/restore(from:)``. Its crc32 is
/// checked as the bytes go by: the read that reaches the end throws if the data is corrupt, so
/// a machine must read to the end before it commits what it restored.
public final class SnapshotInput: @unchecked Sendable {
    /// The snapshot reflects every entry through this position.
    public let position: PaxosLog.Position
    /// Data length in bytes.
    public let length: UInt64
    let snapshot: PaxosLog.Snapshot
    /// Bytes read from the file so far, and their crc32.
    private var fileOffset: UInt64 = 0
    private var crc: UInt32 = 0
    /// Read from the file but not yet handed out: small reads (a decoder's 4-byte fields) are
    /// served from here instead of a trip to the thread pool each.
    private var buffer: [UInt8] = []
    private var bufferIndex = 0
    /// File reads are this large.
    static let readSize = 1 << 20

    init(_ snapshot: PaxosLog.Snapshot) {
        self.snapshot = snapshot
        position = snapshot.position
        length = snapshot.length
    }

    /// Bytes handed out so far.
    public var bytesRead: UInt64 { fileOffset - UInt64(buffer.count - bufferIndex) }

    /// The next up to `maxCount` bytes; empty at the end.
    /// - Throws: ``PaxosLogError`` (`storage`) when the file cannot be read or, once the last
    ///   bytes are read from the file, when the data fails its checksum.
    public func read(maxCount: Int = 1 << 20) async throws -> [UInt8] {
        precondition(maxCount > 0, "SnapshotInput.read needs a positive maxCount")
        if bufferIndex == buffer.count {
            guard fileOffset < length else { return [] }
            try await fill()
        }
        let n = Swift.min(maxCount, buffer.count - bufferIndex)
        defer { bufferIndex += n }
        if bufferIndex == 0, n == buffer.count { return buffer }
        return Array(buffer[bufferIndex..<bufferIndex + n])
    }

    /// Reads exactly `count` bytes (fewer only at the end of the data): for decoders that want
    /// fixed-size fields across chunk boundaries.
    public func read(exactly count: Int) async throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let chunk = try await read(maxCount: count - out.count)
            if chunk.isEmpty { break }
            out.append(contentsOf: chunk)
        }
        return out
    }

    private func fill() async throws {
        let (snapshot, at) = (self.snapshot, fileOffset)
        let chunk = try await NIOThreadPool.singleton.runIfActive { try snapshot.read(at: at, maxCount: Self.readSize) }
        guard !chunk.isEmpty else {
            throw PaxosLogError(.storage, "snapshot \(position) ends at \(fileOffset) bytes, its header says \(length)")
        }
        crc = chunk.withUnsafeBytes { snapshotChecksum(crc, $0) }
        fileOffset += UInt64(chunk.count)
        if fileOffset == length, crc != snapshot.checksum {
            throw PaxosLogError(.storage, "snapshot \(position) fails its checksum (\(length) bytes read)")
        }
        buffer = chunk
        bufferIndex = 0
    }
}
