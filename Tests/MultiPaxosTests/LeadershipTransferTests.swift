@_spi(Testing) import MultiPaxos
import Testing

/// Leadership transfer in the core (PaxosCore+Transfer.swift): three cores wired by hand, every
/// record durable at once, every message delivered unless its receiver is cut off.
@Suite struct LeadershipTransferTests {
    struct Cluster {
        var cores: [PaxosCore]
        var cutOff: Set<NodeID> = []
        /// Every message sent, in order.
        var sent: [Envelope] = []

        init() {
            cores = (1...3).map { id in
                var c = Configuration(id: NodeID(id), members: [1, 2, 3], randomSeed: UInt64(id))
                c.electionTimeoutTicks = 10...20
                return PaxosCore(configuration: c)
            }
        }

        subscript(_ id: NodeID) -> PaxosCore {
            get { cores[Int(id) - 1] }
            set { cores[Int(id) - 1] = newValue }
        }

        /// Runs until no core has anything to send.
        mutating func pump() {
            for _ in 0..<100 {
                var outbox: [Envelope] = []
                for i in cores.indices {
                    let r = cores[i].takeReady()
                    cores[i].persisted(through: r.persistThrough)
                    outbox += r.messages + r.messagesAfterPersist
                }
                if outbox.isEmpty { return }
                sent += outbox
                for e in outbox where !cutOff.contains(e.to) && !cutOff.contains(e.from) { self[e.to].step(e) }
            }
            Issue.record("the cluster did not settle")
        }

        mutating func tick(_ n: Int = 1) {
            for _ in 0..<n {
                for i in cores.indices { cores[i].tick() }
                pump()
            }
        }

        var timeoutNows: [(Envelope, TimeoutNow)] {
            sent.compactMap { e in if case .timeoutNow(let t) = e.message { return (e, t) } else { return nil } }
        }
    }

    /// Node 1 leads three nodes that heard it a tick ago (so leader stickiness is in force) and
    /// has three values chosen.
    func ledByNodeOne() -> Cluster {
        var c = Cluster()
        c[1].campaign()
        c.pump()
        #expect(c[1].isLeader)
        for v: UInt8 in 1...3 { _ = c[1].propose(.data([v])) }
        c.tick(3)
        return c
    }

    @Test func leadershipMovesToACaughtUpTarget() {
        var c = ledByNodeOne()
        #expect(c[1].transferLeadership(to: 3) == .started)
        #expect(c[1].holdsProposals)
        #expect(c[1].propose(.data([9])) == .notLeader(leader: 3), "the leader assigns nothing while it hands over")
        c.pump()
        c.tick(2)
        #expect(c[3].isLeader)
        #expect(c[1].knownLeader == 3 && c[2].knownLeader == 3)
        #expect(c[1].transfer == nil && !c[1].holdsProposals)
        let told = c.timeoutNows
        #expect(told.count == 1 && told[0].0.to == 3 && told[0].1.lastSlot == 3)
        // The target's Prepares said why, so node 2, which had just heard node 1, promised.
        #expect(c.sent.contains { if case .prepare(let p) = $0.message { return $0.from == 3 && p.leaderTransfer } else { return false } })
        for s: Slot in 1...3 { #expect(c[3].value(at: s) == .data([UInt8(s)])) }
        #expect(c[3].propose(.data([4])) == .proposed(slot: 4))
    }

    @Test func aTransferThatCannotCompleteIsGivenUp() {
        var c = ledByNodeOne()
        c.cutOff = [3]
        #expect(c[1].propose(.data([4])) == .proposed(slot: 4))
        c.tick()
        #expect(c[1].transferLeadership(to: 3) == .started)
        c.tick(19)
        #expect(c[1].transfer != nil)
        c.tick()
        #expect(c[1].transfer == nil && c[1].isLeader, "given up after one maximum election timeout")
        #expect(c.timeoutNows.isEmpty, "a target that never reported slot 4 chosen is not told to campaign")
        #expect(c[1].propose(.data([9])) == .proposed(slot: 5))
    }

    /// Without the transfer mark, the same campaign is ignored by replicas that hear a live
    /// leader: what the mark is for.
    @Test func aCampaignWithoutTheMarkIsIgnoredWhileTheLeaderLives() {
        var c = ledByNodeOne()
        c[3].campaign()
        c.pump()
        #expect(!c[3].isLeader && c[1].isLeader)
    }

    @Test func whatATransferRequestAnswers() {
        var c = ledByNodeOne()
        #expect(c[1].transferLeadership(to: 1) == .alreadyLeader)
        #expect(c[1].transferLeadership(to: 7) == .notMember)
        #expect(c[2].transferLeadership(to: 3) == .notLeader(leader: 1))
        #expect(c[1].transfer == nil)
    }

    /// A target campaigns only on word from the leader it follows, in that leader's ballot.
    @Test func aStrayTimeoutNowIsIgnored() {
        var c = ledByNodeOne()
        let ballot = c[1].ballot
        c[3].step(Envelope(from: 2, to: 3, message: .timeoutNow(TimeoutNow(ballot: ballot, lastSlot: 3))))
        c[3].step(Envelope(from: 1, to: 3, message: .timeoutNow(TimeoutNow(ballot: Ballot(round: 0, node: 1), lastSlot: 3))))
        #expect(!c[3].holdsProposals, "neither came from its leader in its ballot")
    }

    /// What the leader reports of each follower (the member list): a follower cut off since the
    /// election shows nothing acknowledged, not the slots chosen without it.
    @Test func followerProgressCountsOnlyWhatTheFollowerAcknowledged() {
        var c = ledByNodeOne()
        c.cutOff = [3]
        for v: UInt8 in 4...5 { _ = c[1].propose(.data([v])) }
        // Past the retransmission timeout: the leader stops waiting for node 3's answer.
        c.tick(20)
        let rows = Dictionary(uniqueKeysWithValues: c[1].followerProgress.map { ($0.node, $0) })
        #expect(rows[2]?.acknowledgedThrough == 5 && rows[2]?.chosenThrough == 5)
        #expect(rows[3]?.acknowledgedThrough == 3 && rows[3]?.chosenThrough == 3, "it acknowledged 1-3 before the cut")
        #expect(rows[2]?.lagSlots == 0 && rows[3]?.lagSlots == 2)
        var fresh = Cluster()
        fresh.cutOff = [3]
        fresh[1].campaign()
        fresh.pump()
        for v: UInt8 in 1...2 { _ = fresh[1].propose(.data([v])) }
        fresh.tick(20)
        #expect(fresh[1].followerProgress.first { $0.node == 3 }.map { ($0.acknowledgedThrough, $0.lagSlots) } ?? (9, 9) == (0, 2))
    }
}
