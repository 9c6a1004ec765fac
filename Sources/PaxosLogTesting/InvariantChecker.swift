import MultiPaxos

/// Safety oracle for a simulated cluster, fed with everything every replica ever wrote or
/// learned, over all incarnations. Every check is incremental so it can run after every step.
///
/// Invariants:
/// - one value per `(slot, ballot)` across every accepted record ever written (a ballot proposes
///   one value per slot; two means a ballot was reused);
/// - at most one value is ever chosen per slot, over all replicas and all time. The oracle
///   decides "chosen" itself from every vote that counts — a vote counts once its record is
///   durable or once an Accepted vouching for it left the replica — and a majority of votes for
///   one `(slot, ballot)` chooses its value;
/// - a replica only learns values the oracle saw chosen by a majority;
/// - (durability contract, when enabled) a Prepare, Promise or Accepted leaves a replica only if
///   the promise or vote it stands for is durable there;
/// - only proposed values or no-ops are chosen;
/// - every replica learns a contiguous prefix of the one chosen sequence (prefix compatibility);
/// - a proposal acknowledged at a slot stays there forever, across restarts (the durable chosen
///   log a restarted replica recovers must agree too);
/// - a proposal identity is chosen at most once without retries; with them, a reader sees it
///   once, at the first slot holding it, and every acknowledgement names that slot; a value
///   answered "not appended" is never chosen.
public struct InvariantChecker: Sendable {
    /// Every vote ever written, indexed by `slot - 1`: the value of each ballot and a bit per
    /// node id whose vote for it counts. Arrays, not dictionaries: this runs after every step.
    var votes: [[Vote]] = []

    struct Vote: Sendable {
        var ballot: Ballot
        var value: Value
        var counted: UInt64
    }
    /// The chosen value of each slot, indexed by `slot - 1`.
    public private(set) var chosen: [Value] = []
    /// Acknowledged proposals: slot → value.
    public private(set) var acknowledged: [Slot: Value] = [:]
    /// Values clients were told were definitely not appended.
    var refused: Set<Value> = []
    /// The first slot of the learned sequence holding each proposal identity.
    var firstPosition: [ProposalID: Slot] = [:]
    /// The slot and ballot each proposal identity was first chosen at.
    var chosenIdentities: [ProposalID: (slot: Slot, ballot: Ballot)] = [:]
    /// Whether clients retry unknown outcomes. Without retries an identity is proposed once and
    /// must be chosen at most once. With them a retry may still be chosen beside a first attempt
    /// that a later leader revived (counted in `identitiesChosenTwice`; readers must see it once,
    /// at its first slot, and its appenders be answered that slot), but a leader must never
    /// propose anew an identity chosen in its ballot or an earlier one: its Phase 1 and its
    /// client sessions showed it (ClientSessions.swift).
    public var clientsRetry = false
    public private(set) var identitiesChosenTwice = 0
    /// The values of `trulyChosen`, for "never chosen" checks in O(1).
    var trulyChosenValues: Set<Value> = []
    /// Proposal ids issued so far (values are `SimulationValue.encode(id)`).
    public var issued: UInt64 = 0
    /// Number of accepted votes checked.
    public private(set) var votesChecked = 0
    /// The first violation found, if any.
    public private(set) var violation: String? = nil

    /// What the oracle saw chosen by a majority, per slot.
    public private(set) var trulyChosen: [Slot: Value] = [:]
    let majority: Int
    /// Per node: durable promise and highest durable vote per slot (for the contract check).
    var durablePromised: [NodeID: Ballot] = [:]
    var durableVote: [NodeID: [Ballot]] = [:]
    public var checkDurabilityContract = true

    public init(replicas: Int) {
        majority = replicas / 2 + 1
    }

    mutating func fail(_ s: String) {
        if violation == nil { violation = s }
    }

    /// Checks the votes in records `node` asked to persist.
    public mutating func observe(records: [DurableRecord], node: NodeID) {
        for r in records {
            switch r {
            case .accepted(let b):
                var s = b.firstSlot
                for v in b.values {
                    vote(node: node, Entry(slot: s, ballot: b.ballot, value: v))
                    s += 1
                }
            case .learned(let es):
                for e in es { vote(node: node, e) }
            case .promise, .chosen:
                break
            }
        }
    }

