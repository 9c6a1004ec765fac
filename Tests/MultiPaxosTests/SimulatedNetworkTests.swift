import MultiPaxos
import PaxosLogTesting
import Testing

@Suite struct SimulatedNetworkTests {
    /// A link blocking votes loses Prepares and Accepts (and their answers) in both directions,
    /// carries heartbeats and catch-up, and heals like a cut link.
    @Test func blockedVotesPassOnlyTheRest() {
        var net = SimulatedNetwork()
        net.maxDelay = 1
        var rng = SplitMix64(seed: 7)
        let b = Ballot(round: 2, node: 1)
        let votes: [Message] = [.prepare(Prepare(ballot: b, fromSlot: 1)), .accept(Accept(ballot: b, firstSlot: 1, values: [.noop], chosenThrough: 0)),
                                .reject(Reject(ballot: b, promised: b))]
        let rest: [Message] = [.heartbeat(Heartbeat(ballot: b, chosenThrough: 0)), .catchUpRequest(CatchUpRequest(fromSlot: 1, throughSlot: 1))]
        net.blockVotes(1, 2)
        for m in votes + rest {
            net.send(Envelope(from: 1, to: 2, message: m), now: 0, rng: &rng)
            net.send(Envelope(from: 2, to: 1, message: m), now: 0, rng: &rng)
            net.send(Envelope(from: 1, to: 3, message: m), now: 0, rng: &rng)
        }
        let due = net.due(now: 1, rng: &rng)
        #expect(due.filter { $0.to != 3 }.map(\.message).sorted { "\($0)" < "\($1)" } == (rest + rest).sorted { "\($0)" < "\($1)" })
        #expect(due.filter { $0.to == 3 }.count == votes.count + rest.count)
        net.heal(2, 1)
        net.send(Envelope(from: 1, to: 2, message: votes[0]), now: 1, rng: &rng)
        #expect(net.due(now: 2, rng: &rng).map(\.message) == [votes[0]])
    }
}
