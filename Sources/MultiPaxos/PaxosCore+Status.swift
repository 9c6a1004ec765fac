extension PaxosCore {
    /// The highest slot this replica holds a vote for (0 when none).
    public var lastAcceptedSlot: Slot { log.lastFilled }
}
