import CLZ4
import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A verified record handed to a walk's visitor. `raw` (the decompressed payload) points into
/// the walker's buffers and is valid only during the call.
struct WalkedRecord {
    /// Index of the segment in `LogReport.segments`.
    var segment: Int
    var sequence: UInt64
    var path: String
    var offset: Int
    var length: Int
    var type: Format.RecordType
    var codec: Format.Codec
    var storedLength: Int
    var raw: UnsafeRawBufferPointer
    /// Whether every byte of the log before this record verified: the record is part of the
    /// valid prefix that tolerant recovery (and `repair --truncate-after-corruption`) keeps.
    var inPrefix: Bool
}

/// Where the valid prefix of a log ends: the first damage in log order.
struct CutPoint: Hashable {
    /// Index in `LogReport.segments` of the first segment not wholly kept.
    var segment: Int
    /// Offset in that segment where the kept bytes end (0: the whole segment goes).
    var offset: Int
}

/// The shared engine of the offline tools: reads every segment of a directory once, in sequence
/// order, read-only, verifying headers, CRCs, payloads and the rules between segments, and keeps
/// going past damage (resynchronising at the next record whose header and CRC verify) so one
/// pass reports all of it.
///
/// It classifies exactly as `Recovery` does, so "clean" here means a strict open succeeds:
/// damage in the last segment with no valid record after it is a torn tail (end of log), and
/// anything else is damage.
struct LogWalker {
    let directory: String
    let fileSystem: any FileSystem

    struct Result {
        var report: LogReport
        var cut: CutPoint?
        /// Sequence numbers of the segments, parallel to `report.segments`.
        var sequences: [UInt64]
    }

    /// Names in the directory, after checking it is a data directory.
    /// - Throws: `OfflineToolError` `.notFound`, `.notADirectory`, `.notALog`, `.io`.
    func listNames() throws -> [String] {
        let names: [String]
        do {
            names = try fileSystem.listDirectory(directory)
        } catch let error as FileSystemError where error.errno == ENOENT {
            throw OfflineToolError(.notFound(path: directory))
        } catch let error as FileSystemError where error.errno == ENOTDIR {
            throw OfflineToolError(.notADirectory(path: directory))
        } catch {
            throw OfflineToolError.io(error, directory)
        }
        guard names.contains(where: { Format.segmentSequence(fileName: $0) != nil }) else {
            throw OfflineToolError(.notALog(path: directory))
        }
        return names
    }

    private func path(_ name: String) -> String { directory + "/" + name }

