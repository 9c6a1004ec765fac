import MultiPaxos

/// A lossy, duplicating, reordering, delaying network with partitions, driven by the
/// simulation's RNG so a seed replays it exactly.
///
/// Besides whole links, a link can lose only votes (``blockVotes(_:_:)``): Paxos must be safe
/// whichever messages are lost, and independent random loss almost never loses every Prepare and
/// Accept on a link while its heartbeats and catch-up traffic get through.
public struct SimulatedNetwork: Sendable {
    struct InFlight: Sendable {
        var deliverAt: Int
        var envelope: Envelope
    }

    /// Probability a message is dropped.
    public var lossRate: Double = 0
    /// Probability a message is delivered twice (each copy with its own delay).
    public var duplicateRate: Double = 0
    /// Each message is delayed 1 ... maxDelay ticks; different delays reorder messages.
    public var maxDelay: Int = 3

    var queue: [InFlight] = []
    /// Directed links that are cut: `from << 32 | to`.
    public private(set) var cut: Set<UInt64> = []
    /// Directed links that drop votes but carry everything else: `from << 32 | to`.
    public private(set) var votesBlocked: Set<UInt64> = []

    public private(set) var sent = 0
    public private(set) var delivered = 0
    public private(set) var dropped = 0
    public private(set) var duplicated = 0

    public init() {}

    static func link(_ from: NodeID, _ to: NodeID) -> UInt64 { UInt64(from) << 32 | UInt64(to) }

    public var inFlightCount: Int { queue.count }

    /// Cuts both directions between `a` and `b`.
    public mutating func cut(_ a: NodeID, _ b: NodeID) {
        cut.insert(Self.link(a, b))
        cut.insert(Self.link(b, a))
    }

    /// Makes both directions between `a` and `b` drop every vote (see ``isVote(_:)``) while
    /// heartbeats, catch-up and snapshot traffic still pass.
    public mutating func blockVotes(_ a: NodeID, _ b: NodeID) {
        votesBlocked.insert(Self.link(a, b))
        votesBlocked.insert(Self.link(b, a))
    }

    /// Heals one link (both directions), whether cut or blocking votes.
    public mutating func heal(_ a: NodeID, _ b: NodeID) {
        for l in [Self.link(a, b), Self.link(b, a)] {
            cut.remove(l)
            votesBlocked.remove(l)
        }
    }

    public mutating func healAll() {
        cut.removeAll()
        votesBlocked.removeAll()
    }

    public func isCut(_ from: NodeID, _ to: NodeID) -> Bool { cut.contains(Self.link(from, to)) }

    /// Phase 1 and phase 2 traffic: what a link blocking votes drops.
    public static func isVote(_ m: Message) -> Bool {
        switch m {
        // A pre-vote asks for a future promise: Phase 1 traffic, lost where Prepares are.
        case .prepare, .promise, .reject, .accept, .accepted, .preVote, .preVoteReply: return true
        case .heartbeat, .heartbeatReply, .catchUpRequest, .catchUpReply, .snapshotOffer, .snapshotChunk, .snapshotAck: return false
        // Asks for no vote and vouches for none: the target's Prepares are the votes.
        case .timeoutNow: return false
        }
    }

    /// A pre-vote or its reply: vouches for no durable record (unlike the other votes).
    public static func isPreVote(_ m: Message) -> Bool {
        switch m {
        case .preVote, .preVoteReply: return true
        default: return false
        }
    }

    /// Whether the link from `e.from` to `e.to` loses `e` whatever the luck.
    func blocks(_ e: Envelope) -> Bool {
        isCut(e.from, e.to) || (!votesBlocked.isEmpty && votesBlocked.contains(Self.link(e.from, e.to)) && Self.isVote(e.message))
    }

    public mutating func send(_ e: Envelope, now: Int, rng: inout SplitMix64) {
        sent += 1
        if blocks(e) || rng.chance(lossRate) {
            dropped += 1
            return
        }
        queue.append(InFlight(deliverAt: now + 1 + rng.below(maxDelay), envelope: e))
        if rng.chance(duplicateRate) {
            duplicated += 1
            queue.append(InFlight(deliverAt: now + 1 + rng.below(maxDelay * 2), envelope: e))
        }
    }

    /// Removes and returns every message due at `now`, in random order. Messages their link
    /// blocks by then (cut, or blocking votes, while they were in flight) are lost.
    public mutating func due(now: Int, rng: inout SplitMix64) -> [Envelope] {
        var out: [Envelope] = []
        var keep: [InFlight] = []
        keep.reserveCapacity(queue.count)
        for m in queue {
            if m.deliverAt <= now {
                if blocks(m.envelope) { dropped += 1 } else { out.append(m.envelope) }
            } else {
                keep.append(m)
            }
        }
        queue = keep
        // Fisher-Yates with the simulation's RNG: reordering among messages due together.
        if out.count > 1 {
            for i in stride(from: out.count - 1, to: 0, by: -1) { out.swapAt(i, rng.below(i + 1)) }
        }
        delivered += out.count
        return out
    }

    /// Drops every message addressed to `node` (it crashed; what it sent before may still arrive).
    public mutating func dropAll(involving node: NodeID) {
        queue.removeAll { $0.envelope.to == node }
    }
}
