/// Reads a data directory's segments and records in file order, for offline tools (`paxlog
/// inspect`, `dump`, `verify`). Never writes, never takes the lock: check
/// `SegmentStore.isLocked(directory:)` first if the directory may be live.
public struct SegmentScanner: Sendable {
    public let directory: String
    private let fileSystem: any FileSystem

    public init(directory: String, fileSystem: any FileSystem = PosixFileSystem()) {
        self.directory = directory
        self.fileSystem = fileSystem
    }

    /// A segment file found in the directory.
    public struct SegmentFileInfo: Sendable, Hashable {
        public var name: String
        public var path: String
        public var sequence: UInt64
    }

    /// A segment header as decoded.
    public struct HeaderInfo: Sendable, Hashable {
        public var sequence: UInt64
        public var version: UInt16
        public var promised: LogBallot?
        public var chosenThrough: UInt64?
        public var snapshotSlot: UInt64?
        /// The file held an earlier segment: after its records may come stale ones of that use.
        public var recycled: Bool
    }

    public enum RecordKind: String, Sendable, Hashable {
        case promise, accepted, chosen, snapshot, suffixTruncated
    }

    /// One record as found on disk.
    public struct ScannedRecord: Sendable {
        public var file: String
        /// Byte offset of the record header in the file.
        public var offset: Int64
        public var kind: RecordKind
        /// "raw" or "lz4".
        public var codec: String
        /// Payload bytes as stored (after compression), excluding the 16-byte record header.
        public var storedLength: Int
        /// Payload bytes after decompression.
        public var rawLength: Int
        /// The CRC stored in the record and the one computed over the stored bytes (segment-masked).
        public var crcExpected: UInt32
        public var crcActual: UInt32
        /// The decoded record, when `scan(decode: true)`.
        public var record: LogRecord?
    }

    /// How a segment's records end.
    public enum SegmentEnd: Sendable, Hashable {
        /// The last record ends where the file ends, or only zero bytes (preallocated space) follow,
        /// or a segment-end record (written before the log rolled to the next segment).
        case clean
        /// Bytes at `offset` are not a valid record. `nextValidRecord` is the offset of a valid
        /// record after them, if any: with none, in the last segment, this is a torn tail (or, in
        /// a recycled segment, possibly the stale records of the file's earlier use).
        case damaged(offset: Int64, reason: String, nextValidRecord: Int64?)
        /// The header is unreadable; no records were scanned.
        case badHeader(reason: String)
    }

    public struct SegmentReport: Sendable {
        public var file: SegmentFileInfo
        public var fileSize: Int64
        public var header: HeaderInfo?
        public var recordCount: Int
        /// Offset just past the last valid record.
        public var validEnd: Int64
        public var end: SegmentEnd
    }

    /// Segment files, in sequence order.
    public func segmentFiles() throws -> [SegmentFileInfo] {
        let names: [String]
        do { names = try fileSystem.listDirectory(directory) } catch { throw SegmentLogError.io(error, "readdir", directory) }
        return names.compactMap { name in
            Format.segmentSequence(fileName: name).map { SegmentFileInfo(name: name, path: directory + "/" + name, sequence: $0) }
        }.sorted { $0.sequence < $1.sequence }
    }

    /// Snapshot files (slot and path), in slot order. Existence says nothing about validity.
    public func snapshotFiles() throws -> [(slot: UInt64, path: String)] {
        let names: [String]
        do { names = try fileSystem.listDirectory(directory) } catch { throw SegmentLogError.io(error, "readdir", directory) }
        return names.compactMap { name in Format.snapshotSlot(fileName: name).map { ($0, directory + "/" + name) } }
            .sorted { $0.slot < $1.slot }
    }

    /// Reads and verifies the snapshot file at `path`.
    public func readSnapshot(path: String) throws -> SegmentStore.Snapshot {
        try SnapshotFile.read(path: path, fileSystem: fileSystem, verifyData: true)
    }

