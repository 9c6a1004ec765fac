import Foundation
import MultiPaxos
@testable import PaxosLog
import PaxosLogTesting
import Testing

/// The chosen values a replica keeps in memory are bounded in bytes
/// (``PaxosLog/Configuration/retainedChosenBytes``), whatever the record size.
@Suite struct RetainedMemoryTests {
    /// 48 records of 1 MiB on a one-member log with the default 16 MiB bound: once they are
    /// chosen, the core must have forgotten all but about 16 of them (trimmed on the tick).
    /// (Every append is `.identified`: counting only `.data` payloads, as the replica did for a
    /// while, held 48 here; `paxlog bench cluster --size 1048576 --records 1500 --concurrency 8`
    /// then peaked at 2.5 GB.)
    @Test func chosenValuesInMemoryAreBoundedInBytes() async throws {
        let dir = temporaryDirectory("retained-bytes")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = try await PaxosLog.open(.local(dataDirectory: dir))
        let record = [UInt8](repeating: 7, count: 1 << 20)
        var last: PaxosLog.Position = 0
        for _ in 0..<48 { last = try await log.append(record) }
        #expect(log.configuration.retainedChosenBytes == 16 << 20)
        // Values in the core's log from `firstHeldSlot` through `last`: at most 17 of 1 MiB.
        func held() async throws -> UInt64 {
            try await log.driver.loop.submit { last + 1 - log.driver.replica.core.firstHeldSlot }.get()
        }
        for _ in 0..<300 where try await held() > 17 { try await Task.sleep(nanoseconds: 10_000_000) }
        let count = try await held()
        #expect(count <= 17, "\(count) values of 1 MiB held in memory")
        try await log.close()
    }
}
