import MultiPaxos

/// A fault a nemesis round injects. Targets (which node, which link) are drawn when the round
/// runs, from the round's seed and the leader at that moment.
public enum NemesisFault: String, CaseIterable, Sendable {
    /// Every link into and out of the leader cut.
    case isolateLeader
    /// A minority (with or without the leader) cut off from the majority.
    case split
    /// A bridge: the ends cut from each other, both still connected to the middle (A-B, B-C up,
    /// A-C cut; with five nodes, two on each side of one).
    case bridge
    /// One direction of one link cut or black-holed, between the leader and a follower.
    case oneWayLoss
    /// One link between the leader and a follower cut and healed at random intervals.
    case flappingLink
    /// One replica frozen with SIGSTOP for longer than the election timeout, then SIGCONT.
    case pause
    /// One replica SIGKILLed, and restarted on its directory.
    case killRestart
    /// Every link of one replica black-holed (connections stay open, nothing arrives).
    case blackHoleNode
    /// Every link of one replica delayed by 50-400 ms per chunk.
    case slowNode
    /// Every link resets its connection at random (2-10% of chunks).
    case lossyNetwork

    /// The family a fault belongs to: a plan cycles through them, so every three rounds test a
    /// partition, a process fault and a link fault.
    public enum Family: Int, CaseIterable, Sendable { case partition, process, link }

    public var family: Family {
        switch self {
        case .isolateLeader, .split, .bridge, .blackHoleNode: .partition
        case .pause, .killRestart: .process
        case .oneWayLoss, .flappingLink, .slowNode, .lossyNetwork: .link
        }
    }
}

/// One round of a nemesis run: a fault, how long it lasts, and the seed its targets are drawn from.
public struct NemesisRound: Sendable, Hashable, CustomStringConvertible {
    public var fault: NemesisFault
    /// Seconds the fault stays in force before the heal.
    public var seconds: Double
    public var seed: UInt64

    public var description: String { "\(fault.rawValue) for \(String(format: "%.1f", seconds)) s" }

    /// The rounds of a run with this seed: round r draws a fault of family r mod 3 and a duration
    /// between 1.5 and 3.5 s (past the 150-300 ms election timeout many times over).
    public static func plan(seed: UInt64, rounds: Int) -> [NemesisRound] {
        precondition(rounds >= 0)
        var rng = SplitMix64(seed: seed &* 0x2545_F491_4F6C_DD1D &+ 0x6E656D)
        let start = rng.below(NemesisFault.Family.allCases.count)
        return (0..<rounds).map { r in
            let family = NemesisFault.Family(rawValue: (start + r) % NemesisFault.Family.allCases.count)!
            let faults = NemesisFault.allCases.filter { $0.family == family }
            return NemesisRound(fault: faults[rng.below(faults.count)], seconds: 1.5 + 2.0 * rng.nextUnit(), seed: rng.next())
        }
    }
}
