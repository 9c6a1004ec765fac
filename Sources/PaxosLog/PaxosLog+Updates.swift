import MultiPaxos
import SegmentLog

extension PaxosLog {
    /// What a state machine must do next: apply entries, or restart from an installed snapshot.
    public enum Update: Sendable {
        /// Chosen entries, in order, no-ops skipped, and the position they bring the reader to:
        /// every position through `through` is read (no-ops included, so a read barrier's no-op
        /// is passed too). `entries` is empty when all those positions were no-ops.
        case entries([Entry], through: Position)
        /// This replica installed a snapshot from a peer that covers positions not yet read:
        /// replace the state with the snapshot's and continue after `snapshot.position`, which
        /// the next updates do.
        case snapshotInstalled(Snapshot)
    }

    /// What a state machine applies from `position` on: batches of chosen entries, and an
    /// explicit ``Update/snapshotInstalled(_:)`` when this replica installed a snapshot that
    /// jumps over entries not yet read (instead of a `compacted` error to catch). Waits for new
    /// entries at the end; finishes when the log closes; throws the replica's storage failure.
    ///
    /// Memory is bounded: a batch holds at most 512 positions and about `maxBatchBytes` of
    /// payload (one record more than that only when a single record is larger).
    public func updates(from position: Position, maxBatchBytes: Int = 4 << 20) -> Updates {
        Updates(log: self, from: Swift.max(position, 1), maxBatchBytes: Swift.max(1, maxBatchBytes))
    }

    /// The sequence ``updates(from:maxBatchBytes:)`` returns.
    public struct Updates: AsyncSequence, Sendable {
        public typealias Element = Update
        let log: PaxosLog
        let from: Position
        let maxBatchBytes: Int

        public func makeAsyncIterator() -> Iterator {
            Iterator(log: log, next: from, maxBatchBytes: maxBatchBytes)
        }

        public struct Iterator: AsyncIteratorProtocol {
            let log: PaxosLog
            var next: Position
            let maxBatchBytes: Int

            public mutating func next() async throws -> Update? {
                let driver = log.driver
                while true {
                    // A snapshot at or past `next` was installed (or written by someone else):
                    // the entries below it are gone, and the state must restart from it.
                    if let installed = driver.store.state.snapshotSlot, installed >= next {
                        guard let snapshot = try log.latestSnapshot() else {
                            throw PaxosLogError(.storage, "the log names snapshot \(installed), but it cannot be opened")
                        }
                        if snapshot.position >= next {
                            next = snapshot.position + 1
                            return .snapshotInstalled(snapshot)
                        }
                    }
                    guard let readable = try await driver.waitReadable(after: next - 1) else { return nil }
                    let batch: [Entry]
                    do {
                        (batch, next) = try Entries.read(storage: driver.replica.storage, skipping: driver.replica.duplicates, from: next, through: readable,
                                                         maxCount: 512, maxBytes: maxBatchBytes)
                    } catch let error as PaxosLogError where error.code == .compacted {
                        // A snapshot was installed between the check above and the read.
                        guard let now = driver.store.state.snapshotSlot, now >= next else {
                            throw PaxosLogError(.storage, "position \(next) reads as compacted, but the snapshot covers only \(driver.store.state.snapshotSlot.map(String.init) ?? "nothing")")
                        }
                        continue
                    }
                    return .entries(batch, through: next - 1)
                }
            }
        }
    }
}
