import DequeModule
import MultiPaxos
import NIOCore

/// Which proposal identities are chosen, and at which slot, or in flight in this leader's open
/// slots: what lets a retried append return the position of the first attempt instead of
/// appending the record twice (Raft's client sessions, dissertation §6.3, without registration).
///
/// **Only retries are looked up.** A client marks an attempt that repeats one whose outcome it
/// did not learn; a first attempt's identity is new, so it is proposed as it is and costs no
/// lookup. Appends a replica makes for callers without an identity get ids that are never
/// retried (``ProposalID/isRetriable``) and are not remembered at all.
///
/// **Replicated, deterministic.** The chosen part is a function of the chosen log alone: every
/// replica applies the same chosen slots in slot order and evicts by the same rule, so a new
/// leader holds the same table as the old one through the slots both have applied.
///
/// **Bounded.** It remembers the identities of the last `limits.identities` retriable chosen
/// slots (oldest evicted first) and, per client, the highest sequence number it evicted (its
/// floor), for the `limits.clients` most recently active clients. A retry at or below its
/// client's floor and no longer remembered is answered `sessionExpired` (outcome unknown,
/// never a second append). A client forgotten entirely (silent while that many others
/// appended) is new again: a retry of a record that old may append it twice.
///
/// **Snapshots.** A local compaction through slot P saves the table as of P beside the snapshot
/// (``encoded(through:)``; `snapshot-<P>.table`), a transfer streams it after the snapshot to a
/// lagging peer (``TabledSnapshotSource``), and a replica that restarts from or installs that
/// snapshot starts from it (``init(decoding:limits:snapshot:)``) and applies the log above P, so
/// it recognises the same repeats as a replica that never compacted. (The table as of P is the one
/// held at compaction time without the identities first chosen above P: the same, except for
/// identities evicted between P and the compaction's watermark, which only a table of over
/// `limits.identities` retriable slots between the two could miss; client floors are those at
/// compaction time, which can only make a retry meet `sessionExpired` sooner.)
///
/// **Gaps.** A replica that starts from a snapshot without a table (written before tables
/// existed, or whose table fails its CRC) has not seen the identities chosen below it: an
/// absent retry is then answered `sessionExpired` too, instead of being proposed, and a repeat
/// whose first slot lies below the gap is not recognised there. Only records whose first
/// attempt is older than that snapshot meet this.
///
/// **Why an absent retry may be proposed, and why it may still be chosen twice.** A leader
/// answers "absent" only when the identity is neither chosen at or below its chosen watermark
/// (the table has applied every slot through it, with no gap) nor held in one of its open
/// slots. Its open slots hold every value a majority reported in its Phase 1, so an identity a
/// majority accepted is never proposed twice. But a first attempt accepted only by a minority
/// that this leader's Phase 1 did not hear can still be revived by a later leader that hears
/// it, at a slot this leader never got chosen: then the log holds the identity at two slots.
/// No leader-side rule can exclude that (a minority's vote may or may not become a choice), so
/// the table also decides it after the fact: ``apply(slot:value:)`` reports a repeat, readers
/// skip it (``DuplicateSlots``) and the append is acknowledged at the first slot. The
/// simulation checks that readers see each identity once, at its first slot, and that every
/// acknowledgement names that slot (planted bug: `ReplicaBug.deliverDuplicates`); and that a
/// leader never proposes anew an identity chosen in its ballot or earlier (planted bug:
/// `ReplicaBug.retryWithoutLookup`). Appends offered while the replica campaigns are held by
/// the replica, not the core, and looked up only once Phase 1 has ended.
///
/// Confined to the replica's executor.
package struct ClientSessions {
    package struct Limits: Hashable, Sendable {
        /// Identities of chosen slots remembered, oldest evicted first (an estimate of 56 B
        /// each: a dictionary entry of 24 B at 3/4 load plus a 24 B deque element; not measured).
        package var identities = 1 << 19
        /// Clients whose floor is remembered, least recently active evicted first.
        package var clients = 1 << 16

        package init() {}
    }

    enum Lookup: Equatable {
        /// Chosen at this slot: answer it, do not propose again.
        case chosen(Slot)
        /// Proposed by this leader at this slot and not yet chosen: wait for it.
        case inFlight(Slot)
        /// Older than what is remembered of its client: it may or may not be in the log.
        case expired
        /// Not chosen and not in flight: proposing it cannot append it twice. (A first attempt is
        /// not looked up: its identity is new.)
        case absent
    }

    let limits: Limits
    /// Every chosen slot through this one is applied (or lies below a gap, see ``skip(to:)``).
    private(set) var applied: Slot
    /// Identities chosen at or below this slot may be missing: the replica started from a
    /// compacted log or installed a snapshot. An absent retry is then answered `expired`.
    private(set) var gapThrough: Slot
    private var chosen: [ProposalID: Slot] = [:]
    private var order: Deque<(slot: Slot, id: ProposalID)> = []
    /// Per client: the highest sequence evicted from `chosen`, and its last chosen slot.
    private var clients: [UInt64: (floor: UInt64, last: Slot)] = [:]
    /// Clients whose every remembered identity was evicted, by their last slot; may hold stale
    /// entries (a client that appended again), checked against `clients` when popped.
    private var silent: Deque<(last: Slot, client: UInt64)> = []
    /// Open slots that carry an identity, with the ballot they were proposed in: only those of
    /// the ballot this replica leads in now are in flight (a change of ballot needs no clearing).
    private var proposed: [ProposalID: (slot: Slot, ballot: Ballot)] = [:]

    init(limits: Limits = Limits(), applied: Slot) {
        self.limits = limits
        self.applied = applied
        self.gapThrough = applied
    }

    var rememberedCount: Int { chosen.count }

    /// - Parameter ballot: the ballot this replica leads in.
    func lookup(_ id: ProposalID, leading ballot: Ballot) -> Lookup {
        if let slot = chosen[id] { return .chosen(slot) }
        if let p = proposed[id], p.ballot == ballot { return .inFlight(p.slot) }
        if let client = clients[id.client], id.sequence <= client.floor { return .expired }
        return gapThrough > 0 ? .expired : .absent
    }

    /// Applies the next chosen slot (slots must come in order, each once).
    /// - Returns: the earlier slot its identity was chosen at, when the slot repeats one (its
    ///   readers skip it; its appender is answered that earlier slot).
    @discardableResult
    mutating func apply(slot: Slot, value: Value) -> Slot? {
        guard slot > applied else { return nil }
        applied = slot
        guard let id = value.proposalID, id.isRetriable else { return nil }
        proposed.removeValue(forKey: id)
        if let first = chosen[id] { return first }
        chosen[id] = slot
        order.append((slot, id))
        if let c = clients[id.client] { clients[id.client] = (c.floor, slot) } else { clients[id.client] = (0, slot) }
        while order.count > limits.identities { evictOldest() }
        while clients.count > limits.clients, let s = silent.popFirst() {
            if clients[s.client]?.last == s.last { clients.removeValue(forKey: s.client) }
        }
        // Stale entries of clients that spoke again are dropped once they outnumber the live ones.
        if silent.count > 2 * limits.clients { silent = Deque(silent.filter { clients[$0.client]?.last == $0.last }) }
        return nil
    }

    private mutating func evictOldest() {
        let (slot, id) = order.removeFirst()
        chosen.removeValue(forKey: id)
        guard let c = clients[id.client] else { return }
        clients[id.client] = (Swift.max(c.floor, id.sequence), c.last)
        if c.last == slot { silent.append((slot, id.client)) }
    }

    /// A snapshot moved the chosen watermark to `slot` without the slots between: identities
    /// chosen there are unknown here. Also the start after a restart on a compacted log.
    mutating func skip(to slot: Slot) {
        guard slot > applied else { return }
        applied = slot
        gapThrough = slot
    }

    /// This leader proposed `id` at `slot` in `ballot` (a new append, or a value Phase 1 found).
    mutating func noteProposed(_ id: ProposalID, at slot: Slot, ballot: Ballot) {
        if slot > applied { proposed[id] = (slot, ballot) }
    }

    /// The table as of `slot` (at or below ``applied``), to save beside the snapshot through it.
    /// Layout (little-endian): version:u32 = 1, gapThrough:u64, count:u64, count x (slot:u64,
    /// client:u64, sequence:u64) in slot order, clients:u64, clients x (client:u64, floor:u64,
    /// last:u64) by client. About 24 bytes per remembered identity.
    /// - Returns: nil when the table has not applied `slot` (a replica that failed while it was
    ///   restoring it): the snapshot then has no table, as one installed from a peer.
    func encoded(through slot: Slot) -> [UInt8]? {
        guard slot <= applied else { return nil }
        let kept = order.prefix { $0.slot <= slot }
        var out = ByteBuffer()
        out.reserveCapacity(28 + kept.count * 24 + clients.count * 24)
        out.writeInteger(UInt32(1), endianness: .little)
        out.writeInteger(Swift.min(gapThrough, slot), endianness: .little)
        out.writeInteger(UInt64(kept.count), endianness: .little)
        for (s, id) in kept {
            out.writeMultipleIntegers(s, id.client, id.sequence, endianness: .little)
        }
        out.writeInteger(UInt64(clients.count), endianness: .little)
        for (client, c) in clients.sorted(by: { $0.key < $1.key }) {
            out.writeMultipleIntegers(client, c.floor, Swift.min(c.last, slot), endianness: .little)
        }
        return Array(out.readableBytesView)
    }

    /// The most bytes ``encoded(through:)`` can give under `limits`: what a received table may hold.
    static func maxEncodedBytes(_ limits: Limits) -> Int {
        28 + 24 * (limits.identities + limits.clients)
    }

    /// The table saved with the snapshot through `snapshot`, applied through it.
    /// - Throws: ``PaxosLogError`` `storage` naming what is wrong when the bytes do not parse.
    init(decoding bytes: [UInt8], limits: Limits, snapshot: Slot) throws {
        func damaged(_ what: String) -> PaxosLogError {
            PaxosLogError(.storage, "the client-session table of snapshot \(snapshot) is damaged: \(what)")
        }
        self.init(limits: limits, applied: snapshot)
        var input = ByteBuffer(bytes: bytes)
        guard input.readInteger(endianness: .little, as: UInt32.self) == 1 else { throw damaged("unknown version") }
        guard let gap = input.readInteger(endianness: .little, as: UInt64.self), gap <= snapshot,
              let count = input.readInteger(endianness: .little, as: UInt64.self), count <= UInt64(input.readableBytes / 24) else {
            throw damaged("bad header")
        }
        gapThrough = gap
        var previous: Slot = 0
        for _ in 0..<count {
            guard let (s, client, sequence) = input.readMultipleIntegers(endianness: .little, as: (UInt64, UInt64, UInt64).self),
                  s > previous, s <= snapshot else { throw damaged("identities out of slot order") }
            previous = s
            let id = ProposalID(client: client, sequence: sequence)
            guard chosen.updateValue(s, forKey: id) == nil else { throw damaged("identity \(id) twice") }
            order.append((s, id))
        }
        guard let n = input.readInteger(endianness: .little, as: UInt64.self), n <= UInt64(input.readableBytes / 24) else {
            throw damaged("bad client count")
        }
        for _ in 0..<n {
            guard let (client, floor, last) = input.readMultipleIntegers(endianness: .little, as: (UInt64, UInt64, UInt64).self),
                  last <= snapshot else { throw damaged("bad client entry") }
            clients[client] = (floor, last)
        }
        guard input.readableBytes == 0 else { throw damaged("\(input.readableBytes) trailing bytes") }
        // Clients with no identity left are the first a newer client evicts, least recent first.
        let remembered = Set(order.lazy.map(\.id.client))
        silent = Deque(clients.filter { !remembered.contains($0.key) }.map { (last: $0.value.last, client: $0.key) }
            .sorted { ($0.last, $0.client) < ($1.last, $1.client) })
        while order.count > limits.identities { evictOldest() }
    }

    /// This replica stopped leading: its open slots are no longer its to fill.
    mutating func forgetProposed() {
        proposed = [:]
    }
}

