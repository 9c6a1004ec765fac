/// A thread that finishes appends (resumes their tasks, runs their callbacks) in hand-off order.
///
/// Why not the syncer itself: resuming a task costs a wake-up, and with hundreds of appenders per
/// sync that was about a third of each commit cycle on the syncer thread, time in which the disk
/// sat idle. Handed off here, the syncer starts the next `fdatasync` at once.
final class Acknowledger: @unchecked Sendable {
    // Thread-safety: `queue`, `stopping`, `exited` and `waiting` are guarded by `lock`.
    private let lock = PosixLock()
    private var queue: [(waiters: [SegmentStore.Waiter], result: Result<Void, SegmentLogError>)] = []
    private var stopping = false
    /// The thread is gone: later hand-offs are finished by the caller.
    private var exited = false
    private var waiting = false
    private var thread: OSThread?

    /// - Parameter nice: the thread's nice value, if allowed (see `Options.commitThreadNice`).
    init(nice: Int32?) throws {
        thread = try OSThread.start(name: "paxlog-ack") { [self] in
            if let nice { _ = setCurrentThreadNice(nice) }
            run()
        }
    }

    /// Finishes `waiters` with `result` on the acknowledger thread, after everything handed before.
    func finish(_ waiters: [SegmentStore.Waiter], _ result: Result<Void, SegmentLogError>) {
        guard !waiters.isEmpty else { return }
        lock.lock()
        if exited {
            lock.unlock()
            for w in waiters { w.finish(result) }
            return
        }
        queue.append((waiters, result))
        let wake = waiting
        waiting = false
        lock.unlock()
        if wake { lock.signal() }
    }

    /// Finishes everything handed so far, then stops the thread.
    func stop() {
        lock.withLock { stopping = true }
        lock.signal()
        thread?.join()
        thread = nil
    }

    private func run() {
        var batch: [(waiters: [SegmentStore.Waiter], result: Result<Void, SegmentLogError>)] = []
        while true {
            lock.lock()
            while queue.isEmpty && !stopping {
                waiting = true
                lock.wait()
            }
            let exiting = queue.isEmpty && stopping
            if exiting { exited = true }
            swap(&batch, &queue)
            lock.unlock()
            if exiting { return }
            for (waiters, result) in batch {
                for w in waiters { w.finish(result) }
            }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