    /// The first segment's header, if it decodes and names its own sequence: the base state that
    /// replay starts from (it summarises every deleted segment).
    func firstHeader() throws -> SegmentHeader? {
        guard let first = try listNames().compactMap(Format.segmentSequence).min() else { return nil }
        let p = path(Format.segmentFileName(first))
        var bytes = [UInt8](repeating: 0, count: Format.segmentHeaderSize)
        let n: Int
        do {
            let fd = try fileSystem.open(p, mode: .readOnly)
            defer { try? fileSystem.close(fd) }
            n = try bytes.withUnsafeMutableBytes { try fileSystem.readFully(fd, into: $0, at: 0) }
        } catch {
            throw OfflineToolError.io(error, p)
        }
        guard case .success(let header) = bytes.withUnsafeBytes({ SegmentHeader.decode(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }),
              header.sequence == first else { return nil }
        return header
    }

    /// Walks the whole log.
    /// - Parameters:
    ///   - progress: called after each segment with bytes done and bytes in all segments.
    ///   - visit: called for every record that verifies, in file order, including records after
    ///     damage (see `WalkedRecord.inPrefix`).
    /// - Throws: `OfflineToolError` when the directory cannot be examined (not a log, a newer
    ///   format, an I/O error), or whatever `visit` throws. Damage is reported, not thrown.
    func walk(progress: ((Int64, Int64) -> Void)? = nil, visit: (WalkedRecord) throws -> Void = { _ in }) throws -> Result {
        let names = try listNames()
        var report = LogReport(directory: directory)
        let sequences = names.compactMap(Format.segmentSequence).sorted()

        // Sizes first, so progress can say how far along it is.
        var sizes: [Int64] = []
        for sequence in sequences {
            let p = path(Format.segmentFileName(sequence))
            do {
                let fd = try fileSystem.open(p, mode: .readOnly)
                defer { try? fileSystem.close(fd) }
                sizes.append(try fileSystem.size(fd))
            } catch {
                throw OfflineToolError.io(error, p)
            }
            // Read whole below: a file the store cannot have written must not be either.
            if let size = sizes.last, size > Format.maxSegmentSize {
                throw OfflineToolError(.io(errno: EFBIG, path: p), "\(size) bytes, above the 2 GiB any segment can have")
            }
        }
        let total = sizes.reduce(0, +)

        var cut: CutPoint?
        // Double buffering: segment i+1 is read on another thread while segment i is verified, so
        // the kernel's copy out of the page cache overlaps the CRC work (two cores: ~2x).
        var current = SegmentRead()
        var upcoming = SegmentRead()
        let reads = DispatchGroup()
        // Never let a buffer go while a read into it is in flight, however the walk ends.
        defer { reads.wait() }
        if let first = sequences.first {
            current.load(path(Format.segmentFileName(first)), size: Int(sizes[0]), fileSystem: fileSystem)
        }
        var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 16)
        defer { scratch.deallocate() }
        // The acceptor state at the end of the previous segment, when all of it verified: the next
        // segment's header must carry exactly this (the writer builds headers from it when rolling).
        var carried: HeaderState?
        // The snapshot watermark of the valid prefix: the snapshot file that must exist.
        var prefixSnapshot: UInt64?
        var done: Int64 = 0

        for (i, sequence) in sequences.enumerated() {
            let name = Format.segmentFileName(sequence)
            let filePath = path(name)
            let isLast = i == sequences.count - 1
            if i > 0, sequence != sequences[i - 1] + 1 {
                report.damage.append(LogDamage(
                    kind: .missingSegment, file: path(Format.segmentFileName(sequences[i - 1] + 1)), offset: 0,
                    reason: "segment file missing: sequence jumps from \(sequences[i - 1]) to \(sequence)", skippedBytes: 0))
                if cut == nil { cut = CutPoint(segment: i, offset: 0) }
                carried = nil
            }

            // Wait for this segment's read (started during the previous one), start the next.
            reads.wait()
            if i > 0 { swap(&current, &upcoming) }
            if i + 1 < sequences.count {
                let target = upcoming
                let nextPath = path(Format.segmentFileName(sequences[i + 1]))
                let nextSize = Int(sizes[i + 1])
                let fileSystem = self.fileSystem
                reads.enter()
                DispatchQueue.global().async {
                    target.load(nextPath, size: nextSize, fileSystem: fileSystem)
                    reads.leave()
                }
            }
            if let error = current.error { throw OfflineToolError.io(error, filePath) }
            let n = current.count
            let buffer = current.buffer
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            report.bytesRead += Int64(n)
            var summary = SegmentSummary(name: name, path: filePath, sequence: sequence, fileSize: Int64(n),
                                         headerValid: false, dataEnd: 0)

            try Self.refuseNewerFormat(bytes, file: filePath)
            var state: HeaderState
            // Version 2 on: a segment that later ones follow must end with a segment-end record.
            var sealable = false
            switch SegmentHeader.decode(bytes) {
            case .failure(let failure):
                var damage = LogDamage(kind: .segmentHeader, file: filePath, offset: 0, reason: failure.reason,
                                       skippedBytes: Int64(n))
                if n >= Format.segmentHeaderSize {
                    let stored = bytes.le(60, as: UInt32.self)
                    let computed = Format.crc(0, UnsafeRawBufferPointer(rebasing: bytes[0..<60]))
                    if stored != computed {
                        damage.expectedCRC = stored
                        damage.actualCRC = computed
                    }
                }
                report.damage.append(damage)
                if cut == nil { cut = CutPoint(segment: i, offset: 0) }
                summary.contentEnd = Int64(n)
                report.segments.append(summary)
                carried = nil
                done += sizes[i]
                progress?(done, total)
                continue
            case .success(let header):
                if header.sequence != sequence {
                    report.damage.append(LogDamage(
                        kind: .segmentHeader, file: filePath, offset: 16,
                        reason: "header names sequence \(header.sequence), file name says \(sequence)", skippedBytes: Int64(n)))
                    if cut == nil { cut = CutPoint(segment: i, offset: 0) }
                    summary.contentEnd = Int64(n)
                    report.segments.append(summary)
                    carried = nil
                    done += sizes[i]
                    progress?(done, total)
                    continue
                }
                summary.headerValid = true
                summary.headerPromised = header.promised
                summary.headerChosenThrough = header.chosenThrough
                summary.headerSnapshotSlot = header.snapshotSlot
                summary.recycled = header.recycled
                sealable = header.formatVersion >= 2
                state = HeaderState(promised: header.promised, chosenThrough: header.chosenThrough, snapshotSlot: header.snapshotSlot)
                if let carried, carried != state {
                    report.damage.append(LogDamage(
                        kind: .segmentState, file: filePath, offset: 24,
                        reason: "header carries \(state) but segment \(sequences[i - 1]) ended with \(carried)",
                        skippedBytes: 0))
                    if cut == nil { cut = CutPoint(segment: i, offset: 0) }
                }
                if cut == nil && i == 0 { prefixSnapshot = header.snapshotSlot }
            }

            var parser = SegmentParser(bytes: bytes, sequence: sequence)
            parser.recycled = summary.recycled
            var offset = Format.segmentHeaderSize
            summary.dataEnd = Int64(offset)
            var segmentDamaged = false
            // Where the writer's bytes end when that is not the last non-zero byte: after a
            // segment-end record, or at the stale bytes of a recycled file.
            var contentEnd: Int?

            func damaged(_ kind: LogDamage.Kind, at: Int, reason: String, type: String?, crc: (UInt32, UInt32)?,
                         resumeAt next: Int?) {
                let skipped = next.map { $0 - at } ?? ((parser.lastNonZero(from: at) ?? at) - at + 1)
                report.damage.append(LogDamage(
                    kind: kind, file: filePath, offset: Int64(at), recordType: type, expectedCRC: crc?.0, actualCRC: crc?.1,
                    reason: reason, resumedAt: next.map(Int64.init), skippedBytes: Int64(skipped)))
                segmentDamaged = true
                if cut == nil { cut = CutPoint(segment: i, offset: at) }
            }

            records: while true {
                switch parser.step(at: offset) {
                case .end:
                    if !isLast && sealable {
                        // The writer seals a segment before it rolls (FORMAT.md, recovery rule 3).
                        damaged(.unsealedSegment, at: offset, reason: "segment ends without its segment-end record, yet a later segment follows: the records after offset \(offset) are missing", type: nil, crc: nil, resumeAt: nil)
                    }
                    break records
                case .sealed(let at):
                    contentEnd = at + Format.recordHeaderSize
                    summary.sealed = true
                    break records
                case .damage(let at, let reason, let frame):
                    let next = parser.nextValidFrame(after: at)
                    if isLast && next == nil && summary.recycled {
                        // Stale records of the file's earlier use, or an append cut short: recovery
                        // cannot tell them apart, ends the log here and writes over them.
                        report.notes.append("\(name) reuses a freed segment file: its records end at offset \(at), "
                                            + "the bytes after are from the file's earlier use or an append cut short")
                        contentEnd = at
                        break records
                    }
                    if isLast && next == nil {
                        // What a crashed append leaves: recovery treats it as the end of the log.
                        let last = parser.lastNonZero(from: at) ?? at
                        report.tornTail = TornTail(file: filePath, offset: Int64(at), bytes: Int64(last - at + 1), reason: reason)
                        break records
                    }
                    let type = frame.map { Self.typeName($0.type) } ?? Self.typeName(at: at, in: bytes)
                    damaged(.record, at: at, reason: reason, type: type,
                            crc: frame.map { ($0.crcStored, $0.crcComputed) }, resumeAt: next)
                    if let frame, frame.type == .accepted {
                        report.damage[report.damage.count - 1].apparentSlots = Self.apparentSlots(frame, scratch: &scratch)
                    }
                    guard let next else { break records }
                    offset = next
                case .frame(let frame):
                    // The CRC matched, so these bytes are what a writer wrote: a payload that does
                    // not decode is corruption, never a tear, and the frame length is trustworthy.
                    var raw = frame.stored
                    if frame.codec == .lz4 {
                        if frame.rawLength > scratch.count {
                            scratch.deallocate()
                            scratch = .allocate(byteCount: max(frame.rawLength, 1 << 16), alignment: 16)
                        }
                        guard let inflated = Self.inflate(frame.stored, into: scratch, rawLength: frame.rawLength) else {
                            damaged(.payload, at: frame.offset, reason: "LZ4 payload does not inflate to \(frame.rawLength) bytes",
                                    type: Self.typeName(frame.type), crc: nil, resumeAt: frame.offset + frame.length)
                            offset += frame.length
                            continue records
                        }
                        raw = inflated
                    }
                    var problem: String?
                    var entries = 0
                    var low = UInt64.max
                    var high = UInt64.min
                    if frame.type == .accepted {
                        problem = RecordCodec.walkEntries(raw) { slot, _ in
                            entries += 1
                            low = min(low, slot)
                            high = max(high, slot)
                        }
                    } else {
                        switch RecordCodec.decode(type: frame.type, raw: raw) {
                        case .failure(let failure): problem = failure.reason
                        case .success(let record): state.apply(record)
                        }
                    }
                    if let problem {
                        damaged(.payload, at: frame.offset, reason: problem, type: Self.typeName(frame.type), crc: nil,
                                resumeAt: frame.offset + frame.length)
                        offset += frame.length
                        continue records
                    }
                    let inPrefix = cut == nil
                    if inPrefix, case .snapshot = frame.type, let s = raw.count == 8 ? raw.le(0, as: UInt64.self) : nil {
                        prefixSnapshot = max(prefixSnapshot ?? 0, s)
                    }
                    try visit(WalkedRecord(segment: i, sequence: sequence, path: filePath, offset: frame.offset,
                                           length: frame.length, type: frame.type, codec: frame.codec,
                                           storedLength: frame.storedLength, raw: raw, inPrefix: inPrefix))
                    summary.records += 1
                    summary.storedPayloadBytes += Int64(frame.storedLength)
                    summary.rawPayloadBytes += Int64(frame.rawLength)
                    if entries > 0 {
                        summary.entries += entries
                        summary.firstSlot = min(summary.firstSlot ?? .max, low)
                        summary.lastSlot = max(summary.lastSlot ?? .min, high)
                    }
                    offset += frame.length
                    summary.dataEnd = Int64(offset)
                }
            }
            summary.contentEnd = Int64(contentEnd ?? ((parser.lastNonZero(from: Int(summary.dataEnd)) ?? (Int(summary.dataEnd) - 1)) + 1))
            report.records += summary.records
            report.storedPayloadBytes += summary.storedPayloadBytes
            report.rawPayloadBytes += summary.rawPayloadBytes
            report.segments.append(summary)
            carried = segmentDamaged ? nil : state
            done += sizes[i]
            progress?(done, total)
        }

        try checkSideFiles(names: names, snapshot: prefixSnapshot, report: &report)
        return Result(report: report, cut: cut, sequences: sequences)
    }

