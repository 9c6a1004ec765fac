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
        if through > 0 {
            for e in try store.entries(from: 1, through: through) {
                // updateValue, not subscript assignment: assigning nil would remove the no-op.
                entries.updateValue(e.isNoop ? nil : e.payload, forKey: e.slot)
            }
        }
        return ReplicaLog(chosenThrough: through, entries: entries)
    }
}
