import MultiPaxos
import SegmentLog

extension PaxosLog {
    /// The chosen records of a log from a position on, in order, no-ops and repeats of a retried
    /// record skipped (``DuplicateSlots``). Waits for new
    /// records at the end; finishes when the log is closed. Memory is bounded: it reads a batch
    /// at a time from storage. Throws the replica's storage failure, if it fails.
    public struct Entries: AsyncSequence, Sendable {
        public typealias Element = Entry
        let driver: ReplicaDriver
        let from: Position

        public func makeAsyncIterator() -> Iterator {
            Iterator(driver: driver, next: from)
        }

        public struct Iterator: AsyncIteratorProtocol {
            let driver: ReplicaDriver
            var next: Position
            var buffer: [Entry] = []
            var index = 0

            public mutating func next() async throws -> Entry? {
                while index == buffer.count {
                    guard let readable = try await driver.waitReadable(after: next - 1) else { return nil }
                    (buffer, next) = try Entries.read(storage: driver.replica.storage, skipping: driver.replica.duplicates,
                                                      from: next, through: readable, maxCount: 512)
                    index = 0
                }
                defer { index += 1 }
                return buffer[index]
            }
        }

        /// Reads chosen records in `from ... through` (at most `maxCount` slots, and no more once
        /// their payloads reach `maxBytes`) from storage, skipping no-ops and `duplicates`. Every
        /// slot must be present: a gap in the chosen prefix is corruption, never skipped.
        package static func read(storage: any ReplicaStorage, skipping duplicates: DuplicateSlots, from: Position, through: Position,
                                 maxCount: Int, maxBytes: Int = .max) throws -> (entries: [Entry], next: Position) {
            guard from <= through, maxCount > 0 else { return ([], from) }
            let last = Swift.min(through, from + Position(maxCount) - 1)
            let stored: [LogEntry]
            do {
                stored = try storage.entries(from: from, through: last, maxBytes: maxBytes)
            } catch let error as SegmentLogError where error.isCompacted {
                // The application must restore the latest snapshot and continue after it.
                throw PaxosLogError(.compacted, "position \(from) was compacted into a snapshot; restore latestSnapshot() and read on from after it")
            } catch let error as SegmentLogError where error.isClosed {
                throw PaxosLogError(.closed, "the log was closed")
            }
            let repeats = stored.isEmpty ? [] : duplicates.within(from...stored[stored.count - 1].slot)
            var out: [Entry] = []
            out.reserveCapacity(stored.count)
            var expected = from
            var bytes = 0
            for e in stored {
                guard e.slot == expected else {
                    throw PaxosLogError(.storage, "chosen slot \(expected) is missing from storage (next stored: \(e.slot))")
                }
                expected += 1
                bytes += e.payload.count
                if !e.isNoop, !repeats.contains(e.slot) { out.append(Entry(position: e.slot, bytes: e.payload, id: e.proposal.map { ProposalID(client: $0.client, sequence: $0.sequence) })) }
            }
            // Storage stops early only once the payloads reach maxBytes.
            guard expected == last + 1 || bytes >= maxBytes else {
                throw PaxosLogError(.storage, "chosen slots \(expected)...\(last) are missing from storage")
            }
            return (out, expected)
        }
    }
}
