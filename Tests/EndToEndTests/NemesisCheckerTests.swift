import MultiPaxos
import PaxosLogTesting
import Testing

/// The nemesis checker on hand-made histories: it passes a clean one and catches each planted
/// violation (a checker that cannot fail is a defect).
struct NemesisCheckerTests {
    static func v(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// Three acknowledged appends, one not appended, one unknown that made it, a no-op, and a
    /// local read; the same log on three replicas.
    static func clean() -> (history: [NemesisOperation], logs: [NodeID: ReplicaLog]) {
        let history = [
            NemesisOperation(id: 0, client: 0, kind: .append(value: v("a")), invoked: 0, completed: 1, outcome: .appended(1)),
            NemesisOperation(id: 1, client: 1, kind: .append(value: v("b")), invoked: 0.5, completed: 1.5, outcome: .appended(3)),
            NemesisOperation(id: 2, client: 0, kind: .append(value: v("c")), invoked: 1, completed: 2, outcome: .notAppended("superseded")),
            NemesisOperation(id: 3, client: 1, kind: .append(value: v("d")), invoked: 1.5, completed: 5, outcome: .unknown("timeout")),
            NemesisOperation(id: 4, client: 0, kind: .append(value: v("e")), invoked: 2, completed: 3, outcome: .appended(5)),
            NemesisOperation(id: 5, client: 2, kind: .read(from: 1, linearizable: false), invoked: 3.5, completed: 4,
                             outcome: .read(entries: [1: v("a"), 3: v("b")], nextSlot: 4, truncated: false)),
        ]
        let entries: [Slot: [UInt8]?] = [1: v("a"), 2: nil, 3: v("b"), 4: v("d"), 5: v("e")]
        let log = ReplicaLog(chosenThrough: 5, entries: entries)
        return (history, [1: log, 2: log, 3: log])
    }

    static func kinds(_ history: [NemesisOperation], _ logs: [NodeID: ReplicaLog]) -> Set<NemesisViolation.Kind> {
        Set(NemesisChecker.check(history: history, logs: logs).map(\.kind))
    }

    @Test func aCleanHistoryPasses() {
        let (history, logs) = Self.clean()
        #expect(NemesisChecker.check(history: history, logs: logs).isEmpty)
    }

    /// "d" (unknown, retried) is in the log twice: its first attempt revived at slot 6 beside
    /// its retry at slot 4. Allowed, as long as no reader sees slot 6 and nobody was answered it.
    @Test func aRepeatOfOneIdentityPassesOnlyIfNeitherReadNorAcknowledged() {
        var (history, logs) = Self.clean()
        for n in logs.keys {
            logs[n]!.entries[6] = Self.v("d")
            logs[n]!.chosenThrough = 6
            logs[n]!.repeats = [6: 4]
        }
        history.append(NemesisOperation(id: 6, client: 2, kind: .read(from: 4, linearizable: false), invoked: 6, completed: 7,
                                        outcome: .read(entries: [4: Self.v("d"), 5: Self.v("e")], nextSlot: 7, truncated: false)))
        #expect(NemesisChecker.check(history: history, logs: logs).isEmpty)
        var readTwice = history
        readTwice[6] = NemesisOperation(id: 6, client: 2, kind: .read(from: 4, linearizable: false), invoked: 6, completed: 7,
                                        outcome: .read(entries: [4: Self.v("d"), 5: Self.v("e"), 6: Self.v("d")], nextSlot: 7, truncated: false))
        #expect(Self.kinds(readTwice, logs) == [.readMismatch])
        var ackedAtRepeat = history
        ackedAtRepeat[3] = NemesisOperation(id: 3, client: 1, kind: .append(value: Self.v("d")), invoked: 1.5, completed: 5, outcome: .appended(6))
        #expect(Self.kinds(ackedAtRepeat, logs).contains(.lostAcknowledged))
        var noRepeats = logs
        for n in noRepeats.keys { noRepeats[n]!.repeats = [:] }
        #expect(Self.kinds(history, noRepeats).contains(.duplicate))
    }

    @Test func anAcknowledgedAppendMissingOnOneReplicaIsLost() {
        var (history, logs) = Self.clean()
        logs[2]!.entries.updateValue(nil, forKey: 3)
        #expect(Self.kinds(history, logs).contains(.lostAcknowledged))
        // A replica that never caught up is as bad.
        (history, logs) = Self.clean()
        logs[3] = ReplicaLog(chosenThrough: 2, entries: [1: Self.v("a"), 2: nil])
        #expect(Self.kinds(history, logs) == [.lostAcknowledged])
    }

    @Test func twoValuesAtOneSlotAreCaught() {
        var (history, logs) = Self.clean()
        logs[3]!.entries.updateValue(Self.v("d2"), forKey: 4)
        history.append(NemesisOperation(id: 6, client: 1, kind: .append(value: Self.v("d2")), invoked: 1, outcome: .unknown("lost connection")))
        #expect(Self.kinds(history, logs) == [.divergentSlot])
    }

    @Test func aValueTwiceIsCaught() {
        let (history, clean) = Self.clean()
        let log = ReplicaLog(chosenThrough: 6, entries: clean[1]!.entries.merging([6: Self.v("d")]) { $1 })
        #expect(Self.kinds(history, [1: log, 2: log, 3: log]) == [.duplicate])
    }

    @Test func aValueNobodyAppendedIsCaught() {
        let (history, clean) = Self.clean()
        let log = ReplicaLog(chosenThrough: 6, entries: clean[1]!.entries.merging([6: Self.v("zz")]) { $1 })
        #expect(Self.kinds(history, [1: log, 2: log, 3: log]) == [.alien])
    }

    @Test func aNotAppendedValueInTheLogIsCaught() {
        let (history, clean) = Self.clean()
        let log = ReplicaLog(chosenThrough: 6, entries: clean[1]!.entries.merging([6: Self.v("c")]) { $1 })
        #expect(Self.kinds(history, [1: log, 2: log, 3: log]) == [.notAppendedButPresent])
    }

    @Test func aHoleInAChosenPrefixIsCaught() {
        let (history, clean) = Self.clean()
        var logs = clean
        logs[1]!.entries.removeValue(forKey: 2)
        #expect(Self.kinds(history, logs) == [.hole])
        // A replica whose chosen prefix ends before the slot has no hole (it is behind instead).
        logs[1] = ReplicaLog(chosenThrough: 1, entries: [1: Self.v("a")])
        #expect(!Self.kinds(history, logs).contains(.hole))
    }

    @Test func readsMustMatchTheLogOverWhatTheyExamined() {
        let (clean, logs) = Self.clean()
        var history = clean
        history[5].outcome = .read(entries: [1: Self.v("a"), 3: Self.v("x")], nextSlot: 4, truncated: false)
        #expect(Self.kinds(history, logs) == [.readMismatch])
        history[5].outcome = .read(entries: [1: Self.v("a")], nextSlot: 4, truncated: false)
        #expect(Self.kinds(history, logs) == [.readIncomplete])
    }

    /// The same stale read passes as a local read and fails as a linearizable one: append 4 (slot
    /// 5) was acknowledged at 3 s, the read began at 3.5 s and stopped at slot 4.
    @Test func staleReadsFailOnlyWhenLinearizable() {
        let (clean, logs) = Self.clean()
        var history = clean
        #expect(Self.kinds(history, logs).isEmpty)
        history[5].kind = .read(from: 1, linearizable: true)
        #expect(Self.kinds(history, logs) == [.staleLinearizableRead])
        history[5].outcome = .read(entries: [1: Self.v("a"), 3: Self.v("b"), 4: Self.v("d"), 5: Self.v("e")], nextSlot: 6, truncated: false)
        #expect(Self.kinds(history, logs).isEmpty)
    }

    @Test func failedAppendsAreClassifiedByWhatTheServerSaid() {
        let timeout = NemesisClients.outcome(of: DeadlineExceeded(seconds: 4))
        guard case .unknown = timeout else { Issue.record("a timeout must be unknown"); return }
    }
}
