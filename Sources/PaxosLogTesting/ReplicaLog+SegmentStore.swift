import Logging
import MultiPaxos
import SegmentLog

extension ReplicaLog {
    /// Reads a stopped replica's chosen log from its data directory (the replica must not run:
    /// the store's lock refuses a second opener).
    /// - Throws: the store's error if the directory cannot be opened (e.g. corruption).
    public static func read(directory: String) throws -> ReplicaLog {
        let store = try SegmentStore.open(directory: directory, logger: Logger(label: "nemesis.offline"))
        defer { try? store.close() }
        let through = store.state.chosenThrough ?? 0
        var entries: [Slot: [UInt8]?] = [:]
        var firstSlots: [ProposalID: Slot] = [:]
        var repeats: [Slot: Slot] = [:]
        if through > 0 {
            for e in try store.entries(from: 1, through: through) {
                // updateValue, not subscript assignment: assigning nil would remove the no-op.
                entries.updateValue(e.isNoop ? nil : e.payload, forKey: e.slot)
                guard let p = e.proposal else { continue }
                let id = ProposalID(client: p.client, sequence: p.sequence)
                guard id.isRetriable else { continue }
                if let first = firstSlots[id] { repeats[e.slot] = first } else { firstSlots[id] = e.slot }
            }
        }
        return ReplicaLog(chosenThrough: through, entries: entries, repeats: repeats)
    }
}
