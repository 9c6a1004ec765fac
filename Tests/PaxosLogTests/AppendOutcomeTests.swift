import MultiPaxos
@testable import PaxosLog
import Testing

/// How a waiting append reads the entry chosen at its slot (``AppendOutcome``): by identity.
@Suite struct AppendOutcomeTests {
    let ours = ProposalID(client: 7, sequence: 1)
    let record: [UInt8] = [1, 2, 3]

    @Test func ourIdentityIsOursInAnyBallot() {
        for ballot in [Ballot(round: 3, node: 1), Ballot(round: 4, node: 2)] {
            let chosen = ChosenEntry(slot: 7, ballot: ballot, value: .identified(ours, record))
            #expect(AppendOutcome.of(proposed: ours, chosen: chosen) == .appended)
        }
    }

    /// After a leader change the new leader may put another client's identical record at our
    /// slot: the bytes match, the identity does not.
    @Test func sameBytesOtherIdentityIsSuperseded() {
        let other = ProposalID(client: 8, sequence: 1)
        for value in [Value.identified(other, record), .identified(ProposalID(client: 7, sequence: 2), record), .data(record), .noop] {
            let chosen = ChosenEntry(slot: 7, ballot: Ballot(round: 4, node: 2), value: value)
            #expect(AppendOutcome.of(proposed: ours, chosen: chosen) == .superseded)
        }
    }
}