    /// The snapshot the valid prefix names must exist and verify; everything else in the
    /// directory that is not part of the log is worth a note.
    private func checkSideFiles(names: [String], snapshot: UInt64?, report: inout LogReport) throws {
        do {
            report.identity = try DirectoryIdentity.read(directory: directory, fileSystem: fileSystem)
            if report.identity == nil {
                report.notes.append("no \(DirectoryIdentity.fileName) file: written before identities (a replica adopts it on open)")
            } else if let lost = report.identity?.lostState {
                report.notes.append("needs rejoin: \(lost); this replica must not vote until it has caught up from the others")
            }
        } catch let error as SegmentLogError {
            guard case .corruption(let file, let offset, let reason) = error.code else { throw OfflineToolError.io(error, path(DirectoryIdentity.fileName)) }
            report.damage.append(LogDamage(kind: .identity, file: file, offset: offset, reason: reason, skippedBytes: 0))
        }
        let snapshots = names.compactMap { Format.snapshotSlot(fileName: $0) }.sorted()
        report.snapshotFiles = snapshots.map { path(Format.snapshotFileName($0)) }
        if let snapshot {
            let snapshotPath = path(Format.snapshotFileName(snapshot))
            do {
                _ = try SnapshotFile.read(path: snapshotPath, fileSystem: fileSystem, verifyData: true)
                if let fd = try? fileSystem.open(snapshotPath, mode: .readOnly) {
                    report.bytesRead += (try? fileSystem.size(fd)) ?? 0
                    try? fileSystem.close(fd)
                }
            } catch let error as SegmentLogError {
                if case .corruption(let file, let offset, let reason) = error.code {
                    report.damage.append(LogDamage(kind: .snapshot, file: file, offset: offset,
                                                   reason: reason + " (the log's snapshot watermark is \(snapshot))", skippedBytes: 0))
                } else {
                    throw OfflineToolError.io(error, snapshotPath)
                }
            }
        }
        for slot in snapshots where slot != snapshot {
            report.notes.append("stale snapshot file \(Format.snapshotFileName(slot)) (the log names \(snapshot.map { "slot \($0)" } ?? "no snapshot"); recovery deletes it)")
        }
        for name in names.sorted() {
            if name.hasSuffix(Format.temporarySuffix) {
                report.notes.append("leftover temporary file \(name) (recovery deletes it)")
            } else if name.contains(Format.segmentSuffix + Format.tornSuffix) {
                report.notes.append("side file \(name): bytes cut from a torn or damaged tail by an earlier recovery or repair")
            } else if name.hasSuffix(Format.segmentSuffix + Format.freeSuffix) {
                report.notes.append("side file \(name): a segment compaction freed, kept for reuse by a new segment")
            } else if name.contains(Format.segmentSuffix + ".discarded") {
                report.notes.append("side file \(name): a segment set aside by tolerant recovery or repair")
            } else if let slot = Format.tableSlot(fileName: name) {
                if slot != snapshot {
                    report.notes.append("stale snapshot table \(name) (recovery deletes it)")
                } else if case .failure(let error) = Swift.Result(catching: { try SegmentStore.readSnapshotTable(directory: directory, slot: slot, fileSystem: fileSystem) }) {
                    report.notes.append("snapshot table \(name) does not verify (\(error)); a replica starts without it: "
                        + "retries older than the snapshot answer sessionExpired, and a retried record repeated across it may be read twice")
                }
            } else if name != Format.lockFileName && name != Format.identityFileName && Format.segmentSequence(fileName: name) == nil
                        && Format.snapshotSlot(fileName: name) == nil {
                report.notes.append("unexpected file \(name)")
            }
        }
    }

