import MultiPaxos
import SegmentLog

// The consensus core and the storage engine know nothing of each other; these maps are the seam.

extension LogBallot {
    init(_ b: Ballot) { self.init(round: b.round, node: b.node) }
}

extension Ballot {
    init(_ b: LogBallot) { self.init(round: b.round, node: b.node) }
}

extension LogEntry {
    init(slot: Slot, ballot: Ballot, value: Value) {
        switch value {
        case .noop: self.init(slot: slot, ballot: LogBallot(ballot), isNoop: true, payload: [])
        case .data(let bytes): self.init(slot: slot, ballot: LogBallot(ballot), isNoop: false, payload: bytes)
        case .identified(let id, let bytes):
            self.init(slot: slot, ballot: LogBallot(ballot), proposal: LogProposalID(client: id.client, sequence: id.sequence), payload: bytes)
        }
    }
}

extension Entry {
    package init(_ e: LogEntry) {
        self.init(slot: e.slot, ballot: Ballot(e.ballot), value: Value(e))
    }
}

extension Value {
    package init(_ e: LogEntry) {
        if e.isNoop { self = .noop }
        else if let id = e.proposal { self = .identified(ProposalID(client: id.client, sequence: id.sequence), e.payload) }
        else { self = .data(e.payload) }
    }
}

extension LogRecord {
    /// The storage record for one of the core's durable records.
    init(_ record: DurableRecord) {
        switch record {
        case .promise(let b):
            self = .promise(LogBallot(b))
        case .accepted(let batch):
            var entries: [LogEntry] = []
            entries.reserveCapacity(batch.values.count)
            for (i, v) in batch.values.enumerated() {
                entries.append(LogEntry(slot: batch.firstSlot + Slot(i), ballot: batch.ballot, value: v))
            }
            self = .accepted(entries)
        case .learned(let es):
            self = .accepted(es.map { LogEntry(slot: $0.slot, ballot: $0.ballot, value: $0.value) })
        case .chosen(let through):
            self = .chosen(through: through)
        }
    }
}

extension SegmentStore {
    /// The acceptor state a restarting ``PaxosCore`` needs, read back from the log: the promise,
    /// the chosen watermark and every vote above it. Chosen entries stay on disk: readers and
    /// catch-up read them from there, so memory does not grow with the record size.
    func recoveredConsensusState() throws -> DurableState {
        let s = state
        let chosen = s.chosenThrough ?? 0
        let base = Swift.max(s.snapshotSlot ?? 0, chosen)
        var entries: [Entry] = []
        if let first = s.firstSlot, let last = s.lastSlot, Swift.max(first, base + 1) <= last {
            entries = try self.entries(from: Swift.max(first, base + 1), through: last).map(Entry.init)
        }
        return DurableState(
            promised: s.promised.map(Ballot.init) ?? .zero,
            entries: entries,
            chosenThrough: chosen,
            compactedThrough: base
        )
    }
}
