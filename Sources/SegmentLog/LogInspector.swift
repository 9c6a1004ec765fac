#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a data directory offline and explains it: segments, acceptor state, chosen entries,
/// every record. Backs `paxlog inspect` and `paxlog dump`.
///
/// Never writes and never takes the directory's lock: files are opened read-only. On a directory
/// a live store holds, it reads what is on disk; the log is append-only, so that is a consistent
/// prefix, except that an append in flight may look like a torn tail.
///
/// State is replayed from the *valid prefix*: every record before the first damage, which is what
/// a replica keeps after tolerant recovery or `LogRepair` with `truncateAfterCorruption`.
public struct LogInspector: Sendable {
    public let directory: String
    private let fileSystem: any FileSystem

    public init(directory: String, fileSystem: any FileSystem = PosixFileSystem()) {
        self.directory = directory
        self.fileSystem = fileSystem
    }

    /// Whether a live store holds the directory (found without writing anything).
    /// - Throws: `OfflineToolError.io` if `LOCK` exists but cannot be opened.
    public func isLocked() throws -> Bool {
        try probeLock(directory: directory, fileSystem: fileSystem)
    }

    /// Checks that the directory is a data directory, from its listing alone. A command that
    /// writes calls this before it takes `LOCK` or opens a store, which would otherwise create a
    /// first segment in a directory that is not a log.
    /// - Throws: `OfflineToolError` `.notFound`, `.notADirectory`, `.notALog` (no segment files),
    ///   `.io`.
    public func checkIsLog() throws {
        _ = try LogWalker(directory: directory, fileSystem: fileSystem).listNames()
    }

    /// Verifies and summarises the whole log, and replays the acceptor state of its valid prefix.
    /// - Parameter progress: called after each segment with bytes done and bytes in all segments.
    /// - Returns: a report with `state` set; damage is in `damage`, not thrown.
    /// - Throws: `OfflineToolError` if the directory cannot be examined.
    public func inspect(progress: ((Int64, Int64) -> Void)? = nil) throws -> LogReport {
        try replay(progress: progress).report
    }

    /// The chosen entries in slot order: the latest accepted entry of every slot at or below the
    /// chosen watermark (and above the snapshot, whose slots are compacted), within
    /// `from...through`. Slots without a local entry are skipped (counted in the report's
    /// `state.chosenWithoutEntry`).
    /// - Parameters:
    ///   - from: lowest slot wanted (default: the first slot after the snapshot).
    ///   - through: highest slot wanted (default: the chosen watermark).
    ///   - visit: called per entry, in slot order; throw to stop.
    /// - Returns: the report of the pass that found the entries.
    /// - Throws: `OfflineToolError` if the directory cannot be examined or a record changed
    ///   between the two reads (a live store cut a torn tail or deleted segments meanwhile).
    public func chosenEntries(from: UInt64? = nil, through: UInt64? = nil, progress: ((Int64, Int64) -> Void)? = nil,
                              visit: (LogEntry) throws -> Void) throws -> LogReport {
        let replayed = try replay(progress: progress)
        guard let chosen = replayed.log.chosenThrough else { return replayed.report }
        let low = max(from ?? 0, replayed.log.snapshotSlot.map { $0 &+ 1 } ?? 0)
        let high = min(through ?? .max, chosen)
        guard low <= high, replayed.log.snapshotSlot != .max else { return replayed.report }
        let reader = FrameReader(directory: directory, fileSystem: fileSystem)
        defer { reader.close() }
        for (slot, location) in replayed.log.index.locations(from: low, through: high) {
            let entry = try reader.entry(slot: slot, at: location)
            try visit(entry)
        }
        return replayed.report
    }

