@_spi(Testing) import MultiPaxos
import Testing

@Suite struct PaxosCoreTests {
    func config(_ id: NodeID, members: [NodeID] = [1, 2, 3]) -> Configuration {
        var c = Configuration(id: id, members: members, randomSeed: UInt64(id))
        c.maxQueuedProposals = 4
        c.maxUncommittedBytes = 10
        return c
    }

    /// Elects node 1 of three, persisting and delivering by hand; `whileCampaigning` runs on the
    /// candidate before its Prepares are answered. `won` is the Ready that reports the victory.
    func electedLeader(whileCampaigning: (inout PaxosCore) -> Void = { _ in }) -> (PaxosCore, [PaxosCore], won: Ready) {
        var leader = PaxosCore(configuration: config(1))
        var followers = [PaxosCore(configuration: config(2)), PaxosCore(configuration: config(3))]
        leader.campaign()
        whileCampaigning(&leader)
        var r = leader.takeReady()
        #expect(r.messages.isEmpty, "a Prepare must wait for the promise naming its ballot")
        leader.persisted(through: r.persistThrough)
        for e in r.messagesAfterPersist {
            var f = followers[Int(e.to) - 2]
            f.step(e)
            let fr = f.takeReady()
            #expect(fr.messages.isEmpty && fr.messagesAfterPersist.count == 1, "a Promise waits for durability")
            f.persisted(through: fr.persistThrough)
            followers[Int(e.to) - 2] = f
            for p in fr.messagesAfterPersist { leader.step(p) }
        }
        r = leader.takeReady()
        #expect(leader.isLeader)
        #expect(r.leadership == Leadership(leader: 1, ballot: Ballot(round: 1, node: 1), isLeader: true))
        return (leader, followers, r)
    }

    @Test func nonLeaderNamesTheLeaderItKnows() {
        var (leader, followers, _) = electedLeader()
        #expect(followers[0].propose(.noop) == .notLeader(leader: nil))
        leader.tick(); leader.tick()
        for e in leader.takeReady().messages where e.to == 2 { followers[0].step(e) }
        #expect(followers[0].propose(.noop) == .notLeader(leader: 1))
    }

    @Test func capsAnswerOverloaded() {
        var (leader, _, _) = electedLeader()
        #expect(leader.propose(.data([1, 2, 3, 4, 5, 6])) == .proposed(slot: 1))
        #expect(leader.propose(.data([1, 2, 3, 4, 5, 6])) == .overloaded, "uncommitted bytes cap")
        #expect(leader.propose(.noop) == .proposed(slot: 2))
        #expect(leader.propose(.noop) == .proposed(slot: 3))
        #expect(leader.propose(.noop) == .proposed(slot: 4))
        #expect(leader.propose(.noop) == .overloaded, "queued proposals cap")
    }

    /// A candidate proposes nothing: its driver holds appends until the election ends
    /// (ProposalTracker in PaxosLog), and looks retries up only once it leads.
    @Test func aCandidateRefusesProposals() {
        var c = PaxosCore(configuration: config(1))
        c.campaign()
        #expect(c.holdsProposals)
        #expect(c.propose(.data([1])) == .notLeader(leader: nil))
        #expect(c.takeReady().messages.allSatisfy { if case .accept = $0.message { false } else { true } })
    }

