import Foundation
import Testing
@testable import SegmentLog

/// The commit threads carry their names (for `top -H`) and the priority `commitThreadNice` asks for.
@Suite("Commit threads")
struct CommitThreadTests {
    /// Name → nice value of every thread of this process whose name starts with `paxlog-`.
    static func paxlogThreads() -> [String: [Int]] {
        var out: [String: [Int]] = [:]
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        for tid in tasks {
            guard let comm = try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8),
                  let stat = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8) else { continue }
            let name = comm.trimmingCharacters(in: .whitespacesAndNewlines)
            guard name.hasPrefix("paxlog-") else { continue }
            // Fields after the parenthesised name: state is field 3, nice field 19.
            let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
            out[name, default: []].append(Int(fields[16])!)
        }
        return out
    }

    @Test("writer, syncer and acknowledger are named and take the configured nice value")
    func namedAndPrioritized() throws {
        #if os(Linux)
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        var options = SegmentStore.Options()
        // The highest nice value is always allowed, so this runs without privileges.
        options.commitThreadNice = 19
        let store = try TestSupport.open(dir, options)
        let names = ["paxlog-writer", "paxlog-sync", "paxlog-ack"]
        // Each thread names and prioritizes itself first thing, which may be just after `open`.
        var threads = Self.paxlogThreads()
        for _ in 0..<200 where !names.allSatisfy({ threads[$0]?.contains(19) == true }) {
            usleep(10_000)
            threads = Self.paxlogThreads()
        }
        try store.close()
        for name in names {
            #expect(threads[name]?.contains(19) == true, "\(name): \(threads)")
        }
        #endif
    }
}
