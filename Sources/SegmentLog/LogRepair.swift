#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `LogRepair` would do to a directory, and what it would cost.
public struct RepairPlan: Sendable {
    /// One file operation. Cut bytes are never deleted: they go to a side file first.
    public enum Action: Sendable, Hashable {
        /// Copy bytes `offset..<offset+bytes` of `file` to `sideFile` (synced), then zero them in
        /// place, keeping the preallocation (zeros are end-of-log), and sync.
        case cutTail(file: String, offset: Int64, bytes: Int64, sideFile: String)
        /// Rename a whole segment out of the log (`<segment>.discarded`).
        case setAside(file: String, to: String)
    }

    /// The verification pass the plan is based on.
    public var report: LogReport
    /// In the order they will run: later segments are set aside (newest first) before a tail is
    /// cut, so a crash half-way leaves a log that still verifies as a contiguous run.
    public var actions: [Action] = []
    /// The plan cuts the log at damage before its end: only with `truncateAfterCorruption`.
    public var cutsCorruption = false
    /// Why no repair is possible (e.g. the snapshot the log names is damaged), or nil.
    public var refusal: String?
    /// Slots whose current entry would be lost or roll back to an older accept, as ranges.
    public var lostSlots: [ClosedRange<UInt64>] = []
    /// Slot ranges damaged accepted records appear to hold (unverified: their CRC failed). They
    /// are lost too, unless an older accept survives in the kept prefix.
    public var apparentLostSlots: [ClosedRange<UInt64>] = []
    /// Damaged regions whose contents cannot be read: they may have held more entries.
    public var unreadableRegions = 0
    /// Acceptor state that would move back, e.g. "promise 7.2 -> 5.1" (a Paxos acceptor that
    /// forgets a promise may break safety: rejoin this replica only after catching up).
    public var stateRollback: [String] = []

    /// Number of slots in `lostSlots`.
    public var lostSlotCount: UInt64 { lostSlots.reduce(0) { $0 + ($1.upperBound - $1.lowerBound + 1) } }
}

/// Repairs a data directory offline: cuts a torn tail (keeping the bytes in a side file), and,
/// only when asked, cuts the log at the first damage, setting later segments aside. Backs
/// `paxlog repair`.
///
/// The result is exactly what tolerant recovery would keep, done by an operator who first saw the
/// cost. It holds the directory's lock for the whole run, so it never touches a directory a live
/// replica holds, and no replica can start on it half-repaired.
public struct LogRepair: Sendable {
    public let directory: String
    private let fileSystem: any FileSystem

    public init(directory: String, fileSystem: any FileSystem = PosixFileSystem()) {
        self.directory = directory
        self.fileSystem = fileSystem
    }

    /// Plans (and unless `dryRun`, performs) the repair.
    ///
    /// - Parameters:
    ///   - truncateAfterCorruption: allow cutting the log at damage before its end, losing what
    ///     follows. Without it such a plan is returned unperformed.
    ///   - dryRun: plan only; nothing is written and the lock is only probed.
    ///   - announce: called with the plan before anything is written, so the caller can say what
    ///     will be lost first.
    /// - Returns: the plan; it was performed iff not `dryRun`, `refusal` is nil, and
    ///   `cutsCorruption` is false or `truncateAfterCorruption` is true.
    /// - Throws: `OfflineToolError`: `.locked` if a live store holds the directory (not for
    ///   `dryRun`), `.notALog`/`.notFound`/`.newerFormat`/`.io`.
    @discardableResult
    public func run(truncateAfterCorruption: Bool, dryRun: Bool, announce: (RepairPlan) -> Void = { _ in }) throws -> RepairPlan {
        let walker = LogWalker(directory: directory, fileSystem: fileSystem)
        _ = try walker.listNames()  // refuse a non-log before creating LOCK in it
        var lockFD: Int32?
        if !dryRun { lockFD = try lockDirectory() }
        defer { if let lockFD { try? fileSystem.close(lockFD) } }

        let plan = try makePlan(walker)
        announce(plan)
        guard !dryRun, plan.refusal == nil, !plan.cutsCorruption || truncateAfterCorruption else { return plan }
        if plan.cutsCorruption {
            // Records cut at damage may hold promises and votes this replica gave: mark the
            // directory first, so that it can never be cut and unmarked, and never votes again
            // before it has rejoined. A torn tail was never acknowledged: cutting it loses nothing.
            do {
                _ = try DirectoryIdentity.markLostState(.repair, directory: directory, fileSystem: fileSystem, logger: nil)
            } catch let error as SegmentLogError {
                guard case .corruption = error.code else { throw OfflineToolError.io(error, directory + "/" + DirectoryIdentity.fileName) }
                throw OfflineToolError(.refused, "cannot repair: \(error); nothing was changed")
            }
        }
        try perform(plan.actions)
        return plan
    }