    /// Every record in file order, each accepted entry on its own, with the file and offset of
    /// its record and whether it is still the slot's current entry.
    /// - Parameters:
    ///   - from: entries below this slot are skipped (other records are always visited).
    ///   - through: entries above this slot are skipped.
    ///   - visit: called per record (per entry for accepted records); throw to stop.
    /// - Returns: the report of the first pass.
    public func allRecords(from: UInt64? = nil, through: UInt64? = nil, progress: ((Int64, Int64) -> Void)? = nil,
                           visit: (DumpedRecord) throws -> Void) throws -> LogReport {
        // Pass 1 learns each slot's final location, so pass 2 can say which accepts were superseded.
        let replayed = try replay(progress: progress)
        let final = replayed.log
        let low = from ?? 0
        let high = through ?? .max
        _ = try LogWalker(directory: directory, fileSystem: fileSystem).walk(progress: nil) { record in
            let typeName = LogWalker.typeName(record.type)
            var dumped = DumpedRecord(file: record.path, offset: Int64(record.offset), type: typeName,
                                      codec: record.codec == .lz4 ? "lz4" : "raw", storedLength: record.storedLength,
                                      rawLength: record.raw.count)
            if record.type != .accepted {
                if case .success(let decoded) = RecordCodec.decode(type: record.type, raw: record.raw) {
                    dumped.record = decoded
                }
                try visit(dumped)
                return
            }
            var offsets: [Int] = []
            _ = RecordCodec.walkEntries(record.raw) { slot, p in
                if slot >= low && slot <= high { offsets.append(p) }
            }
            for p in offsets {
                guard let entry = RecordCodec.entry(record.raw, at: p) else { continue }
                var one = dumped
                one.entry = entry
                if !record.inPrefix {
                    one.entryStatus = .afterDamage
                } else if let location = final.index.get(entry.slot) {
                    let mine = SlotLocation(segment: UInt32(truncatingIfNeeded: record.sequence), frameOffset: UInt32(record.offset),
                                            frameLength: UInt32(record.length), entryOffset: UInt32(p))
                    one.entryStatus = location == mine ? .current : .superseded
                } else if let s = final.snapshotSlot, entry.slot <= s {
                    one.entryStatus = .compacted
                } else {
                    one.entryStatus = .truncated
                }
                try visit(one)
            }
        }
        return replayed.report
    }

    struct Replayed {
        var report: LogReport
        var log: LogState
        var cut: CutPoint?
    }

    /// One pass: walk, replaying the valid prefix into a `LogState` with the store's own rules.
    func replay(progress: ((Int64, Int64) -> Void)?) throws -> Replayed {
        let walker = LogWalker(directory: directory, fileSystem: fileSystem)
        // State starts from the first segment's header, which summarises deleted segments.
        var log = try walker.firstHeader().map(LogState.init(header:)) ?? LogState()
        var superseded = 0
        let result = try walker.walk(progress: progress) { record in
            guard record.inPrefix else { return }
            superseded += Self.apply(record, to: &log)
        }
        var report = result.report
        var state = ReplayedState()
        state.promised = log.promised
        state.chosenThrough = log.chosenThrough
        state.snapshotSlot = log.snapshotSlot
        state.firstSlot = log.index.first
        state.lastSlot = log.index.last
        state.entryCount = log.index.count
        state.supersededAccepts = superseded
        if let first = state.firstSlot, let last = state.lastSlot {
            state.holes = (last - first + 1) - UInt64(state.entryCount)
            if state.holes > 0 {
                var expected = first
                for (slot, _) in log.index.locations(from: first, through: last) {
                    if slot != expected { state.firstHole = expected; break }
                    expected = slot + 1
                }
            }
        }
        if let chosen = log.chosenThrough {
            let low = log.snapshotSlot.map { $0 &+ 1 } ?? (state.firstSlot.map { min($0, 1) } ?? 1)
            if log.snapshotSlot != .max, low <= chosen {
                let present = UInt64(log.index.locations(from: low, through: chosen).count)
                // Slot numbering starts at 1 unless the log itself holds slot 0.
                state.chosenWithoutEntry = (chosen - low + 1) - present
            }
        }
        if superseded > 0 {
            report.notes.append("\(superseded) superseded accept\(superseded == 1 ? "" : "s") (a later accept replaced the slot's entry)")
        }
        if state.holes > 0, let hole = state.firstHole {
            report.notes.append("\(state.holes) slot\(state.holes == 1 ? "" : "s") without an entry between slots \(state.firstSlot ?? 0) and \(state.lastSlot ?? 0) (first: \(hole))")
        }
        if state.chosenWithoutEntry > 0 {
            report.notes.append("\(state.chosenWithoutEntry) chosen slot\(state.chosenWithoutEntry == 1 ? "" : "s") without a local entry")
        }
        report.state = state
        return Replayed(report: report, log: log, cut: result.cut)
    }

