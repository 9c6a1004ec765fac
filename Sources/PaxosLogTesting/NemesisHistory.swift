import Dispatch
import MultiPaxos

/// One operation a nemesis client made, as the client saw it: what it asked, when, and what it
/// was told. The history of all of them is what ``NemesisChecker`` judges.
public struct NemesisOperation: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// An append of one record; values are unique per operation, so a value found in a log
        /// names the operation that appended it.
        case append(value: [UInt8])
        /// A read of chosen entries from `from` on. `linearizable` marks a read that went through
        /// a read barrier: it must contain every append acknowledged before it began. Local reads
        /// (the client port's only kind today) may be stale, so only their contents are checked.
        case read(from: Slot, linearizable: Bool)
    }

    public enum Outcome: Sendable, Hashable {
        /// Not finished: the run stopped before an answer (judged like `unknown`).
        case pending
        /// Acknowledged at this slot: it must be there on every replica.
        case appended(Slot)
        /// The replica said it was never appended: it must be nowhere.
        case notAppended(String)
        /// It may or may not have been appended (a timeout, a lost connection, a step-down).
        case unknown(String)
        /// A read's answer: non-no-op entries by slot, and the first slot not examined. Every
        /// chosen record in `from ..< nextSlot` must be among them.
        case read(entries: [Slot: [UInt8]], nextSlot: Slot, truncated: Bool)
        /// A read that failed (it says nothing about the log).
        case readFailed(String)
    }

    public var id: Int
    /// Which client made it (-1: the nemesis' own probes).
    public var client: Int
    public var kind: Kind
    /// Seconds since the history began, on a monotonic clock.
    public var invoked: Double
    public var completed: Double?
    public var outcome: Outcome

    public init(id: Int, client: Int, kind: Kind, invoked: Double, completed: Double? = nil, outcome: Outcome = .pending) {
        self.id = id
        self.client = client
        self.kind = kind
        self.invoked = invoked
        self.completed = completed
        self.outcome = outcome
    }
}

/// The history of a nemesis run: clients record each operation when they invoke it and again
/// when it completes. Safe to use from many tasks.
public final class NemesisHistory: Sendable {
    private let start = DispatchTime.now().uptimeNanoseconds
    private let operations = LockedValue<[NemesisOperation]>([])
    /// The prefix of every value this history makes, e.g. `nemesis-<seed>-`.
    public let valuePrefix: String

    public init(valuePrefix: String) { self.valuePrefix = valuePrefix }

    /// Seconds since the history began.
    public var now: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    /// Records an append about to be sent and returns its id and its unique value.
    public func invokeAppend(client: Int) -> (id: Int, value: [UInt8]) {
        let t = now
        return operations.withLock { ops in
            let id = ops.count
            let value = Array("\(valuePrefix)\(id)".utf8)
            ops.append(NemesisOperation(id: id, client: client, kind: .append(value: value), invoked: t))
            return (id, value)
        }
    }

    /// Records a read about to be sent and returns its id.
    public func invokeRead(client: Int, from: Slot, linearizable: Bool) -> Int {
        let t = now
        return operations.withLock { ops in
            ops.append(NemesisOperation(id: ops.count, client: client, kind: .read(from: from, linearizable: linearizable), invoked: t))
            return ops.count - 1
        }
    }

    /// Records how operation `id` ended.
    public func complete(_ id: Int, _ outcome: NemesisOperation.Outcome) {
        let t = now
        operations.withLock { ops in
            precondition(ops[id].outcome == .pending, "operation \(id) completed twice")
            ops[id].completed = t
            ops[id].outcome = outcome
        }
    }

    public var all: [NemesisOperation] { operations.withLock { $0 } }

    /// The highest slot any append was acknowledged at (0: none).
    public var highestAcknowledgedSlot: Slot {
        operations.withLock { ops in
            ops.reduce(0) { top, op in
                if case .appended(let s) = op.outcome { return max(top, s) }
                return top
            }
        }
    }

    /// The longest time between `from` and `to` (history seconds) in which no append completed
    /// acknowledged: what a client saw of a fault (a failover, a stall).
    public func longestPause(from: Double, to: Double) -> Double {
        let times = [from] + all.compactMap { op -> Double? in
            guard case .appended = op.outcome, let t = op.completed, t >= from, t <= to else { return nil }
            return t
        }.sorted() + [to]
        return zip(times, times.dropFirst()).map { $1 - $0 }.max() ?? 0
    }

    /// How many appends were acknowledged so far.
    public var acknowledgedCount: Int {
        operations.withLock { ops in ops.count(where: { if case .appended = $0.outcome { true } else { false } }) }
    }

    /// Operations by outcome, e.g. `appended 812, notAppended 3, unknown 5, reads 120`.
    public var summary: String {
        var appended = 0, notAppended = 0, unknown = 0, pending = 0, reads = 0, readFailures = 0
        for op in all {
            switch op.outcome {
            case .appended: appended += 1
            case .notAppended: notAppended += 1
            case .unknown: unknown += 1
            case .pending: pending += 1
            case .read: reads += 1
            case .readFailed: readFailures += 1
            }
        }
        return "appended \(appended), not appended \(notAppended), unknown \(unknown), pending \(pending), reads \(reads), failed reads \(readFailures)"
    }

    /// One line per operation, for the file a failing run keeps.
    public var transcript: String {
        all.map { op in
            let kind: String
            switch op.kind {
            case .append(let v): kind = "append \(String(decoding: v, as: UTF8.self))"
            case .read(let from, let lin): kind = "read from \(from)\(lin ? " linearizable" : "")"
            }
            let outcome: String
            switch op.outcome {
            case .pending: outcome = "pending"
            case .appended(let s): outcome = "appended at \(s)"
            case .notAppended(let why): outcome = "not appended: \(why)"
            case .unknown(let why): outcome = "unknown: \(why)"
            case .read(let entries, let next, let truncated): outcome = "read \(entries.count) entries, next \(next)\(truncated ? " (truncated)" : "")"
            case .readFailed(let why): outcome = "read failed: \(why)"
            }
            let done = op.completed.map { String(format: "%.3f", $0) } ?? "-"
            return "\(op.id) client \(op.client) [\(String(format: "%.3f", op.invoked)) … \(done)] \(kind) → \(outcome)"
        }.joined(separator: "\n")
    }
}