    /// Takes the directory's lock exclusively, as `SegmentStore.open` does, and keeps it.
    private func lockDirectory() throws -> Int32 {
        let path = directory + "/" + Format.lockFileName
        let fd: Int32
        do { fd = try fileSystem.open(path, mode: .readWriteCreate) } catch { throw OfflineToolError.io(error, path) }
        do {
            try fileSystem.lockExclusive(fd)
        } catch let error as FileSystemError where error.errno == EWOULDBLOCK || error.errno == EAGAIN {
            try? fileSystem.close(fd)
            throw OfflineToolError(.locked(path: directory), "repair needs the replica stopped")
        } catch {
            try? fileSystem.close(fd)
            throw OfflineToolError.io(error, path)
        }
        return fd
    }

    func makePlan(_ walker: LogWalker) throws -> RepairPlan {
        // Replay twice: the prefix a cut keeps, and everything readable, to say what a cut loses.
        var kept = try walker.firstHeader().map(LogState.init(header:)) ?? LogState()
        var everything = kept
        let result = try walker.walk(progress: nil) { record in
            if record.inPrefix { _ = LogInspector.apply(record, to: &kept) }
            _ = LogInspector.apply(record, to: &everything)
        }
        let report = result.report
        var plan = RepairPlan(report: report)
        let names = Set((try? fileSystem.listDirectory(directory)) ?? [])

        if let snapshotDamage = report.damage.first(where: { $0.kind == .snapshot }) {
            plan.refusal = "cannot repair: \(snapshotDamage.file): \(snapshotDamage.reason); cutting the log does not bring "
                + "the snapshot back: copy it (or the whole directory) from a healthy replica"
            return plan
        }
        guard let cut = result.cut else {
            if let torn = report.tornTail {
                plan.actions.append(.cutTail(file: torn.file, offset: torn.offset, bytes: torn.bytes,
                                             sideFile: Self.unused(torn.file + Format.tornSuffix + String(torn.offset), names)))
            }
            return plan
        }

        if cut.segment == 0 && cut.offset == 0 {
            // The first segment's header carries the acceptor state every later record builds on:
            // cutting there leaves no log at all, and a replica restarted empty could forget a promise.
            plan.refusal = "cannot repair: \(report.segments[0].path) is damaged from its header on; cutting there would "
                + "leave no log: copy the directory from a healthy replica"
            return plan
        }
        plan.cutsCorruption = true
        plan.apparentLostSlots = report.damage.compactMap(\.apparentSlots)
        plan.unreadableRegions = report.damage.count - plan.apparentLostSlots.count
        for segment in report.segments[cut.segment...].reversed() where cut.offset == 0 || segment.sequence != report.segments[cut.segment].sequence {
            plan.actions.append(.setAside(file: segment.path, to: Self.unused(segment.path + ".discarded", names)))
        }
        if cut.offset > 0 {
            let segment = report.segments[cut.segment]
            let bytes = max(segment.contentEnd - Int64(cut.offset), 0)
            if bytes > 0 {
                plan.actions.append(.cutTail(file: segment.path, offset: Int64(cut.offset), bytes: bytes,
                                             sideFile: Self.unused(segment.path + Format.tornSuffix + String(cut.offset), names)))
            }
        }

        // Lost: every slot whose current entry (over all readable records) differs from the kept one.
        var lost: [ClosedRange<UInt64>] = []
        if let first = everything.index.first, let last = everything.index.last {
            for (slot, location) in everything.index.locations(from: first, through: last) where kept.index.get(slot) != location {
                if let previous = lost.last, previous.upperBound &+ 1 == slot {
                    lost[lost.count - 1] = previous.lowerBound...slot
                } else {
                    lost.append(slot...slot)
                }
            }
        }
        plan.lostSlots = lost
        func ballot(_ b: LogBallot?) -> String { b.map { "\($0)" } ?? "none" }
        func slot(_ s: UInt64?) -> String { s.map { "\($0)" } ?? "none" }
        if everything.promised != kept.promised {
            plan.stateRollback.append("promise \(ballot(everything.promised)) -> \(ballot(kept.promised))")
        }
        if everything.chosenThrough != kept.chosenThrough {
            plan.stateRollback.append("chosen watermark \(slot(everything.chosenThrough)) -> \(slot(kept.chosenThrough))")
        }
        if everything.snapshotSlot != kept.snapshotSlot {
            plan.stateRollback.append("snapshot \(slot(everything.snapshotSlot)) -> \(slot(kept.snapshotSlot))")
        }
        return plan
    }

