import NIOCore

/// Runs tasks on one SwiftNIO event loop. A task that prefers it and awaits something completed
/// on that loop (a `PaxosClient` response) continues there at once, instead of being handed to
/// Swift's global executor and woken on one of its threads: in `bench processes` at 256 streams
/// that cut the whole run's CPU per record by about a third.
final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