    /// Applies one verified record to `log`; returns how many entries it superseded.
    static func apply(_ record: WalkedRecord, to log: inout LogState) -> Int {
        var superseded = 0
        switch record.type {
        case .accepted:
            let segment = UInt32(truncatingIfNeeded: record.sequence)
            _ = RecordCodec.walkEntries(record.raw) { slot, p in
                if log.index.get(slot) != nil { superseded += 1 }
                log.setEntry(slot, SlotLocation(segment: segment, frameOffset: UInt32(record.offset),
                                                frameLength: UInt32(record.length), entryOffset: UInt32(p)))
            }
        default:
            switch RecordCodec.decode(type: record.type, raw: record.raw) {
            case .success(.promise(let ballot)): log.promise(ballot)
            case .success(.chosen(let through)): log.chosen(through)
            case .success(.snapshot(let slot)): log.snapshot(slot)
            case .success(.suffixTruncated(let from)): log.truncate(from: from)
            case .success(.accepted), .failure: break
            }
        }
        return superseded
    }
}

/// One record (or one entry of an accepted record) as `LogInspector.allRecords` finds it.
public struct DumpedRecord: Sendable, Hashable {
    /// What became of an accepted entry.
    public enum EntryStatus: String, Sendable, Hashable {
        /// The slot's latest entry: what a read returns.
        case current
        /// A later accept for the same slot replaced it.
        case superseded
        /// A later truncate-suffix record discarded it.
        case truncated
        /// The slot is at or below the snapshot.
        case compacted
        /// The record lies after damage: a replica keeps it only if the damage is repaired away.
        case afterDamage = "after-damage"
    }

    public var file: String
    /// Offset of the record header in `file`.
    public var offset: Int64
    /// "promise", "accepted", "chosen", "snapshot" or "truncate-suffix".
    public var type: String
    /// "raw" or "lz4".
    public var codec: String
    public var storedLength: Int
    public var rawLength: Int
    /// The decoded record, for every type but accepted.
    public var record: LogRecord?
    /// For accepted records: one entry, and what became of it.
    public var entry: LogEntry?
    public var entryStatus: EntryStatus?
}

/// Reads single accepted frames back by location, verifying them again: the second pass of
/// `dump`, which must not hold a whole log in memory.
final class FrameReader {
    let directory: String
    let fileSystem: any FileSystem
    private var descriptors: [UInt32: Int32] = [:]
    private var cachedKey: (UInt32, UInt32)?
    private var cachedRaw: [UInt8] = []

    init(directory: String, fileSystem: any FileSystem) {
        self.directory = directory
        self.fileSystem = fileSystem
    }

    func close() {
        for fd in descriptors.values { try? fileSystem.close(fd) }
        descriptors = [:]
    }

    func entry(slot: UInt64, at location: SlotLocation) throws -> LogEntry {
        let path = directory + "/" + Format.segmentFileName(UInt64(location.segment))
        func changed(_ why: String) -> OfflineToolError {
            OfflineToolError(.io(errno: EIO, path: path), "record at offset \(location.frameOffset) \(why) since it was scanned (is a replica running?)")
        }
        if cachedKey.map({ $0 != (location.segment, location.frameOffset) }) ?? true {
            let fd: Int32
            if let open = descriptors[location.segment] {
                fd = open
            } else {
                do { fd = try fileSystem.open(path, mode: .readOnly) } catch { throw OfflineToolError.io(error, path) }
                descriptors[location.segment] = fd
            }
            let length = Int(location.frameLength)
            var frame = [UInt8](repeating: 0, count: length)
            let n: Int
            do {
                n = try frame.withUnsafeMutableBytes { try fileSystem.readFully(fd, into: $0, at: Int64(location.frameOffset)) }
            } catch {
                throw OfflineToolError.io(error, path)
            }
            guard n == length else { throw changed("was cut") }
            cachedRaw = try frame.withUnsafeBytes { bytes -> [UInt8] in
                let parser = SegmentParser(bytes: bytes, sequence: UInt64(location.segment))
                guard case .frame(let view) = parser.step(at: 0), view.length == length, view.type == .accepted else {
                    throw changed("changed")
                }
                if view.codec == .raw { return Array(view.stored) }
                guard let raw = RecordCodec.decompress(view.stored, rawLength: view.rawLength) else { throw changed("changed") }
                return raw
            }
            cachedKey = (location.segment, location.frameOffset)
        }
        guard let entry = cachedRaw.withUnsafeBytes({ RecordCodec.entry($0, at: Int(location.entryOffset)) }), entry.slot == slot else {
            throw changed("changed")
        }
        return entry
    }
}