    /// Records `node` made durable: their votes count from now on.
    public mutating func observeDurable(records: some Sequence<DurableRecord>, node: NodeID) {
        for r in records {
            switch r {
            case .promise(let b):
                durablePromised[node] = Swift.max(durablePromised[node] ?? .zero, b)
            case .accepted(let b):
                var s = b.firstSlot
                for _ in b.values {
                    count(node: node, slot: s, ballot: b.ballot)
                    s += 1
                }
            case .learned(let es):
                for e in es { count(node: node, slot: e.slot, ballot: e.ballot) }
            case .chosen:
                break
            }
        }
    }

    /// A message left `node`: an Accepted makes its votes count; votes and promises it vouches
    /// for must already be durable.
    public mutating func observeSent(_ e: Envelope) {
        switch e.message {
        case .accepted(let a):
            if checkDurabilityContract {
                for s in a.firstSlot...a.lastSlot where durableBallot(e.from, s) < a.ballot {
                    fail("node \(e.from) sent Accepted(\(a.ballot), slot \(s)) before that vote was durable")
                    break
                }
            }
            for s in a.firstSlot...a.lastSlot { count(node: e.from, slot: s, ballot: a.ballot) }
        case .promise(let p) where checkDurabilityContract:
            if (durablePromised[e.from] ?? .zero) < p.ballot {
                fail("node \(e.from) sent Promise(\(p.ballot)) before the promise was durable")
            }
        case .prepare(let p) where checkDurabilityContract:
            if (durablePromised[e.from] ?? .zero) < p.ballot {
                fail("node \(e.from) sent Prepare(\(p.ballot)) before its ballot was durable")
            }
        default:
            break
        }
    }

    func durableBallot(_ node: NodeID, _ slot: Slot) -> Ballot {
        guard let a = durableVote[node], Int(slot) <= a.count else { return .zero }
        return a[Int(slot - 1)]
    }

    mutating func count(node: NodeID, slot: Slot, ballot: Ballot) {
        if checkDurabilityContract {
            var a = durableVote.removeValue(forKey: node) ?? []
            while a.count < Int(slot) { a.append(.zero) }
            if a[Int(slot - 1)] < ballot { a[Int(slot - 1)] = ballot }
            durableVote[node] = a
        }
        let i = Int(slot - 1)
        guard i < votes.count, let k = votes[i].firstIndex(where: { $0.ballot == ballot }) else { return }
        let bit: UInt64 = 1 << UInt64(node)
        let before = votes[i][k].counted
        guard before & bit == 0 else { return }
        let after = before | bit
        votes[i][k].counted = after
        guard after.nonzeroBitCount >= majority, before.nonzeroBitCount < majority else { return }
        let value = votes[i][k].value
        if let prior = trulyChosen[slot] {
            if prior != value {
                fail("slot \(slot): a majority accepted \(describe(value)) in ballot \(ballot) after \(describe(prior)) was chosen")
            }
        } else {
            trulyChosen[slot] = value
            trulyChosenValues.insert(value)
            if let id = value.proposalID {
                if let first = chosenIdentities[id], first.slot != slot {
                    if clientsRetry { identitiesChosenTwice += 1 }
                    else { fail("\(describe(value)) chosen at slot \(slot) after the same identity was chosen at slot \(first.slot)") }
                }
                if chosenIdentities[id] == nil { chosenIdentities[id] = (slot, ballot) }
            }
            if refused.contains(value) { fail("slot \(slot): \(describe(value)) was chosen after its append was answered \"not appended\"") }
        }
    }

    mutating func vote(node: NodeID, _ e: Entry) {
        votesChecked += 1
        let i = Int(e.slot - 1)
        while votes.count <= i { votes.append([]) }
        if let prior = votes[i].first(where: { $0.ballot == e.ballot }) {
            if prior.value != e.value {
                fail("two values for slot \(e.slot) in ballot \(e.ballot): \(describe(prior.value)) and \(describe(e.value)) (node \(node))")
            }
        } else {
            // A vote for an identity at a slot where it never stood before is a new proposal of it.
            if let id = e.value.proposalID, let first = chosenIdentities[id], first.slot != e.slot, e.ballot >= first.ballot,
               !votes[i].contains(where: { $0.value.proposalID == id }) {
                fail("\(describe(e.value)) proposed anew at slot \(e.slot) in ballot \(e.ballot), after it was chosen at slot \(first.slot) in ballot \(first.ballot): the leader had to know")
            }
            votes[i].append(Vote(ballot: e.ballot, value: e.value, counted: 0))
        }
        checkProposed(e.value, context: "node \(node) voted for slot \(e.slot)")
    }

