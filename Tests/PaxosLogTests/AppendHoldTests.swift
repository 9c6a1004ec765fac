import Foundation
import NIOConcurrencyHelpers
import NIOCore
import PaxosLog
import PaxosLogTesting
import Testing

/// `Configuration.appendHold`: after answering appends, the leader holds appends made off its
/// event loop until as many callers have appended again, or the hold runs out.
@Suite("Append hold")
struct AppendHoldTests {
    static let callers = 8

    /// Appends `callers` records from tasks on the replica's loop, all in one round: the tasks
    /// are all queued on the loop before the first runs, so the first one's drain comes after
    /// every proposal. The leader then awaits `callers` returns.
    static func answerOneRound(_ log: PaxosLog) async throws {
        try await Task(executorPreference: log.taskExecutor) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<callers {
                    group.addTask { _ = try await log.append(Array("first round \(i)".utf8)) }
                }
                try await group.waitForAll()
            }
        }.value
    }

    static func open(_ name: String, hold: TimeAmount) async throws -> (PaxosLog, String) {
        let dir = temporaryDirectory(name)
        var c = PaxosLog.Configuration.local(dataDirectory: dir)
        c.appendHold = hold
        return (try await PaxosLog.open(c), dir)
    }

    /// Callers coming back from Swift's global executor one at a time, 20 ms apart, are proposed
    /// together once the last is back: none is answered before the last one was even made.
    /// (Without the hold, the first is answered within a sync, long before the last is made.)
    @Test func returningCallersShareOneRound() async throws {
        let (log, dir) = try await Self.open("hold-share", hold: .seconds(60))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await Self.answerOneRound(log)

        let lastMade = NIOLockedValueBox<UInt64>(0)
        let results = try await Task.detached {
            try await withThrowingTaskGroup(of: (index: Int, position: PaxosLog.Position, answered: UInt64).self) { group in
                for i in 0..<Self.callers {
                    if i > 0 { try await Task.sleep(nanoseconds: 20_000_000) }
                    if i == Self.callers - 1 { lastMade.withLockedValue { $0 = DispatchTime.now().uptimeNanoseconds } }
                    group.addTask {
                        let position = try await log.append(Array("returning \(i)".utf8))
                        return (i, position, DispatchTime.now().uptimeNanoseconds)
                    }
                }
                var out: [(index: Int, position: PaxosLog.Position, answered: UInt64)] = []
                for try await r in group { out.append(r) }
                return out.sorted { $0.index < $1.index }
            }
        }.value
        let last = lastMade.withLockedValue { $0 }
        #expect(results.allSatisfy { $0.answered >= last }, "appends answered before the last caller came back were not held")
        // Held appends are proposed in the order they were made.
        #expect(results.map(\.position) == results.map(\.position).sorted())
        try await log.close()
    }

    /// Callers that do not come back hold the next append only until the hold runs out.
    @Test func holdEndsWhenCallersDoNotReturn() async throws {
        let (log, dir) = try await Self.open("hold-expires", hold: .milliseconds(100))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await Self.answerOneRound(log)
        let position = try await withTimeout(seconds: 20) {
            try await Task.detached { try await log.append(Array("alone".utf8)) }.value
        }
        #expect(position > PaxosLog.Position(Self.callers))
        try await log.close()
    }

    /// Closing the log fails a held append with `closed`; it does not wait out the hold.
    @Test func closeFailsHeldAppends() async throws {
        let (log, dir) = try await Self.open("hold-close", hold: .seconds(60))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await Self.answerOneRound(log)
        let held = Task.detached { try await log.append(Array("held".utf8)) }
        try await Task.sleep(nanoseconds: 50_000_000)
        try await log.close()
        let outcome = try await withTimeout(seconds: 20) { await held.result }
        #expect(throws: PaxosLogError.self) { try outcome.get() }
        if case .failure(let error as PaxosLogError) = outcome { #expect(error.code == .closed) }
    }
}
