import MultiPaxos
import PaxosLog

/// What the simulation watches about elections (ELECTIONS.md): how often leadership changes,
/// and the rules that keep it put. Each check names the rule it guards; each rule has a planted
/// bug (``PlantedBug``, ``ReplicaBug``) that breaks it and that the check must catch.
///
/// - A replica cut off from a majority (over links that pass votes) campaigns at most once
///   (grants it gathered before the cut may complete one pre-vote), so the round of its own
///   ballot does not keep growing (pre-vote).
/// - A replica that becomes leader was not, when it started its Phase 1, more than
///   `maxCandidateLag` slots behind a majority (caught-up leaders).
/// - A follower names a leader only if it heard from it within the election timeout (plus a
///   tick); a leader keeps leading only if it heard from a majority within two election
///   timeouts (its quorum check runs once per timeout).
/// - A replica that does not lead holds no proposed appends (honest step-down).
/// - Leadership changes stay bounded per fault (see ``SimulationOptions/maxLeaderChangesPerFault``),
///   and after the faults stop, one election at most settles it (plus one per replica still
///   restarting).
struct ElectionWatch {
    /// Per node index, while it is cut off from a majority: the round of its own ballot, and
    /// how many times it campaigned since the cut (nil while it is not cut off).
    var cutOffRound: [(round: UInt64, campaigns: Int)?]
    /// `lastHeard[to][from]`: the tick a message from `from` was last delivered to `to`.
    var lastHeard: [[Int]]
    /// Per candidate ballot: how many members were more than `maxCandidateLag` ahead of it
    /// when it started its Phase 1.
    var aheadAtCampaign: [Ballot: Int] = [:]
    /// Per pre-vote ballot: the chosen watermark each granting member reported with its grant.
    var grants: [Ballot: [Int: Slot]] = [:]

    init(replicas: Int) {
        cutOffRound = Array(repeating: nil, count: replicas)
        lastHeard = Array(repeating: Array(repeating: 0, count: replicas), count: replicas)
    }
}

extension Simulation {
    /// A replica reported its view of leadership: count elections, and check a new leader was
    /// caught up when it campaigned.
    func watchLeadership(_ l: Leadership, index i: Int) {
        let me = members[i]
        if l.leader == nil, l.ballot.node == me, !l.isLeader, l.ballot > .zero, let core = nodes[i].replica?.core {
            // It started Phase 1 for this ballot: who was far ahead of it then? A member that
            // granted its pre-vote counts as far as it said it was when it granted: what it
            // learned since (say, a catch-up reply in flight) is a race the rule cannot see.
            let mine = core.chosenThrough
            let lag = coreConfiguration(for: me, incarnation: nodes[i].incarnation).maxCandidateLag
            let granted = elections.grants.removeValue(forKey: l.ballot) ?? [:]
            var ahead = 0
            for k in nodes.indices {
                guard let current = nodes[k].replica?.core.chosenThrough else { continue }
                let c = granted[k].map { Swift.min($0, current) } ?? current
                if c > mine, c - mine > lag { ahead += 1 }
            }
            elections.aheadAtCampaign[l.ballot] = ahead
        }
        guard l.isLeader else { return }
        report.leaderChanges += 1
        if !faultsOn { report.livenessLeaderChanges += 1 }
        if let ahead = elections.aheadAtCampaign.removeValue(forKey: l.ballot), ahead >= checker.majority, options.preVote {
            checker.failElection("node \(me) won ballot \(l.ballot), but when it campaigned \(ahead) replicas (a majority) were more than maxCandidateLag slots ahead of it")
        }
    }

    /// A message was delivered: its receiver heard from its sender.
    func watchDelivery(_ e: Envelope) {
        guard let to = members.firstIndex(of: e.to), let from = members.firstIndex(of: e.from) else { return }
        elections.lastHeard[to][from] = now
        if case .preVoteReply(let r) = e.message, r.granted, r.ballot.node == e.to {
            elections.grants[r.ballot, default: [:]][from] = r.chosenThrough
        }
    }

