/// Messages between replicas. `PaxosTransport` has a versioned binary codec for every case;
/// adding a case or a field means adding it there too (and bumping the wire version if old
/// peers could not decode it).
public enum Message: Hashable, Sendable {
    /// Phase 1a: a candidate asks for promises for `ballot`, covering every slot from `fromSlot` on.
    case prepare(Prepare)
    /// Phase 1b: the acceptor promised `ballot` (durably) and reports what it accepted from `fromSlot` on.
    case promise(Promise)
    /// The receiver has promised a higher ballot than the one in the sender's request.
    case reject(Reject)
    /// Phase 2a: a leader asks acceptors to accept a batch of slots in its ballot.
    case accept(Accept)
    /// Phase 2b: the acceptor durably accepted the batch of `accept` it answers.
    case accepted(Accepted)
    /// Leader liveness and the chosen watermark, sent when there is nothing to accept.
    case heartbeat(Heartbeat)
    /// A follower's answer to a heartbeat: where its log stands, so the leader can help it catch up.
    case heartbeatReply(HeartbeatReply)
    /// A replica asks for chosen entries it is missing.
    case catchUpRequest(CatchUpRequest)
    /// Chosen entries, in slot order.
    case catchUpReply(CatchUpReply)
    /// A replica offers a snapshot to a peer that needs slots it has compacted away.
    case snapshotOffer(SnapshotOffer)
    /// A piece of an offered snapshot's bytes.
    case snapshotChunk(SnapshotChunk)
    /// The receiver of a snapshot says where it stands: the offset it wants next, or installed.
    case snapshotAck(SnapshotAck)
    /// A would-be candidate asks whether the receiver would promise its next ballot, before it
    /// raises its round (changes no durable state on either side). See ELECTIONS.md.
    case preVote(PreVote)
    /// The answer to a ``PreVote``: granted or not, with what the candidate needs to do better.
    case preVoteReply(PreVoteReply)
    /// A leader handing leadership over tells its caught-up target to campaign now
    /// (ELECTIONS.md, "Leadership transfer").
    case timeoutNow(TimeoutNow)
}

/// A message with its sender and receiver.
public struct Envelope: Hashable, Sendable {
    public var from: NodeID
    public var to: NodeID
    public var message: Message

    public init(from: NodeID, to: NodeID, message: Message) {
        self.from = from
        self.to = to
        self.message = message
    }
}

public struct Prepare: Hashable, Sendable {
    public var ballot: Ballot
    /// The candidate's first slot it does not know to be chosen; the promise covers this slot and above.
    public var fromSlot: Slot
    /// The candidate campaigns because its leader handed leadership to it (``TimeoutNow``):
    /// receivers do not apply leader stickiness to it. Stickiness only withholds promises, so
    /// skipping it is as safe as stickiness off (ELECTIONS.md).
    public var leaderTransfer: Bool

    public init(ballot: Ballot, fromSlot: Slot, leaderTransfer: Bool = false) {
        self.ballot = ballot
        self.fromSlot = fromSlot
        self.leaderTransfer = leaderTransfer
    }
}

public struct Promise: Hashable, Sendable {
    public var ballot: Ballot
    public var fromSlot: Slot
    /// Every entry the acceptor has accepted at or above `fromSlot` (its latest vote per slot).
    public var accepted: [Entry]
    /// The acceptor's own chosen watermark: every slot up to here is chosen and known to it.
    public var chosenThrough: Slot

    public init(ballot: Ballot, fromSlot: Slot, accepted: [Entry], chosenThrough: Slot) {
        self.ballot = ballot
        self.fromSlot = fromSlot
        self.accepted = accepted
        self.chosenThrough = chosenThrough
    }
}

public struct Reject: Hashable, Sendable {
    /// The ballot of the prepare or accept being rejected.
    public var ballot: Ballot
    /// The higher ballot the receiver has promised.
    public var promised: Ballot

