import DequeModule

/// One Multi-Paxos replica (proposer, acceptor and learner) as a deterministic state machine.
///
/// The core does no I/O and reads no clock. A driver feeds it inputs — ``step(_:)`` for a
/// received message, ``tick()`` for the passage of time, ``propose(_:)`` for a client value,
/// ``persisted(through:)`` when storage confirms records durable — and then drains the effects
/// with ``takeReady()``. See ``Ready`` for the durability contract. The same configuration, seed
/// and inputs always produce the same effects, so a simulator can replay any run from its seed.
///
/// A typical driver loop:
/// ```swift
/// var core = PaxosCore(configuration: config, restoring: storage.recoveredState())
/// while running {
///     // feed any number of inputs: core.step(envelope), core.tick(), core.propose(value)
///     let ready = core.takeReady()
///     storage.append(ready.records)                 // in order, after earlier ones
///     network.send(ready.messages)                  // may overlap the write
///     storage.whenDurable(through: ready.persistThrough) {
///         network.send(ready.messagesAfterPersist)  // votes: only once durable
///         core.persisted(through: ready.persistThrough)
///     }
///     apply(ready.chosen)
/// }
/// ```
public struct PaxosCore: Sendable {
    public let configuration: Configuration
    public var id: NodeID { configuration.id }

    enum Role: Sendable { case follower, candidate, leader }

    /// Per-follower replication state kept by a leader.
    struct Progress: Sendable {
        /// Next slot to send to this follower.
        var nextToSend: Slot = 1
        /// Unacknowledged Accept batches, oldest first.
        var inflight: Deque<(first: Slot, last: Slot, bytes: Int)> = []
        var inflightBytes = 0
        /// Ticks since the last acknowledgement while something was in flight.
        var idleTicks = 0
        /// The follower's chosen watermark, as its last heartbeat reply in this ballot said.
        var reportedChosen: Slot = 0
        /// The end of the run of slots from the start of this ballot the follower acknowledged
        /// in it (what status reports; replication itself goes by `inflight` and the acks).
        var acknowledged: Slot = 0
    }

    // MARK: Acceptor state (mirrors what was asked to be persisted)

    /// The highest ballot this acceptor promised.
    public private(set) var promised: Ballot = .zero {
        didSet { precondition(promised >= oldValue, "promise moved back from \(oldValue) to \(promised)") }
    }
    var log = SlotLog()
    /// Every slot through here is chosen and its value known to this replica.
    public private(set) var chosenThrough: Slot = 0 {
        didSet { precondition(chosenThrough >= oldValue, "chosen watermark moved back from \(oldValue) to \(chosenThrough)") }
    }

    // MARK: Roles

    var role: Role = .follower
    /// This replica's own ballot while it is candidate or leader: a leader proposes every new
    /// value in it. Public (a stored property, read in place) so a driver can note the ballot of
    /// a proposal without calling a method, which from another module copies the whole core.
    public private(set) var ballot: Ballot = .zero
    /// Payload bytes of the values this replica holds in memory (chosen ones until compacted).
    public var heldBytes: Int { log.byteCount }
    /// Accepts this replica did not vote for because its log held `maxFollowerHeldBytes`
    /// already (since it started; for tests and metrics).
    public private(set) var votesWithheldForMemory = 0
    /// Highest round seen anywhere, so a new ballot beats every ballot this replica knows of.
    var maxRoundSeen: UInt64 = 0
    /// The leader this replica follows, and its ballot.
    var leaderID: NodeID? = nil
    var leaderBallot: Ballot = .zero

    var electionElapsed = 0
    var electionTimeout = 0
    /// Ticks since this replica last heard from the leader it follows (a heartbeat or Accept in
    /// a ballot it promised); `Int.max` when it follows nobody. Drives leader stickiness and how
    /// long it keeps naming that leader.
    var leaderElapsed = Int.max
    /// Set once this replica followed a leader in this incarnation; only the planted bug
    /// `stickinessNeverExpires` reads it.
    var followedOnce = false
    var backoff = 0
    var heartbeatElapsed = 0
    var rng: SplitMix64

    // MARK: Pre-vote

    /// The ballot a running pre-vote asks about (nil when none runs). The replica is a follower
    /// meanwhile: nothing is durable, nothing is promised.
    var preVoteBallot: Ballot? = nil
    /// Members that granted the running pre-vote (bit per member index).
    var preVotesFrom: UInt64 = 0

    // MARK: Candidate

    var promisesFrom: UInt64 = 0
    var selfPromiseSeq: RecordSequence = 0
    var selfPromised = false
    var phase1From: Slot = 1
    /// Highest-ballot vote per slot reported in Phase 1 (own vote included).
    var phase1: [Slot: Entry] = [:]

    // MARK: Leader

    /// Next slot a proposal will get.
    var nextSlot: Slot = 1
    /// For slots `chosenThrough + 1 ..< nextSlot`: bit per member index that accepted in `ballot`.
    var acks: Deque<UInt64> = []
    /// Slots through here have had their own accepted record emitted (and may be sent).
    var flushedThrough: Slot = 0
    /// Own accepted records not yet known durable: the leader's own vote counts after the sync.
    var ownPending: Deque<(seq: RecordSequence, first: Slot, last: Slot)> = []
    var progress: [Progress]
    var uncommittedBytes = 0
    /// Members heard from since the last quorum check (bit per member index).
    var heardFrom: UInt64 = 0
    var quorumCheckElapsed = 0
    /// This leader's chosen watermark when its Phase 1 ended: it assigned the slots above.
    var chosenAtElection: Slot = 0
    /// A leadership transfer this leader started (PaxosCore+Transfer.swift); nil otherwise.
    public internal(set) var transfer: LeadershipTransfer? = nil

