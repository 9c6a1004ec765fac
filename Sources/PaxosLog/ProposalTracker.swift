import DequeModule
import MultiPaxos
import NIOCore

/// The appends a replica has offered and not yet answered: those with a slot, waiting for it to
/// be chosen, and those held while the replica campaigns or hands leadership over. Decides each
/// one's outcome from what was chosen (``AppendOutcome``), its deadline, or the replica's failure.
/// Confined to the replica's executor.
struct ProposalTracker {
    struct Waiter {
        let id: ProposalID
        let batch: AppendBatch
        let index: Int
    }

    /// An append offered while the replica campaigns or hands leadership over, proposed (or
    /// answered from the session table) once it leads, failed as not appended if it does not.
    struct Queued {
        let id: ProposalID
        let isRetry: Bool
        let bytes: [UInt8]
        let batch: AppendBatch
        let index: Int
        let deadline: NIODeadline
    }

    /// Appends with a slot, waiting for it to be chosen, and their deadlines in deadline order.
    private var waiters: [Slot: Waiter] = [:]
    /// Retries of an identity already in flight, waiting on the same slot (rare).
    private var sharers: [Slot: [Waiter]] = [:]
    private var deadlines: Deque<(slot: Slot, deadline: NIODeadline)> = []
    /// Appends held while campaigning or handing over, in the order offered, and their payload bytes.
    private(set) var heldQueue: Deque<Queued> = []
    private(set) var heldQueueBytes = 0

    var isEmpty: Bool { waiters.isEmpty && heldQueue.isEmpty }

    /// Registers an append proposed at `slot`.
    mutating func track(slot: Slot, _ waiter: Waiter, until deadline: NIODeadline) {
        if let old = waiters.updateValue(waiter, forKey: slot) {
            // A new leadership of ours found no vote for the slot in a majority, yet a minority
            // may hold the old value and a later leader may still choose it.
            old.batch.fail(PaxosLogError(.timeout, "slot \(slot) was reassigned by a new leadership; the record may still be appended"))
        }
        addDeadline(slot, deadline)
    }

    /// Registers a retry of an identity this leader already proposed at `slot`.
    mutating func share(slot: Slot, _ waiter: Waiter, until deadline: NIODeadline) {
        sharers[slot, default: []].append(waiter)
        addDeadline(slot, deadline)
    }

    private mutating func addDeadline(_ slot: Slot, _ deadline: NIODeadline) {
        // Held appends get their slot late, behind later deadlines: keep sorted.
        var at = deadlines.endIndex
        while at > deadlines.startIndex, deadlines[at - 1].deadline > deadline { at -= 1 }
        deadlines.insert((slot, deadline), at: at)
    }

    mutating func hold(_ queued: Queued) {
        heldQueue.append(queued)
        heldQueueBytes += queued.bytes.count
    }

    /// The held appends, to offer again now that the election or the handover ended.
    mutating func takeHeldQueue() -> Deque<Queued> {
        defer { heldQueue = []; heldQueueBytes = 0 }
        return heldQueue
    }

    /// Answers the appends whose slots are now chosen.
    /// - Parameter firstSlots: chosen slots that repeat an identity chosen earlier, with that
    ///   earlier slot: the append is answered there, where readers see it.
    /// - Returns: how many callers were answered.
    mutating func answer(_ chosen: [ChosenEntry], firstSlots: [Slot: Slot], bug: ReplicaBug?) -> Int {
        guard !waiters.isEmpty else { return 0 }
        var answered = 0
        for c in chosen {
            guard let w = waiters.removeValue(forKey: c.slot) else { continue }
            let at = firstSlots[c.slot] ?? c.slot
            answered += decide(w, c, at, bug)
            if let more = sharers.removeValue(forKey: c.slot) { for s in more { answered += decide(s, c, at, bug) } }
        }
        return answered
    }

    private func decide(_ w: Waiter, _ c: ChosenEntry, _ at: Slot, _ bug: ReplicaBug?) -> Int {
        var outcome = AppendOutcome.of(proposed: w.id, chosen: c)
        if bug == .acknowledgeAnyValue { outcome = .appended }
        switch outcome {
        case .appended:
            return w.batch.complete(index: w.index, slot: at) ? 1 : 0
        case .superseded:
            w.batch.fail(PaxosLogError(.superseded, "another value was chosen at slot \(c.slot) after a leader change; the record was not appended there"))
            return 0
        }
    }

    /// Fails the appends whose deadline passed: unknown once proposed (they may still be
    /// chosen); not appended while held for an election (never offered to consensus).
    mutating func expire(now: NIODeadline, timeout: TimeAmount) {
        while let q = heldQueue.first, q.deadline <= now {
            heldQueue.removeFirst()
            heldQueueBytes -= q.bytes.count
            q.batch.fail(PaxosLogError(.timeout, "not proposed within \(timeout) (no leader was elected, or leadership was being handed over); the record was not appended", outcome: .notAppended))
        }
        while let d = deadlines.first, d.deadline <= now {
            deadlines.removeFirst()
            let error = PaxosLogError(.timeout, "slot \(d.slot) not chosen within \(timeout); the record may still be appended")
            if let w = waiters.removeValue(forKey: d.slot) { w.batch.fail(error) }
            if let more = sharers.removeValue(forKey: d.slot) { for s in more { s.batch.fail(error) } }
        }
    }

    /// Appends given a slot and not yet answered (the simulation checks a non-leader has none).
    var proposedCount: Int { waiters.count }

    /// This replica stopped leading in the ballot these appends were proposed in: fails every
    /// one with a slot at once, with `error` (outcome unknown: a later leader may still choose
    /// the value). - Returns: how many were failed.
    @discardableResult
    mutating func failProposed(_ error: PaxosLogError) -> Int {
        let n = waiters.count
        for (_, w) in waiters { w.batch.fail(error.with(.unknown)) }
        for (_, more) in sharers { for s in more { s.batch.fail(error.with(.unknown)) } }
        waiters = [:]
        sharers = [:]
        deadlines = []
        return n
    }

    /// Fails the held appends: they were never offered to consensus.
    mutating func failHeld(_ error: PaxosLogError) {
        for q in heldQueue { q.batch.fail(error.with(.notAppended)) }
        heldQueue = []
        heldQueueBytes = 0
    }

    /// Fails every append still waiting with `error`: those proposed may still be chosen
    /// (unknown); those held were never sent (not appended).
    mutating func failAll(_ error: PaxosLogError) {
        failProposed(error)
        failHeld(error)
    }
}