    /// A follower behind a hole holds every value it votes for; past `maxFollowerHeldBytes` it
    /// stops voting (and catches up instead), so its memory does not grow with its lag.
    @Test func aFollowerHoldingTooManyBytesStopsVoting() {
        var c = config(2)
        c.maxFollowerHeldBytes = 10
        var f = PaxosCore(configuration: c)
        let b = Ballot(round: 1, node: 1)
        func accept(_ slot: Slot) -> Bool {
            f.step(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: b, firstSlot: slot, values: [.data([UInt8](repeating: 1, count: 6))], chosenThrough: 0))))
            return f.takeReady().messagesAfterPersist.contains { if case .accepted = $0.message { true } else { false } }
        }
        #expect(accept(2), "6 bytes above the hole at slot 1 fit")
        #expect(!accept(3), "12 would not")
        #expect(f.votesWithheldForMemory == 1)
    }

    @Test func restartNeverReusesABallot() {
        var a = PaxosCore(configuration: config(1))
        a.campaign()
        let r = a.takeReady()
        var state = DurableState()
        for rec in r.records { state.apply(rec) }
        var b = PaxosCore(configuration: config(1), restoring: state)
        b.campaign()
        guard case .prepare(let p) = b.takeReady().messagesAfterPersist.first?.message else {
            Issue.record("no prepare")
            return
        }
        #expect(p.ballot > Ballot(round: 1, node: 1))
    }

    @Test func singleMemberIsALocalLog() {
        var c = PaxosCore(configuration: config(7, members: [7]))
        c.campaign()
        let r = c.takeReady()
        c.persisted(through: r.persistThrough)
        #expect(c.isLeader)
        #expect(c.propose(.data([42])) == .proposed(slot: 1))
        let r2 = c.takeReady()
        #expect(r2.chosen.isEmpty, "chosen only once its own vote is durable")
        c.persisted(through: r2.persistThrough)
        let r3 = c.takeReady()
        #expect(r3.chosen == [ChosenEntry(slot: 1, ballot: Ballot(round: 1, node: 7), value: .data([42]))])
        #expect(r3.records.isEmpty, "the chosen watermark alone waits for other records or a tick")
        c.tick()
        #expect(c.takeReady().records == [.chosen(through: 1)])
        #expect(c.propose(.data([43])) == .proposed(slot: 2))
        c.tick()
        let r4 = c.takeReady()
        #expect(r4.records.count == 1, "only the new batch: chosen through 1 is not recorded again")
    }

    @Test func acceptorRefusesBelowItsPromise() {
        var f = PaxosCore(configuration: config(2))
        f.step(Envelope(from: 3, to: 2, message: .prepare(Prepare(ballot: Ballot(round: 5, node: 3), fromSlot: 1))))
        _ = f.takeReady()
        f.step(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: 4, node: 1), firstSlot: 1, values: [.noop], chosenThrough: 0))))
        let r = f.takeReady()
        #expect(r.records.isEmpty)
        #expect(r.messages == [Envelope(from: 2, to: 1, message: .reject(Reject(ballot: Ballot(round: 4, node: 1), promised: Ballot(round: 5, node: 3))))])
    }

    /// Numbers no correct replica sends are ignored, not trusted: a promised round of 2^64 - 1
    /// made every later campaign overflow (durably, so restarts too), and an Accept for slot
    /// 2^64 - 1 trapped indexing the in-memory log.
    @Test func outOfRangeNumbersAreIgnored() {
        var f = PaxosCore(configuration: config(2))
        f.step(Envelope(from: 1, to: 2, message: .heartbeat(Heartbeat(ballot: Ballot(round: .max, node: 1), chosenThrough: 0))))
        f.step(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: 1, node: 1), firstSlot: .max, values: [.noop], chosenThrough: 0))))
        f.step(Envelope(from: 3, to: 2, message: .reject(Reject(ballot: .zero, promised: Ballot(round: Message.maxRound + 1, node: 3)))))
        let r = f.takeReady()
        #expect(r.records.isEmpty && r.messages.isEmpty && r.messagesAfterPersist.isEmpty)
        f.campaign()
        #expect(f.takeReady().records == [.promise(Ballot(round: 1, node: 2))])
    }

    /// An Accept further past the chosen watermark than `maxSlotsAhead` gets no vote (its holes
    /// would have to be held in memory): the follower still follows the leader and catches up.
    @Test func acceptFarAheadIsNotVotedOn() {
        var f = PaxosCore(configuration: config(2))
        let ballot = Ballot(round: 1, node: 1)
        let ahead = config(2).maxSlotsAhead
        #expect(ahead == 64)
        f.step(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: ballot, firstSlot: ahead + 1, values: [.noop], chosenThrough: 5))))
        var r = f.takeReady()
        #expect(r.records == [.promise(ballot)])
        #expect(r.messages == [Envelope(from: 2, to: 1, message: .catchUpRequest(CatchUpRequest(fromSlot: 1, throughSlot: 5)))])
        #expect(r.messagesAfterPersist.isEmpty)
        f.step(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: ballot, firstSlot: ahead, values: [.noop], chosenThrough: 5))))
        r = f.takeReady()
        #expect(r.messagesAfterPersist == [Envelope(from: 2, to: 1, message: .accepted(Accepted(ballot: ballot, firstSlot: ahead, lastSlot: ahead)))])
    }

    /// A candidate that a promise shows to be more than `maxSlotsAhead` behind does not lead (it
    /// would have to re-propose every slot up to there at once): it steps aside.
    @Test func candidateFarBehindStepsAside() {
        var c = PaxosCore(configuration: config(1))
        c.campaign()
        let r = c.takeReady()
        c.persisted(through: r.persistThrough)
        let ballot = Ballot(round: 1, node: 1)
        let far = Entry(slot: c.configuration.maxSlotsAhead + 1, ballot: Ballot(round: 0, node: 2), value: .noop)
        c.step(Envelope(from: 2, to: 1, message: .promise(Promise(ballot: ballot, fromSlot: 1, accepted: [far], chosenThrough: 0))))
        #expect(!c.isLeader)
        #expect(c.propose(.noop) == .notLeader(leader: nil))
    }
}