    // MARK: Learner

    /// Highest chosen watermark any leader reported.
    var knownChosen: Slot = 0
    var catchUpOutstanding = false
    var catchUpElapsed = 0

    // MARK: Output

    var lastSeq: RecordSequence = 0
    /// Highest record sequence the driver confirmed durable.
    public private(set) var durableSeq: RecordSequence = 0
    var lastChosenRecorded: Slot = 0
    /// A tick passed: the next `takeReady` records the chosen watermark even on its own.
    var chosenRecordDue = false
    var lastLeadership: Leadership
    var ready = Ready()

    let selfIndex: Int
    let quorum: Int

    /// A fresh replica, or one restarting from the durable state storage recovered.
    ///
    /// A restarted replica never reuses a ballot: every ballot it issued was persisted as a
    /// promise before any message naming it left, and its next ballot is above `promised`.
    /// - Parameters:
    ///   - configuration: members, timeouts, caps; `id` must be a member.
    ///   - state: what storage recovered (empty for a new replica).
    public init(configuration: Configuration, restoring state: DurableState = DurableState()) {
        precondition(configuration.members.contains(configuration.id), "id must be a member")
        precondition(configuration.members.count <= 64, "at most 64 members")
        self.configuration = configuration
        self.selfIndex = configuration.members.firstIndex(of: configuration.id)!
        self.quorum = configuration.quorum
        self.rng = SplitMix64(seed: configuration.randomSeed)
        self.progress = Array(repeating: Progress(), count: configuration.members.count)
        self.lastLeadership = Leadership(leader: nil, ballot: .zero, isLeader: false)

        promised = state.promised
        maxRoundSeen = state.promised.round
        log.reset(base: state.compactedThrough + 1)
        for e in state.entries where e.slot > state.compactedThrough {
            log.set(e.slot, ballot: e.ballot, value: e.value)
            maxRoundSeen = Swift.max(maxRoundSeen, e.ballot.round)
        }
        chosenThrough = Swift.max(state.chosenThrough, state.compactedThrough)
        lastChosenRecorded = chosenThrough
        knownChosen = chosenThrough
        nextSlot = chosenThrough + 1
        resetElectionTimer()
    }

    // MARK: - Observers

    /// True when this replica leads and has finished Phase 1.
    public var isLeader: Bool { role == .leader }
    /// The leader this replica knows of (itself when leading).
    public var knownLeader: NodeID? { role == .leader ? id : (role == .candidate ? nil : leaderID) }
    /// True while this replica runs a pre-vote (a follower asking whether a majority would
    /// promise its next ballot; see ELECTIONS.md).
    public var isPreVoting: Bool { preVoteBallot != nil }
    /// The value this replica holds for `slot` (its latest vote, or the chosen value at or
    /// below ``chosenThrough``).
    public func value(at slot: Slot) -> Value? { log[slot]?.value }
    /// This replica's vote for `slot`.
    public func entry(at slot: Slot) -> Entry? {
        log[slot].map { Entry(slot: slot, ballot: $0.ballot, value: $0.value) }
    }
    /// The first slot still held in memory (slots below were compacted).
    public var firstHeldSlot: Slot { log.base }
    /// One-line summary for logs and transcripts.
    public var statusDescription: String {
        let r: String
        switch role {
        case .follower:
            r = "follower(leader=\(leaderID.map(String.init) ?? "none"))" + (preVoteBallot.map { " prevote(\($0))" } ?? "")
        case .candidate: r = "candidate(\(ballot))"
        case .leader: r = "leader(\(ballot))"
        }
        return "\(r) promised=\(promised) chosen=\(chosenThrough) lastAccepted=\(log.lastFilled)"
    }

    // MARK: - Inputs

    /// Handles one message from a peer. Messages from non-members, addressed elsewhere, or with
    /// numbers no correct replica sends (``Message/outOfRange``) are ignored.
    public mutating func step(_ envelope: Envelope) {
        guard envelope.to == id, envelope.from != id,
              let from = configuration.members.firstIndex(of: envelope.from),
              envelope.message.outOfRange == nil else { return }
        switch envelope.message {
        case .prepare(let m): onPrepare(from: envelope.from, m)
        case .promise(let m): onPromise(fromIndex: from, m)
        case .reject(let m): onReject(m)
        case .accept(let m): onAccept(from: envelope.from, m)
        case .accepted(let m): onAccepted(fromIndex: from, m)
        case .heartbeat(let m): onHeartbeat(from: envelope.from, m)
        case .heartbeatReply(let m): onHeartbeatReply(fromIndex: from, m)
        case .catchUpRequest(let m): onCatchUpRequest(from: envelope.from, m)
        case .catchUpReply(let m): onCatchUpReply(from: envelope.from, m)
        case .preVote(let m): onPreVote(from: envelope.from, m)
        case .preVoteReply(let m): onPreVoteReply(fromIndex: from, m)
        case .timeoutNow(let m): onTimeoutNow(from: envelope.from, m)
        case .snapshotOffer, .snapshotChunk, .snapshotAck:
            // Snapshot transfer is file I/O: drivers carry it out (see SnapshotSender and
            // SnapshotReceiver) and report the result with installSnapshot(through:).
            break
        }
    }

