/// Position of a record in the stream of records a ``PaxosCore`` asks its driver to persist.
/// Records are numbered from 1 in the order they appear in successive ``Ready`` values; 0 means
/// "no record".
public typealias RecordSequence = UInt64

/// Acceptor state the driver must make durable, in order. The storage engine maps each case to
/// its own record type; a later record for a slot supersedes an earlier one.
public enum DurableRecord: Hashable, Sendable {
    /// The acceptor promised `ballot`: it will never again accept or promise below it.
    case promise(Ballot)
    /// The acceptor accepted `values` in `ballot` for slots `firstSlot ..< firstSlot + values.count`.
    case accepted(AcceptedBatch)
    /// Chosen entries this replica fetched from a peer; store them as accepted entries (each with
    /// its own ballot). They are always followed by a `chosen` record covering them.
    case learned([Entry])
    /// Every slot up to `through` is chosen and its value is in an earlier record.
    case chosen(through: Slot)
}

/// One accepted batch: contiguous slots, one ballot.
public struct AcceptedBatch: Hashable, Sendable {
    public var ballot: Ballot
    public var firstSlot: Slot
    public var values: [Value]

    public init(ballot: Ballot, firstSlot: Slot, values: [Value]) {
        self.ballot = ballot
        self.firstSlot = firstSlot
        self.values = values
    }

    /// The last slot of the batch (`firstSlot - 1` when empty).
    public var lastSlot: Slot { firstSlot &+ Slot(values.count) &- 1 }
}

/// A slot this replica has learned is chosen, with its value.
public struct ChosenEntry: Hashable, Sendable {
    public var slot: Slot
    /// The ballot of this replica's vote for the chosen value (a majority accepted the value,
    /// not necessarily in this ballot). A leader proposes at most one value per slot in a
    /// ballot, so a proposer that sees its own ballot here knows the value is the one it proposed;
    /// a different ballot may carry the same bytes from another client.
    public var ballot: Ballot
    public var value: Value

    public init(slot: Slot, ballot: Ballot, value: Value) {
        self.slot = slot
        self.ballot = ballot
        self.value = value
    }
}

/// What a replica believes about leadership, reported whenever it changes.
public struct Leadership: Hashable, Sendable, CustomStringConvertible {
    /// The leader this replica follows (itself when leading), if it knows one.
    public var leader: NodeID?
    /// The ballot of that leader (or of this replica's own candidacy).
    public var ballot: Ballot
    /// True when this replica has finished Phase 1 and accepts proposals.
    public var isLeader: Bool

    public init(leader: NodeID?, ballot: Ballot, isLeader: Bool) {
        self.leader = leader
        self.ballot = ballot
        self.isLeader = isLeader
    }

    public var description: String {
        "leader=\(leader.map(String.init) ?? "none") ballot=\(ballot)\(isLeader ? " (self)" : "")"
    }
}

/// A peer needs slots this replica has already compacted away; the driver must send it a
/// snapshot (``SnapshotOffer``, ``SnapshotChunk``, ``SnapshotAck``; see ``SnapshotSender``).
public struct SnapshotRequest: Hashable, Sendable {
    public var peer: NodeID
    /// The first slot the peer is missing.
    public var fromSlot: Slot

    public init(peer: NodeID, fromSlot: Slot) {
        self.peer = peer
        self.fromSlot = fromSlot
    }
}

/// The effects a ``PaxosCore`` asks for, drained with ``PaxosCore/takeReady()``.
///
/// The driver handles a `Ready` in this order, which is the whole durability contract:
/// 1. Append `records` to stable storage, after every record of earlier `Ready` values
///    (storage is a log: records become durable as a prefix).
/// 2. Send `messages` at any time, even before step 1 finishes: none of them vouches for a record
///    that is not durable yet. (A leader's Accepts are here: it writes its own vote in parallel.)
/// 3. Send `messagesAfterPersist` only once every record through `persistThrough` is durable:
///    they are Promises and Accepteds, votes that must survive a crash. If the replica crashes
///    first, drop them.
/// 4. Call ``PaxosCore/persisted(through:)`` with the highest durable record sequence, so the
///    leader can count its own votes.
/// 5. Apply `chosen` in order; answer client proposals whose slot became chosen.
public struct Ready: Sendable {
    /// Records to append, in order. The first has sequence `persistThrough - records.count + 1`.
    public var records: [DurableRecord] = []
    /// Sequence number of the last record this replica has asked for, in this or an earlier Ready.
    public var persistThrough: RecordSequence = 0
    /// Messages safe to send immediately.
    public var messages: [Envelope] = []
    /// Messages that may only be sent after every record through `persistThrough` is durable.
    public var messagesAfterPersist: [Envelope] = []
    /// Newly chosen entries, contiguous, in slot order, continuing the previous Ready's.
    public var chosen: [ChosenEntry] = []
    /// Set when leadership (as this replica sees it) changed since the last Ready.
    public var leadership: Leadership? = nil
    /// Peers that need a snapshot because the log they lack was compacted.
    public var snapshotRequests: [SnapshotRequest] = []
    /// Set when ``PaxosCore/installSnapshot(through:)`` moved the chosen watermark to this slot:
    /// the application must reload its state from the snapshot before applying `chosen`.
    public var installedSnapshot: Slot? = nil

    public init() {}

    /// True when there is nothing to do.
    public var isEmpty: Bool {
        records.isEmpty && messages.isEmpty && messagesAfterPersist.isEmpty && chosen.isEmpty
            && leadership == nil && snapshotRequests.isEmpty && installedSnapshot == nil
    }
}

/// The answer to ``PaxosCore/propose(_:)``.
public enum ProposeResult: Hashable, Sendable {
    /// The leader assigned the value to `slot`. It is acknowledged once `slot` is reported
    /// chosen *with this value*; if leadership changes first, another value may win the slot.
    case proposed(slot: Slot)
    /// This replica is not a leader that has finished Phase 1; `leader` is the one it knows of.
    case notLeader(leader: NodeID?)
    /// Too much is in flight (uncommitted bytes or queued proposals); retry later.
    case overloaded
}

/// The durable acceptor state a replica restarts from, rebuilt by the storage engine from the
/// records a ``PaxosCore`` asked it to persist.
public struct DurableState: Sendable, Hashable {
    /// Highest ballot promised.
    public var promised: Ballot
    /// Accepted (or learned) entries in record order; a later entry for a slot supersedes an
    /// earlier one.
    public var entries: [Entry]
    /// Every slot through this one is chosen (and present in `entries` or compacted).
    public var chosenThrough: Slot
    /// Slots up to here were compacted into a snapshot and are not in `entries`.
    public var compactedThrough: Slot

    public init(promised: Ballot = .zero, entries: [Entry] = [], chosenThrough: Slot = 0, compactedThrough: Slot = 0) {
        self.promised = promised
        self.entries = entries
        self.chosenThrough = chosenThrough
        self.compactedThrough = compactedThrough
    }

    /// Folds one record into the state, the way recovery replays the log.
    public mutating func apply(_ record: DurableRecord) {
        switch record {
        case .promise(let b):
            promised = Swift.max(promised, b)
        case .accepted(let batch):
            for (i, v) in batch.values.enumerated() {
                entries.append(Entry(slot: batch.firstSlot + Slot(i), ballot: batch.ballot, value: v))
            }
        case .learned(let es):
            entries.append(contentsOf: es)
        case .chosen(let through):
            chosenThrough = Swift.max(chosenThrough, through)
        }
    }
}
