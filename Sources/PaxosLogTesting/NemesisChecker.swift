import MultiPaxos

/// One replica's chosen log, read offline from its data directory after the run.
public struct ReplicaLog: Sendable, Hashable {
    /// Every slot up to here is chosen and held (no snapshot in a nemesis run).
    public var chosenThrough: Slot
    /// Chosen values by slot; nil for a no-op.
    public var entries: [Slot: [UInt8]?]
    /// Slots whose value repeats the proposal identity of an earlier slot (a retried append
    /// whose first attempt a later leader revived), with that earlier slot: readers skip them.
    public var repeats: [Slot: Slot]

    public init(chosenThrough: Slot, entries: [Slot: [UInt8]?], repeats: [Slot: Slot] = [:]) {
        self.chosenThrough = chosenThrough
        self.entries = entries
        self.repeats = repeats
    }
}

/// A broken promise found in a nemesis history.
public struct NemesisViolation: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// A replica's chosen prefix has a slot it does not hold.
        case hole
        /// Two replicas hold different values at one chosen slot.
        case divergentSlot
        /// An acknowledged append is not at its slot on some replica.
        case lostAcknowledged
        /// One value at two slots (an append applied twice).
        case duplicate
        /// A value no operation of the history appended.
        case alien
        /// An append answered "not appended" is in the log.
        case notAppendedButPresent
        /// A read returned a value the final log does not hold at that slot.
        case readMismatch
        /// A read skipped a chosen record below the slot it said it examined up to.
        case readIncomplete
        /// A linearizable read missed an append acknowledged before the read began.
        case staleLinearizableRead
        /// After healing, no append was acknowledged within the bound.
        case noProgressAfterHeal
        /// A replica process died that the nemesis had not killed.
        case replicaExited
    }

    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public var description: String { "\(kind.rawValue): \(message)" }
}

/// Judges a nemesis history against the replicas' final logs.
///
/// Safety: no slot holds two values (on any two replicas); every acknowledged append is at its
/// slot on every replica; no value is in the log twice, except as a repeat of one proposal
/// identity (``ReplicaLog/repeats``), which must be neither read nor acknowledged; every value
/// in the log was appended by an operation of the history; nothing answered "not appended" is
/// in the log; every read returned exactly the final log's records over the range it examined,
/// repeats skipped; a read marked
/// linearizable contains every append acknowledged before it was invoked. Liveness (progress
/// after a heal) is judged while the run goes on and reported as ``NemesisViolation/Kind/noProgressAfterHeal``.
///
/// Appends answered "unknown" may be in the log or not; the checker only requires them to be
/// there at most once.
public enum NemesisChecker {
    /// - Parameters:
    ///   - history: every operation, completed or not.
    ///   - logs: each replica's chosen log.
    /// - Returns: the violations, empty when the run kept every promise. At most `limit` of each
    ///   kind are listed (one wrong slot under load tends to break many checks at once).
    public static func check(history: [NemesisOperation], logs: [NodeID: ReplicaLog], limit: Int = 10) -> [NemesisViolation] {
        var found: [NemesisViolation] = []
        var perKind: [NemesisViolation.Kind: Int] = [:]
        func report(_ kind: NemesisViolation.Kind, _ message: @autoclosure () -> String) {
            perKind[kind, default: 0] += 1
            if perKind[kind]! <= limit { found.append(NemesisViolation(kind, message())) }
        }

        // One agreed log: every replica's chosen prefix, merged; a disagreement is reported.
        var merged: [Slot: [UInt8]?] = [:]
        var holder: [Slot: NodeID] = [:]
        // Repeats of one identity: in the log twice, read and acknowledged once, at the first.
        var repeats: [Slot: Slot] = [:]
        for log in logs.values { repeats.merge(log.repeats) { a, _ in a } }
        for (node, log) in logs.sorted(by: { $0.key < $1.key }) {
            if log.chosenThrough > 0 {
                for slot in 1...log.chosenThrough where log.entries[slot] == nil {
                    report(.hole, "node \(node) has chosen through \(log.chosenThrough) but holds nothing at slot \(slot)")
                }
            }
            for (slot, value) in log.entries where slot <= log.chosenThrough {
                if let seen = merged[slot] {
                    if seen != value {
                        report(.divergentSlot, "slot \(slot): node \(holder[slot]!) holds \(show(seen)), node \(node) holds \(show(value))")
                    }
                } else {
                    merged[slot] = value
                    holder[slot] = node
                }
            }
        }

        var appendOf: [[UInt8]: NemesisOperation] = [:]
        for op in history {
            if case .append(let v) = op.kind { appendOf[v] = op }
        }
        var slotsOf: [[UInt8]: [Slot]] = [:]
        for (slot, value) in merged where repeats[slot] == nil {
            guard let value else { continue }
            slotsOf[value, default: []].append(slot)
        }
        for (value, slots) in slotsOf.sorted(by: { $0.value.min()! < $1.value.min()! }) {
            if slots.count > 1 { report(.duplicate, "\(show(value)) is at slots \(slots.sorted())") }
            guard let op = appendOf[value] else {
                report(.alien, "\(show(value)) at slot \(slots.min()!) was appended by no operation")
                continue
            }
            if case .notAppended(let why) = op.outcome {
                report(.notAppendedButPresent, "operation \(op.id) was answered not appended (\(why)) but is at slot \(slots.min()!)")
            }
        }

        for op in history {
            guard case .append(let value) = op.kind, case .appended(let slot) = op.outcome else { continue }
            if let first = repeats[slot] {
                report(.lostAcknowledged, "operation \(op.id) was acknowledged at slot \(slot), a repeat of its identity first chosen at slot \(first)")
            }
            for (node, log) in logs.sorted(by: { $0.key < $1.key }) {
                if slot > log.chosenThrough {
                    report(.lostAcknowledged, "operation \(op.id) was acknowledged at slot \(slot), node \(node) has chosen only through \(log.chosenThrough)")
                } else if log.entries[slot] != .some(.some(value)) {
                    report(.lostAcknowledged, "operation \(op.id) was acknowledged at slot \(slot), node \(node) holds \(show(log.entries[slot] ?? nil)) there")
                }
            }
        }

        checkReads(history, merged: merged, repeats: repeats, report: report)
        return found
    }

