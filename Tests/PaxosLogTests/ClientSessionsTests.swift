import MultiPaxos
@testable import PaxosLog
import Testing

/// The client sessions' rules without a replica: what a retry is answered, how the table is
/// bounded, and that gaps answer "expired" rather than "absent".
@Suite struct ClientSessionsTests {
    let b1 = Ballot(round: 1, node: 1), b2 = Ballot(round: 2, node: 2)

    func id(_ client: UInt64, _ sequence: UInt64) -> ProposalID { ProposalID(client: client, sequence: sequence) }

    @Test func chosenIdentitiesAnswerTheirFirstSlot() {
        var t = ClientSessions(applied: 0)
        #expect(t.apply(slot: 1, value: .identified(id(1, 1), [1])) == nil)
        #expect(t.apply(slot: 2, value: .noop) == nil)
        // A revived first attempt beside its retry: reported as a repeat of slot 1, which it keeps.
        #expect(t.apply(slot: 3, value: .identified(id(1, 1), [1])) == 1)
        #expect(t.lookup(id(1, 1), leading: b1) == .chosen(1))
        #expect(t.lookup(id(1, 2), leading: b1) == .absent)
        #expect(t.lookup(id(2, 1), leading: b1) == .absent)
        #expect(t.applied == 3)
    }

    @Test func inFlightOnlyInTheBallotThisReplicaLeadsIn() {
        var t = ClientSessions(applied: 0)
        t.noteProposed(id(1, 1), at: 4, ballot: b1)
        #expect(t.lookup(id(1, 1), leading: b1) == .inFlight(4))
        #expect(t.lookup(id(1, 1), leading: b2) == .absent)
        t.apply(slot: 4, value: .identified(id(1, 1), [1]))
        #expect(t.lookup(id(1, 1), leading: b2) == .chosen(4))
    }

    /// Evicted identities raise their client's floor: a retry at or below it is "expired",
    /// never "absent" (which would propose it again).
    @Test func evictionRaisesTheFloor() {
        var limits = ClientSessions.Limits()
        limits.identities = 2
        var t = ClientSessions(limits: limits, applied: 0)
        for s in 1...4 { t.apply(slot: Slot(s), value: .identified(id(1, UInt64(s)), [0])) }
        #expect(t.rememberedCount == 2)
        #expect(t.lookup(id(1, 1), leading: b1) == .expired)
        #expect(t.lookup(id(1, 2), leading: b1) == .expired)
        #expect(t.lookup(id(1, 3), leading: b1) == .chosen(3))
        #expect(t.lookup(id(1, 5), leading: b1) == .absent)
    }

    /// Beyond `clients`, the least recently active silent client is forgotten whole.
    @Test func silentClientsAreForgottenOldestFirst() {
        var limits = ClientSessions.Limits()
        limits.identities = 1
        limits.clients = 2
        var t = ClientSessions(limits: limits, applied: 0)
        t.apply(slot: 1, value: .identified(id(1, 1), [0]))
        t.apply(slot: 2, value: .identified(id(2, 1), [0]))
        #expect(t.lookup(id(1, 1), leading: b1) == .expired)
        t.apply(slot: 3, value: .identified(id(3, 1), [0]))
        // Client 1 was the least recently active: forgotten, so its old retry looks new again
        // (the documented bound); client 2 is still remembered.
        #expect(t.lookup(id(1, 1), leading: b1) == .absent)
        #expect(t.lookup(id(2, 1), leading: b1) == .expired)
    }

    /// A replica that skipped slots (snapshot, compacted restart) cannot tell an absent retry
    /// from one chosen in the gap.
    @Test func aGapAnswersExpired() {
        let t = ClientSessions(applied: 10)
        #expect(t.lookup(id(1, 1), leading: b1) == .expired)
        var u = ClientSessions(applied: 0)
        u.skip(to: 5)
        #expect(u.lookup(id(1, 1), leading: b1) == .expired)
        u.apply(slot: 6, value: .identified(id(1, 1), [0]))
        #expect(u.lookup(id(1, 1), leading: b1) == .chosen(6))
    }

    /// A replica's own appends (ids with the top bit set) are never retried, never remembered.
    @Test func unretriedIdentitiesAreNotRemembered() {
        var t = ClientSessions(applied: 0)
        let own = ProposalID(client: 5 | ProposalID.unretriedBit, sequence: 1)
        t.apply(slot: 1, value: .identified(own, [0]))
        #expect(t.rememberedCount == 0)
        #expect(t.applied == 1)
    }
}
