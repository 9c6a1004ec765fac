import MultiPaxos

extension PaxosLog {
    /// Moves leadership to the voter `target`, for a rolling restart or to move load. Call it on
    /// the leader. The leader stops taking appends (they fail `notLeader` naming `target`, not
    /// appended), waits until `target` has acknowledged everything it assigned, then tells it to
    /// campaign at once; `target` still runs Phase 1 like any new leader.
    ///
    /// Returns once `target` leads, as this replica sees it. If that does not happen within
    /// one election timeout the leader resumes taking appends and this throws `timeout`.
    /// - Throws: ``PaxosLogError``: `notLeader` (this replica does not lead; the error names the
    ///   leader it knows), `invalidArgument` (`target` is not a member), `timeout`, `closed`.
    public func transferLeadership(to target: NodeID) async throws {
        throw PaxosLogError(.invalidArgument, "leadership transfer is not built yet")
    }
}