    public init(ballot: Ballot, promised: Ballot) {
        self.ballot = ballot
        self.promised = promised
    }
}

public struct Accept: Hashable, Sendable {
    public var ballot: Ballot
    /// Slot of `values[0]`; the batch covers `firstSlot ..< firstSlot + values.count`, contiguous.
    public var firstSlot: Slot
    public var values: [Value]
    /// The leader's chosen watermark. A follower may mark a slot at or below it chosen only if the
    /// ballot it accepted for that slot equals `ballot`; otherwise it must fetch the chosen value.
    public var chosenThrough: Slot

    public init(ballot: Ballot, firstSlot: Slot, values: [Value], chosenThrough: Slot) {
        self.ballot = ballot
        self.firstSlot = firstSlot
        self.values = values
        self.chosenThrough = chosenThrough
    }
}

public struct Accepted: Hashable, Sendable {
    public var ballot: Ballot
    /// The accepted batch: `firstSlot ... lastSlot`.
    public var firstSlot: Slot
    public var lastSlot: Slot

    public init(ballot: Ballot, firstSlot: Slot, lastSlot: Slot) {
        self.ballot = ballot
        self.firstSlot = firstSlot
        self.lastSlot = lastSlot
    }
}

public struct Heartbeat: Hashable, Sendable {
    public var ballot: Ballot
    /// Same rule as `Accept.chosenThrough`.
    public var chosenThrough: Slot

    public init(ballot: Ballot, chosenThrough: Slot) {
        self.ballot = ballot
        self.chosenThrough = chosenThrough
    }
}

public struct HeartbeatReply: Hashable, Sendable {
    public var ballot: Ballot
    /// The follower's chosen watermark.
    public var chosenThrough: Slot
    /// The highest slot the follower has accepted anything for.
    public var lastAccepted: Slot

    public init(ballot: Ballot, chosenThrough: Slot, lastAccepted: Slot) {
        self.ballot = ballot
        self.chosenThrough = chosenThrough
        self.lastAccepted = lastAccepted
    }
}

public struct CatchUpRequest: Hashable, Sendable {
    /// First missing slot.
    public var fromSlot: Slot
    /// Last slot wanted (inclusive); the sender caps the reply by its own limits.
    public var throughSlot: Slot

    public init(fromSlot: Slot, throughSlot: Slot) {
        self.fromSlot = fromSlot
        self.throughSlot = throughSlot
    }
}

public struct CatchUpReply: Hashable, Sendable {
    /// Chosen entries in slot order, contiguous from the request's `fromSlot`.
    public var entries: [Entry]
    /// The sender's chosen watermark.
    public var chosenThrough: Slot

    public init(entries: [Entry], chosenThrough: Slot) {
        self.entries = entries
        self.chosenThrough = chosenThrough
    }
}

/// Starts (or resumes) a snapshot transfer: the receiver answers with a ``SnapshotAck`` naming
/// the offset it wants next, so a transfer cut by a dropped connection resumes where it stopped.
///
/// Snapshot transfer is carried out by drivers (it is file I/O); the core only learns the result
/// through ``PaxosCore/installSnapshot(through:)``. ``SnapshotSender`` and ``SnapshotReceiver``
/// hold the I/O-free protocol state.
public struct SnapshotOffer: Hashable, Sendable {
    /// The snapshot covers every slot through this one; all of them are chosen.
    public var slot: Slot
    /// Total bytes streamed: the snapshot's data, then `tableLength` bytes of a table kept beside
    /// it (the replica's client sessions as of `slot`; opaque to the core).
    public var length: UInt64
    /// crc32 (zlib) of the snapshot's data, checked by the receiver before it installs.
    public var checksum: UInt32
    /// The sender's chosen watermark, so the receiver knows how far to catch up afterwards.
    public var chosenThrough: Slot
    /// Bytes of the table at the end of the stream (0: none), and their crc32.
    public var tableLength: UInt64
    public var tableChecksum: UInt32

