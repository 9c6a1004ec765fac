import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore

/// One request's records on their way to the replica.
struct Proposal {
    let records: [[UInt8]]
    let id: ProposalID?
    let isRetry: Bool
    let batch: AppendBatch
}

/// How appends from any thread reach a ``Replica`` on its event loop, and when.
///
/// Appends from other threads queue in an inbox and one hop onto the loop takes all that queued
/// meanwhile: under load that pays for the hop (a closure allocation and NIO's two task-queue
/// locks and its wake-up check) once per burst of appends instead of once per append. Right after
/// the replica answered appends, appends from other threads may wait a little longer for the
/// answered callers to come back (``PaxosLog/Configuration/appendHold``), so they share one
/// round. Appends made on the loop itself are offered at once. This decides only when an append
/// is offered, never its outcome: that is the replica's.
final class AppendAdmission: @unchecked Sendable {
    private let replica: Replica
    private let loop: any EventLoop
    private let hold: TimeAmount

    private struct Inbox {
        var proposals: [Proposal] = []
        /// A `takeInbox` is queued on the loop and will see what is appended now.
        var scheduled = false
    }

    private let inbox = NIOLockedValueBox(Inbox())
    /// The inbox's previous array, emptied, kept for its capacity. Confined to `loop`.
    private var spare: [Proposal] = []
    /// Appends answered whose callers have not appended again yet, and until when appends from
    /// other threads wait for them. Confined to `loop`.
    private var awaitedReturns = 0
    private var holdUntil = NIODeadline.distantPast
    /// Appends from other threads waiting for the awaited callers, in the order offered.
    private var waitingForReturns: [Proposal] = []
    private var holdTimer: Scheduled<Void>?

    init(replica: Replica, loop: any EventLoop, hold: TimeAmount) {
        self.replica = replica
        self.loop = loop
        self.hold = hold
    }

    /// Offers one request's records (any thread). `batch` may fail before this returns.
    func offer(_ proposal: Proposal) {
        if loop.inEventLoop {
            // Already on the loop (a client connection of this loop): no inbox, no hop. Nothing
            // of this thread can wait in the inbox, so this keeps its order.
            replica.propose(proposal)
            // A caller just answered may be back on the loop: it counts towards the awaited ones.
            if awaitedReturns > 0 {
                awaitedReturns -= 1
                if awaitedReturns == 0 { release() }
            }
            return
        }
        let schedule = inbox.withLockedValue { inbox -> Bool in
            inbox.proposals.append(proposal)
            guard !inbox.scheduled else { return false }
            inbox.scheduled = true
            return true
        }
        if schedule { loop.execute { self.takeInbox() } }
    }

    /// The replica answered `count` callers (on the loop).
    func answered(_ count: Int) {
        guard hold > .zero else { return }
        awaitedReturns += count
        holdUntil = NIODeadline.now() + hold
    }

    /// Fails every append waiting here (on the loop).
    func failAll(_ error: PaxosLogError) {
        for w in waitingForReturns { w.batch.fail(error.with(.notAppended)) }
        waitingForReturns = []
        release()  // nothing left to offer: ends the hold and its timer
    }

    /// Offers everything in the inbox, in the order it was offered. On the loop.
    private func takeInbox() {
        // Trade the previous round's emptied array for the inbox's, so that neither side
        // allocates per round: swaps, not copies, keep each buffer uniquely referenced.
        var proposals: [Proposal] = []
        swap(&proposals, &spare)
        inbox.withLockedValue { inbox in
            inbox.scheduled = false
            swap(&inbox.proposals, &proposals)
        }
        defer {
            proposals.removeAll(keepingCapacity: true)
            spare = proposals
        }
        if awaitedReturns > 0 {
            // Callers just answered are coming back: from Swift's global executor a few at a
            // time, each arrival a hop of its own. Offered as they came, every few would make a
            // round of their own, with its own sync on every replica (measured in
            // Benchmarks/README.md, session 7).
            awaitedReturns = Swift.max(0, awaitedReturns - proposals.count)
            if awaitedReturns > 0 && NIODeadline.now() < holdUntil {
                waitingForReturns.append(contentsOf: proposals)
                if holdTimer == nil {
                    holdTimer = loop.scheduleTask(deadline: holdUntil) {
                        self.holdTimer = nil
                        self.release()
                    }
                }
                return
            }
        }
        release()
        for p in proposals { replica.propose(p) }
    }

    /// The awaited callers are back, or were waited for long enough: offers what waited.
    private func release() {
        awaitedReturns = 0
        holdTimer?.cancel()
        holdTimer = nil
        guard !waitingForReturns.isEmpty else { return }
        var waiting: [Proposal] = []
        swap(&waiting, &waitingForReturns)
        for p in waiting { replica.propose(p) }
    }
}
