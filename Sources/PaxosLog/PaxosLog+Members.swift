import MultiPaxos
import PaxosTransport

extension PaxosLog {
    /// One member as this replica sees it: its id, addresses, role, and the positions the leader
    /// knows (``PaxosTransport/MemberStatus``: the same type answers the client protocol's
    /// `members` request).
    public typealias MemberStatus = PaxosTransport.MemberStatus
    /// What a member does: ``PaxosTransport/MemberRole/leader`` or
    /// ``PaxosTransport/MemberRole/follower`` (an open set: learners will be a role of their own).
    public typealias MemberRole = PaxosTransport.MemberRole

    /// Every member of the cluster, in the order of ``Configuration/members``, as this replica
    /// sees it now.
    ///
    /// Membership is fixed for the life of the cluster, so every member is a voter and the
    /// addresses are this replica's configuration's. The member this replica knows to lead has
    /// role `leader`, the others `follower` (all of them while no leader is known). Positions:
    /// on the leader, every row has them (its followers' as their acknowledgements and heartbeat
    /// replies in its ballot reported them, so a little behind; its own from its status); on a
    /// follower only its own row does (its highest vote and its readable watermark), and the
    /// others are nil.
    /// - Throws: ``PaxosLogError`` `closed` once the log is closed.
    public func members() async throws -> [MemberStatus] {
        let replica = driver.replica
        // One hop onto the loop: the status and the followers' progress of the same moment.
        let (status, progress, closed) = try await driver.loop.submit {
            (replica.status, replica.core.followerProgress, replica.isClosed)
        }.get()
        guard !closed else { throw PaxosLogError(.closed, "the log was closed") }
        let byNode = Dictionary(progress.map { ($0.node, $0) }, uniquingKeysWith: { first, _ in first })
        return configuration.members.map { member in
            var row = MemberStatus(id: member.id, peerAddress: member.peerAddress, clientAddress: member.clientAddress,
                                   role: member.id == status.leader ? .leader : .follower, isSelf: member.id == status.nodeID)
            if row.isSelf {
                row.acknowledgedThrough = status.lastAccepted
                row.chosenThrough = status.chosenThrough
            } else if status.isLeader, let p = byNode[member.id] {
                row.acknowledgedThrough = p.acknowledgedThrough
                row.chosenThrough = p.chosenThrough
            }
            return row
        }
    }
}
