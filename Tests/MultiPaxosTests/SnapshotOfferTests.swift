@_spi(Testing) import MultiPaxos
import Testing

/// A ``SnapshotOffer`` names no ballot, so a replica cannot tell an offer from a deposed leader
/// from one of the leader it follows. These scenarios check that it need not:
///
/// - A snapshot holds only chosen values, and a chosen value is final whoever sends it: one from
///   a deposed leader agrees with everything a newer leader chose (`fromDeposedLeader`).
/// - What must not happen is the opposite direction: knowledge from a newer ballot reaching a
///   replica that may still answer an older leader, whose `adoptChosen` would then count its own
///   values chosen. A replica asks a leader for catch-up (and so for a snapshot) only after
///   promising that leader's ballot; the promise record is appended before the snapshot's marker
///   record (`SnapshotWriter.commit` enqueues it behind every earlier record), and recovery ignores
///   a snapshot whose marker is not durable, so a restart that keeps the snapshot keeps the
///   promise too (`fromNewerLeaderThenCrash`).
/// - A ballot in the offer would not replace that ordering: the replica did promise the newer
///   ballot; it is losing the promise in a crash while keeping the snapshot that breaks safety
///   (`outOfOrderSnapshotIsUnsafe` shows it, so the ordering stays a stated requirement).
@Suite struct SnapshotOfferTests {
    /// Node 1 leads in 1.1 and chose v at slot 1; its x at slot 2 was lost. Node 2 was elected
    /// in 2.2 by 2, 3, 4, chose w at slot 2 and compacted through 2. Node 5 then follows node 2 by
    /// heartbeat (promising 2.2 in memory) and asks it for slots 1...2, which only a snapshot can
    /// give. Node 1 does not know it was deposed.
    /// - Returns: the harness, the transcript so far, and node 2's chosen values through slot 2
    ///   (what its snapshot holds).
    static func setUp() -> (h: TranscriptHarness, transcript: [String], newerChosen: [Value?]) {
        var h = TranscriptHarness()
        // Node 2 deposes node 1 by hand while 3 and 4 still hear it: what leader stickiness
        // prevents. Safety must not depend on stickiness, so the scenario runs without it.
        h.electionGuards = false
        var transcript: [String] = []
        func run(_ commands: String...) {
            for c in commands { transcript.append("> \(c)\n" + h.run(c)) }
        }
        run("cluster 5", "campaign 1", "stabilize", "propose 1 v", "stabilize")
        run("propose 1 x", "persist 1", "drop from=1")
        run("campaign 2", "persist 2", "drop from=2 to=1", "drop from=2 to=5", "deliver from=2",
            "persist 3", "persist 4", "deliver to=2")
        run("propose 2 w", "drop from=2 to=1", "drop from=2 to=5", "deliver from=2",
            "persist", "deliver to=2", "drop from=2 to=1", "drop from=2 to=5")
        let newerChosen = chosenPrefix(h, 2, through: 2)
        h.nodes[2]!.core!.compact(through: 2)
        run("tick 2 3", "drop from=2 to=1", "drop from=2 to=3", "drop from=2 to=4",
            "deliver from=2 to=5", "deliver from=5 to=2")
        return (h, transcript, newerChosen)
    }

    /// The chosen values through `slot` as `id` holds them (what its snapshot would carry).
    static func chosenPrefix(_ h: TranscriptHarness, _ id: NodeID, through slot: Slot) -> [Value?] {
        (1...slot).map { s in h.nodes[id]!.core!.chosenThrough >= s ? h.nodes[id]!.core!.value(at: s) : nil }
    }

    /// Restarts `id` from its durable records plus a durable snapshot through `snapshot`, as
    /// recovery does: entries the snapshot covers are dropped and its slots are chosen.
    static func restart(_ h: inout TranscriptHarness, _ id: NodeID, snapshot: Slot) {
        var state = DurableState()
        for r in h.nodes[id]!.durable { state.apply(r) }
        state.compactedThrough = snapshot
        state.chosenThrough = Swift.max(state.chosenThrough, snapshot)
        state.entries.removeAll { $0.slot <= snapshot }
        h.nodes[id]!.incarnation += 1
        h.nodes[id]!.lastSeq = 0
        h.nodes[id]!.core = PaxosCore(configuration: h.config(id, h.nodes[id]!.incarnation), restoring: state)
    }

