import Foundation
import PaxosLogTesting
import Testing
@testable import SegmentLog

/// A real child process (`paxlog bench crash-writer`) appends with `sync=always` and reports each
/// acknowledged slot; this test SIGKILLs it at random moments, reopens the log, and checks that
/// every acknowledged record is present and intact, that no slot holds a wrong value, and that
/// appends continue. `SEGMENTLOG_CRASH_KILLS` raises the number of kills (default 24).
@Suite("Crash")
struct CrashTests {
    static var kills: Int { ProcessInfo.processInfo.environment["SEGMENTLOG_CRASH_KILLS"].flatMap(Int.init) ?? 24 }

    /// `paxlog` next to the test bundle (SwiftPM builds it for EndToEndTests); built if missing.
    static func paxlogPath() throws -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        if dir.path.hasSuffix(".xctest/Contents/MacOS") { dir = dir.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }
        let candidate = dir.appendingPathComponent("paxlog").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let build = Process()
        build.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        build.arguments = ["swift", "build", "--product", "paxlog", "--package-path", packageRoot.path]
        try build.run()
        build.waitUntilExit()
        guard FileManager.default.isExecutableFile(atPath: candidate) else {
            throw SegmentLogError(.invalidArgument, "cannot find or build paxlog at \(candidate)")
        }
        return candidate
    }

    /// Collects a pipe's bytes on a background thread.
    final class Collector: @unchecked Sendable {
        private let lock = NSLock()
        private var data = Data()
        let handle: FileHandle
        private var thread: Thread?

        init(_ handle: FileHandle) {
            self.handle = handle
            let t = Thread { [self] in
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { break }
                    lock.lock()
                    data.append(chunk)
                    lock.unlock()
                }
            }
            thread = t
            t.start()
        }

        var text: String {
            lock.lock()
            defer { lock.unlock() }
            return String(decoding: data, as: UTF8.self)
        }

        /// Only complete lines: a line cut by the kill was never fully reported.
        var ackedSlots: [UInt64] {
            let t = text
            guard let lastNewline = t.lastIndex(of: "\n") else { return [] }
            return t[..<lastNewline].split(separator: "\n").compactMap { line in
                line.hasPrefix("a ") ? UInt64(line.dropFirst(2)) : nil
            }
        }
    }

    @Test("SIGKILL at random moments never loses an acknowledged record",
          arguments: [false, true])
    func killLoop(compacting: Bool) async throws {
        let paxlog = try Self.paxlogPath()
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        var rng = SystemRandomNumberGenerator()
        var acked: Set<UInt64> = []
        var killsDuringAppends = 0
        var recycledSegments: Set<UInt64> = []
        for round in 0..<Self.kills {
            let child = Process()
            child.executableURL = URL(fileURLWithPath: paxlog)
            child.arguments = ["bench", "crash-writer", "--dir", dir, "--concurrency", "16"]
                + (compacting ? ["--compact-every-ms", "20"] : [])
            let pipe = Pipe()
            child.standardOutput = pipe
            child.standardError = FileHandle.nullDevice
            try child.run()
            let collector = Collector(pipe.fileHandleForReading)
            if round % 4 != 3 {
                // Usually let it start appending first; every fourth kill lands anywhere, open included.
                var waited = 0
                while collector.ackedSlots.isEmpty && waited < 20_000 && child.isRunning {
                    usleep(1000)
                    waited += 1
                }
            }
            usleep(UInt32.random(in: 0...40_000, using: &rng))
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
            #expect(child.terminationReason == .uncaughtSignal, "round \(round): the child exited on its own: \(collector.text.suffix(300))")
            try? pipe.fileHandleForWriting.close()
            usleep(2000)
            let roundAcks = collector.ackedSlots
            if !roundAcks.isEmpty { killsDuringAppends += 1 }
            acked.formUnion(roundAcks)

            let store = try TestSupport.open(dir, .init(segmentSize: SegmentLogCrashWorkload.segmentSize))
            // Slots the child's snapshots cover are compacted away.
            let compacted = store.state.snapshotSlot ?? 0
            for slot in acked where slot > compacted {
                let entry = try store.entry(at: slot)
                #expect(entry == SegmentLogCrashWorkload.entry(slot), "round \(round): acknowledged slot \(slot) lost or damaged")
            }
            if let last = store.state.lastSlot, last > compacted {
                for entry in try store.entries(from: compacted + 1, through: last) {
                    #expect(entry == SegmentLogCrashWorkload.entry(entry.slot), "round \(round): wrong value for slot \(entry.slot)")
                }
            }
            try store.close()
            let scanner = SegmentScanner(directory: dir)
            for file in try scanner.segmentFiles() where try scanner.scan(file).header?.recycled == true {
                recycledSegments.insert(file.sequence)
            }
        }
        // With compaction, kills must land while the log lives in reused files.
        #expect(!compacting || recycledSegments.count >= 3, "only \(recycledSegments.count) recycled segments seen")
        #expect(killsDuringAppends >= Self.kills / 2, "too few kills landed while appending")
        #expect(acked.count > 0)

        // Appends continue in this process after the last kill.
        let store = try TestSupport.open(dir, .init(segmentSize: SegmentLogCrashWorkload.segmentSize))
        let next = (store.state.lastSlot ?? 0) + 1
        try await store.append([.accepted([SegmentLogCrashWorkload.entry(next)])])
        #expect(try store.entry(at: next) == SegmentLogCrashWorkload.entry(next))
        try store.close()
    }
}
