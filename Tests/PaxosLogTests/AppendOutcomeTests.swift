import MultiPaxos
@testable import PaxosLog
import Testing

/// How a waiting append reads the entry chosen at its slot (``AppendOutcome``).
@Suite struct AppendOutcomeTests {
    let ours = Ballot(round: 3, node: 1)
    let record: [UInt8] = [1, 2, 3]

    @Test func sameBytesSameBallotIsOurs() {
        let chosen = ChosenEntry(slot: 7, ballot: ours, value: .data(record))
        #expect(AppendOutcome.of(proposed: record, under: ours, chosen: chosen) == .appended)
    }

    /// After a leader change the new leader may put another client's identical record at our
    /// slot; acknowledging would count two appends for one record.
    @Test func sameBytesOtherBallotIsUnknown() {
        let chosen = ChosenEntry(slot: 7, ballot: Ballot(round: 4, node: 2), value: .data(record))
        #expect(AppendOutcome.of(proposed: record, under: ours, chosen: chosen) == .unknown)
    }

    @Test func otherBytesAreSuperseded() {
        for value in [Value.data([9]), .noop] {
            let chosen = ChosenEntry(slot: 7, ballot: ours, value: value)
            #expect(AppendOutcome.of(proposed: record, under: ours, chosen: chosen) == .superseded)
            let later = ChosenEntry(slot: 7, ballot: Ballot(round: 4, node: 2), value: value)
            #expect(AppendOutcome.of(proposed: record, under: ours, chosen: later) == .superseded)
        }
    }
}