    public init(slot: Slot, length: UInt64, checksum: UInt32, chosenThrough: Slot, tableLength: UInt64 = 0, tableChecksum: UInt32 = 0) {
        self.slot = slot
        self.length = length
        self.checksum = checksum
        self.chosenThrough = chosenThrough
        self.tableLength = tableLength
        self.tableChecksum = tableChecksum
    }
}

public struct SnapshotChunk: Hashable, Sendable {
    /// The offered snapshot this chunk belongs to.
    public var slot: Slot
    /// Byte offset of `data` in the snapshot.
    public var offset: UInt64
    public var data: [UInt8]
    /// True on the chunk that ends the snapshot (`offset + data.count == length`).
    public var done: Bool

    public init(slot: Slot, offset: UInt64, data: [UInt8], done: Bool) {
        self.slot = slot
        self.offset = offset
        self.data = data
        self.done = done
    }
}

public struct SnapshotAck: Hashable, Sendable {
    public enum Status: UInt8, Hashable, Sendable {
        /// Send from `nextOffset` on (an answer to an offer, or progress).
        case next = 0
        /// A chunk arrived out of order: go back to `nextOffset`.
        case resend = 1
        /// The receiver holds the snapshot durably (or was already past `slot`): stop.
        case installed = 2
        /// The receiver cannot take it (e.g. a storage failure); the sender stops and forgets it.
        case refused = 3
    }

    public var slot: Slot
    public var nextOffset: UInt64
    public var status: Status

    public init(slot: Slot, nextOffset: UInt64, status: Status) {
        self.slot = slot
        self.nextOffset = nextOffset
        self.status = status
    }
}

public struct TimeoutNow: Hashable, Sendable {
    /// The sender's ballot: the target campaigns only while it still follows that leader in it.
    public var ballot: Ballot
    /// The last slot the leader assigned; the target reported every slot through it chosen.
    public var lastSlot: Slot

    public init(ballot: Ballot, lastSlot: Slot) {
        self.ballot = ballot
        self.lastSlot = lastSlot
    }
}

/// A pre-vote request: "would you promise `ballot` if I sent a Prepare for it now?"
///
/// Neither side persists anything: the sender has not raised its promise (it will only after a
/// majority grants), the receiver promises nothing. A grant is advice, not a vote, so safety
/// never depends on it (ELECTIONS.md).
public struct PreVote: Hashable, Sendable {
    /// The ballot the sender would campaign with (one round above every round it has seen).
    public var ballot: Ballot
    /// The sender's chosen watermark: a receiver more than `Configuration.maxCandidateLag` slots
    /// ahead refuses, so a far-behind replica does not lead while a caught-up one can.
    public var chosenThrough: Slot

    public init(ballot: Ballot, chosenThrough: Slot) {
        self.ballot = ballot
        self.chosenThrough = chosenThrough
    }
}

/// The answer to a ``PreVote``.
public struct PreVoteReply: Hashable, Sendable {
    /// The ballot of the pre-vote answered (a reply to an older pre-vote is ignored).
    public var ballot: Ballot
    /// True when the receiver would promise: it has not heard from a live leader within the
    /// minimum election timeout and the candidate is not too far behind it.
    public var granted: Bool
    /// The receiver's promise, so the candidate's Prepare can beat it at the first try.
    public var promised: Ballot
    /// The receiver's chosen watermark: a refused candidate that is behind catches up from it.
    public var chosenThrough: Slot

    public init(ballot: Ballot, granted: Bool, promised: Ballot, chosenThrough: Slot) {
        self.ballot = ballot
        self.granted = granted
        self.promised = promised
        self.chosenThrough = chosenThrough
    }
}

