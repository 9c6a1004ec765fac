extension PaxosLog {
    /// This build's version, reported by `paxlog status` and `paxlog --version` so an operator
    /// can see a cluster running mixed builds during an upgrade.
    public static let version = "0.1.0"
}
