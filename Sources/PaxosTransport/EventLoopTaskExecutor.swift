import NIOCore

/// Runs Swift tasks on one SwiftNIO event loop.
///
/// A task that prefers it (`Task(executorPreference:)`, `addTask(executorPreference:)`) and
/// awaits something completed on that loop — an append answered by ``PaxosClient`` on its
/// connection's loop, or by a replica on its own loop — continues there at once, instead of being
/// handed to Swift's global executor and woken on one of its threads. Keep such tasks light: they
/// share the thread with the loop's network I/O (and a replica's consensus).
public final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    public let loop: any EventLoop

    public init(_ loop: any EventLoop) { self.loop = loop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