    /// Node 1 heartbeats node 5 alone; returns what node 1 then holds chosen at slot 2.
    static func staleLeaderHeartbeatsNode5(_ h: inout TranscriptHarness, _ transcript: inout [String]) -> Value? {
        for c in ["tick 1 3", "drop from=1 to=2", "drop from=1 to=3", "drop from=1 to=4", "deliver from=1 to=5", "deliver from=5 to=1"] {
            transcript.append("> \(c)\n" + h.run(c))
        }
        let core = h.nodes[1]!.core!
        return core.chosenThrough >= 2 ? core.value(at: 2) : nil
    }

    static let v = Value.data(Array("v".utf8)), w = Value.data(Array("w".utf8))

    @Test func setUpReachesTheSnapshotRequest() {
        let (h, transcript, newerChosen) = Self.setUp()
        let log = transcript.joined(separator: "\n")
        #expect(newerChosen == [Self.v, Self.w], Comment(rawValue: log))
        #expect(log.contains("2: snapshot needed by 5 from 1"), Comment(rawValue: log))
        #expect(h.nodes[5]!.core!.promised == Ballot(round: 2, node: 2))
        #expect(h.nodes[1]!.core!.isLeader)
    }

    /// Node 5 installs node 1's snapshot through slot 1 after promising node 2's ballot.
    @Test func fromDeposedLeader() {
        let start = Self.setUp()
        var (h, transcript) = (start.h, start.transcript)
        let newerChosen = start.newerChosen
        let offered = Self.chosenPrefix(h, 1, through: 1)
        h.nodes[1]!.core!.compact(through: 1)
        h.nodes[5]!.core!.installSnapshot(through: 1)
        transcript.append("> node 5 installs node 1's snapshot through 1\n" + h.run("status"))
        #expect(offered == [Self.v] && Array(newerChosen.prefix(1)) == offered, Comment(rawValue: transcript.joined(separator: "\n")))
        #expect(h.nodes[5]!.core!.chosenThrough == 1)
        // Node 5 still refuses the deposed leader, which steps down without counting x.
        let atTwo = Self.staleLeaderHeartbeatsNode5(&h, &transcript)
        #expect(atTwo == nil, Comment(rawValue: transcript.joined(separator: "\n")))
        #expect(!h.nodes[1]!.core!.isLeader, Comment(rawValue: transcript.joined(separator: "\n")))
    }

    /// Node 5 installs node 2's snapshot the way the driver does (its marker record durable only
    /// with every record before it, the promise of 2.2 among them), then crashes and restarts.
    @Test func fromNewerLeaderThenCrash() {
        var (h, transcript, _) = Self.setUp()
        transcript.append("> persist 5 (the snapshot marker's sync)\n" + h.run("persist 5"))
        h.nodes[5]!.core!.installSnapshot(through: 2)
        transcript.append("> crash 5\n" + h.run("crash 5"))
        Self.restart(&h, 5, snapshot: 2)
        transcript.append("> restart 5 with snapshot 2\n" + h.run("status"))
        #expect(h.nodes[5]!.core!.promised == Ballot(round: 2, node: 2))
        let atTwo = Self.staleLeaderHeartbeatsNode5(&h, &transcript)
        #expect(atTwo == nil || atTwo == Self.w, Comment(rawValue: transcript.joined(separator: "\n")))
        #expect(!h.nodes[1]!.core!.isLeader, Comment(rawValue: transcript.joined(separator: "\n")))
    }

    /// Why the ordering is a requirement: a snapshot durable while the promise before it is not
    /// survives a crash that takes the promise, and node 5 then hands node 2's chosen watermark to
    /// node 1, which counts its own x chosen at slot 2 where w was chosen.
    @Test func outOfOrderSnapshotIsUnsafe() {
        var (h, transcript, _) = Self.setUp()
        h.nodes[5]!.core!.installSnapshot(through: 2)
        transcript.append("> crash 5 (snapshot durable, promise of 2.2 not)\n" + h.run("crash 5"))
        Self.restart(&h, 5, snapshot: 2)
        #expect(h.nodes[5]!.core!.promised == Ballot(round: 1, node: 1))
        let atTwo = Self.staleLeaderHeartbeatsNode5(&h, &transcript)
        #expect(atTwo == .data(Array("x".utf8)), Comment(rawValue: transcript.joined(separator: "\n")))
    }
}
