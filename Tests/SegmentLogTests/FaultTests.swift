import Foundation
import Synchronization
import PaxosLogTesting
import Testing
@testable import SegmentLog

/// Injected ENOSPC, EIO, short and torn writes, failing syncs: a clear error, nothing
/// acknowledged lost, no writes after a sync failure, and the log reopens.
@Suite("Faults")
struct FaultTests {
    /// Appends slots 1...10, runs `inject`, then appends slot 11 and returns its error.
    func failingAppend(_ dir: String, _ fs: FaultInjectingFileSystem, options: SegmentStore.Options = .init(segmentSize: 1 << 20),
                       inject: () -> Void) async throws -> (SegmentStore, SegmentLogError?) {
        let store = try TestSupport.open(dir, options, fileSystem: fs)
        for s in 1...10 { try await store.append([.accepted([TestSupport.entry(UInt64(s))])]) }
        inject()
        do {
            try await store.append([.accepted([TestSupport.entry(11, size: 3000)])])
            return (store, nil)
        } catch let error as SegmentLogError {
            return (store, error)
        }
    }

    /// Appends one small entry per slot from `slot` until an append fails or `limit` is reached.
    /// - Returns: the failure, if any, and the first slot not appended.
    func appendUntilFailure(_ store: SegmentStore, from slot: UInt64, below limit: UInt64) async -> (SegmentLogError?, UInt64) {
        var slot = slot
        while slot < limit {
            do {
                try await store.append([.accepted([TestSupport.entry(slot)])])
                slot += 1
            } catch let error as SegmentLogError {
                return (error, slot)
            } catch {
                return (SegmentLogError(.invalidArgument, "unexpected \(error)"), slot)
            }
        }
        return (nil, slot)
    }

    func expectRefusesWrites(_ store: SegmentStore) async {
        do {
            try await store.append([.accepted([TestSupport.entry(12)])])
            Issue.record("append accepted after a write-path failure")
        } catch let error as SegmentLogError {
            #expect(error.code == .storeFailed)
            #expect(error.cause != nil)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    /// Reopens with the real file system: slots 1...10 intact, slot 11 absent or intact, appends work.
    func expectReopens(_ dir: String) async throws {
        let store = try TestSupport.open(dir)
        for s in 1...10 { #expect(try store.entry(at: UInt64(s)) == TestSupport.entry(UInt64(s))) }
        if let e = try store.entry(at: 11) { #expect(e == TestSupport.entry(11, size: 3000)) }
        try await store.append([.accepted([TestSupport.entry(20)])])
        #expect(try store.entry(at: 20) == TestSupport.entry(20))
        try store.close()
    }

    @Test("fdatasync failure is fatal: a clear error, no further writes, reopen works")
    func syncFailure() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let fs = FaultInjectingFileSystem()
        let (store, error) = try await failingAppend(dir, fs) { fs.inject(.error(EIO), on: .dataSync, pathContains: ".seg") }
        guard case .syncFailed(let code, let path)? = error?.code else {
            Issue.record("expected .syncFailed, got \(String(describing: error))")
            return
        }
        #expect(code == EIO && path.hasSuffix(".seg"))
        #expect("\(error!)".contains("refuses further writes"))
        let syncs = fs.dataSyncCount
        await expectRefusesWrites(store)
        #expect(fs.dataSyncCount == syncs, "no sync may be retried after a failure")
        #expect(try store.entry(at: 5) == TestSupport.entry(5), "reads still work")
        try store.close()
        try await expectReopens(dir)
    }

    @Test("ENOSPC halfway through a write: an .io error, the torn bytes are cut on reopen", arguments: [0, 10, 2000])
    func noSpaceMidWrite(bytes: Int) async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let fs = FaultInjectingFileSystem()
        let (store, error) = try await failingAppend(dir, fs) {
            fs.inject(.partialWrite(bytes: bytes, errno: ENOSPC), on: .write, pathContains: ".seg")
        }
        #expect(error?.code == .io(errno: ENOSPC, path: dir + "/00000000000000000001.seg"))
        await expectRefusesWrites(store)
        try store.close()
        try await expectReopens(dir)
    }

    @Test("EIO on write")
    func ioError() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let fs = FaultInjectingFileSystem()
        let (store, error) = try await failingAppend(dir, fs) { fs.inject(.error(EIO), on: .write, pathContains: ".seg") }
        #expect(error?.code == .io(errno: EIO, path: dir + "/00000000000000000001.seg"))
        await expectRefusesWrites(store)
        try store.close()
        try await expectReopens(dir)
    }

    @Test("short writes are continued, not errors")
    func shortWrites() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let fs = FaultInjectingFileSystem()
        let (store, error) = try await failingAppend(dir, fs) { fs.inject(.shortWrite(maxBytes: 7), on: .write, times: 10_000) }
        #expect(error == nil)
        #expect(fs.count(.write) > 400)
        try store.close()
        try await expectReopens(dir)
    }