    /// Advances logical time by one tick: heartbeats, election and retransmission timers.
    public mutating func tick() {
        chosenRecordDue = true
        switch role {
        case .leader:
            heartbeatElapsed += 1
            if heartbeatElapsed >= configuration.heartbeatTicks {
                heartbeatElapsed = 0
                broadcastHeartbeat()
            }
            for i in progress.indices where i != selfIndex && !progress[i].inflight.isEmpty {
                progress[i].idleTicks += 1
                if progress[i].idleTicks >= configuration.retransmitTicks { rewind(i) }
            }
            // A leader cut off from a majority steps down, so clients stop waiting on it.
            quorumCheckElapsed += 1
            if quorumCheckElapsed >= configuration.electionTimeoutTicks.upperBound, configuration.plantedBug != .noCheckQuorum {
                quorumCheckElapsed = 0
                let heard = (heardFrom | (1 << UInt64(selfIndex))).nonzeroBitCount
                heardFrom = 0
                if heard < quorum { becomeFollower(leader: nil, ballot: leaderBallot) }
            }
            if role == .leader { tickTransfer() }
        case .follower, .candidate:
            electionElapsed += 1
            if leaderElapsed < Int.max { leaderElapsed += 1 }
            // Redirect nobody rather than a leader that may be dead: clients then try elsewhere.
            if leaderID != nil, leaderElapsed >= configuration.electionTimeoutTicks.upperBound,
               configuration.plantedBug != .staleLeaderHint {
                leaderID = nil
            }
            if electionElapsed >= electionTimeout {
                if role == .candidate { backoff = Swift.min(backoff + 1, configuration.maxBackoffExponent) }
                startElection()
            }
        }
        if catchUpOutstanding {
            catchUpElapsed += 1
            if catchUpElapsed >= configuration.catchUpRetryTicks {
                catchUpOutstanding = false
                requestCatchUpIfBehind()
            }
        }
    }

    /// Offers a client value.
    ///
    /// A leader that finished Phase 1 assigns the value a slot at once and sends it with the
    /// next ``takeReady()``. It is acknowledged when that slot is reported in ``Ready/chosen``
    /// with this value in the ballot it was proposed in. A candidate answers `notLeader(nil)`, a
    /// leader handing over `notLeader(target)`: its driver holds what it is offered meanwhile
    /// (``holdsProposals``).
    /// - Returns: the slot, where to go instead, or ``ProposeResult/overloaded``.
    /// Whether values of these sizes, proposed one after another now, would all be proposed
    /// rather than refused as overloaded: what lets a replica admit a batch all or nothing.
    public func admits(_ sizes: some Sequence<Int>) -> Bool {
        guard role == .leader else { return true }
        var pending = Int(nextSlot &- 1 &- chosenThrough), bytes = uncommittedBytes
        for size in sizes {
            if pending >= configuration.maxQueuedProposals { return false }
            if pending > 0, bytes + size > configuration.maxUncommittedBytes { return false }
            pending += 1
            bytes += size
        }
        return true
    }

    /// Running Phase 1, or handing leadership over: this replica may lead soon, or its target
    /// will, so a driver holds values rather than turn clients away, and offers them again once
    /// this is false (as the leader, or failing them as not appended).
    public var holdsProposals: Bool {
        role == .candidate || (transfer != nil && configuration.plantedBug != .transferKeepsProposing)
    }

    public mutating func propose(_ value: Value) -> ProposeResult {
        guard role == .leader else { return .notLeader(leader: knownLeader) }
        if let transfer, configuration.plantedBug != .transferKeepsProposing { return .notLeader(leader: transfer.target) }
        let pending = Int(nextSlot &- 1 &- chosenThrough)
        if pending >= configuration.maxQueuedProposals { return .overloaded }
        if pending > 0, uncommittedBytes + value.byteCount > configuration.maxUncommittedBytes { return .overloaded }
        let slot = nextSlot
        nextSlot += 1
        log.set(slot, ballot: ballot, value: value)
        acks.append(0)
        uncommittedBytes += value.byteCount
        return .proposed(slot: slot)
    }

    /// The election timer fired: ask for pre-votes first (ELECTIONS.md), or campaign at once
    /// when pre-vote is off.
    mutating func startElection() {
        precondition(role != .leader, "a leader ran its election timer")
        guard configuration.preVote, configuration.plantedBug != .skipPreVote else { return campaign() }
        // A candidate whose Phase 1 timed out asks again too: its round rises only with a
        // majority's consent.
        if role == .candidate { becomeFollower(leader: nil, ballot: leaderBallot) }
        // Our timer fired: we have not heard from a leader within our election timeout.
        if configuration.plantedBug != .staleLeaderHint { leaderID = nil }
        let b = Ballot(round: Swift.max(promised.round, maxRoundSeen) + 1, node: id)
        preVoteBallot = b
        preVotesFrom = 0
        resetElectionTimer()
        // Changes no durable state and vouches for none: sent at once.
        broadcast(.preVote(PreVote(ballot: b, chosenThrough: chosenThrough)), gated: false)
        maybeWinPreVote()
    }

    mutating func maybeWinPreVote() {
        guard preVoteBallot != nil, preVotesFrom.nonzeroBitCount + 1 >= quorum else { return }
        // Only a follower pre-votes: a candidate's or leader's ballot is already promised.
        precondition(role == .follower, "a \(role) won a pre-vote")
        campaign()
    }

    /// Starts an election now, without a pre-vote or waiting for the timeout (bootstrap, tests,
    /// transfer). With ``Configuration/leaderStickiness`` on, replicas that hear a live leader
    /// ignore its Prepares, so deposing a live leader by hand needs stickiness off.
    public mutating func campaign() {
        campaign(leaderTransfer: false)
    }