    /// Once per tick, after every replica ticked and every message due was delivered.
    func checkElections() {
        guard checker.violation == nil else { return }
        defer { if checker.violation != nil, report.violationTick == nil { report.violationTick = now } }
        let upper = (electionTimeoutTicks ?? Self.electionTimeoutTicks).upperBound
        // Which replicas can gather a majority: components over links that pass votes. Crashed
        // replicas count: what they sent before the crash may still arrive (a grant, say),
        // while what a cut link carried is lost.
        let live = nodes.indices
        var component = Array(repeating: -1, count: nodes.count)
        for start in live where component[start] < 0 {
            var stack = [start]
            component[start] = start
            while let a = stack.popLast() {
                for b in live where component[b] < 0 && network.passesVotes(members[a], members[b]) {
                    component[b] = start
                    stack.append(b)
                }
            }
        }
        for i in nodes.indices {
            // A replica whose storage failed has stopped (no ticks, no messages) until restarted.
            guard let replica = nodes[i].replica, replica.failure == nil else {
                elections.cutOffRound[i] = nil
                continue
            }
            let me = members[i]
            let size = component.filter { $0 == component[i] }.count
            // Its own ballot: a heartbeat may still bring it a newer leader's (links that lose
            // votes carry heartbeats), which it promises without campaigning.
            let round = replica.core.ballot.round
            // Without pre-vote (measuring what it buys) a cut-off replica campaigns at will.
            if size < checker.majority, options.preVote {
                if let was = elections.cutOffRound[i], round > was.round {
                    // Grants gathered before the cut may still complete one pre-vote; a second
                    // campaign needs grants from replicas it cannot reach.
                    if was.campaigns >= 1 {
                        checker.failElection("node \(me) campaigned twice (round \(was.round) to \(round)) while cut off from a majority (pre-vote)")
                        return
                    }
                    elections.cutOffRound[i] = (round, was.campaigns + 1)
                } else if elections.cutOffRound[i] == nil {
                    elections.cutOffRound[i] = (round, 0)
                }
            } else {
                elections.cutOffRound[i] = nil
            }
            let l = replica.leadership
            if let leader = l.leader, leader != me, let k = members.firstIndex(of: leader),
               now - elections.lastHeard[i][k] > upper + 1 {
                checker.failElection("node \(me) still names node \(leader) its leader, not heard from for \(now - elections.lastHeard[i][k]) ticks (election timeout \(upper))")
                return
            }
            if l.isLeader {
                let heard = nodes.indices.filter { $0 != i && now - elections.lastHeard[i][$0] <= 2 * upper + 2 }.count
                if heard + 1 < checker.majority {
                    checker.failElection("node \(me) still leads, having heard from \(heard) others in \(2 * upper + 2) ticks (check-quorum)")
                    return
                }
            } else if replica.proposedAppends > 0 {
                checker.failElection("node \(me) does not lead (\(l)) yet holds \(replica.proposedAppends) proposed appends (honest step-down)")
                return
            }
        }
    }

    /// At the end of a run: leadership changed a bounded number of times per fault, and the
    /// liveness phase settled with few elections.
    func checkElectionCounts() {
        guard checker.violation == nil, options.preVote, options.leaderStickiness else { return }
        let faults = report.crashes + report.partitions + report.bridges + report.storageFailures + report.transfers
        let bound = options.maxLeaderChangesPerFault * (faults + 1)
        if report.leaderChanges - report.livenessLeaderChanges > bound {
            checker.failElection("liveness: \(report.leaderChanges - report.livenessLeaderChanges) leader changes during \(faults) faults (at most \(options.maxLeaderChangesPerFault) per fault, plus the first election)")
        } else if report.livenessLeaderChanges > options.maxLivenessLeaderChanges {
            checker.failElection("liveness: \(report.livenessLeaderChanges) leader changes after the faults stopped (at most \(options.maxLivenessLeaderChanges))")
        }
    }
}

extension SimulatedNetwork {
    /// Whether Phase 1 traffic can pass between `a` and `b` in both directions.
    func passesVotes(_ a: NodeID, _ b: NodeID) -> Bool {
        let ab = Envelope(from: a, to: b, message: .preVote(PreVote(ballot: .zero, chosenThrough: 0)))
        let ba = Envelope(from: b, to: a, message: .preVote(PreVote(ballot: .zero, chosenThrough: 0)))
        return !blocks(ab) && !blocks(ba)
    }
}

extension InvariantChecker {
    mutating func failElection(_ s: String) { fail("election: " + s) }
}
