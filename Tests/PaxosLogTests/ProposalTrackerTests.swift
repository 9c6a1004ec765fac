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

    func waiter(_ bytes: [UInt8], _ ballot: Ballot, _ batch: AppendBatch) -> ProposalTracker.Waiter {
        .init(bytes: bytes, ballot: ballot, batch: batch, index: 0)
    }

    @Test func chosenInItsBallotIsAppendedOtherwiseSupersededOrUnknown() {
        let o = Outcomes()
        var t = ProposalTracker()
        t.track(slot: 1, waiter([1], b1, o.batch()), until: t0 + .seconds(1))
        t.track(slot: 2, waiter([2], b1, o.batch()), until: t0 + .seconds(1))
        t.track(slot: 3, waiter([3], b1, o.batch()), until: t0 + .seconds(1))
        let answered = t.answer([
            ChosenEntry(slot: 1, ballot: b1, value: .data([1])),  // ours, our ballot
            ChosenEntry(slot: 2, ballot: b2, value: .data([9])),  // another value
            ChosenEntry(slot: 3, ballot: b2, value: .data([3])),  // our bytes, another ballot
        ], bug: nil)
        #expect(answered == 1)
        let codes = o.all.map { r -> String in
            switch r { case .success(let s): "ok \(s)"; case .failure(let e): "\(e.code)" }
        }
        #expect(codes == ["ok [1]", "superseded", "timeout"])
        #expect(t.isEmpty)
    }

    @Test func deadlinesFailOnlyWhatIsDue() {
        let o = Outcomes()
        var t = ProposalTracker()
        t.track(slot: 5, waiter([5], b1, o.batch()), until: t0 + .seconds(2))
        t.track(slot: 4, waiter([4], b1, o.batch()), until: t0 + .seconds(1))
        t.expire(now: t0 + .milliseconds(1500), timeout: .seconds(1))
        #expect(o.all.count == 1)
        #expect(!t.isEmpty)
        _ = t.answer([ChosenEntry(slot: 5, ballot: b1, value: .data([5]))], bug: nil)
        #expect(t.isEmpty)
    }

    @Test func appendsQueuedWhileCampaigningAreTrackedOrDroppedInOrder() {
        let o = Outcomes()
        var t = ProposalTracker()
        t.queueWhileCampaigning(.init(bytes: [1], batch: o.batch(), index: 0, deadline: t0 + .seconds(1)))
        t.queueWhileCampaigning(.init(bytes: [2], batch: o.batch(), index: 0, deadline: t0 + .seconds(1)))
        t.resolveCampaign([.proposed(slot: 7, ballot: b2), .dropped(leader: 3)], node: 1)
        #expect(o.all.count == 1)
        if case .failure(let e) = o.all.first { #expect(e.code == .notLeader && e.leader == 3) } else { Issue.record("dropped append not failed") }
        _ = t.answer([ChosenEntry(slot: 7, ballot: b2, value: .data([1]))], bug: nil)
        if case .success(let slots) = o.all.last { #expect(slots == [7]) } else { Issue.record("proposed append not acknowledged") }
    }
}