    mutating func campaign(leaderTransfer: Bool) {
        preVoteBallot = nil
        role = .candidate
        leaderID = nil
        ballot = Ballot(round: Swift.max(promised.round, maxRoundSeen) + 1, node: id)
        maxRoundSeen = ballot.round
        promised = ballot
        appendRecord(.promise(ballot))
        selfPromiseSeq = lastSeq
        selfPromised = false
        promisesFrom = 0
        phase1From = chosenThrough + 1
        phase1 = [:]
        for e in log.entries(from: phase1From) { phase1[e.slot] = e }
        clearLeaderState()
        resetElectionTimer()
        let prepare = Message.prepare(Prepare(ballot: ballot, fromSlot: phase1From, leaderTransfer: leaderTransfer))
        if configuration.plantedBug == .ballotReusedAfterRestart {
            // BUG: the ballot is used before the promise naming it is durable.
            selfPromised = true
            broadcast(prepare, gated: false)
            maybeWinElection()
        } else {
            // The Prepare names a ballot; it may leave only once that ballot is durable, or a
            // restart could issue the same ballot again with other values.
            broadcast(prepare, gated: true)
            if durableSeq >= selfPromiseSeq { countSelfPromise() }
        }
    }

    /// Storage confirms every record through `sequence` durable.
    ///
    /// Call after sending the `messagesAfterPersist` of the Ready values it covers.
    public mutating func persisted(through sequence: RecordSequence) {
        guard sequence > durableSeq else { return }
        durableSeq = Swift.min(sequence, lastSeq)
        if role == .candidate, !selfPromised, durableSeq >= selfPromiseSeq { countSelfPromise() }
        if role == .leader {
            let bit: UInt64 = 1 << UInt64(selfIndex)
            while let p = ownPending.first, p.seq <= durableSeq {
                ownPending.removeFirst()
                markAcked(bit: bit, first: p.first, last: p.last)
            }
            advanceChosen()
        }
    }

    /// Forgets log entries through `slot`, which a durable snapshot now covers (`slot` must be
    /// chosen). Peers that later need them get a ``SnapshotRequest`` instead.
    public mutating func compact(through slot: Slot) {
        let through = Swift.min(slot, chosenThrough)
        log.compact(through: through)
    }

    /// Storage now durably holds a snapshot covering every slot through `slot`, received from a
    /// peer, and records every slot through it as chosen: adopt it.
    ///
    /// Call only after the snapshot file, its marker and the chosen record are durable (the
    /// durability contract: the core never acts on state a crash could take back). Votes at or
    /// below `slot` are discarded — those slots are chosen and the snapshot holds their effect —
    /// and the replica then catches up on the log after `slot`. A candidate or leader that
    /// learns it is this far behind steps down. Slots at or below ``chosenThrough`` are ignored.
    /// ``Ready/installedSnapshot`` reports the new watermark; no ``Ready/chosen`` entries are
    /// produced for the snapshot's slots.
    public mutating func installSnapshot(through slot: Slot) {
        guard slot > chosenThrough else { return }
        chosenThrough = slot
        lastChosenRecorded = Swift.max(lastChosenRecorded, slot)
        knownChosen = Swift.max(knownChosen, slot)
        log.compact(through: slot)
        if role != .follower {
            becomeFollower(leader: nil, ballot: leaderBallot)
        } else {
            clearLeaderState()
        }
        ready.installedSnapshot = slot
        catchUpOutstanding = false
        requestCatchUpIfBehind()
    }

    /// Makes the next ``takeReady()`` record the chosen watermark even with no other record to
    /// ride along with (otherwise it waits for the next tick). A driver calls this before closing,
    /// so the closed log shows every slot it knows chosen.
    public mutating func recordChosenWatermark() {
        chosenRecordDue = true
    }

    /// Drains the effects accumulated since the last call. See ``Ready`` for what the driver
    /// must do with them, and in which order.
    public mutating func takeReady() -> Ready {
        if role == .leader { flush() }
        // The chosen watermark rides along with other records and otherwise waits for the next
        // tick: it only saves a restarted replica relearning chosen slots, so it is not worth a
        // sync of its own. Written alone after every Accepted quorum, it was about a third of a
        // leader's syncs under load.
        if chosenThrough > lastChosenRecorded && (!ready.records.isEmpty || chosenRecordDue) {
            appendRecord(.chosen(through: chosenThrough))
            lastChosenRecorded = chosenThrough
        }
        chosenRecordDue = false
        let now = Leadership(leader: knownLeader, ballot: role == .follower ? leaderBallot : ballot, isLeader: role == .leader)
        if now != lastLeadership {
            lastLeadership = now
            ready.leadership = now
        }
        ready.persistThrough = lastSeq
        let out = ready
        ready = Ready()
        return out
    }

    // MARK: - Acceptor

