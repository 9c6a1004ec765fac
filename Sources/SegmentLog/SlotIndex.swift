/// Where the latest accepted entry of a slot lives: segment, frame, and the entry's offset in the
/// frame's raw (decompressed) payload. 16 bytes, so a million slots cost 16 MB.
struct SlotLocation: Hashable, Sendable {
    /// Segment sequence; 0 marks an empty slot (sequences start at 1).
    var segment: UInt32
    var frameOffset: UInt32
    var frameLength: UInt32
    var entryOffset: UInt32

    static let empty = SlotLocation(segment: 0, frameOffset: 0, frameLength: 0, entryOffset: 0)
    var isEmpty: Bool { segment == 0 }
}

/// slot → location. Slots are dense in practice (a Paxos log with small holes), so they live in
/// an array from `base`; a slot far from that range goes to a dictionary so a stray huge slot
/// number cannot make the array explode.
struct SlotIndex: Sendable {
    private var base: UInt64 = 0
    /// Invariant: empty, or first and last elements are not `.empty`.
    private var dense: [SlotLocation] = []
    private var sparse: [UInt64: SlotLocation] = [:]
    private(set) var count = 0

    /// How many empty slots the dense array may grow by to reach a new slot.
    static let maxGap: UInt64 = 1 << 20

    init() {}

    @inline(__always)
    private func denseIndex(_ slot: UInt64) -> Int? {
        guard slot >= base, slot - base < UInt64(dense.count) else { return nil }
        return Int(slot - base)
    }

    func get(_ slot: UInt64) -> SlotLocation? {
        if let i = denseIndex(slot), !dense[i].isEmpty { return dense[i] }
        return sparse.isEmpty ? nil : sparse[slot]
    }

    mutating func set(_ slot: UInt64, _ location: SlotLocation) {
        // The common case by far: the next slot in order, nothing sparse.
        if sparse.isEmpty && !dense.isEmpty && slot == base &+ UInt64(dense.count) {
            dense.append(location)
            count += 1
            return
        }
        if sparse.isEmpty, let i = denseIndex(slot) {
            if dense[i].isEmpty { count += 1 }
            dense[i] = location
            return
        }
        if let i = denseIndex(slot) {
            if dense[i].isEmpty {
                if sparse.removeValue(forKey: slot) == nil { count += 1 }
            }
            dense[i] = location
            return
        }
        if dense.isEmpty {
            if sparse.removeValue(forKey: slot) == nil { count += 1 }
            base = slot
            dense.append(location)
            return
        }
        let end = base + UInt64(dense.count)
        if slot >= end && slot - end <= Self.maxGap {
            if sparse.removeValue(forKey: slot) == nil { count += 1 }
            // No reserveCapacity here: an exact reservation defeats geometric growth (quadratic).
            for _ in 0..<Int(slot - end) { dense.append(.empty) }
            dense.append(location)
        } else if slot < base && base - slot <= Self.maxGap {
            if sparse.removeValue(forKey: slot) == nil { count += 1 }
            var front = [SlotLocation](repeating: .empty, count: Int(base - slot))
            front[0] = location
            dense.insert(contentsOf: front, at: 0)
            base = slot
        } else {
            if sparse.updateValue(location, forKey: slot) == nil { count += 1 }
        }
    }

    /// Forgets every slot below `slot`.
    mutating func removeAll(below slot: UInt64) {
        if !dense.isEmpty && slot > base {
            let drop = min(UInt64(dense.count), slot - base)
            for i in 0..<Int(drop) where !dense[i].isEmpty { count -= 1 }
            dense.removeFirst(Int(drop))
            base += drop
            trim()
        }
        if !sparse.isEmpty {
            for key in sparse.keys where key < slot {
                sparse.removeValue(forKey: key)
                count -= 1
            }
        }
    }

    /// Forgets `slot` and every slot above it.
    mutating func removeAll(from slot: UInt64) {
        if !dense.isEmpty && slot < base + UInt64(dense.count) {
            let keep = slot > base ? Int(slot - base) : 0
            for i in keep..<dense.count where !dense[i].isEmpty { count -= 1 }
            dense.removeLast(dense.count - keep)
            trim()
        }
        if !sparse.isEmpty {
            for key in sparse.keys where key >= slot {
                sparse.removeValue(forKey: key)
                count -= 1
            }
        }
    }

    private mutating func trim() {
        var lead = 0
        while lead < dense.count && dense[lead].isEmpty { lead += 1 }
        if lead > 0 {
            dense.removeFirst(lead)
            base += UInt64(lead)
        }
        while let last = dense.last, last.isEmpty { dense.removeLast() }
        if dense.isEmpty { base = 0 }
    }

    var first: UInt64? {
        let d: UInt64? = dense.isEmpty ? nil : base
        guard !sparse.isEmpty else { return d }
        let s = sparse.keys.min()!
        return d.map { min($0, s) } ?? s
    }

    var last: UInt64? {
        let d: UInt64? = dense.isEmpty ? nil : base + UInt64(dense.count - 1)
        guard !sparse.isEmpty else { return d }
        let s = sparse.keys.max()!
        return d.map { max($0, s) } ?? s
    }

    /// The occupied slots in `from...through`, in slot order.
    func locations(from: UInt64, through: UInt64) -> [(UInt64, SlotLocation)] {
        guard from <= through else { return [] }
        var result: [(UInt64, SlotLocation)] = []
        if !dense.isEmpty {
            let lo = max(from, base)
            let hi = min(through, base + UInt64(dense.count - 1))
            if lo <= hi {
                result.reserveCapacity(Int(hi - lo + 1))
                for slot in lo...hi {
                    let location = dense[Int(slot - base)]
                    if !location.isEmpty { result.append((slot, location)) }
                }
            }
        }
        if !sparse.isEmpty {
            let extra = sparse.filter { $0.key >= from && $0.key <= through && denseIndex($0.key).map { dense[$0].isEmpty } ?? true }
            if !extra.isEmpty {
                result.append(contentsOf: extra.map { ($0.key, $0.value) })
                result.sort { $0.0 < $1.0 }
            }
        }
        return result
    }
}