    private static func checkReads(_ history: [NemesisOperation], merged: [Slot: [UInt8]?], repeats: [Slot: Slot],
                                   report: (NemesisViolation.Kind, @autoclosure () -> String) -> Void) {
        // Acknowledged appends by completion time, for the linearizable reads.
        let acknowledged: [(completed: Double, slot: Slot, id: Int)] = history.compactMap { op in
            guard case .append = op.kind, case .appended(let slot) = op.outcome, let done = op.completed else { return nil }
            return (done, slot, op.id)
        }
        for op in history {
            guard case .read(let from, let linearizable) = op.kind, case .read(let entries, let next, let truncated) = op.outcome else { continue }
            for (slot, bytes) in entries where merged[slot] != .some(.some(bytes)) || repeats[slot] != nil {
                report(.readMismatch, "read \(op.id) returned \(show(bytes)) at slot \(slot), the log holds \(show(merged[slot] ?? nil))"
                       + (repeats[slot].map { ", a repeat of slot \($0) that readers must skip" } ?? ""))
            }
            if next > from {
                for slot in from..<next where repeats[slot] == nil {
                    if case .some(.some(let v)) = merged[slot], entries[slot] == nil {
                        report(.readIncomplete, "read \(op.id) examined slots \(from)..<\(next) but skipped \(show(v)) at slot \(slot)")
                    }
                }
            }
            guard linearizable else { continue }
            for a in acknowledged where a.completed < op.invoked && a.slot >= from {
                if a.slot >= next && !truncated {
                    report(.staleLinearizableRead, "read \(op.id) began at \(op.invoked) s, after append \(a.id) was acknowledged at slot \(a.slot) (\(a.completed) s), but stopped before slot \(next)")
                }
            }
        }
    }

    /// How the appends answered "unknown" (or never answered) turned out: how many are in the
    /// merged log and how many are not. Both are allowed; the split says what "unknown" meant.
    public static func resolveUnknowns(history: [NemesisOperation], logs: [NodeID: ReplicaLog]) -> (inLog: Int, absent: Int) {
        var values = Set<[UInt8]>()
        for log in logs.values {
            for (slot, value) in log.entries where slot <= log.chosenThrough {
                if let value { values.insert(value) }
            }
        }
        var inLog = 0, absent = 0
        for op in history {
            guard case .append(let value) = op.kind else { continue }
            switch op.outcome {
            case .unknown, .pending: if values.contains(value) { inLog += 1 } else { absent += 1 }
            default: break
            }
        }
        return (inLog, absent)
    }

    static func show(_ value: [UInt8]?) -> String {
        guard let value else { return "no-op" }
        if value.count <= 64, let s = String(validating: value, as: UTF8.self) { return "'\(s)'" }
        return "\(value.count) bytes"
    }
}