    mutating func onPrepare(from: NodeID, _ p: Prepare) {
        // Leader stickiness: a replica that hears a live leader does not let another replica
        // depose it. Ignored, not refused: a Reject carries no ballot the candidate must beat,
        // and the round is not noted, so a disruptive replica does not raise ours either.
        // A candidate its leader handed leadership to is let through (ELECTIONS.md).
        let marked = p.leaderTransfer && configuration.plantedBug != .transferMarkIgnored
        if p.ballot > promised, !marked, hearsLiveLeader(other: from) { return }
        noteRound(p.ballot)
        guard p.ballot >= promised else {
            send(to: from, .reject(Reject(ballot: p.ballot, promised: promised)), gated: false)
            return
        }
        // A candidate that lacks slots we already compacted could not learn their values from
        // us and might fill them with no-ops: it must catch up (from a snapshot) before leading.
        guard p.fromSlot >= log.base else { return }
        if p.ballot > promised {
            promised = p.ballot
            appendRecord(.promise(p.ballot))
            if role != .follower || leaderBallot < p.ballot { becomeFollower(leader: nil, ballot: leaderBallot) }
            // Another ballot now has our promise: any pre-vote of ours is moot.
            preVoteBallot = nil
        }
        // Give the candidate time to finish before competing with it.
        electionElapsed = 0
        let reply = Promise(ballot: p.ballot, fromSlot: p.fromSlot, accepted: log.entries(from: p.fromSlot),
                            chosenThrough: chosenThrough)
        send(to: from, .promise(reply), gated: configuration.plantedBug != .promiseBeforeDurable)
    }

    mutating func onAccept(from: NodeID, _ a: Accept) {
        noteRound(a.ballot)
        if a.ballot < promised, configuration.plantedBug != .acceptBelowPromise {
            send(to: from, .reject(Reject(ballot: a.ballot, promised: promised)), gated: false)
            return
        }
        // Chosen slots keep their value: a stale leader may still be proposing another one for
        // them. Such an Accept is refused; one that carries the chosen value is an ordinary vote
        // (re-recorded in the new ballot, so the Accepted we send is backed by a durable record).
        let first = Swift.max(a.firstSlot, log.base)
        let lastSlot = a.firstSlot &+ Slot(a.values.count) &- 1
        var s = first
        while s <= chosenThrough, s <= lastSlot {
            if let held = log[s], held.value != a.values[Int(s - a.firstSlot)] {
                let higher = Swift.max(promised, held.ballot)
                send(to: from, .reject(Reject(ballot: a.ballot, promised: higher > a.ballot ? higher : Ballot(round: a.ballot.round + 1, node: 0))), gated: false)
                return
            }
            s += 1
        }
        if a.ballot > promised {
            promised = a.ballot
            appendRecord(.promise(a.ballot))
        }
        followLeader(from, ballot: a.ballot)
        // Too far ahead to vote on (see Configuration.maxSlotsAhead), or holding too many values
        // in memory already (maxFollowerHeldBytes; a follower behind a hole keeps every value it
        // votes for above it): learn, and catch up first. Not voting is always safe.
        let fits = log.byteCount + a.values.reduce(0, { $0 + $1.byteCount }) <= configuration.maxFollowerHeldBytes
            || configuration.plantedBug == .followerIgnoresHeldBytes
        if !fits { votesWithheldForMemory += 1 }
        if !a.values.isEmpty, first <= lastSlot, lastSlot <= chosenThrough + configuration.maxSlotsAhead, fits {
            let values = first == a.firstSlot ? a.values : Array(a.values[Int(first - a.firstSlot)...])
            var slot = first
            for v in values {
                log.set(slot, ballot: a.ballot, value: v)
                slot += 1
            }
            appendRecord(.accepted(AcceptedBatch(ballot: a.ballot, firstSlot: first, values: values)))
            send(to: from, .accepted(Accepted(ballot: a.ballot, firstSlot: first, lastSlot: lastSlot)),
                 gated: configuration.plantedBug != .acceptedBeforeDurable)
        }
        learn(leaderChosen: a.chosenThrough, ballot: a.ballot, leader: from)
    }

    mutating func onHeartbeat(from: NodeID, _ h: Heartbeat) {
        noteRound(h.ballot)
        guard h.ballot >= promised else {
            send(to: from, .reject(Reject(ballot: h.ballot, promised: promised)), gated: false)
            return
        }
        // Following a leader means learning chosen slots from it: promise its ballot first. A
        // deposed leader of a lower ballot that still heartbeats us is then refused; otherwise
        // our chosen watermark (learned in this newer ballot) would let it count its own,
        // different values chosen (see adoptChosen). The promise record precedes anything we
        // learn, so a restart keeps it whenever it keeps what we learned.
        if h.ballot > promised, configuration.plantedBug != .followWithoutPromise {
            promised = h.ballot
            appendRecord(.promise(h.ballot))
        }
        followLeader(from, ballot: h.ballot)
        learn(leaderChosen: h.chosenThrough, ballot: h.ballot, leader: from)
        send(to: from, .heartbeatReply(HeartbeatReply(ballot: h.ballot, chosenThrough: chosenThrough,
                                                       lastAccepted: log.lastFilled)), gated: false)
    }

    // MARK: - Learner

    /// Marks slots chosen up to the leader's watermark, but only where this replica's vote is in
    /// the leader's own ballot: an equal slot with an older ballot may hold a value that lost.
    mutating func learn(leaderChosen: Slot, ballot b: Ballot, leader: NodeID) {
        if leaderChosen > knownChosen { knownChosen = leaderChosen }
        let anyBallot = configuration.plantedBug == .chosenWithoutBallotMatch
        while chosenThrough < leaderChosen {
            let s = chosenThrough + 1
            guard let e = log[s], anyBallot || e.ballot == b else { break }
            chosenThrough = s
            ready.chosen.append(ChosenEntry(slot: s, ballot: e.ballot, value: e.value))
        }
        requestCatchUpIfBehind()
    }

