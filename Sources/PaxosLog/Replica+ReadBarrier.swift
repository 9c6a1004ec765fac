import MultiPaxos
import NIOCore

/// Read barriers waiting on a leader: those for which no round was started yet, and those
/// waiting for their round's no-op to be chosen. Confined to the replica's executor.
struct ReadBarriers {
    typealias Callback = @Sendable (Result<Slot, PaxosLogError>) -> Void

    var unstarted: [(deadline: NIODeadline, callback: Callback)] = []
    /// One round per drain: its no-op's slot and ballot, the position it answers, and the
    /// barriers it answers.
    var rounds: [(slot: Slot, ballot: Ballot, answer: Slot, deadline: NIODeadline, callbacks: [Callback])] = []
    /// The last slot this replica's leadership in `ballot` had filled when its Phase 1 ended:
    /// every slot a lower ballot may have chosen lies at or below it.
    var phase1Ceiling: (ballot: Ballot, slot: Slot)?

    mutating func failAll(_ error: PaxosLogError) {
        for b in unstarted { b.callback(.failure(error)) }
        for r in rounds { for c in r.callbacks { c(.failure(error)) } }
        unstarted = []
        rounds = []
    }
}

// A read barrier (linearizable reads).
//
// A leader in ballot `b` answers a barrier asked at time T with a position P such that every
// append acknowledged before T, by any leader, sits at or below P. It proposes a no-op after T
// (one for all barriers that arrived since the last round) at slot N, and once that slot is
// chosen *with that no-op in ballot `b`* answers P = max(C, H), where C is its chosen watermark
// when the round started and H the last slot it had filled when its Phase 1 in `b` ended, once
// P is readable here. (P < N. Not N itself: a follower asking for a barrier has usually learned
// C and H already, while it learns N only with the leader's next message, up to a heartbeat later.)
//
// Why that covers every acknowledged append: let slot s' be acknowledged before T.
// - Acknowledged by this leader in `b`: appends are answered when the chosen prefix reaches
//   their slot, so s' <= C.
// - Chosen in a ballot below `b`: a majority voted for it, `b`'s Phase 1 heard a member of that
//   majority, and a leader re-proposes every slot a majority reports before anything new, so
//   s' <= H.
// - Chosen in a ballot above `b`: a majority promised that ballot before T. The no-op was
//   accepted in `b` by a majority after T (it was proposed after T). The two majorities share an
//   acceptor that accepted `b` after promising a higher ballot: impossible. So no such s'.
// P is chosen and readable when answered: N > P is chosen and the chosen prefix is contiguous.
// Planted bugs: `readBarrierWithoutRound` (no round), `barrierWithoutPhase1Ceiling` (P = C).
// A leader deposed meanwhile never sees its no-op chosen in `b` (the slot is chosen with another
// value or ballot, or never), and its barriers fail instead of answering a stale position.
// The cost is one no-op slot and one replicated round (a sync on a majority) per batch of
// barriers; a heartbeat-based round without a log write is the known optimisation.
extension Replica {
    /// Asks for a position covering every append acknowledged before now (on any replica);
    /// `callback` gets it once it is readable here, or an error: `notLeader` (ask the leader),
    /// `timeout`, `overloaded`, `closed`, `storage`. Retrying is always safe: a barrier changes
    /// nothing a reader can see.
    package func readBarrier(_ callback: @escaping @Sendable (Result<Slot, PaxosLogError>) -> Void) {
        precondition(executor.inExecutor, "Replica used off its executor")
        if let failure { return callback(.failure(failure)) }
        if isClosed { return callback(.failure(PaxosLogError(.closed, "the log is closed"))) }
        guard core.isLeader else {
            let leader = core.knownLeader
            return callback(.failure(PaxosLogError(.notLeader, "node \(configuration.nodeID) is not the leader (leader: \(leader.map { "node \($0)" } ?? "unknown")); read barriers are answered by the leader", leader: leader)))
        }
        if bug == .readBarrierWithoutRound {
            let at = core.chosenThrough
            return waitReadable(after: at == 0 ? 0 : at - 1) { _ in callback(.success(at)) }
        }
        barriers.unstarted.append((executor.now + configuration.appendTimeout, callback))
        scheduleDrain()
    }