    func checkProposed(_ v: Value) -> Bool {
        switch v {
        case .noop: return true
        case .data(let bytes), .identified(_, let bytes):
            guard let id = SimulationValue.decode(bytes) else { return false }
            return id >= 1 && id <= issued
        }
    }

    mutating func checkProposed(_ v: Value, context: String) {
        if !checkProposed(v) { fail("\(context): value \(describe(v)) was never proposed") }
    }

    /// Checks that `node` learned `entry` next: `learnedCount` is how many slots it had learned.
    public mutating func observeChosen(node: NodeID, entry: ChosenEntry, learnedCount: Int) {
        if entry.slot != Slot(learnedCount) + 1 {
            fail("node \(node) learned slot \(entry.slot) after \(learnedCount) slots (not contiguous)")
            return
        }
        checkProposed(entry.value, context: "node \(node) learned slot \(entry.slot)")
        if trulyChosen[entry.slot] != entry.value {
            fail("node \(node) learned \(describe(entry.value)) at slot \(entry.slot), which no majority accepted")
        }
        let i = Int(entry.slot - 1)
        if i < chosen.count {
            if chosen[i] != entry.value {
                fail("slot \(entry.slot): node \(node) learned \(describe(entry.value)) but \(describe(chosen[i])) was chosen before")
            }
        } else if i == chosen.count {
            extendChosen(entry.value)
        } else {
            // Cannot happen for contiguous learners; kept for clarity.
            fail("slot \(entry.slot) learned before slot \(chosen.count + 1) is known")
        }
    }

    /// A replica installed a snapshot holding `values` as the chosen prefix (each checked
    /// against what a majority chose): extend the learned sequence, so later learners are
    /// checked against it too.
    public mutating func observeInstalledSnapshot(_ values: [Value]) {
        while chosen.count < values.count { extendChosen(values[chosen.count]) }
    }

    /// Appends the next slot of the learned sequence, noting the first slot of its identity.
    mutating func extendChosen(_ value: Value) {
        chosen.append(value)
        if let id = value.proposalID, firstPosition[id] == nil { firstPosition[id] = Slot(chosen.count) }
    }

    /// The slot a reader must see `value` at, and an appender be answered: the first slot of
    /// the learned sequence holding its identity (a retried record may be chosen twice).
    func firstSlot(of value: Value, at slot: Slot) -> Slot {
        guard let id = value.proposalID, id.isRetriable else { return slot }
        return firstPosition[id] ?? slot
    }

    /// A client was told its proposal `value` is chosen at `slot`.
    public mutating func acknowledge(slot: Slot, value: Value) {
        let i = Int(slot - 1)
        guard i < chosen.count, chosen[i] == value else {
            fail("acknowledged \(describe(value)) at slot \(slot) but it is not the chosen value")
            return
        }
        if firstSlot(of: value, at: slot) != slot {
            fail("acknowledged \(describe(value)) at slot \(slot), but its identity was chosen first at slot \(firstSlot(of: value, at: slot))")
        }
        acknowledged[slot] = value
    }

    /// A client was told its append of `value` was definitely not appended: it must never be chosen.
    public mutating func refuse(_ value: Value, because reason: String) {
        // Whatever a replica learned a majority chose first (checked when it learns it).
        if trulyChosenValues.contains(value) {
            fail("\(describe(value)) was answered \"not appended\" (\(reason)) but it is chosen")
        }
        refused.insert(value)
    }

    /// A reader of `node` was given `value` at `position`: it must be the one chosen there.
    public mutating func observeRead(node: NodeID, position: Slot, value: Value) {
        let i = Int(position - 1)
        guard i < chosen.count, chosen[i] == value else {
            fail("node \(node) gave a reader \(describe(value)) at position \(position), which is not the chosen value there")
            return
        }
        if firstSlot(of: value, at: position) != position {
            fail("node \(node) gave a reader \(describe(value)) at position \(position), a repeat of its identity first chosen at \(firstSlot(of: value, at: position))")
        }
    }

