import Logging
import NIOConcurrencyHelpers

/// Applies a log's chosen entries to a ``StateMachine`` and compacts the log by a
/// ``SnapshotPolicy``: the loop a database runs beside its ``PaxosLog``.
///
/// On start it opens the machine, which says which position its state reflects; if the log's
/// latest snapshot is newer, it restores that snapshot first, and replay starts after whichever
/// is newer. Then it applies batches of ``PaxosLog/updates(from:maxBatchBytes:)``, and restores
/// from a snapshot when the log reports that this replica installed one from a peer.
///
/// Compaction never holds up applying: it runs in one background task at a time.
/// - For an in-memory machine, when the policy fires the applier takes
///   ``StateMachine/prepareSnapshot()`` (a cheap capture), and once
///   ``SnapshotPolicy/retainedEntries`` more entries are applied (or none was for
///   ``SnapshotPolicy/retainedWait``) the task streams it into a snapshot file and truncates the
///   log below it.
/// - For an ``OnDiskStateMachine``, the task asks ``OnDiskStateMachine/sync()`` how far the
///   application's storage is durable and compacts through that position (less the retained
///   entries) with no copy of the state: a 40-byte marker file and one log record. A lagging
///   peer then gets a snapshot exported from the machine on demand.
///
/// When the policy fires while a compaction runs, the task takes another snapshot as soon as it
/// is done, so under load the latest snapshot trails the applied position by about one interval
/// plus one compaction's duration (a full snapshot of a state that grows takes longer each
/// time), not by however far the load got meanwhile; once the load stops, the last capture is
/// written after ``SnapshotPolicy/retainedWait`` and the snapshot ends within about one interval
/// of the applied position. A compaction that fails (a
/// newer snapshot installed meanwhile, a full disk) is logged; the next interval tries again.
public final class LogApplier<Machine: StateMachine>: Sendable {
    public let log: PaxosLog
    public let machine: Machine
    public let policy: SnapshotPolicy
    private let progress = NIOLockedValueBox(Progress())

    struct Progress {
        var applied: PaxosLog.Position = 0
        /// When `applied` last moved: a capture stops waiting for its retained entries after
        /// ``SnapshotPolicy/retainedWait`` of quiet.
        var appliedAt = ContinuousClock.now
        var compactions = 0
        var restores = 0
        var stopped = false
        /// A compaction task runs; `again`: the policy fired meanwhile.
        var compacting = false
        var again = false
        var waiters: [(PaxosLog.Position, CheckedContinuation<Void, Never>)] = []
    }

    public init(log: PaxosLog, machine: Machine, policy: SnapshotPolicy) {
        self.log = log
        self.machine = machine
        self.policy = policy
    }

    /// Every entry through this position is applied to the machine.
    public var applied: PaxosLog.Position { progress.withLockedValue { $0.applied } }
    /// Compactions this applier made.
    public var compactions: Int { progress.withLockedValue { $0.compactions } }
    /// Snapshots restored into the machine (on start and installed from peers).
    public var restores: Int { progress.withLockedValue { $0.restores } }

