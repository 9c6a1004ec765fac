/// A leadership transfer a leader started (``PaxosCore/transferLeadership(to:)``).
public struct LeadershipTransfer: Hashable, Sendable {
    /// The voter leadership moves to.
    public var target: NodeID
    /// The last slot the leader had assigned when the transfer began; it assigns no other
    /// while the transfer lasts.
    public var lastSlot: Slot
    /// Ticks since the transfer began; it is given up after one maximum election timeout.
    public var elapsed: Int
    /// Whether the target was told to campaign (``TimeoutNow``).
    public var toldTarget: Bool
}

/// What ``PaxosCore/transferLeadership(to:)`` did.
public enum TransferStart: Hashable, Sendable {
    /// The transfer began: proposals are refused (`notLeader(target)`) until the target leads
    /// or the transfer is given up.
    case started
    /// The target is this leader: nothing to do.
    case alreadyLeader
    /// This replica does not lead; `leader` is the one it knows of.
    case notLeader(leader: NodeID?)
    /// The target is not a member.
    case notMember
}

// Leadership transfer (ELECTIONS.md, "Leadership transfer").
//
// The leader stops assigning slots, waits until the target reports every slot it assigned
// chosen (a heartbeat reply), then sends it `timeoutNow`; the target, still following that leader
// in that ballot, campaigns at once (no pre-vote) with Prepares marked `leaderTransfer`, which
// other replicas do not ignore for leader stickiness. The target runs Phase 1 like any
// candidate. Safety needs none of this: every step only withholds proposals or lifts
// stickiness, an availability rule; the Prepares, promises and Phase 1 are the usual ones.
// What the rules buy is a short gap: the target already knows every slot the old leader
// assigned chosen, so its Phase 1 starts after them with nothing to re-propose, and the old
// leader's appends are all answered before it steps down.
// A transfer that has not moved leadership after one maximum election timeout is given up and
// the leader takes proposals again.
extension PaxosCore {
    /// Begins moving leadership to `target`. Call on the leader; see ``TransferStart``.
    public mutating func transferLeadership(to target: NodeID) -> TransferStart {
        guard role == .leader else { return .notLeader(leader: knownLeader) }
        guard configuration.members.contains(target) else { return .notMember }
        guard target != id else {
            transfer = nil
            return .alreadyLeader
        }
        transfer = LeadershipTransfer(target: target, lastSlot: nextSlot - 1, elapsed: 0, toldTarget: false)
        tellTransferTarget()
        return .started
    }

    /// Gives up a transfer that did not move leadership in time.
    mutating func tickTransfer() {
        guard transfer != nil else { return }
        transfer!.elapsed += 1
        if transfer!.elapsed >= configuration.electionTimeoutTicks.upperBound {
            transfer = nil
        } else {
            tellTransferTarget()
        }
    }

    /// Tells the target to campaign once it reported every slot this leader assigned chosen
    /// (it then holds them all, and every append of this leader is answered); until then, a
    /// heartbeat every tick brings its next report.
    mutating func tellTransferTarget() {
        guard let t = transfer, !t.toldTarget, let i = configuration.members.firstIndex(of: t.target) else { return }
        let last = nextSlot - 1
        guard progress[i].reportedChosen >= last || configuration.plantedBug == .transferToLaggingTarget else {
            if chosenThrough >= last { send(to: t.target, .heartbeat(Heartbeat(ballot: ballot, chosenThrough: chosenThrough)), gated: false) }
            return
        }
        transfer!.toldTarget = true
        send(to: t.target, .timeoutNow(TimeoutNow(ballot: ballot, lastSlot: last)), gated: false)
    }

    /// Campaigns at once if the leader this replica follows, in the ballot it follows, hands
    /// leadership to it. Anything else (a stale or reordered message, a newer promise, already
    /// campaigning) is ignored: the transfer is then given up by its leader's timer.
    mutating func onTimeoutNow(from: NodeID, _ m: TimeoutNow) {
        guard role == .follower, leaderID == from, leaderBallot == m.ballot, promised == m.ballot else { return }
        campaign(leaderTransfer: true)
    }
}
