import MultiPaxos
import NIOConcurrencyHelpers

/// Merges appends that many tasks make at once on one client into fewer, larger requests.
///
/// Up to `maxInFlight` requests go out as soon as they are made. While all are in flight, further
/// appends wait, and whichever request finishes first sends everything that waited as one
/// request: nobody waits longer than for a request that was already on its way, and under load
/// one frame, one server task and one proposal carry many records instead of one each.
///
/// Each caller still gets exactly its own slots, in its own order. Records of one caller stay
/// contiguous; records of different callers are ordered as they were queued.
final class AppendCoalescer: Sendable {
    typealias Send = @Sendable ([[UInt8]]) async throws(TransportError) -> [Slot]

    private struct Waiter {
        var records: [[UInt8]]
        var continuation: CheckedContinuation<Result<[Slot], TransportError>, Never>
    }

    private struct State {
        var inFlight = 0
        var waiting: [Waiter] = []
    }

    let maxInFlight: Int
    /// A merged request stops taking waiters at this many record bytes (one caller's records are
    /// never split, so a single large append still goes out whole).
    let maxBatchBytes: Int
    private let state = NIOLockedValueBox(State())

    init(maxInFlight: Int = 4, maxBatchBytes: Int = 1 << 20) {
        self.maxInFlight = maxInFlight
        self.maxBatchBytes = maxBatchBytes
    }

    /// Appends waiting for a place (for tests).
    var waitingCount: Int { state.withLockedValue { $0.waiting.count } }

    func append(_ records: [[UInt8]], send: @escaping Send) async throws(TransportError) -> [Slot] {
        let direct = state.withLockedValue { s in
            guard s.inFlight < maxInFlight else { return false }
            s.inFlight += 1
            return true
        }
        if direct {
            let result: Result<[Slot], TransportError>
            do { result = .success(try await send(records)) } catch { result = .failure(error) }
            await sendWaiting(send)
            return try result.get()
        }
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<[Slot], TransportError>, Never>) in
            let startSender = state.withLockedValue { s in
                s.waiting.append(Waiter(records: records, continuation: continuation))
                // A request finished between the check above and now and found nobody waiting.
                guard s.inFlight < maxInFlight else { return false }
                s.inFlight += 1
                return true
            }
            if startSender { Task { await self.sendWaiting(send) } }
        }
        return try result.get()
    }

    /// Holding one in-flight place: sends what waits, batch after batch, then gives the place up.
    private func sendWaiting(_ send: Send) async {
        while true {
            let batch: [Waiter] = state.withLockedValue { s in
                var bytes = 0
                var n = 0
                while n < s.waiting.count && (n == 0 || bytes < maxBatchBytes) {
                    bytes += s.waiting[n].records.reduce(0) { $0 + $1.count }
                    n += 1
                }
                if n == 0 { s.inFlight -= 1 }
                let taken = Array(s.waiting.prefix(n))
                s.waiting.removeFirst(n)
                return taken
            }
            if batch.isEmpty { return }
            var records: [[UInt8]] = []
            records.reserveCapacity(batch.reduce(0) { $0 + $1.records.count })
            for w in batch { records.append(contentsOf: w.records) }
            do {
                let slots = try await send(records)
                guard slots.count == records.count else {
                    let error = TransportError(.unexpectedResponse, "\(slots.count) slots for \(records.count) records")
                    for w in batch { w.continuation.resume(returning: .failure(error)) }
                    continue
                }
                var i = 0
                for w in batch {
                    w.continuation.resume(returning: .success(Array(slots[i..<(i + w.records.count)])))
                    i += w.records.count
                }
            } catch {
                for w in batch { w.continuation.resume(returning: .failure(error)) }
            }
        }
    }
}