    /// A reader of `node` was not given position `position`: it must hold a no-op or a repeat.
    public mutating func observeSkipped(node: NodeID, position: Slot) {
        let i = Int(position - 1)
        guard i < chosen.count else { return fail("node \(node) skipped position \(position) before it was chosen") }
        if chosen[i] != .noop, firstSlot(of: chosen[i], at: position) == position {
            fail("node \(node) hid \(describe(chosen[i])) at position \(position) from a reader")
        }
    }

    /// `node`'s disk lost its state (wiped, or cut): the durability contract starts again from
    /// what is on it now. Its earlier votes still count towards what they chose (`votes` keeps
    /// them), so a replica that votes again with amnesia shows up as a second value chosen.
    public mutating func observeDiskLoss(node: NodeID) {
        durablePromised[node] = nil
        durableVote[node] = nil
    }

    /// Checks the durable state a replica restarts from: its chosen prefix must be the chosen log.
    public mutating func observeRestart(node: NodeID, state: DurableState) {
        // Recovery may cut only what was never durable (a torn or lost unsynced tail).
        if state.promised < (durablePromised[node] ?? .zero) {
            fail("node \(node) restarted having forgotten its durable promise \(durablePromised[node]!) (recovered \(state.promised))")
            return
        }
        if checkDurabilityContract, let durable = durableVote[node] {
            var recovered: [Slot: Ballot] = [:]
            for e in state.entries {
                // A chosen value fetched by catch-up keeps the ballot of its source's vote, which
                // may be older than a vote this replica cast there (in a later ballot, for the same
                // value: every ballot after the one that chose it proposes it). It supersedes that
                // vote in the log, and the chosen record behind it may have been lost in a crash.
                if trulyChosen[e.slot] == e.value { recovered[e.slot] = Ballot(round: .max, node: .max); continue }
                recovered[e.slot] = Swift.max(recovered[e.slot] ?? .zero, e.ballot)
            }
            for (k, b) in durable.enumerated() where Slot(k + 1) > state.chosenThrough && b > .zero && (recovered[Slot(k + 1)] ?? .zero) < b {
                fail("node \(node) restarted having forgotten its durable vote in ballot \(b) for slot \(k + 1)")
                return
            }
        }
        var latest: [Slot: Value] = [:]
        for e in state.entries where e.slot <= state.chosenThrough { latest[e.slot] = e.value }
        if state.chosenThrough > state.compactedThrough {
            for s in (state.compactedThrough + 1)...state.chosenThrough {
                guard let v = latest[s] else {
                    fail("node \(node) restarted with chosen watermark \(state.chosenThrough) but no entry for slot \(s)")
                    return
                }
                let i = Int(s - 1)
                if i < chosen.count, chosen[i] != v {
                    fail("node \(node) restarted holding \(describe(v)) as chosen at slot \(s), but \(describe(chosen[i])) was chosen")
                    return
                }
                if i >= chosen.count {
                    fail("node \(node) restarted with slot \(s) chosen, beyond anything learned")
                    return
                }
            }
        }
    }

    public func describe(_ v: Value) -> String {
        switch v {
        case .noop: return "noop"
        case .data(let b): return SimulationValue.decode(b).map { "v\($0)" } ?? "\(b.count)B"
        case .identified(let id, let b): return (SimulationValue.decode(b).map { "v\($0)" } ?? "\(b.count)B") + "[\(id)]"
        }
    }
}

/// How the simulation encodes unique client values: `"v"` then the id as 8 little-endian bytes.
public enum SimulationValue {
    public static func encode(_ id: UInt64) -> [UInt8] {
        var out: [UInt8] = [0x76]
        for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: id >> (8 * UInt64(k)))) }
        return out
    }

    public static func decode(_ b: [UInt8]) -> UInt64? {
        guard b.count == 9, b[0] == 0x76 else { return nil }
        var id: UInt64 = 0
        for k in 0..<8 { id |= UInt64(b[1 + k]) << (8 * UInt64(k)) }
        return id
    }
}