    /// A header whose magic and CRC are right but whose version is newer is not damage: this build
    /// cannot judge the file, so the tool stops with a clear error instead of reporting garbage.
    static func refuseNewerFormat(_ bytes: UnsafeRawBufferPointer, file: String) throws {
        guard bytes.count >= Format.segmentHeaderSize, bytes.le(0, as: UInt64.self) == Format.segmentMagic else { return }
        let version = bytes.le(8, as: UInt16.self)
        guard version > Format.version,
              bytes.le(60, as: UInt32.self) == Format.crc(0, UnsafeRawBufferPointer(rebasing: bytes[0..<60])) else { return }
        throw OfflineToolError(.newerFormat(file: file, version: version, supported: Format.version))
    }

    /// Decompresses into `scratch`; nil unless the payload inflates to exactly `rawLength` bytes.
    static func inflate(_ stored: UnsafeRawBufferPointer, into scratch: UnsafeMutableRawBufferPointer,
                        rawLength: Int) -> UnsafeRawBufferPointer? {
        guard let source = stored.baseAddress, stored.count > 0, let target = scratch.baseAddress,
              rawLength <= scratch.count, rawLength <= Format.maxRecordBytes else { return nil }
        let n = LZ4_decompress_safe(source.assumingMemoryBound(to: CChar.self), target.assumingMemoryBound(to: CChar.self),
                                    Int32(stored.count), Int32(rawLength))
        return n == Int32(rawLength) ? UnsafeRawBufferPointer(rebasing: scratch[0..<rawLength]) : nil
    }