    mutating func requestCatchUpIfBehind() {
        guard role != .leader, chosenThrough < knownChosen, !catchUpOutstanding, let target = leaderID else { return }
        catchUpOutstanding = true
        catchUpElapsed = 0
        send(to: target, .catchUpRequest(CatchUpRequest(fromSlot: chosenThrough + 1, throughSlot: knownChosen)), gated: false)
    }

    mutating func onCatchUpRequest(from: NodeID, _ r: CatchUpRequest) {
        guard r.fromSlot <= chosenThrough else { return }
        if r.fromSlot < log.base {
            // Seam for snapshot catch-up: the driver sends a snapshot (a later issue).
            ready.snapshotRequests.append(SnapshotRequest(peer: from, fromSlot: r.fromSlot))
            return
        }
        let through = Swift.min(r.throughSlot, chosenThrough)
        var entries: [Entry] = []
        var bytes = 0
        var s = r.fromSlot
        while s <= through, entries.count < configuration.maxCatchUpEntries {
            guard let e = log[s] else { break }
            if !entries.isEmpty, bytes + e.value.byteCount > configuration.maxCatchUpBytes { break }
            bytes += e.value.byteCount
            entries.append(Entry(slot: s, ballot: e.ballot, value: e.value))
            s += 1
        }
        send(to: from, .catchUpReply(CatchUpReply(entries: entries, chosenThrough: chosenThrough)), gated: false)
    }

    mutating func onCatchUpReply(from: NodeID, _ r: CatchUpReply) {
        // A leader's acknowledgement window starts at its chosen watermark; it never fetches.
        guard role != .leader else { return }
        catchUpOutstanding = false
        var learned: [Entry] = []
        for e in r.entries where e.slot == chosenThrough + 1 && e.slot >= log.base {
            log.set(e.slot, ballot: e.ballot, value: e.value)
            learned.append(e)
            chosenThrough = e.slot
            ready.chosen.append(ChosenEntry(slot: e.slot, ballot: e.ballot, value: e.value))
        }
        // Stored as votes so a restart keeps them; the chosen record (in takeReady) follows them.
        if !learned.isEmpty { appendRecord(.learned(learned)) }
        if r.chosenThrough > knownChosen { knownChosen = r.chosenThrough }
        if !learned.isEmpty { requestCatchUpIfBehind() }
    }

    // MARK: - Pre-vote (ELECTIONS.md)

    /// Whether this replica would keep a leader other than `from` in place: it leads (its quorum
    /// check keeps that honest), or it heard from its leader within the minimum election timeout
    /// (no correct follower of that leader has timed out yet).
    func hearsLiveLeader(other from: NodeID) -> Bool {
        guard configuration.leaderStickiness else { return false }
        if role == .leader { return true }
        if configuration.plantedBug == .stickinessNeverExpires { return followedOnce }
        return leaderID != nil && leaderID != from && leaderElapsed < configuration.electionTimeoutTicks.lowerBound
    }

    /// Answers a pre-vote. Changes nothing here: no promise, no timer, no noted round (the
    /// asker's round is speculative until a majority grants it).
    mutating func onPreVote(from: NodeID, _ m: PreVote) {
        let live = hearsLiveLeader(other: from)
        let lag = chosenThrough > m.chosenThrough ? chosenThrough - m.chosenThrough : 0
        let behind = lag > configuration.maxCandidateLag && configuration.plantedBug != .laggingCandidateWins
        send(to: from, .preVoteReply(PreVoteReply(ballot: m.ballot, granted: !live && !behind, promised: promised,
                                                  chosenThrough: chosenThrough)), gated: false)
    }

    /// Counts a pre-vote grant. A refused candidate that is behind does not catch up from the
    /// refuser: a replica learns chosen slots only from a leader whose ballot it promised (see
    /// ``adoptChosen(through:)``); it catches up once the caught-up replica leads.
    mutating func onPreVoteReply(fromIndex: Int, _ r: PreVoteReply) {
        // The Prepare that follows must beat every promise a majority holds: one round trip less.
        noteRound(r.promised)
        guard role == .follower, let b = preVoteBallot, r.ballot == b, r.granted else { return }
        preVotesFrom |= 1 << UInt64(fromIndex)
        maybeWinPreVote()
    }

    // MARK: - Candidate

    mutating func countSelfPromise() {
        selfPromised = true
        maybeWinElection()
    }

    mutating func onPromise(fromIndex: Int, _ p: Promise) {
        guard role == .candidate, p.ballot == ballot else { return }
        let bit: UInt64 = 1 << UInt64(fromIndex)
        guard promisesFrom & bit == 0 else { return }
        promisesFrom |= bit
        if let top = p.accepted.lazy.map(\.slot).max(), top > chosenThrough + configuration.maxSlotsAhead {
            // Votes this far ahead must be re-proposed, with every hole before them: more than a
            // leader may hold open. Let a replica that is less far behind lead; catch up meanwhile.
            backoff = Swift.min(backoff + 1, configuration.maxBackoffExponent)
            becomeFollower(leader: nil, ballot: leaderBallot)
            return
        }
        if configuration.plantedBug != .ignorePhase1Values {
            for e in p.accepted where e.slot >= phase1From {
                if let have = phase1[e.slot], have.ballot >= e.ballot { continue }
                phase1[e.slot] = e
            }
        }
        maybeWinElection()
    }

    mutating func maybeWinElection() {
        guard role == .candidate, selfPromised,
              promisesFrom.nonzeroBitCount + 1 >= quorum else { return }
        becomeLeader()
    }