    /// `name`, or `name.1`, `name.2`, ... if taken: side files from earlier repairs are kept.
    static func unused(_ path: String, _ names: Set<String>) -> String {
        let base = path.split(separator: "/").last.map(String.init) ?? path
        guard names.contains(base) else { return path }
        var k = 1
        while names.contains("\(base).\(k)") { k += 1 }
        return "\(path).\(k)"
    }

    private func perform(_ actions: [RepairPlan.Action]) throws {
        for action in actions {
            switch action {
            case .setAside(let file, let to):
                do { try fileSystem.rename(file, to: to) } catch { throw OfflineToolError.io(error, file) }
                try syncDirectory()
            case .cutTail(let file, let offset, let bytes, let sideFile):
                try cutTail(file: file, offset: offset, bytes: Int(bytes), sideFile: sideFile)
            }
        }
    }

    /// Saves the bytes to the side file and syncs it before zeroing them, so they exist somewhere
    /// durable at every moment.
    private func cutTail(file: String, offset: Int64, bytes: Int, sideFile: String) throws {
        let fd: Int32
        do { fd = try fileSystem.open(file, mode: .readWrite) } catch { throw OfflineToolError.io(error, file) }
        defer { try? fileSystem.close(fd) }
        var cut = [UInt8](repeating: 0, count: bytes)
        do {
            let n = try cut.withUnsafeMutableBytes { try fileSystem.readFully(fd, into: $0, at: offset) }
            if n < bytes { cut.removeLast(bytes - n) }
        } catch {
            throw OfflineToolError.io(error, file)
        }
        do {
            let side = try fileSystem.open(sideFile, mode: .createNew)
            defer { try? fileSystem.close(side) }
            try cut.withUnsafeBytes { try fileSystem.writeAll(side, $0, at: 0) }
            try fileSystem.fdatasync(side)
        } catch {
            throw OfflineToolError.io(error, sideFile)
        }
        try syncDirectory()
        let zeros = [UInt8](repeating: 0, count: cut.count)
        do {
            try zeros.withUnsafeBytes { try fileSystem.writeAll(fd, $0, at: offset) }
            try fileSystem.fdatasync(fd)
        } catch {
            throw OfflineToolError.io(error, file)
        }
    }

    private func syncDirectory() throws {
        do { try fileSystem.syncDirectory(directory) } catch { throw OfflineToolError.io(error, directory) }
    }
}