    /// The slot range a CRC-failed accepted frame still appears to hold, if its payload parses.
    static func apparentSlots(_ frame: FrameView, scratch: inout UnsafeMutableRawBufferPointer) -> ClosedRange<UInt64>? {
        var raw = frame.stored
        if frame.codec == .lz4 {
            if frame.rawLength > scratch.count {
                scratch.deallocate()
                scratch = .allocate(byteCount: max(frame.rawLength, 1 << 16), alignment: 16)
            }
            guard let inflated = inflate(frame.stored, into: scratch, rawLength: frame.rawLength) else { return nil }
            raw = inflated
        }
        var low = UInt64.max
        var high = UInt64.min
        guard RecordCodec.walkEntries(raw, { slot, _ in low = min(low, slot); high = max(high, slot) }) == nil,
              low <= high else { return nil }
        return low...high
    }

    static func typeName(_ type: Format.RecordType) -> String {
        switch type {
        case .promise: return "promise"
        case .accepted: return "accepted"
        case .chosen: return "chosen"
        case .snapshot: return "snapshot"
        case .truncateSuffix: return "truncate-suffix"
        case .segmentEnd: return "segment-end"
        }
    }

    /// The type of an unverified record header, if its type byte names one.
    static func typeName(at offset: Int, in bytes: UnsafeRawBufferPointer) -> String? {
        guard offset + Format.recordHeaderSize <= bytes.count,
              let type = Format.RecordType(rawValue: bytes[offset + 12]) else { return nil }
        return typeName(type)
    }
}