    mutating func becomeLeader() {
        role = .leader
        leaderID = id
        leaderBallot = ballot
        backoff = 0
        heartbeatElapsed = 0
        quorumCheckElapsed = 0
        heardFrom = 0
        clearLeaderState()
        // Re-propose, in our ballot, the highest-ballot value a majority reported for every open
        // slot, and a no-op for every hole, before any new proposal.
        let start = chosenThrough + 1
        var top = chosenThrough
        for s in phase1.keys where s > top { top = s }
        if configuration.plantedBug == .ignorePhase1Values { top = Swift.max(top, log.lastFilled) }
        if top >= start {
            for s in start...top {
                let v: Value
                if configuration.plantedBug == .ignorePhase1Values {
                    v = .noop
                } else {
                    v = phase1[s]?.value ?? .noop
                }
                log.set(s, ballot: ballot, value: v)
                acks.append(0)
                uncommittedBytes += v.byteCount
            }
        }
        phase1 = [:]
        nextSlot = top + 1
        flushedThrough = chosenThrough
        chosenAtElection = chosenThrough
        for i in progress.indices { progress[i] = Progress(nextToSend: start) }
        broadcastHeartbeat()
    }

    mutating func onReject(_ r: Reject) {
        noteRound(r.promised)
        guard role != .follower, r.ballot == ballot, r.promised > ballot else { return }
        backoff = Swift.min(backoff + 1, configuration.maxBackoffExponent)
        becomeFollower(leader: nil, ballot: leaderBallot)
    }

    // MARK: - Leader

    mutating func onAccepted(fromIndex: Int, _ a: Accepted) {
        guard role == .leader, a.ballot == ballot, a.firstSlot <= a.lastSlot else { return }
        let bit: UInt64 = 1 << UInt64(fromIndex)
        heardFrom |= bit
        if let k = progress[fromIndex].inflight.firstIndex(where: { $0.first == a.firstSlot && $0.last == a.lastSlot }) {
            progress[fromIndex].inflightBytes -= progress[fromIndex].inflight[k].bytes
            progress[fromIndex].inflight.remove(at: k)
            progress[fromIndex].idleTicks = 0
        }
        if a.firstSlot <= Swift.max(progress[fromIndex].acknowledged, chosenAtElection) + 1 {
            progress[fromIndex].acknowledged = Swift.max(progress[fromIndex].acknowledged, a.lastSlot)
        }
        markAcked(bit: bit, first: a.firstSlot, last: a.lastSlot)
        advanceChosen()
    }

    mutating func onHeartbeatReply(fromIndex: Int, _ r: HeartbeatReply) {
        guard role == .leader, r.ballot == ballot else { return }
        heardFrom |= 1 << UInt64(fromIndex)
        progress[fromIndex].reportedChosen = Swift.max(progress[fromIndex].reportedChosen, r.chosenThrough)
        if r.chosenThrough > chosenThrough { adoptChosen(through: r.chosenThrough) }
        if transfer != nil { tellTransferTarget() }
    }

    /// A follower knows slots are chosen that this leader has not counted: it may have compacted
    /// them (or installed a snapshot over them) and can no longer vote for them in this ballot,
    /// so waiting for its Accepted could wait forever. Having finished Phase 1, this leader's
    /// value for every open slot is the one a majority may have chosen (a chosen value is
    /// re-proposed by every later ballot), so it may count those slots chosen at once.
    ///
    /// That holds only for values chosen in ballots up to ours. The follower answered our
    /// heartbeat, so its promise is at most our ballot, and it learns chosen slots only from
    /// leaders it promised (``onHeartbeat(from:_:)``, ``onAccept(from:_:)``): its knowledge
    /// comes from a ballot no newer than ours.
    mutating func adoptChosen(through peerChosen: Slot) {
        let limit = Swift.min(peerChosen, nextSlot &- 1)
        while chosenThrough < limit, !acks.isEmpty, let e = log[chosenThrough + 1] {
            acks.removeFirst()
            chosenThrough += 1
            uncommittedBytes -= e.value.byteCount
            ready.chosen.append(ChosenEntry(slot: chosenThrough, ballot: e.ballot, value: e.value))
        }
        knownChosen = Swift.max(knownChosen, chosenThrough)
    }

    mutating func markAcked(bit: UInt64, first: Slot, last: Slot) {
        let lo = Swift.max(first, chosenThrough + 1)
        let hi = Swift.min(last, nextSlot - 1)
        guard lo <= hi else { return }
        let base = chosenThrough + 1
        for s in lo...hi { acks[Int(s - base)] |= bit }
    }

    mutating func advanceChosen() {
        while let m = acks.first, m.nonzeroBitCount >= quorum {
            acks.removeFirst()
            chosenThrough += 1
            let e = log[chosenThrough]!
            uncommittedBytes -= e.value.byteCount
            ready.chosen.append(ChosenEntry(slot: chosenThrough, ballot: e.ballot, value: e.value))
        }
        knownChosen = Swift.max(knownChosen, chosenThrough)
    }

