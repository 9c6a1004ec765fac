/// Everything a ``PaxosCore`` needs to know that is not durable state: who it is, who its peers
/// are, how long its timers run (in ticks, since the core has no clock) and how much it may have
/// in flight.
public struct Configuration: Sendable, Hashable {
    /// This replica's id; must appear in `members`.
    public var id: NodeID
    /// Every member of the cluster, this replica included (3, 5, 7…; 1 is a local WAL).
    public var members: [NodeID]

    /// A leader sends a heartbeat to every follower this often.
    public var heartbeatTicks: Int = 2
    /// A follower that hears nothing from a leader for a random number of ticks in
    /// `electionTimeoutTicks` campaigns. Randomisation keeps candidates from colliding forever.
    /// Default 15...30 (150–300 ms at the facade's 10 ms tick).
    public var electionTimeoutTicks: ClosedRange<Int> = 15...30
    /// After each election lost to a competing ballot the timeout range is multiplied by up to
    /// `2^maxBackoffExponent` (randomised), the backoff that breaks duelling-proposer livelock.
    public var maxBackoffExponent: Int = 3
    /// A replica whose election timer fires first asks a majority whether they would promise
    /// (a pre-vote, which changes no durable state) and raises its round only if they would.
    /// A replica cut off from a majority therefore keeps its round, and cannot depose a healthy
    /// leader when it comes back. Safety does not depend on it (ELECTIONS.md). Default true.
    public var preVote: Bool = true
    /// A replica that heard from its leader within the minimum election timeout (and a leader,
    /// which hears from a majority) refuses pre-votes and ignores Prepares of a higher ballot from
    /// other replicas: a live leader is not deposed by a replica that merely stopped hearing it.
    /// Safety does not depend on it (ELECTIONS.md). Turn it off only to depose a live leader by
    /// hand (``PaxosCore/campaign()``) in tests. Default true.
    public var leaderStickiness: Bool = true
    /// A replica refuses its pre-vote to a candidate whose chosen watermark is more than this
    /// many slots below its own: a far-behind replica does not lead while a caught-up one can
    /// (it catches up from the refuser meanwhile). Followers of a live leader differ by about one
    /// batch; a replica that was restarted or cut off is usually thousands behind. Default 1024.
    public var maxCandidateLag: Slot = 1024

    /// A leader that has sent Accepts to a follower and heard no Accepted for this many ticks
    /// resends everything that follower has not acknowledged (go-back-N).
    public var retransmitTicks: Int = 6
    /// A catch-up request that got no answer for this many ticks is sent again.
    public var catchUpRetryTicks: Int = 6

    /// Most slots in one Accept message (and in one accepted-batch record). Default 512.
    public var maxBatchCount: Int = 512
    /// Most payload bytes in one Accept message (a single larger value still travels alone).
    public var maxBatchBytes: Int = 1 << 20
    /// Most Accept messages unacknowledged per follower (pipelining depth).
    public var maxInflightBatches: Int = 8
    /// Most payload bytes unacknowledged per follower. Default 16 MiB.
    public var maxInflightBytes: Int = 16 << 20
    /// Most payload bytes a leader holds proposed but not yet chosen; beyond it `propose` answers
    /// ``ProposeResult/overloaded``.
    public var maxUncommittedBytes: Int = 64 << 20
    /// Most proposals a leader holds proposed but not yet chosen; beyond it `propose` answers
    /// ``ProposeResult/overloaded``.
    public var maxQueuedProposals: Int = 65_536
    /// Most payload bytes a follower's log may hold, chosen or not, before it stops voting: a
    /// follower behind a hole holds every value it votes for above the hole until the hole is
    /// filled, so without this its memory would grow with its lag (up to ``maxSlotsAhead``
    /// slots of any size). It catches up instead, learning those slots as chosen. A healthy
    /// follower holds a leader's open slots (``maxUncommittedBytes``) plus the chosen values its
    /// driver keeps in memory: set it well above both (PaxosLog sets twice the first plus the
    /// second). Default 144 MiB.
    public var maxFollowerHeldBytes: Int = 144 << 20
    /// Most entries in one catch-up reply.
    public var maxCatchUpEntries: Int = 1024
    /// Most payload bytes in one catch-up reply.
    public var maxCatchUpBytes: Int = 4 << 20

