import Foundation
import PaxosLog
import PaxosLogTesting
import SegmentLog
import Testing

@Suite struct StorageFailureTests {
    /// A failed `fdatasync` stops the replica; a reader waiting for the next entry must hear of
    /// it as an error, not as the end of the log, and not hang until close.
    @Test func aReaderWaitingForEntriesGetsTheStorageFailure() async throws {
        let dir = temporaryDirectory("storage-failure")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fs = FaultInjectingFileSystem()
        var c = PaxosLog.Configuration.local(dataDirectory: dir)
        c.fileSystem = fs
        let log = try await PaxosLog.open(c)
        _ = try await log.append(Array("first".utf8))
        let reader = Task {
            var seen = 0
            for try await _ in log.entries(from: 1) { seen += 1 }
            return seen
        }
        // Let the reader read the first entry and wait for the next.
        try await Task.sleep(for: .milliseconds(100))
        fs.inject(.error(EIO), on: .dataSync)
        await #expect(throws: PaxosLogError.self) { _ = try await log.append(Array("second".utf8)) }
        let outcome = try await withTimeout(seconds: 10) { await reader.result }
        switch outcome {
        case .success(let seen):
            Issue.record("entries ended after \(seen) entries as if the log had ended")
        case .failure(let error):
            #expect((error as? PaxosLogError)?.code == .storage, "\(error)")
        }
        try? await log.close()
    }
}
