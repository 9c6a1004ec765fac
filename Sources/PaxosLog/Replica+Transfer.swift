import MultiPaxos
import NIOCore

/// Callers of ``Replica/transferLeadership(to:_:)`` waiting for their target to lead.
/// Confined to the replica's executor.
struct LeadershipTransfers {
    typealias Callback = @Sendable (Result<Void, PaxosLogError>) -> Void

    var waiting: [(target: NodeID, deadline: NIODeadline, callback: Callback)] = []

    var first: (target: NodeID, deadline: NIODeadline, callback: Callback)? { waiting.first }

    mutating func failAll(_ error: PaxosLogError) {
        for w in waiting { w.callback(.failure(error)) }
        waiting = []
    }
}

// Leadership transfer on the replica: the core refuses proposals meanwhile (appends are held,
// as during an election, and offered again or failed as not appended when it ends) and decides
// when the target may campaign; this answers the caller once the target leads, as this replica
// sees it. The rules and why they are safe are beside `PaxosCore.transferLeadership(to:)`.
extension Replica {
    /// Moves leadership to `target` (see ``PaxosLog/transferLeadership(to:)``); `callback` gets
    /// success once this replica follows `target` as leader, or an error.
    package func transferLeadership(to target: NodeID, _ callback: @escaping @Sendable (Result<Void, PaxosLogError>) -> Void) {
        precondition(executor.inExecutor, "Replica used off its executor")
        if let failure { return callback(.failure(failure)) }
        if isClosed { return callback(.failure(PaxosLogError(.closed, "the log is closed"))) }
        switch core.transferLeadership(to: target) {
        case .alreadyLeader:
            callback(.success(()))
        case .notLeader(let leader):
            callback(.failure(PaxosLogError(.notLeader, "node \(configuration.nodeID) is not the leader (leader: \(leader.map { "node \($0)" } ?? "unknown")); ask the leader to transfer", leader: leader)))
        case .notMember:
            callback(.failure(PaxosLogError(.invalidArgument, "node \(target) is not a member (members: \(configuration.members.map(String.init).joined(separator: ", "))); leadership stays with node \(configuration.nodeID)")))
        case .started:
            transfers.waiting.append((target, executor.now + transferWait, callback))
            logger.info("leadership transfer started", metadata: ["node": "\(configuration.nodeID)", "target": "\(target)"])
            scheduleDrain()
        }
    }

    /// How long a caller waits for the target to show as leader: the core gives up after one
    /// maximum election timeout, and the target's Phase 1 may still be running then.
    private var transferWait: TimeAmount {
        configuration.tickInterval * Int64(core.configuration.electionTimeoutTicks.upperBound) * 2
    }

    /// Answers the transfers whose end this replica can see: the target leads, another leader
    /// does, the core gave the transfer up while this replica still leads, or time ran out.
    func settleTransfers() {
        guard !transfers.waiting.isEmpty else { return }
        let now = executor.now
        let leader = leadership.leader
        transfers.waiting.removeAll { w in
            let result: Result<Void, PaxosLogError>
            if leader == w.target, !leadership.isLeader {
                result = .success(())
            } else if let leader, leader != w.target, leader != configuration.nodeID {
                result = .failure(PaxosLogError(.notLeader, "node \(leader) leads now, not node \(w.target): another replica was elected during the transfer", leader: leader))
            } else if leadership.isLeader, core.transfer?.target != w.target {
                let why = core.transfer.map { "a transfer to node \($0.target) replaced it" }
                    ?? "node \(w.target) did not catch up and take over within one election timeout"
                result = .failure(PaxosLogError(.timeout, "leadership stays with node \(configuration.nodeID): \(why); appends are taken again", leader: configuration.nodeID))
            } else if w.deadline <= now {
                result = .failure(PaxosLogError(.timeout, "node \(w.target) did not take over within \(transferWait); leader: \(leader.map { "node \($0)" } ?? "unknown")", leader: leader))
            } else {
                return false
            }
            w.callback(result)
            return true
        }
    }
}
