
/// Runs `body` and returns what it returns, or throws ``DeadlineExceeded`` after `seconds`
/// without waiting for it any longer.
///
/// `body` runs in its own task and is not cancelled (a client call stuck on a frozen replica
/// ignores cancellation); `onTimeout` runs when the deadline passes, to make it end (e.g. by
/// closing the client it waits on). Nothing a harness waits on can then hold it past its bound.
public func withDeadline<T: Sendable>(_ seconds: Double, onTimeout: @escaping @Sendable () async -> Void = {},
                                      _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    precondition(seconds > 0, "a deadline must be in the future")
    let waiter = LockedValue<CheckedContinuation<T, any Error>?>(nil)
    @Sendable func finish(_ result: Result<T, any Error>) -> Bool {
        let c = waiter.withLock { c -> CheckedContinuation<T, any Error>? in
            defer { c = nil }
            return c
        }
        c?.resume(with: result)
        return c != nil
    }
    return try await withCheckedThrowingContinuation { continuation in
        waiter.withLock { $0 = continuation }
        let timer = Task {
            try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            guard !Task.isCancelled else { return }
            if finish(.failure(DeadlineExceeded(seconds: seconds))) { await onTimeout() }
        }
        Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            timer.cancel()
            _ = finish(result)
        }
    }
}

/// ``withDeadline(_:onTimeout:_:)`` gave up: what `body` did is unknown.
public struct DeadlineExceeded: Error, CustomStringConvertible, Sendable {
    public var seconds: Double
    public init(seconds: Double) { self.seconds = seconds }
    public var description: String { "no answer within \(seconds) s" }
}
