import Foundation
import Logging
import MultiPaxos
@testable import PaxosLog
import SegmentLog
import Testing

/// A retried record whose first attempt a later leader also got chosen is in the log twice;
/// readers see it once, at its first slot, also after a restart from a snapshot that lies
/// between the two (the client-session table saved beside the snapshot).
@Suite struct RepeatedIdentityTests {
    let retried = ProposalID(client: 0x42, sequence: 7)

    /// Slots 1...4: the retried record, a no-op, the same identity again, another record.
    func writeLog(_ dir: String) async throws {
        var logger = Logger(label: "repeated-identity-tests")
        logger.logLevel = .critical
        let store = try SegmentStore.open(directory: dir, logger: logger)
        let b = LogBallot(round: 1, node: 1)
        let r = LogProposalID(client: retried.client, sequence: retried.sequence)
        try await store.append([.promise(b), .accepted([
            LogEntry(slot: 1, ballot: b, proposal: r, payload: Array("first".utf8)),
            LogEntry(slot: 2, ballot: b, isNoop: true, payload: []),
            LogEntry(slot: 3, ballot: b, proposal: r, payload: Array("first".utf8)),
            LogEntry(slot: 4, ballot: b, proposal: LogProposalID(client: 0x43, sequence: 1), payload: Array("other".utf8)),
        ]), .chosen(through: 4)])
        try store.close()
    }

    func positions(_ dir: String, from: PaxosLog.Position) async throws -> [PaxosLog.Position] {
        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        let page: (entries: [PaxosLog.Entry], next: PaxosLog.Position)
        do { page = try await log.read(from: from, maxCount: 10) } catch {
            try? await log.close()
            throw error
        }
        try await log.close()
        return page.entries.map(\.position)
    }

    @Test func aRepeatIsReadOnceAcrossARestartFromASnapshotBetweenItsSlots() async throws {
        let dir = temporaryDirectory("repeated-identity")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await writeLog(dir)
        #expect(try await positions(dir, from: 1) == [1, 4])

        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        _ = try await log.compact(through: 2, snapshot: [1, 2])
        try await log.close()
        let table = dir + "/snapshot-00000000000000000002.table"
        #expect(FileManager.default.fileExists(atPath: table))
        // Slot 3 repeats slot 1, below the snapshot: only the saved table knows.
        #expect(try await positions(dir, from: 3) == [4])

        // Without the table the replica cannot tell: the repeat is read. This is what the table
        // prevents. A damaged table is the same gap, not a replica that refuses to start (the
        // table is derived from the chosen log; no acknowledged record depends on it).
        var bytes = try Data(contentsOf: URL(fileURLWithPath: table))
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: table))
        #expect(try await positions(dir, from: 3) == [3, 4])
        // `paxlog inspect` says so (a note: the log itself is sound).
        let report = try LogInspector(directory: dir).inspect()
        #expect(report.isClean && report.notes.contains { $0.contains("snapshot table") && $0.contains("does not verify") }, "\(report.notes)")
        try FileManager.default.removeItem(atPath: table)
        #expect(try await positions(dir, from: 3) == [3, 4])
    }

    @Test func theTableAsOfASlotLeavesOutLaterIdentitiesAndRoundTrips() throws {
        var t = ClientSessions(applied: 0)
        t.apply(slot: 1, value: .identified(retried, [1]))
        t.apply(slot: 2, value: .identified(ProposalID(client: 9, sequence: 1), [2]))
        t.apply(slot: 3, value: .identified(ProposalID(client: 9, sequence: 2), [3]))
        var u = try ClientSessions(decoding: #require(t.encoded(through: 2)), limits: .init(), snapshot: 2)
        #expect(u.applied == 2 && u.gapThrough == 0)
        #expect(u.lookup(retried, leading: .zero) == .chosen(1))
        #expect(u.lookup(ProposalID(client: 9, sequence: 2), leading: .zero) == .absent)
        // Replaying slot 3 and a repeat of slot 1 gives what the table that never restarted says.
        #expect(u.apply(slot: 3, value: .identified(ProposalID(client: 9, sequence: 2), [3])) == nil)
        #expect(u.apply(slot: 4, value: .identified(retried, [1])) == 1)
        var damaged = try #require(t.encoded(through: 3))
        damaged[12] ^= 0xFF
        #expect(t.encoded(through: 4) == nil)
        #expect(throws: PaxosLogError.self) { try ClientSessions(decoding: damaged, limits: .init(), snapshot: 3) }
        #expect(throws: PaxosLogError.self) { try ClientSessions(decoding: Array(#require(t.encoded(through: 3)).dropLast()), limits: .init(), snapshot: 3) }
    }
}