    /// Emits the leader's own accepted records for new slots and sends Accepts within each
    /// follower's window. The own record and the Accepts leave together: the leader's vote is
    /// written in parallel with the followers' and counted once durable.
    mutating func flush() {
        // The leader's ack window holds one entry per open slot, chosenThrough + 1 ..< nextSlot.
        precondition(acks.count == Int(nextSlot &- 1 &- chosenThrough), "ack window of \(acks.count) for slots \(chosenThrough + 1)..<\(nextSlot)")
        while flushedThrough + 1 < nextSlot {
            let first = flushedThrough + 1
            let last = batchEnd(from: first)
            let values = log.values(first, last)
            appendRecord(.accepted(AcceptedBatch(ballot: ballot, firstSlot: first, values: values)))
            ownPending.append((lastSeq, first, last))
            flushedThrough = last
            // Steady state: every follower is at `first`, so they all share this one array.
            for i in progress.indices where i != selfIndex && progress[i].nextToSend == first && canSend(i) {
                sendBatch(i, first: first, last: last, values: values)
            }
        }
        for i in progress.indices where i != selfIndex { sendWindow(i) }
    }

    func batchEnd(from first: Slot) -> Slot {
        var last = first
        var bytes = log[first]?.value.byteCount ?? 0
        let limit = Swift.min(nextSlot - 1, first + Slot(configuration.maxBatchCount) - 1)
        while last < limit {
            let b = log[last + 1]?.value.byteCount ?? 0
            if bytes + b > configuration.maxBatchBytes { break }
            bytes += b
            last += 1
        }
        return last
    }

    func canSend(_ i: Int) -> Bool {
        progress[i].inflight.count < configuration.maxInflightBatches
            && progress[i].inflightBytes < configuration.maxInflightBytes
    }

    mutating func sendWindow(_ i: Int) {
        while progress[i].nextToSend <= flushedThrough, canSend(i) {
            var first = progress[i].nextToSend
            if first < log.base {
                // The follower needs compacted slots: only a snapshot helps it (later issue).
                ready.snapshotRequests.append(SnapshotRequest(peer: configuration.members[i], fromSlot: first))
                first = log.base
                progress[i].nextToSend = first
                if first > flushedThrough { break }
            }
            var last = first
            var bytes = log[first]?.value.byteCount ?? 0
            let limit = Swift.min(flushedThrough, first + Slot(configuration.maxBatchCount) - 1)
            while last < limit {
                let b = log[last + 1]?.value.byteCount ?? 0
                if bytes + b > configuration.maxBatchBytes { break }
                bytes += b
                last += 1
            }
            sendBatch(i, first: first, last: last, values: log.values(first, last))
        }
    }

    mutating func sendBatch(_ i: Int, first: Slot, last: Slot, values: [Value]) {
        var bytes = 0
        for v in values { bytes += v.byteCount }
        progress[i].inflight.append((first, last, bytes))
        progress[i].inflightBytes += bytes
        progress[i].nextToSend = last + 1
        send(to: configuration.members[i],
             .accept(Accept(ballot: ballot, firstSlot: first, values: values, chosenThrough: chosenThrough)), gated: false)
    }

    /// Go-back-N: resend from the first slot this follower has not acknowledged.
    mutating func rewind(_ i: Int) {
        let bit: UInt64 = 1 << UInt64(i)
        var start = nextSlot
        for (k, m) in acks.enumerated() where m & bit == 0 {
            start = chosenThrough + 1 + Slot(k)
            break
        }
        progress[i].inflight.removeAll()
        progress[i].inflightBytes = 0
        progress[i].idleTicks = 0
        progress[i].nextToSend = start
    }

    mutating func broadcastHeartbeat() {
        broadcast(.heartbeat(Heartbeat(ballot: ballot, chosenThrough: chosenThrough)), gated: false)
    }

    // MARK: - Role changes

    /// Follows the leader of `ballot` (already checked to be at or above our promise).
    mutating func followLeader(_ leader: NodeID, ballot b: Ballot) {
        if role != .follower || leaderID != leader || leaderBallot != b {
            if role != .follower { becomeFollower(leader: leader, ballot: b) }
            leaderID = leader
            leaderBallot = b
        }
        // An established leader: competition is over.
        backoff = 0
        electionElapsed = 0
        leaderElapsed = 0
        followedOnce = true
        preVoteBallot = nil
    }

    mutating func becomeFollower(leader: NodeID?, ballot b: Ballot) {
        role = .follower
        leaderID = leader
        leaderBallot = b
        // Following nobody: stickiness protects no one (see hearsLiveLeader).
        if leader == nil { leaderElapsed = Int.max }
        preVoteBallot = nil
        clearLeaderState()
        phase1 = [:]
        resetElectionTimer()
    }

    mutating func clearLeaderState() {
        transfer = nil
        acks.removeAll()
        ownPending.removeAll()
        uncommittedBytes = 0
        nextSlot = chosenThrough + 1
        flushedThrough = chosenThrough
        catchUpOutstanding = false
    }

    mutating func resetElectionTimer() {
        electionElapsed = 0
        let r = configuration.electionTimeoutTicks
        var t = r.lowerBound + rng.below(r.upperBound - r.lowerBound + 1)
        if backoff > 0 { t += rng.below(r.upperBound * ((1 << backoff) - 1) + 1) }
        electionTimeout = t
    }

    mutating func noteRound(_ b: Ballot) {
        if b.round > maxRoundSeen { maxRoundSeen = b.round }
    }

    // MARK: - Output helpers

    mutating func appendRecord(_ r: DurableRecord) {
        lastSeq += 1
        ready.records.append(r)
    }

    mutating func send(to: NodeID, _ m: Message, gated: Bool) {
        let env = Envelope(from: id, to: to, message: m)
        if gated { ready.messagesAfterPersist.append(env) } else { ready.messages.append(env) }
    }

    mutating func broadcast(_ m: Message, gated: Bool) {
        for peer in configuration.members where peer != id { send(to: peer, m, gated: gated) }
    }
}