    @Test("ENOSPC creating a new segment fails that append only; the store goes on")
    func noSpaceOnRoll() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let fs = FaultInjectingFileSystem()
        let store = try TestSupport.open(dir, .init(segmentSize: 1024), fileSystem: fs)
        // The disk is full: the next roll cannot reserve its segment.
        fs.inject(.error(ENOSPC), on: .allocate, times: .max)
        let (failure, slot) = await appendUntilFailure(store, from: 1, below: 100)
        guard case .io(ENOSPC, _)? = failure?.code else {
            Issue.record("expected ENOSPC, got \(String(describing: failure))")
            return
        }
        #expect(!TestSupport.files(dir).contains { $0.hasSuffix(".tmp") }, "the half-made segment is removed")
        fs.removeAllFaults()
        try await store.append([.accepted([TestSupport.entry(slot, size: 3000)])])
        #expect(try store.entry(at: slot) == TestSupport.entry(slot, size: 3000))
        try store.close()
        let reopened = try TestSupport.open(dir)
        for s in 1..<slot { #expect(try reopened.entry(at: s) == TestSupport.entry(s)) }
        #expect(try reopened.entry(at: slot) == TestSupport.entry(slot, size: 3000))
        try reopened.close()
    }

    @Test("EIO rewriting a freed file's header fails that append only; the next roll makes a new file")
    func failedReuse() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let fs = FaultInjectingFileSystem()
        let store = try TestSupport.open(dir, .init(segmentSize: 1024), fileSystem: fs)
        for s in UInt64(1)...40 { try await store.append([.accepted([TestSupport.entry(s)])]) }
        try await store.writeSnapshot(slot: 30, data: [1])
        try store.truncatePrefix(below: 31)
        let free = TestSupport.files(dir).filter { $0.hasSuffix(".seg.free") }
        try #require(!free.isEmpty)
        fs.inject(.error(EIO), on: .write, pathContains: ".seg.free", times: .max)
        var (failure, slot) = await appendUntilFailure(store, from: 41, below: 200)
        guard case .io(EIO, let path)? = failure?.code else {
            Issue.record("expected EIO, got \(String(describing: failure))")
            return
        }
        #expect(path.hasSuffix(".seg.free"), "the error names the freed file: \(path)")
        // Each failed reuse drops that file; once none are left, rolls create new files again.
        var appended = 0
        for _ in 0..<free.count + 1 where appended < 40 {
            do {
                for _ in 0..<40 {
                    try await store.append([.accepted([TestSupport.entry(slot)])])
                    slot += 1
                    appended += 1
                }
            } catch let error as SegmentLogError {
                guard case .io(EIO, _) = error.code else { throw error }
            }
        }
        #expect(appended == 40)
        #expect(!TestSupport.files(dir).contains { $0.hasSuffix(".seg.free") })
        try store.close()
        let reopened = try TestSupport.open(dir)
        #expect(reopened.state.lastSlot == slot - 1)
        try reopened.close()
    }

    @Test("a failed directory fsync after creating a segment is fatal")
    func directorySyncFailure() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let fs = FaultInjectingFileSystem()
        let (store, error) = try await failingAppend(dir, fs, options: .init(segmentSize: 1024)) {
            fs.inject(.error(EIO), on: .directorySync)
        }
        guard case .syncFailed? = error?.code else {
            Issue.record("expected .syncFailed, got \(String(describing: error))")
            return
        }
        await expectRefusesWrites(store)
        try store.close()
        try await expectReopens(dir)
    }

    @Test("EIO while reading a segment on open is an .io error naming the file")
    func readErrorOnOpen() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir)
        try await store.append([.accepted([TestSupport.entry(1)])])
        try store.close()
        let fs = FaultInjectingFileSystem()
        fs.inject(.error(EIO), on: .read, pathContains: ".seg")
        do {
            try TestSupport.open(dir, fileSystem: fs).close()
            Issue.record("open succeeded")
        } catch let error as SegmentLogError {
            #expect(error.code == .io(errno: EIO, path: dir + "/00000000000000000001.seg"))
        }
        try await expectReopensAfterOne(dir)
    }

    func expectReopensAfterOne(_ dir: String) async throws {
        let store = try TestSupport.open(dir)
        #expect(try store.entry(at: 1) == TestSupport.entry(1))
        try store.close()
    }
}

