import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
@testable import PaxosLog
import Testing

/// The outcome rules of appends, without a replica: by ballot and value, by deadline, by election.
@Suite struct ProposalTrackerTests {
    final class Outcomes: Sendable {
        let box = NIOLockedValueBox<[Result<[Slot], PaxosLogError>]>([])
        var all: [Result<[Slot], PaxosLogError>] { box.withLockedValue { $0 } }
        func batch() -> AppendBatch { AppendBatch(count: 1, .callback { r in self.box.withLockedValue { $0.append(r) } }) }
    }

    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let b1 = Ballot(round: 1, node: 1), b2 = Ballot(round: 2, node: 2)

    func waiter(_ bytes: [UInt8], _ sequence: UInt64, _ batch: AppendBatch) -> ProposalTracker.Waiter {
        .init(id: ProposalID(client: 1, sequence: sequence), batch: batch, index: 0)
    }

    @Test func chosenWithItsIdentityIsAppendedOtherwiseSuperseded() {
        let o = Outcomes()
        var t = ProposalTracker()
        t.track(slot: 1, waiter([1], 1, o.batch()), until: t0 + .seconds(1))
        t.track(slot: 2, waiter([2], 2, o.batch()), until: t0 + .seconds(1))
        t.track(slot: 3, waiter([3], 3, o.batch()), until: t0 + .seconds(1))
        let answered = t.answer([
            ChosenEntry(slot: 1, ballot: b2, value: .identified(ProposalID(client: 1, sequence: 1), [1])),  // ours, re-proposed
            ChosenEntry(slot: 2, ballot: b2, value: .identified(ProposalID(client: 9, sequence: 1), [9])),  // another value
            ChosenEntry(slot: 3, ballot: b1, value: .identified(ProposalID(client: 9, sequence: 2), [3])),  // our bytes, another client
        ], firstSlots: [:], bug: nil)
        #expect(answered == 1)
        let codes = o.all.map { r -> String in
            switch r { case .success(let s): "ok \(s)"; case .failure(let e): "\(e.code) \(e.outcome!.rawValue)" }
        }
        #expect(codes == ["ok [1]", "superseded not appended", "superseded not appended"])
        #expect(t.isEmpty)
    }

    @Test func aRepeatIsAnsweredAtTheFirstSlotOfItsIdentity() {
        let o = Outcomes()
        var t = ProposalTracker()
        t.track(slot: 7, waiter([7], 4, o.batch()), until: t0 + .seconds(1))
        _ = t.answer([ChosenEntry(slot: 7, ballot: b2, value: .identified(ProposalID(client: 1, sequence: 4), [7]))], firstSlots: [7: 3], bug: nil)
        #expect(o.all.count == 1)
        #expect(o.all.allSatisfy { if case .success([3]) = $0 { true } else { false } })
    }

    @Test func retriesSharingASlotHearTheSameOutcome() {
        let o = Outcomes()
        var t = ProposalTracker()
        t.track(slot: 4, waiter([4], 4, o.batch()), until: t0 + .seconds(1))
        t.share(slot: 4, waiter([4], 4, o.batch()), until: t0 + .seconds(1))
        _ = t.answer([ChosenEntry(slot: 4, ballot: b1, value: .identified(ProposalID(client: 1, sequence: 4), [4]))], firstSlots: [:], bug: nil)
        #expect(o.all.count == 2)
        #expect(o.all.allSatisfy { if case .success([4]) = $0 { true } else { false } })
    }

    @Test func deadlinesFailOnlyWhatIsDue() {
        let o = Outcomes()
        var t = ProposalTracker()
        t.track(slot: 5, waiter([5], 5, o.batch()), until: t0 + .seconds(2))
        t.track(slot: 4, waiter([4], 4, o.batch()), until: t0 + .seconds(1))
        t.expire(now: t0 + .milliseconds(1500), timeout: .seconds(1))
        #expect(o.all.count == 1)
        if case .failure(let e) = o.all.first { #expect(e.outcome == .unknown) }
        #expect(!t.isEmpty)
        _ = t.answer([ChosenEntry(slot: 5, ballot: b1, value: .identified(ProposalID(client: 1, sequence: 5), [5]))], firstSlots: [:], bug: nil)
        #expect(t.isEmpty)
    }

    /// Held while campaigning: never offered to consensus, so a deadline or a lost election
    /// says "not appended".
    @Test func appendsHeldWhileCampaigningFailAsNotAppended() {
        let o = Outcomes()
        var t = ProposalTracker()
        t.hold(.init(id: ProposalID(client: 1, sequence: 1), isRetry: false, bytes: [1], batch: o.batch(), index: 0, deadline: t0 + .seconds(1)))
        t.hold(.init(id: ProposalID(client: 1, sequence: 2), isRetry: false, bytes: [2], batch: o.batch(), index: 0, deadline: t0 + .seconds(3)))
        t.expire(now: t0 + .seconds(2), timeout: .seconds(1))
        t.failHeld(PaxosLogError(.notLeader, "lost", leader: 3))
        #expect(o.all.count == 2)
        for r in o.all { if case .failure(let e) = r { #expect(e.outcome == .notAppended) } else { Issue.record("held append acknowledged") } }
        #expect(t.isEmpty)
    }
}