extension Message {
    /// The highest ballot round a replica takes from a peer. Rounds grow by one per election, so
    /// no cluster comes near it; a larger round comes from a faulty or hostile peer, and taking it
    /// would make the next campaign's `round + 1` overflow (and, promised durably, do so again
    /// after every restart).
    public static let maxRound: UInt64 = 1 << 62
    /// The highest slot a replica takes from a peer: slots grow by one per record, and slot
    /// arithmetic (`first + count`, offsets into the in-memory log) must not overflow.
    public static let maxSlot: Slot = 1 << 62

    /// Why no correct replica could have sent this message (a ballot round above ``maxRound`` or
    /// a slot above ``maxSlot``), or nil. ``PaxosCore/step(_:)`` ignores such a message and the
    /// transport refuses it as malformed.
    public var outOfRange: String? {
        func round(_ b: Ballot, _ field: StaticString) -> String? {
            b.round > Message.maxRound ? "\(field) round \(b.round) is above \(Message.maxRound)" : nil
        }
        func slot(_ s: Slot, _ field: StaticString) -> String? {
            s > Message.maxSlot ? "\(field) \(s) is above \(Message.maxSlot)" : nil
        }
        func entries(_ es: [Entry], _ field: StaticString) -> String? {
            for e in es {
                if let reason = slot(e.slot, field) ?? round(e.ballot, field) { return reason }
            }
            return nil
        }
        switch self {
        case .prepare(let m):
            return round(m.ballot, "prepare ballot") ?? slot(m.fromSlot, "prepare fromSlot")
        case .promise(let m):
            return round(m.ballot, "promise ballot") ?? slot(m.fromSlot, "promise fromSlot")
                ?? slot(m.chosenThrough, "promise chosenThrough") ?? entries(m.accepted, "promise entry")
        case .reject(let m):
            return round(m.ballot, "reject ballot") ?? round(m.promised, "reject promised")
        case .accept(let m):
            if let reason = round(m.ballot, "accept ballot") ?? slot(m.firstSlot, "accept firstSlot")
                ?? slot(m.chosenThrough, "accept chosenThrough") { return reason }
            let count = UInt64(m.values.count)
            return count > Message.maxSlot - m.firstSlot + 1
                ? "accept of \(count) values from slot \(m.firstSlot) ends above \(Message.maxSlot)" : nil
        case .accepted(let m):
            return round(m.ballot, "accepted ballot") ?? slot(m.firstSlot, "accepted firstSlot")
                ?? slot(m.lastSlot, "accepted lastSlot")
        case .heartbeat(let m):
            return round(m.ballot, "heartbeat ballot") ?? slot(m.chosenThrough, "heartbeat chosenThrough")
        case .heartbeatReply(let m):
            return round(m.ballot, "heartbeatReply ballot") ?? slot(m.chosenThrough, "heartbeatReply chosenThrough")
                ?? slot(m.lastAccepted, "heartbeatReply lastAccepted")
        case .catchUpRequest(let m):
            return slot(m.fromSlot, "catchUpRequest fromSlot") ?? slot(m.throughSlot, "catchUpRequest throughSlot")
        case .catchUpReply(let m):
            return slot(m.chosenThrough, "catchUpReply chosenThrough") ?? entries(m.entries, "catchUpReply entry")
        case .snapshotOffer(let m):
            return slot(m.slot, "snapshotOffer slot") ?? slot(m.chosenThrough, "snapshotOffer chosenThrough")
        case .snapshotChunk(let m):
            return slot(m.slot, "snapshotChunk slot")
        case .snapshotAck(let m):
            return slot(m.slot, "snapshotAck slot")
        case .preVote(let m):
            return round(m.ballot, "preVote ballot") ?? slot(m.chosenThrough, "preVote chosenThrough")
        case .preVoteReply(let m):
            return round(m.ballot, "preVoteReply ballot") ?? round(m.promised, "preVoteReply promised")
                ?? slot(m.chosenThrough, "preVoteReply chosenThrough")
        case .timeoutNow(let m):
            return round(m.ballot, "timeoutNow ballot") ?? slot(m.lastSlot, "timeoutNow lastSlot")
        }
    }
}
