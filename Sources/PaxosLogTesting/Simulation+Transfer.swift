import MultiPaxos
import PaxosLog

// Leadership transfers in the simulation: now and then, while faults are injected, the replica
// that leads is asked to hand leadership to another member, through the real
// `Replica.transferLeadership(to:_:)`. Drawn from a random stream of their own, so runs without
// transfers replay as they did before.
//
// Checks (beside the usual invariants, which must hold through every transfer):
// - a leader assigns no slot while its transfer lasts (the target could otherwise never catch
//   up, and what it assigned after telling the target would be cut off): planted bug
//   `transferKeepsProposing`;
// - a leader tells its target to campaign (`timeoutNow`) only once the target reported (a
//   heartbeat reply that reached the leader) every slot the leader assigned chosen, so its
//   Phase 1 has nothing to re-propose: planted bug `transferToLaggingTarget`.
// The sweeps require some transfers to complete (`SimulationTests`).
extension Simulation {
    /// Maybe asks the replica that leads, unless it is handing over already, to hand leadership
    /// to another member.
    func maybeTransferLeadership() {
        guard transferRate > 0, faultsOn, transferRNG.chance(transferRate),
              let i = nodes.indices.first(where: { nodes[$0].replica?.core.isLeader == true }),
              let replica = nodes[i].replica, replica.core.transfer == nil else { return }
        let others = members.filter { $0 != members[i] }
        let target = others[transferRNG.below(others.count)]
        report.transfers += 1
        trace("node \(members[i]): transfer leadership to node \(target)")
        let from = members[i]
        replica.transferLeadership(to: target) { [unowned self] result in
            switch result {
            case .success:
                report.transfersCompleted += 1
                trace("node \(from): transfer to node \(target) done")
            case .failure(let error):
                trace("node \(from): transfer to node \(target) failed: \(error)")
            }
        }
        settle()
    }

    /// After every step: a leader handing over has assigned nothing since it began.
    func checkTransfers() {
        for n in nodes {
            guard let core = n.replica?.core, core.isLeader, let t = core.transfer else { continue }
            if core.lastAcceptedSlot != t.lastSlot {
                checker.failTransfer("node \(n.id) assigned slots through \(core.lastAcceptedSlot) while handing leadership to node \(t.target) (it had assigned through \(t.lastSlot) when the transfer began)")
            }
        }
    }

    /// Notes what a follower reported to its leader (a heartbeat reply delivered).
    func watchTransferReports(_ e: Envelope) {
        guard transferRate > 0, case .heartbeatReply(let r) = e.message else { return }
        let key = TransferReport(leader: e.to, follower: e.from, ballot: r.ballot)
        reportedChosen[key] = Swift.max(reportedChosen[key] ?? 0, r.chosenThrough)
    }

    /// When a leader tells its target to campaign: the target had told it (in a heartbeat reply
    /// in this ballot that reached it) that it knew every slot the leader assigned chosen.
    func checkTimeoutNow(_ e: Envelope) {
        guard case .timeoutNow(let m) = e.message else { return }
        let reported = reportedChosen[TransferReport(leader: e.from, follower: e.to, ballot: m.ballot)] ?? 0
        if reported < m.lastSlot {
            checker.failTransfer("node \(e.from) told node \(e.to) to campaign (its last slot \(m.lastSlot)) when node \(e.to) had reported only \(reported) chosen in ballot \(m.ballot)")
        }
    }
}

/// A follower's reports to one leader in one ballot.
struct TransferReport: Hashable {
    var leader: NodeID
    var follower: NodeID
    var ballot: Ballot
}

extension InvariantChecker {
    mutating func failTransfer(_ s: String) { fail("transfer: " + s) }
}
