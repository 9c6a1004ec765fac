import Foundation

/// A value behind a lock, shared between tasks, threads and event loops.
///
/// `@unchecked Sendable`: every access goes through ``withLock(_:)``.
final class LockedValue<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()

    init(_ value: Value) { self.value = value }

    /// Runs `body` with the value, holding the lock; keep it short and never await in it.
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
