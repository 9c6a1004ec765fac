import DequeModule

/// One slot of an acceptor's log: its latest vote. `ballot == .zero` means no vote yet.
struct LogSlot: Sendable {
    var ballot: Ballot
    var value: Value

    static let empty = LogSlot(ballot: .zero, value: .noop)
}

/// The in-memory acceptor log: slots `base ..< end`, holes allowed (Accepts may arrive out of
/// order). Slots below `base` were compacted into a snapshot.
struct SlotLog: Sendable {
    private(set) var base: Slot = 1
    private(set) var storage: Deque<LogSlot> = []
    /// Payload bytes of every value held (what memory the log's values take).
    private(set) var byteCount = 0

    /// One past the highest slot held.
    var end: Slot { base &+ Slot(storage.count) }

    /// The vote for `slot`, or nil when there is none (hole, beyond the end, or compacted).
    subscript(slot: Slot) -> LogSlot? {
        guard slot >= base, slot < end else { return nil }
        let e = storage[Int(slot &- base)]
        return e.ballot == .zero ? nil : e
    }

    mutating func set(_ slot: Slot, ballot: Ballot, value: Value) {
        guard slot >= base else { return }
        let i = Int(slot &- base)
        byteCount += value.byteCount
        if i < storage.count {
            byteCount -= storage[i].value.byteCount
            storage[i] = LogSlot(ballot: ballot, value: value)
        } else {
            while storage.count < i { storage.append(.empty) }
            storage.append(LogSlot(ballot: ballot, value: value))
        }
    }

    /// Values of `first ... last`, which must all be held.
    func values(_ first: Slot, _ last: Slot) -> [Value] {
        let lo = Int(first &- base), hi = Int(last &- base)
        var out: [Value] = []
        out.reserveCapacity(hi - lo + 1)
        for i in lo...hi { out.append(storage[i].value) }
        return out
    }

    /// Entries at or above `from`, holes skipped.
    func entries(from: Slot) -> [Entry] {
        var out: [Entry] = []
        var s = Swift.max(from, base)
        while s < end {
            let e = storage[Int(s &- base)]
            if e.ballot != .zero { out.append(Entry(slot: s, ballot: e.ballot, value: e.value)) }
            s += 1
        }
        return out
    }

    /// The highest slot holding a vote, or `base - 1`.
    var lastFilled: Slot {
        var s = end
        while s > base {
            if storage[Int(s &- 1 &- base)].ballot != .zero { return s &- 1 }
            s -= 1
        }
        return base &- 1
    }

    /// Forgets every slot through `through` (they are covered by a snapshot).
    mutating func compact(through: Slot) {
        guard through >= base else { return }
        let n = Swift.min(Int(through &- base &+ 1), storage.count)
        for i in 0..<n { byteCount -= storage[i].value.byteCount }
        storage.removeFirst(n)
        base = through &+ 1
    }

    /// Empties the log and starts it at `newBase` (restart from a snapshot).
    mutating func reset(base newBase: Slot) {
        base = newBase
        storage.removeAll()
        byteCount = 0
    }
}