    /// Returns once every entry through `position` is applied (at once if it is already), or
    /// when the applier stops. With ``PaxosLog/readBarrier()`` it gives linearizable reads:
    /// `await applier.waitApplied(through: try await log.readBarrier())`, then read the state.
    public func waitApplied(through position: PaxosLog.Position) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = progress.withLockedValue { p in
                if p.applied >= position || p.stopped { return true }
                p.waiters.append((position, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func publish(applied: PaxosLog.Position, stopping: Bool = false) {
        let ready = progress.withLockedValue { p in
            if applied != p.applied { p.appliedAt = .now }
            p.applied = applied
            if stopping { p.stopped = true }
            let ready = p.waiters.filter { p.stopped || $0.0 <= applied }.map(\.1)
            p.waiters.removeAll { p.stopped || $0.0 <= applied }
            return ready
        }
        for c in ready { c.resume() }
    }

    /// Runs until the log is closed (then returns) or something fails (then throws).
    /// - Throws: the machine's errors, a snapshot that cannot be read or fails its checksum, the
    ///   log's storage failure, or ``PaxosLogError`` (`storage`) when an on-disk machine opens
    ///   behind the log's compacted prefix.
    public func run() async throws {
        let onDisk = machine is any OnDiskStateMachine
        let exports = onDisk ? log.snapshotExports : nil
        var compaction: Task<Void, Never>? = nil
        var applied: PaxosLog.Position = 0
        defer { exports?.unregister() }
        do {
            applied = try await start()
            publish(applied: applied)
            exports?.register(logger: log.configuration.logger) { [machine] in try await machine.prepareSnapshot() }
            var entriesSince = 0, bytesSince = 0
            for try await update in log.updates(from: applied + 1) {
                switch update {
                case .snapshotInstalled(let snapshot):
                    // A compaction still running writes something older than this snapshot:
                    // the log refuses it, harmlessly.
                    try await restore(snapshot)
                    applied = snapshot.position
                    entriesSince = 0
                    bytesSince = 0
                case .entries(let batch, let through):
                    // Cut where the policy fires, so a snapshot is captured at exactly every
                    // `everyEntries` entries (or on the entry that crosses `everyBytes`).
                    var rest = batch[...]
                    while !rest.isEmpty {
                        let piece = rest.prefix(untilDue(entries: entriesSince, bytes: bytesSince, rest))
                        rest = rest.dropFirst(piece.count)
                        try await machine.apply(Array(piece))
                        applied = piece[piece.endIndex - 1].position
                        entriesSince += piece.count
                        for e in piece { bytesSince += e.bytes.count }
                        publish(applied: applied)
                        if due(entries: entriesSince, bytes: bytesSince) {
                            entriesSince = 0
                            bytesSince = 0
                            compaction = try await startCompaction(onDisk: onDisk) ?? compaction
                        }
                    }
                    // No-ops after the last entry (a read barrier's) are passed too.
                    applied = Swift.max(applied, through)
                    publish(applied: applied)
                    continue
                }
                publish(applied: applied)
            }
        } catch let error as PaxosLogError where error.code == .closed {
            log.configuration.logger.debug("state machine applier stopping: the log closed")
        } catch {
            publish(applied: applied, stopping: true)
            await compaction?.value
            throw error
        }
        publish(applied: applied, stopping: true)
        await compaction?.value
    }

    /// Opens the machine and restores the log's snapshot if it is newer than the machine's state.
    private func start() async throws -> PaxosLog.Position {
        let opened = try await machine.open()
        guard let snapshot = try log.latestSnapshot(), snapshot.position > opened else { return opened }
        if snapshot.holdsExternalState {
            throw PaxosLogError(.storage, "the state machine opened at position \(opened), but the log was compacted through \(snapshot.position) on the word of the application's storage: that storage lost durable state, and the log cannot replay it; restore the application's files or rebuild this replica")
        }
        try await restore(snapshot)
        return snapshot.position
    }

    private func restore(_ snapshot: PaxosLog.Snapshot) async throws {
        log.configuration.logger.info("restoring state machine from snapshot", metadata: ["position": "\(snapshot.position)", "bytes": "\(snapshot.length)"])
        if snapshot.holdsExternalState {
            throw PaxosLogError(.storage, "snapshot \(snapshot.position) is a marker of state an application holds, not data to restore")
        }
        try await machine.restore(from: SnapshotInput(snapshot))
        progress.withLockedValue { $0.restores += 1 }
    }

    /// Starts the compaction task, or marks that the policy fired while it runs.
    /// - Returns: the task started, or nil.
    private func startCompaction(onDisk: Bool) async throws -> Task<Void, Never>? {
        let start = progress.withLockedValue { p in
            if p.compacting { p.again = true; return false }
            p.compacting = true
            return true
        }
        guard start else { return nil }
        do {
            let first: (any StateSnapshot)? = onDisk ? nil : try await machine.prepareSnapshot()
            return Task { await self.compactions(first: first) }
        } catch {
            progress.withLockedValue { $0.compacting = false }
            throw error
        }
    }

    /// How many entries of `batch` to apply before the policy fires (all when it does not).
    private func untilDue(entries: Int, bytes: Int, _ batch: ArraySlice<PaxosLog.Entry>) -> Int {
        var n = batch.count
        if let every = policy.everyEntries { n = Swift.min(n, Swift.max(1, every - entries)) }
        if let limit = policy.everyBytes {
            var total = bytes
            for (i, e) in batch.prefix(n).enumerated() {
                total += e.bytes.count
                if total >= limit { n = i + 1; break }
            }
        }
        return n
    }

    private func due(entries: Int, bytes: Int) -> Bool {
        if let n = policy.everyEntries, entries >= n { return true }
        if let b = policy.everyBytes, bytes >= b { return true }
        return false
    }

    /// The background task: compacts, then again while the policy fired meanwhile.
    private func compactions(first: (any StateSnapshot)?) async {
        var snapshot = first
        while true {
            do {
                if let captured = snapshot {
                    // Keep `retainedEntries` above the snapshot, so a peer slightly behind
                    // catches up from the log rather than by a whole snapshot.
                    await waitRetained(above: captured.position)
                    if progress.withLockedValue({ $0.stopped }) { break }
                    try await log.compact(through: captured.position) { writer in try await captured.save(to: SnapshotOutput(writer)) }
                    progress.withLockedValue { $0.compactions += 1 }
                } else if try await compactOnDisk() {
                    progress.withLockedValue { $0.compactions += 1 }
                }
            } catch {
                skipped(error)
            }
            let again = progress.withLockedValue { p in
                if p.again && !p.stopped { p.again = false; return true }
                p.compacting = false
                return false
            }
            guard again else { return }
            do {
                snapshot = machine is any OnDiskStateMachine ? nil : try await machine.prepareSnapshot()
            } catch {
                skipped(error)
                progress.withLockedValue { $0.compacting = false }
                return
            }
        }
        progress.withLockedValue { $0.compacting = false }
    }

    /// Returns once ``SnapshotPolicy/retainedEntries`` entries above `position` are applied, or
    /// no entry was applied for ``SnapshotPolicy/retainedWait``, or the applier stopped.
    private func waitRetained(above position: PaxosLog.Position) async {
        let target = position + UInt64(policy.retainedEntries)
        guard let quiet = policy.retainedWait else { return await waitApplied(through: target) }
        // Polled: a waiter for `target` alone never wakes on a log that went quiet. Every 20 ms
        // at most, only while a captured snapshot waits.
        let step = Swift.min(quiet, .milliseconds(20))
        while !Task.isCancelled {
            let (applied, stopped, at) = progress.withLockedValue { ($0.applied, $0.stopped, $0.appliedAt) }
            if applied >= target || stopped || at.duration(to: .now) >= quiet { return }
            try? await Task.sleep(for: step)
        }
    }

    /// Compacts through the position the application's storage made durable, keeping
    /// ``SnapshotPolicy/retainedEntries`` below the applied position.
    /// - Returns: whether it compacted (false: nothing new is durable).
    private func compactOnDisk() async throws -> Bool {
        guard let machine = machine as? any OnDiskStateMachine else { return false }
        let durable = try await machine.sync()
        let applied = self.applied, retained = UInt64(policy.retainedEntries)
        let through = Swift.min(durable, applied > retained ? applied - retained : 0)
        guard through > 0, through > (try log.latestSnapshot()?.position ?? 0) else { return false }
        try await log.compact(through: through, holdsExternalState: true) { _ in }
        return true
    }

    private func skipped(_ error: any Error) {
        // Compaction is an optimisation: a newer snapshot installed meanwhile, a closed log or a
        // failed deletion must not stop the state machine. A failed store fails the next read.
        if let e = error as? PaxosLogError, e.code == .closed { return }
        log.configuration.logger.warning("compaction skipped: \(error)")
    }
}
