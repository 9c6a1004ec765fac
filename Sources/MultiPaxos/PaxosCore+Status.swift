extension PaxosCore {
    /// The highest slot this replica holds a vote for (0 when none).
    public var lastAcceptedSlot: Slot { log.lastFilled }

    /// How a leader sees one follower's replication (for metrics and status).
    public struct FollowerProgress: Hashable, Sendable {
        public var node: NodeID
        /// Slots the leader has assigned past ``acknowledgedThrough``: all of them for a follower
        /// not heard from since this replica began leading (briefly, every follower).
        public var lagSlots: Slot
        /// Accept messages sent and not yet acknowledged, and the payload bytes they carry.
        public var inflightAccepts: Int
        public var inflightBytes: Int
        /// How far the follower holds this leader's log: the end of the run of slots it
        /// acknowledged in this ballot, or its reported chosen watermark if further (0 for a
        /// follower not heard from since this replica began leading).
        public var acknowledgedThrough: Slot
        /// The follower's chosen watermark as its last heartbeat reply in this ballot reported
        /// (0 before the first).
        public var chosenThrough: Slot
    }

    /// Each follower's progress as this leader sees it; empty unless this replica leads.
    public var followerProgress: [FollowerProgress] {
        guard role == .leader else { return [] }
        return progress.indices.filter { $0 != selfIndex }.map { i in
            let p = progress[i]
            // Not from the send window: after a retransmission timeout it skips slots chosen
            // without the follower, and a dead follower looked caught up.
            let held = Swift.max(p.acknowledged, p.reportedChosen)
            let last = nextSlot - 1
            return FollowerProgress(node: configuration.members[i], lagSlots: last > held ? last - held : 0,
                                    inflightAccepts: p.inflight.count, inflightBytes: p.inflightBytes,
                                    acknowledgedThrough: held, chosenThrough: p.reportedChosen)
        }
    }
}
