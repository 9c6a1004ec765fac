import MultiPaxos

extension PaxosLog {
    /// Moves leadership to the voter `target`, for a rolling restart or to move load. Call it on
    /// the leader. The leader stops taking appends (they fail `notLeader` naming `target`, not
    /// appended), waits until `target` reports every slot it assigned chosen, then tells it to
    /// campaign at once; `target` still runs Phase 1 like any new leader.
    ///
    /// Returns once `target` leads, as this replica sees it. If `target` has not caught up and
    /// taken over within one maximum election timeout, the leader gives up, takes appends again
    /// and this throws `timeout`. Appends offered meanwhile wait; they are proposed if the
    /// transfer is given up, or fail `notLeader` naming the new leader (not appended).
    /// - Throws: ``PaxosLogError``: `notLeader` (this replica does not lead; the error names the
    ///   leader it knows), `invalidArgument` (`target` is not a member), `timeout`, `closed`.
    public func transferLeadership(to target: NodeID) async throws {
        do {
            try await driver.transferLeadership(to: target)
            metrics.recordTransfer(nil)
        } catch {
            metrics.recordTransfer(error)
            throw error
        }
    }
}

extension PaxosLog {
    /// Before a planned stop: if this replica leads, moves leadership to the follower furthest
    /// along (the most acknowledged, as this leader sees it), so clients need not wait out an
    /// election timeout. `paxlog serve` does this on SIGTERM before ``close()``.
    /// - Returns: the new leader, or nil when this replica does not lead, leads alone, or the
    ///   transfer did not complete (the replica may still stop: the others then elect a leader
    ///   after their election timeout, as after a crash).
    public func handOffLeadership() async -> NodeID? {
        guard let followers = try? await driver.followerProgress().get(),
              let best = followers.max(by: { $0.acknowledgedThrough < $1.acknowledgedThrough }) else { return nil }
        do {
            try await transferLeadership(to: best.node)
            return best.node
        } catch {
            configuration.logger.warning("handing leadership over before stopping failed: \(error)")
            return nil
        }
    }
}