/// Many concurrent appenders share few fdatasyncs, and nobody is acknowledged before the sync
/// that covers their record returned.
@Suite("Group commit")
struct GroupCommitTests {
    @Test("fdatasyncs are far fewer than appends, and every ack follows its covering sync")
    func groupCommit() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let fs = FaultInjectingFileSystem()
        // Slow syncs down a little so appenders pile up behind them, as on a slower disk.
        fs.onDataSync { _ in usleep(500) }
        let store = try TestSupport.open(dir, .init(segmentSize: 256 << 10), fileSystem: fs)
        let syncsBefore = fs.dataSyncCount
        let appenders = 256
        let perAppender = 8
        try await withThrowingTaskGroup(of: Void.self) { group in
            for a in 0..<appenders {
                group.addTask {
                    for i in 0..<perAppender {
                        let slot = UInt64(i * appenders + a + 1)
                        try await store.append([.accepted([TestSupport.entry(slot, size: 200)])])
                        // Acknowledged: the bytes of this record must already be covered by a sync.
                        let (end, path): (Int64, String) = store.lock.withLock {
                            let location = store.shared.log.index.get(slot)!
                            return (Int64(location.frameOffset) + Int64(location.frameLength), store.segment(location.segment)!.path)
                        }
                        #expect(fs.syncedThrough(path) >= end, "slot \(slot) acknowledged before its sync")
                    }
                }
            }
            try await group.waitForAll()
        }
        let appends = appenders * perAppender
        let syncs = fs.dataSyncCount - syncsBefore
        let stats = store.statistics
        #expect(stats.appends == appends)
        #expect(syncs * 8 < appends, "\(syncs) fdatasyncs for \(appends) appends")
        #expect(stats.groupCommits * 8 < appends)
        #expect(store.state.entryCount == appends)
        try store.close()
    }

    @Test("completions run in append order, whether the acknowledger thread or the syncer finishes them")
    func completionOrder() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try TestSupport.open(dir, .init(segmentSize: 1 << 20))
        // Rounds of a burst (one commit of many appends: finished on the acknowledger thread,
        // whose first completion here takes 5 ms) then a single append in a later commit (few
        // appends: the syncer may finish those itself, but only after the burst's).
        let rounds = 10, burst = 20
        let order = Mutex<[Int]>([])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            var i = 0
            for _ in 0..<rounds {
                for k in 0...burst {
                    if k == burst { usleep(2_000) }  // the burst is synced; the single append is not in it
                    let n = i
                    store.append([.accepted([TestSupport.entry(UInt64(n + 1))])]) { result in
                        #expect((try? result.get()) != nil)
                        if k == 0 { usleep(5_000) }
                        let finished = order.withLock { $0.append(n); return $0.count }
                        if finished == rounds * (burst + 1) { done.resume() }
                    }
                    i += 1
                }
            }
        }
        let finished = order.withLock { $0 }
        #expect(finished.count == rounds * (burst + 1))
        let firstWrong = zip(finished, finished.indices).first { $0 != $1 }
        #expect(firstWrong == nil, "append \(firstWrong?.0 ?? 0) completed in place \(firstWrong?.1 ?? 0)")
        try store.close()
    }

    @Test("the commit delay waits only after a sync that acknowledged many appends")
    func commitDelay() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        var options = SegmentStore.Options(segmentSize: 256 << 10)
        options.commitDelayMicroseconds = 100
        options.commitDelayMinimumAppends = 8
        let fs = FaultInjectingFileSystem()
        fs.onDataSync { _ in usleep(300) }  // so that appenders pile up behind each sync
        let store = try TestSupport.open(dir, options, fileSystem: fs)
        // One appender at a time: every sync acknowledges one append, so none waits.
        for s in UInt64(1)...50 { try await store.append([.accepted([TestSupport.entry(s)])]) }
        #expect(store.statistics.delayedCommits == 0)
        // Many at once: as soon as a sync acknowledges eight or more, the next one waits.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for a in UInt64(0)..<64 {
                group.addTask {
                    for i in UInt64(0)..<8 { try await store.append([.accepted([TestSupport.entry(1000 + i * 64 + a)])]) }
                }
            }
            try await group.waitForAll()
        }
        let stats = store.statistics
        #expect(stats.delayedCommits > 0, "\(stats.groupCommits) commits, none delayed")
        #expect(stats.delayedCommits < stats.groupCommits)
        try store.close()
    }
}
