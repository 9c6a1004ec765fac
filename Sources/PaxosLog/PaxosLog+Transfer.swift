import MultiPaxos

extension PaxosLog {
    /// Moves leadership to the voter `target`, for a rolling restart or to move load. Call it on
    /// the leader. The leader stops taking appends (they fail `notLeader` naming `target`, not
    /// appended), waits until `target` has acknowledged everything it assigned, then tells it to
    /// campaign at once; `target` still runs Phase 1 like any new leader.
    ///
    /// Returns once `target` leads, as this replica sees it. If `target` has not caught up and
    /// taken over within one maximum election timeout, the leader gives up, takes appends again
    /// and this throws `timeout`. Appends offered meanwhile wait; they are proposed if the
    /// transfer is given up, or fail `notLeader` naming the new leader (not appended).
    /// - Throws: ``PaxosLogError``: `notLeader` (this replica does not lead; the error names the
    ///   leader it knows), `invalidArgument` (`target` is not a member), `timeout`, `closed`.
    public func transferLeadership(to target: NodeID) async throws {
        try await driver.transferLeadership(to: target)
    }
}
