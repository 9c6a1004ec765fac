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

    public init(ballot: Ballot, fromSlot: Slot) {
        self.ballot = ballot
        self.fromSlot = fromSlot
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