    /// Starts one round for the barriers that arrived since the last: proposes a no-op now,
    /// before this drain's `takeReady()`.
    func startBarrierRound() {
        // A leader handing over proposes nothing: its barriers wait, and start once the
        // transfer is given up, or fail with the step-down.
        guard !barriers.unstarted.isEmpty, !(core.isLeader && core.holdsProposals) else { return }
        let waiting = barriers.unstarted
        barriers.unstarted = []
        guard core.isLeader else {
            let leader = core.knownLeader
            for b in waiting { b.callback(.failure(PaxosLogError(.notLeader, "node \(configuration.nodeID) stopped leading before the read barrier's round", leader: leader))) }
            return
        }
        let ceiling = barriers.phase1Ceiling.flatMap { $0.ballot == core.ballot ? $0.slot : nil }
        switch core.propose(.noop) {
        case .proposed(let slot):
            // Without a ceiling for this ballot (not expected), the no-op's own slot covers all.
            let covered = bug == .barrierWithoutPhase1Ceiling ? core.chosenThrough : ceiling.map { Swift.max(core.chosenThrough, $0) } ?? slot
            barriers.rounds.append((slot, core.ballot, Swift.min(covered, slot), waiting.map(\.deadline).min()!, waiting.map(\.callback)))
        case .overloaded:
            for b in waiting { b.callback(.failure(PaxosLogError(.overloaded, "too many appends in flight for a read barrier's round"))) }
        case .notLeader(let leader):
            for b in waiting { b.callback(.failure(PaxosLogError(.notLeader, "node \(configuration.nodeID) is not the leader", leader: leader))) }
        }
    }

    /// Answers the rounds whose no-op slot is now chosen: with its position once it is readable,
    /// or with `notLeader` when the slot went to another value or ballot (this leader was deposed).
    func resolveBarrierRounds(_ chosen: [ChosenEntry]) {
        guard let last = chosen.last, let firstSlot = chosen.first?.slot else { return }
        while let round = barriers.rounds.first, round.slot <= last.slot {
            barriers.rounds.removeFirst()
            guard round.slot >= firstSlot else {
                // Passed over without its entry (a snapshot installed past it): its fate is not
                // known here, so the barrier fails and is asked again; every call ends.
                for c in round.callbacks { c(.failure(PaxosLogError(.notLeader, "the read barrier's round was passed by a snapshot; ask the leader again", leader: core.knownLeader))) }
                continue
            }
            let entry = chosen[Int(round.slot - firstSlot)]
            guard entry.value == .noop, entry.ballot == round.ballot else {
                for c in round.callbacks { c(.failure(PaxosLogError(.notLeader, "leadership changed during the read barrier's round; ask the leader again", leader: core.knownLeader))) }
                continue
            }
            let answer = round.answer
            let callbacks = round.callbacks
            guard answer > 0 else {
                for c in callbacks { c(.success(0)) }
                continue
            }
            waitReadable(after: answer - 1) { [weak self] readable in
                let result: Result<Slot, PaxosLogError> = readable != nil
                    ? .success(answer) : .failure(self?.failure ?? PaxosLogError(.closed, "the log was closed"))
                for c in callbacks { c(result) }
            }
        }
    }

    /// Fails barrier rounds past their deadline.
    func expireBarriers(now: NIODeadline) {
        while let round = barriers.rounds.first, round.deadline <= now {
            barriers.rounds.removeFirst()
            for c in round.callbacks { c(.failure(PaxosLogError(.timeout, "the read barrier's round was not chosen within \(configuration.appendTimeout)"))) }
        }
    }
}
