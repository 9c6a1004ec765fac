import DequeModule
import MultiPaxos
import NIOCore

/// The appends a replica has offered its core and not yet answered: those with a slot, waiting
/// for it to be chosen, and those the core queued while it campaigns. Decides each one's outcome
/// from what was chosen (``AppendOutcome``), its deadline, or the replica's failure.
/// Confined to the replica's executor.
struct ProposalTracker {
    struct Waiter {
        let bytes: [UInt8]
        /// The ballot the value was proposed under: what tells our value from identical bytes.
        let ballot: Ballot
        let batch: AppendBatch
        let index: Int
    }

    struct Queued {
        let bytes: [UInt8]
        let batch: AppendBatch
        let index: Int
        let deadline: NIODeadline
    }

    /// Appends with a slot, waiting for it to be chosen, and their deadlines in deadline order.
    private var waiters: [Slot: Waiter] = [:]
    private var deadlines: Deque<(slot: Slot, deadline: NIODeadline)> = []
    /// Appends the core queued while it campaigns (``ProposeResult/held``), in the order offered
    /// (the order the core reports their fate in); the first `expiredQueued` already failed.
    private var campaignQueue: Deque<Queued> = []
    private var expiredQueued = 0

    var isEmpty: Bool { waiters.isEmpty && campaignQueue.isEmpty }

    /// Registers an append proposed at `slot`.
    mutating func track(slot: Slot, _ waiter: Waiter, until deadline: NIODeadline) {
        if let old = waiters.updateValue(waiter, forKey: slot) {
            // A new leadership of ours found no vote for the slot in a majority, yet a minority
            // may hold the old value and a later leader may still choose it.
            old.batch.fail(PaxosLogError(.timeout, "slot \(slot) was reassigned by a new leadership; the record may still be appended"))
        }
        // Queued appends get their slot late, behind later deadlines: keep the queue sorted.
        var at = deadlines.endIndex
        while at > deadlines.startIndex, deadlines[at - 1].deadline > deadline { at -= 1 }
        deadlines.insert((slot, deadline), at: at)
    }

    mutating func queueWhileCampaigning(_ queued: Queued) {
        campaignQueue.append(queued)
    }

    /// The core's election ended for the appends it queued: track the proposed, fail the dropped.
    mutating func resolveCampaign(_ outcomes: [HeldProposal], node: NodeID) {
        precondition(outcomes.count <= campaignQueue.count, "the core resolved more queued appends than it was offered")
        for outcome in outcomes {
            let q = campaignQueue.removeFirst()
            if expiredQueued > 0 { expiredQueued -= 1 }
            switch outcome {
            case .proposed(let slot, let ballot):
                track(slot: slot, Waiter(bytes: q.bytes, ballot: ballot, batch: q.batch, index: q.index), until: q.deadline)
            case .dropped(let leader):
                let known = leader.map { "node \($0)" } ?? "unknown"
                q.batch.fail(PaxosLogError(.notLeader, "node \(node) lost its election (leader: \(known)); the record was not appended", leader: leader))
            }
        }
    }

    /// Answers the appends whose slots are now chosen. - Returns: how many callers were answered.
    mutating func answer(_ chosen: [ChosenEntry], bug: ReplicaBug?) -> Int {
        guard !waiters.isEmpty else { return 0 }
        var answered = 0
        for c in chosen {
            guard let w = waiters.removeValue(forKey: c.slot) else { continue }
            var outcome = AppendOutcome.of(proposed: w.bytes, under: w.ballot, chosen: c)
            if bug == .acknowledgeAnyValue { outcome = .appended }
            switch outcome {
            case .appended:
                if w.batch.complete(index: w.index, slot: c.slot) { answered += 1 }
            case .superseded:
                w.batch.fail(PaxosLogError(.superseded, "another value was chosen at slot \(c.slot) after a leader change; the record was not appended"))
            case .unknown:
                w.batch.fail(PaxosLogError(.timeout, "a record with the same bytes was chosen at slot \(c.slot) in ballot \(c.ballot), not in ballot \(w.ballot) this append was proposed in; it may be this record or another client's, so the outcome is unknown"))
            }
        }
        return answered
    }

    /// Fails the appends whose deadline passed (outcome unknown: they may still be chosen).
    mutating func expire(now: NIODeadline, timeout: TimeAmount) {
        // Queued appends stay queued (the core may still propose them); only their clients give up.
        while expiredQueued < campaignQueue.count, campaignQueue[expiredQueued].deadline <= now {
            campaignQueue[expiredQueued].batch.fail(PaxosLogError(.timeout, "no leader elected within \(timeout); the record may still be appended"))
            expiredQueued += 1
        }
        while let d = deadlines.first, d.deadline <= now {
            deadlines.removeFirst()
            if let w = waiters.removeValue(forKey: d.slot) {
                w.batch.fail(PaxosLogError(.timeout, "slot \(d.slot) not chosen within \(timeout); the record may still be appended"))
            }
        }
    }

    /// Appends given a slot and not yet answered (the simulation checks a non-leader has none).
    var proposedCount: Int { waiters.count }

    /// This replica stopped leading in the ballot these appends were proposed in: fails every
    /// one with a slot at once, with `error` (outcome unknown: a later leader may still choose
    /// the value). Appends queued while campaigning are the core's to resolve (``HeldProposal``).
    /// - Returns: how many were failed.
    @discardableResult
    mutating func failProposed(_ error: PaxosLogError) -> Int {
        let n = waiters.count
        for (_, w) in waiters { w.batch.fail(error.with(.unknown)) }
        waiters = [:]
        deadlines = []
        return n
    }

    /// Fails every append still waiting with `error`: those proposed may still be chosen
    /// (unknown); those queued while campaigning were never sent and never will be by this
    /// replica (not appended).
    mutating func failAll(_ error: PaxosLogError) {
        for (_, w) in waiters { w.batch.fail(error.with(.unknown)) }
        waiters = [:]
        deadlines = []
        for q in campaignQueue { q.batch.fail(error.with(.notAppended)) }
        campaignQueue = []
        expiredQueued = 0
    }
}
