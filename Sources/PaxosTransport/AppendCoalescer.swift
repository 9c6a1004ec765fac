import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Merges appends that many tasks make at once on one client into fewer, larger requests.
///
/// Up to `maxInFlight` requests go out as soon as they are made. While all are in flight, further
/// appends wait, and whichever request finishes first sends everything that waited as one
/// request (on an event loop, once the callers it answered there have appended again): nobody
/// waits longer than for a request that was already on its way, and under load one frame, one
/// server task and one proposal carry many records instead of one each.
///
/// Each caller still gets exactly its own slots, in its own order. Records of one caller stay
/// contiguous; records of different callers are ordered as they were queued.
///
/// Requests are driven by callbacks, not by tasks: the completion of one request (on the
/// connection's event loop, for ``PaxosClient``) answers its callers and sends the next merged
/// request from there. A request then costs no task of its own, and no hop into Swift's
/// cooperative pool and back onto the event loop between one response and the next request.
final class AppendCoalescer: Sendable {
    /// Sends one request and reports its outcome to the completion, exactly once, from any thread
    /// (on the connection's event loop, ideally, so the next request goes out without a hop).
    /// `deadline`: the earliest of its callers' deadlines (an append that waited for a place
    /// keeps the deadline it was made with).
    typealias Send = @Sendable (_ records: [[UInt8]], _ deadline: NIODeadline?, _ completion: @escaping @Sendable (Result<[Slot], PaxosClientError>) -> Void) -> Void

    private struct Waiter {
        var records: [[UInt8]]
        var deadline: NIODeadline?
        var continuation: UnsafeContinuation<Result<[Slot], PaxosClientError>, Never>
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

    init(maxInFlight: Int, maxBatchBytes: Int = 1 << 20) {
        self.maxInFlight = maxInFlight
        self.maxBatchBytes = maxBatchBytes
    }

    /// Appends waiting for a place (for tests).
    var waitingCount: Int { state.withLockedValue { $0.waiting.count } }

    /// - Parameter deadline: when the caller's append must end, waiting for a place included.
    func append(_ records: [[UInt8]], deadline: NIODeadline? = nil, send: @escaping Send) async throws(PaxosClientError) -> [Slot] {
        // Unsafe rather than checked: each waiter is taken out of `waiting` once and resumed once
        // (`dispatch`), and the checked variant costs an allocation per append.
        let result = await withUnsafeContinuation { (continuation: UnsafeContinuation<Result<[Slot], PaxosClientError>, Never>) in
            let batch = state.withLockedValue { s -> [Waiter] in
                s.waiting.append(Waiter(records: records, deadline: deadline, continuation: continuation))
                guard s.inFlight < maxInFlight else { return [] }
                s.inFlight += 1
                return take(&s)
            }
            if !batch.isEmpty { dispatch(batch, send: send) }
        }
        return try result.get()
    }

    /// The next merged request's waiters, from the front of `waiting`.
    private func take(_ s: inout State) -> [Waiter] {
        var bytes = 0
        var n = 0
        while n < s.waiting.count && (n == 0 || bytes < maxBatchBytes) {
            for r in s.waiting[n].records { bytes += r.count }
            n += 1
        }
        let taken = Array(s.waiting.prefix(n))
        s.waiting.removeFirst(n)
        return taken
    }

    /// Holding one in-flight place: sends `batch`; its completion answers the waiters in it and
    /// sends what waits by then, or gives the place up.
    private func dispatch(_ batch: [Waiter], send: @escaping Send) {
        var records: [[UInt8]] = []
        records.reserveCapacity(batch.reduce(0) { $0 + $1.records.count })
        for w in batch { records.append(contentsOf: w.records) }
        let count = records.count
        send(records, batch.compactMap(\.deadline).min()) { [self] result in
            switch result {
            case .success(let slots) where slots.count == count && batch.count == 1:
                batch[0].continuation.resume(returning: .success(slots))
            case .success(let slots) where slots.count == count:
                var i = 0
                for w in batch {
                    let n = w.records.count
                    w.continuation.resume(returning: .success(Array(slots[i..<(i + n)])))
                    i += n
                }
            case .success(let slots):
                let error = PaxosClientError(.unexpectedResponse, "\(slots.count) slots for \(count) records", outcome: .unknown)
                for w in batch { w.continuation.resume(returning: .failure(error)) }
            case .failure(let error):
                // Each caller gets the identity of its own first record, to retry with.
                var offset = 0
                for w in batch {
                    var own = error
                    own.proposalID = error.proposalID?.advanced(by: offset)
                    w.continuation.resume(returning: .failure(own))
                    offset += w.records.count
                }
            }
            // On an event loop, the callers just answered may run on it too (a task preferring
            // its executor): they were queued behind this completion and append again as soon as
            // they run. Take the next request after them, still holding the place, so their
            // appends join it. Taken at once, it carried only what waited, and everyone answered
            // here waited a whole extra round for the request after it: requests of 15 and 1
            // records alternated at 16 streams.
            if let loop = MultiThreadedEventLoopGroup.currentEventLoop {
                loop.execute { self.sendNext(send: send) }
            } else {
                sendNext(send: send)
            }
        }
    }

    /// Holding an in-flight place: sends what waits, or gives the place up.
    private func sendNext(send: @escaping Send) {
        let next = state.withLockedValue { s -> [Waiter] in
            let next = take(&s)
            if next.isEmpty { s.inFlight -= 1 }
            return next
        }
        if !next.isEmpty { dispatch(next, send: send) }
    }
}
