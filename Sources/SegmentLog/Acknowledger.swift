/// A thread that finishes appends (resumes their tasks, runs their callbacks) in hand-off order.
///
/// Why not the syncer itself: resuming a task costs a wake-up, and with hundreds of appenders per
/// sync that was about a third of each commit cycle on the syncer thread, time in which the disk
/// sat idle. Handed off here, the syncer starts the next `fdatasync` at once. A few waiters, though,
/// cost the syncer less to finish itself than to hand over (see `inlineLimit`).
final class Acknowledger: @unchecked Sendable {
    /// Up to this many waiters are finished on the caller's thread when nothing is queued or
    /// running here: waking this thread would cost about as much as finishing them.
    static let inlineLimit = 4

    // Thread-safety: `queue`, `stopping`, `exited`, `waiting` and `finishing` are guarded by `lock`.
    private let lock = PosixLock()
    private var queue: [(waiters: [SegmentStore.Waiter], result: Result<Void, SegmentLogError>)] = []
    private var stopping = false
    /// The thread is gone: later hand-offs are finished by the caller.
    private var exited = false
    private var waiting = false
    /// Waiters are being finished (by the thread, or inline by a caller): nobody else may start.
    private var finishing = false
    private var thread: OSThread?

    /// - Parameter nice: the thread's nice value, if allowed (see `Options.commitThreadNice`).
    init(nice: Int32?) throws {
        thread = try OSThread.start(name: "paxlog-ack") { [self] in
            if let nice { _ = setCurrentThreadNice(nice) }
            run()
        }
    }

    /// Finishes `waiters` with `result` after everything handed before: on the acknowledger
    /// thread, or right here when they are few and nothing earlier is unfinished.
    func finish(_ waiters: [SegmentStore.Waiter], _ result: Result<Void, SegmentLogError>) {
        guard !waiters.isEmpty else { return }
        lock.lock()
        if exited {
            lock.unlock()
            for w in waiters { w.finish(result) }
            return
        }
        if waiters.count <= Self.inlineLimit && queue.isEmpty && !finishing {
            // Nothing handed earlier is unfinished, so finishing here keeps hand-off order.
            finishing = true
            lock.unlock()
            for w in waiters { w.finish(result) }
            lock.lock()
            finishing = false
            let wake = waiting && (!queue.isEmpty || stopping)
            if wake { waiting = false }
            lock.unlock()
            if wake { lock.signal() }
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
            while (queue.isEmpty && !stopping) || finishing {
                waiting = true
                lock.wait()
            }
            let exiting = queue.isEmpty && stopping
            if exiting { exited = true }
            swap(&batch, &queue)
            finishing = !exiting
            lock.unlock()
            if exiting { return }
            for (waiters, result) in batch {
                for w in waiters { w.finish(result) }
            }
            batch.removeAll(keepingCapacity: true)
            lock.withLock { finishing = false }
        }
    }
}
