import MultiPaxos

/// The appends of one request: completes once every record is chosen, or fails on the first error.
/// Touched only on the replica's executor.
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
    private var completion: Completion?

    package init(count: Int, _ completion: Completion) {
        precondition(count > 0, "an append batch holds at least one record")
        self.slots = Array(repeating: 0, count: count)
        self.remaining = count
        self.completion = completion
    }

    /// Whether its caller was answered (every record chosen, or a failure).
    var isFinished: Bool { completion == nil }

    /// - Returns: whether this finished the batch (its caller is answered).
    @discardableResult
    func complete(index: Int, slot: Slot) -> Bool {
        guard let completion else { return false }
        slots[index] = slot
        remaining -= 1
        guard remaining == 0 else { return false }
        self.completion = nil
        switch completion {
        case .continuation(let continuation): continuation.resume(returning: slots)
        case .callback(let callback): callback(.success(slots))
        }
        return true
    }

    /// Fails the batch once; later outcomes (a second failure) are dropped.
    func fail(_ error: PaxosLogError) {
        guard let completion else { return }
        self.completion = nil
        switch completion {
        case .continuation(let continuation): continuation.resume(throwing: error)
        case .callback(let callback): callback(.failure(error))
        }
    }
}
