import MultiPaxos
import Synchronization

/// The appends of one request: completes once every record is chosen, or fails on the first error.
/// Its slots are touched only on the replica's executor; its completion is behind a lock, so that
/// a cancelled task can fail it from any thread.
package final class AppendBatch: @unchecked Sendable {
    /// Whom to tell: a task suspended in ``PaxosLog/append(contentsOf:)``, or a callback of a
    /// caller that waits on an event loop rather than in a task (``PaxosLog/append(contentsOf:completion:)``),
    /// or the simulator's client.
    package enum Completion {
        case continuation(UnsafeContinuation<[Slot], any Error>)
        case callback(@Sendable (Result<[Slot], PaxosLogError>) -> Void)
    }

    private var slots: [Slot]
    private var remaining: Int
    /// Nil before ``attach(_:)`` and once answered. An uncontended lock: a few nanoseconds.
    private let completion: Mutex<Completion?>

    package init(count: Int, _ completion: Completion? = nil) {
        precondition(count > 0, "an append batch holds at least one record")
        self.slots = Array(repeating: 0, count: count)
        self.remaining = count
        self.completion = Mutex(completion)
    }

    /// Sets whom to tell, once, before the batch is offered (for a task's continuation, which
    /// exists only inside `withUnsafeThrowingContinuation`).
    func attach(_ c: Completion) {
        completion.withLock { $0 = c }
    }

    /// Whether its caller was answered (every record chosen, or a failure).
    var isFinished: Bool { completion.withLock { if case .none = $0 { true } else { false } } }

    /// - Returns: whether this finished the batch (its caller is answered).
    @discardableResult
    func complete(index: Int, slot: Slot) -> Bool {
        slots[index] = slot
        remaining -= 1
        guard remaining == 0, let c = take() else { return false }
        switch c {
        case .continuation(let continuation): continuation.resume(returning: slots)
        case .callback(let callback): callback(.success(slots))
        }
        return true
    }

    /// Fails the batch once; later outcomes (a second failure) are dropped. Any thread.
    func fail(_ error: PaxosLogError) {
        guard let c = take() else { return }
        switch c {
        case .continuation(let continuation): continuation.resume(throwing: error)
        case .callback(let callback): callback(.failure(error))
        }
    }

    private func take() -> Completion? {
        completion.withLock { c in
            defer { c = nil }
            return c
        }
    }
}
