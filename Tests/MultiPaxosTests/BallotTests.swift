import MultiPaxos
import Testing

@Suite struct BallotTests {
    @Test func ordersByRoundThenNode() {
        #expect(Ballot(round: 1, node: 9) < Ballot(round: 2, node: 1))
        #expect(Ballot(round: 2, node: 1) < Ballot(round: 2, node: 3))
        #expect(!(Ballot(round: 2, node: 3) < Ballot(round: 2, node: 3)))
        #expect(Ballot.zero < Ballot(round: 1, node: 0))
    }
}