    /// Seed of the core's only source of randomness (election timeouts). Give every replica a
    /// different seed; the same seed and the same inputs give the same outputs.
    public var randomSeed: UInt64 = 0

    /// Deliberately broken behaviours the simulation must catch. Only tests may set this.
    @_spi(Testing) public var plantedBug: PlantedBug? = nil

    /// The defaults, in one place: ``PaxosLog``'s configuration takes its consensus defaults from here.
    public static let defaults = Configuration(id: 1, members: [1])

    public init(id: NodeID, members: [NodeID], randomSeed: UInt64 = 0) {
        self.id = id
        self.members = members
        self.randomSeed = randomSeed
    }

    /// Most slots past its chosen watermark a replica votes for, or re-proposes after Phase 1:
    /// 16 × `maxQueuedProposals`, well past any leader's open slots (at most
    /// `maxQueuedProposals` past its watermark). A replica further behind catches up first. Bounds
    /// the memory one Accept or Promise can make a replica reserve for its slots and the holes
    /// before them.
    public var maxSlotsAhead: Slot {
        let queued = Slot(Swift.max(maxQueuedProposals, 1))
        return queued > Message.maxSlot / 16 ? Message.maxSlot : 16 * queued
    }

    /// Acceptors needed to choose a value or to win Phase 1: a strict majority.
    public var quorum: Int {
        if plantedBug == .quorumHalf { return Swift.max(1, members.count / 2) }
        return members.count / 2 + 1
    }
}

/// Deliberately broken variants of the core. Each one breaks a rule the design depends on; the
/// simulation tests assert that the invariant checker notices every one of them.
@_spi(Testing) public enum PlantedBug: String, Sendable, Hashable, CaseIterable {
    /// An acceptor accepts values in a ballot below the one it promised.
    case acceptBelowPromise
    /// An acceptor answers Prepare before its promise record is durable.
    case promiseBeforeDurable
    /// A new leader ignores values reported in Phase 1 and fills every open slot with a no-op.
    case ignorePhase1Values
    /// A follower marks a slot chosen whenever it holds any value for it, whatever the ballot.
    case chosenWithoutBallotMatch
    /// Quorums of `n/2` instead of a strict majority.
    case quorumHalf
    /// A candidate uses its ballot before the promise naming it is durable, so a restart before
    /// the sync picks the same ballot again for different values.
    case ballotReusedAfterRestart
    /// An acceptor answers Accept before its accepted record is durable.
    case acceptedBeforeDurable
    /// A follower follows a higher-ballot leader by heartbeat without promising its ballot, so
    /// it may answer a deposed leader's heartbeat with chosen slots learned from the newer one
    /// (the bug fixed by "A follower promises the ballot of a leader it follows by heartbeat").
    case followWithoutPromise
    /// A replica whose election timer fires raises its round and sends Prepares at once, without
    /// a pre-vote: a replica cut off from a majority keeps raising its round, and deposes the
    /// leader when it comes back.
    case skipPreVote
    /// Leader stickiness that never expires: a replica that has once followed a leader in this
    /// incarnation refuses every pre-vote and ignores every higher Prepare from another replica,
    /// even after that leader really failed (liveness: no leader, forever).
    case stickinessNeverExpires
    /// A replica grants its pre-vote however far behind the candidate is.
    case laggingCandidateWins
    /// A follower votes however many bytes of values its log holds already
    /// (``Configuration/maxFollowerHeldBytes`` ignored).
    case followerIgnoresHeldBytes
    /// A follower keeps naming a leader it has not heard from for longer than the election
    /// timeout, so clients are redirected to a dead leader.
    case staleLeaderHint
    /// A leader never checks its quorum: cut off from a majority, it keeps leading (and holding
    /// appends) until it hears of a higher ballot.
    case noCheckQuorum
    /// A leader handing leadership over keeps assigning slots to new values, so its target may
    /// never catch up, and what it assigned after telling the target to campaign is cut off.
    case transferKeepsProposing
    /// A leader tells its transfer target to campaign at once, without waiting until the target
    /// reported every slot the leader assigned chosen.
    case transferToLaggingTarget
    /// Replicas apply leader stickiness to a transfer target's Prepares too (the `leaderTransfer`
    /// mark ignored), so a target told to campaign is ignored while the old leader lives.
    case transferMarkIgnored
}
