/// An open segment file. Readers retain it while they `pread`, so deleting the file (prefix
/// truncation) or closing the store never pulls a descriptor from under a read in flight.
final class SegmentFile: @unchecked Sendable {
    let sequence: UInt64
    let path: String
    let fd: Int32
    private let fileSystem: any FileSystem
    /// Highest slot of any accepted entry in this segment; guarded by the store's lock.
    var maxSlot: UInt64?

    init(sequence: UInt64, path: String, fd: Int32, fileSystem: any FileSystem) {
        self.sequence = sequence
        self.path = path
        self.fd = fd
        self.fileSystem = fileSystem
    }

    deinit {
        try? fileSystem.close(fd)
    }

    func noteSlot(_ slot: UInt64) {
        if let m = maxSlot, m >= slot { return }
        maxSlot = slot
    }
}

/// Acceptor state plus the slot index: what recovery rebuilds and the writer updates after each
/// durable group, with one set of rules for both.
struct LogState: Sendable {
    var index = SlotIndex()
    var promised: LogBallot?
    var chosenThrough: UInt64?
    var snapshotSlot: UInt64?

    init() {}

    init(header: SegmentHeader) {
        promised = header.promised
        chosenThrough = header.chosenThrough
        snapshotSlot = header.snapshotSlot
    }

    /// Entries at or below the snapshot are compacted: they are kept out of the index even when a
    /// stale accept for them is replayed.
    @inline(__always)
    mutating func setEntry(_ slot: UInt64, _ location: SlotLocation) {
        if let s = snapshotSlot, slot <= s { return }
        index.set(slot, location)
    }

    mutating func promise(_ ballot: LogBallot) { promised = ballot }

    /// The chosen watermark only moves forward: once chosen, always chosen.
    mutating func chosen(_ through: UInt64) {
        if let c = chosenThrough, c >= through { return }
        chosenThrough = through
    }

    mutating func snapshot(_ slot: UInt64) {
        if let s = snapshotSlot, s >= slot { return }
        snapshotSlot = slot
        if slot == .max { index = SlotIndex() } else { index.removeAll(below: slot + 1) }
    }

    mutating func truncate(from slot: UInt64) { index.removeAll(from: slot) }
}
