import Foundation

/// The totals of a sweep of seeds, printed as one line a script can read:
/// `simulation summary: {"faults":{...},"replicas":3,"seeds":300,"steps":...,"violations":0}`.
public struct SimulationSummary: Codable, Sendable {
    public struct Faults: Codable, Sendable {
        public var dropped = 0, duplicated = 0, crashes = 0, partitions = 0
        public var torn_writes = 0, lost_unsynced = 0, read_corruptions = 0, misdirected_writes = 0
        public var eio = 0, fsync_failures = 0, enospc = 0
        /// Disks that lost their state, and restarts on them the identity guard refused.
        public var disk_losses = 0, refused_restarts = 0
    }

    public var seeds = 0
    public var replicas: Int
    public var steps = 0
    public var ticks = 0
    public var violations = 0
    /// The first few failing seeds, to replay with `PAXOS_SEED`.
    public var failing_seeds: [UInt64] = []
    public var bridges = 0, compactions = 0, snapshots_installed = 0
    /// Elections won, in all runs and after faults stopped; the most in one run per fault.
    public var leader_changes = 0, leader_changes_after_faults = 0, storage_failures = 0
    public var max_leader_changes_per_fault = 0.0
    public var proposed = 0, acknowledged = 0, not_appended = 0, unknown = 0, entries_read = 0, chosen = 0, read_barriers = 0
    /// Appends retried after an unknown outcome, those a retry settled, and identities a retry
    /// got chosen twice (repeats, which readers must see once: DuplicateSlots.swift).
    public var retries = 0, settled_by_retry = 0, identities_chosen_twice = 0
    /// Leadership transfers asked for, and those whose target took over.
    public var transfers = 0, transfers_completed = 0
    public var seconds = 0.0
    public var faults = Faults()

    public init(replicas: Int) { self.replicas = replicas }

    public mutating func add(_ r: SimulationReport) {
        seeds += 1
        steps += r.steps
        ticks += r.ticks
        if r.violation != nil {
            violations += 1
            if failing_seeds.count < 10 { failing_seeds.append(r.seed) }
        }
        bridges += r.bridges
        leader_changes += r.leaderChanges
        leader_changes_after_faults += r.livenessLeaderChanges
        storage_failures += r.storageFailures
        let faultCount = r.crashes + r.partitions + r.bridges + r.storageFailures + r.transfers
        max_leader_changes_per_fault = Swift.max(max_leader_changes_per_fault,
                                                 Double(r.leaderChanges - r.livenessLeaderChanges) / Double(faultCount + 1))
        compactions += r.compactions
        snapshots_installed += r.snapshotsInstalled
        proposed += r.proposed
        acknowledged += r.acknowledged
        not_appended += r.notAppended
        unknown += r.unknownOutcomes
        retries += r.retries
        settled_by_retry += r.settledByRetry
        identities_chosen_twice += r.identitiesChosenTwice
        transfers += r.transfers
        transfers_completed += r.transfersCompleted
        entries_read += r.entriesRead
        read_barriers += r.readBarriers
        chosen += r.chosenSlots
        faults.dropped += r.dropped
        faults.duplicated += r.duplicated
        faults.crashes += r.crashes
        faults.partitions += r.partitions
        faults.torn_writes += r.faults.tornWrites
        faults.lost_unsynced += r.faults.lostUnsynced
        faults.read_corruptions += r.faults.readCorruptions
        faults.misdirected_writes += r.faults.misdirectedWrites
        faults.eio += r.faults.eio
        faults.fsync_failures += r.faults.fsyncFailures
        faults.enospc += r.faults.enospc
        faults.disk_losses += r.diskLosses
        faults.refused_restarts += r.refusedRestarts
    }

    /// `simulation summary: {JSON}` on one line, keys sorted.
    public var line: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(self)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
        return "simulation summary: \(json)"
    }
}