    /// Visits every valid record of one segment in file order, then reports how the segment ends.
    /// - Parameters:
    ///   - decode: decompress and decode each record into `ScannedRecord.record`.
    ///   - visit: called per valid record; throw to stop early.
    public func scan(_ file: SegmentFileInfo, decode: Bool = false,
                     visit: (ScannedRecord) throws -> Void = { _ in }) throws -> SegmentReport {
        let fd: Int32
        do { fd = try fileSystem.open(file.path, mode: .readOnly) } catch { throw SegmentLogError.io(error, "open", file.path) }
        defer { try? fileSystem.close(fd) }
        let size: Int
        do { size = Int(try fileSystem.size(fd)) } catch { throw SegmentLogError.io(error, "fstat", file.path) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 4096)
        defer { buffer.deallocate() }
        let n: Int
        do { n = try fileSystem.readFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]), at: 0) } catch {
            throw SegmentLogError.io(error, "pread", file.path)
        }
        var parser = SegmentParser(bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<n]), sequence: file.sequence)
        var report = SegmentReport(file: file, fileSize: Int64(size), header: nil, recordCount: 0, validEnd: 0, end: .clean)

        switch SegmentHeader.decode(parser.bytes) {
        case .failure(let failure):
            report.end = .badHeader(reason: failure.reason)
            return report
        case .success(let header):
            report.header = HeaderInfo(sequence: header.sequence, version: parser.bytes.le(8), promised: header.promised,
                                       chosenThrough: header.chosenThrough, snapshotSlot: header.snapshotSlot,
                                       recycled: header.recycled)
            parser.recycled = header.recycled
            if header.sequence != file.sequence {
                report.end = .badHeader(reason: "header names sequence \(header.sequence), file name says \(file.sequence)")
                return report
            }
        }

        var offset = Format.segmentHeaderSize
        report.validEnd = Int64(offset)
        func damaged(_ at: Int, _ reason: String) {
            report.end = .damaged(offset: Int64(at), reason: reason, nextValidRecord: parser.nextValidFrame(after: at).map(Int64.init))
        }
        while true {
            switch parser.step(at: offset) {
            case .end, .sealed:
                return report
            case .damage(let at, let reason, _):
                damaged(at, reason)
                return report
            case .frame(let frame):
                // The parser reports a segment-end record as `.sealed`, so every frame has a kind.
                guard let kind = Self.kind(frame.type) else { return report }
                var scanned = ScannedRecord(
                    file: file.path, offset: Int64(frame.offset), kind: kind,
                    codec: frame.codec == .lz4 ? "lz4" : "raw", storedLength: frame.storedLength,
                    rawLength: frame.rawLength, crcExpected: frame.crcStored, crcActual: frame.crcComputed, record: nil)
                // Payload checks run even without `decode`, so verify sees what recovery would.
                let raw: [UInt8]?
                if frame.codec == .lz4 {
                    raw = RecordCodec.decompress(frame.stored, rawLength: frame.rawLength)
                    if raw == nil {
                        damaged(frame.offset, "LZ4 payload does not inflate to \(frame.rawLength) bytes")
                        return report
                    }
                } else {
                    raw = nil
                }
                let result: Result<LogRecord, DecodeFailure>
                if decode || frame.type != .accepted {
                    result = raw.map { $0.withUnsafeBytes { RecordCodec.decode(type: frame.type, raw: $0) } }
                        ?? RecordCodec.decode(type: frame.type, raw: frame.stored)
                } else {
                    let reason = raw.map { $0.withUnsafeBytes { RecordCodec.walkEntries($0) { _, _ in } } }
                        ?? RecordCodec.walkEntries(frame.stored) { _, _ in }
                    result = reason.map { .failure(DecodeFailure(reason: $0)) } ?? .success(.accepted([]))
                }
                switch result {
                case .failure(let failure):
                    damaged(frame.offset, failure.reason)
                    return report
                case .success(let record):
                    if decode { scanned.record = record }
                }
                try visit(scanned)
                report.recordCount += 1
                offset += frame.length
                report.validEnd = Int64(offset)
            }
        }
    }

    private static func kind(_ type: Format.RecordType) -> RecordKind? {
        switch type {
        case .promise: return .promise
        case .accepted: return .accepted
        case .chosen: return .chosen
        case .snapshot: return .snapshot
        case .truncateSuffix: return .suffixTruncated
        case .segmentEnd: return nil
        }
    }
}