/// The acceptor state a segment header carries, replayed record by record with the store's rules
/// (latest promise wins; chosen and snapshot watermarks only move forward).
struct HeaderState: Hashable, CustomStringConvertible {
    var promised: LogBallot?
    var chosenThrough: UInt64?
    var snapshotSlot: UInt64?

    mutating func apply(_ record: LogRecord) {
        switch record {
        case .promise(let ballot): promised = ballot
        case .chosen(let through): chosenThrough = max(chosenThrough ?? through, through)
        case .snapshot(let slot): snapshotSlot = max(snapshotSlot ?? slot, slot)
        case .accepted, .suffixTruncated: break
        }
    }

    var description: String {
        "promised \(promised.map { "\($0)" } ?? "none"), chosen through \(chosenThrough.map { "\($0)" } ?? "none"), "
            + "snapshot \(snapshotSlot.map { "\($0)" } ?? "none")"
    }
}

/// One segment read into memory, by whichever thread loads it. Owned by one thread at a time:
/// the walker hands it to a reader and takes it back only after waiting for that read.
final class SegmentRead: @unchecked Sendable {
    var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 4096)
    var count = 0
    var error: (any Error)?

    deinit { buffer.deallocate() }

    /// Reads the whole file (up to `size` bytes; fewer if it shrank) into `buffer`.
    func load(_ path: String, size: Int, fileSystem: any FileSystem) {
        count = 0
        error = nil
        if size > buffer.count {
            buffer.deallocate()
            buffer = .allocate(byteCount: size, alignment: 4096)
        }
        do {
            let fd = try fileSystem.open(path, mode: .readOnly)
            defer { try? fileSystem.close(fd) }
            count = try fileSystem.readFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]), at: 0)
        } catch {
            self.error = error
        }
    }
}
