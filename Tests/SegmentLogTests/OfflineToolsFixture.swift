import Foundation
import Testing
@testable import SegmentLog

/// A small multi-segment log for the offline tools' tests, and ways to damage copies of it.
///
/// Contents (segments of 2 KiB, preallocated): promise 1.1; slots 1...40 in batches of five with
/// 60-byte values; slot 41 with a 3000-byte compressible value (an LZ4 record); promise 2.1;
/// slots 10...12 accepted again under 2.1 (three superseded accepts); a no-op for slot 42;
/// chosen through 40.
struct OfflineFixture {
    let directory: String
    /// The current entry of every slot.
    var truth: [UInt64: LogEntry] = [:]

    static let options: SegmentStore.Options = {
        var options = SegmentStore.Options(segmentSize: 2048, compressionThreshold: 1024)
        options.preallocate = true
        return options
    }()

    static func make(_ name: String = #function) async throws -> OfflineFixture {
        var fixture = OfflineFixture(directory: TestSupport.temporaryDirectory("offline" + name))
        let store = try TestSupport.open(fixture.directory, options, fileSystem: TestSupport.fastFileSystem)
        try await store.append([.promise(LogBallot(round: 1, node: 1))])
        for first in stride(from: UInt64(1), through: 40, by: 5) {
            let entries = (first..<first + 5).map { TestSupport.entry($0, size: 60) }
            try await store.append([.accepted(entries)])
            for e in entries { fixture.truth[e.slot] = e }
        }
        let big = TestSupport.entry(41, size: 3000, compressible: true)
        try await store.append([.accepted([big])])
        fixture.truth[41] = big
        try await store.append([.promise(LogBallot(round: 2, node: 1))])
        let again = (UInt64(10)...12).map { TestSupport.entry($0, size: 60, round: 2, salt: 7) }
        let noop = LogEntry(slot: 42, ballot: LogBallot(round: 2, node: 1), isNoop: true, payload: [])
        try await store.append([.accepted(again + [noop]), .chosen(through: 40)])
        for e in again + [noop] { fixture.truth[e.slot] = e }
        try store.close()
        return fixture
    }

    /// Segment file paths in sequence order.
    var segments: [String] {
        TestSupport.files(directory).filter { $0.hasSuffix(".seg") }.map { directory + "/" + $0 }
    }

    /// Offsets of the valid records of segment `index`, and the payload length of each.
    func records(_ index: Int) throws -> [(offset: Int, stored: Int, kind: SegmentScanner.RecordKind)] {
        let scanner = SegmentScanner(directory: directory)
        let file = try scanner.segmentFiles()[index]
        var result: [(Int, Int, SegmentScanner.RecordKind)] = []
        _ = try scanner.scan(file) { result.append((Int($0.offset), $0.storedLength, $0.kind)) }
        return result
    }

    /// A byte-for-byte copy in a new directory (LOCK excluded).
    func copy(_ name: String = #function) -> String {
        let target = TestSupport.temporaryDirectory("copy" + name)
        for file in TestSupport.files(directory) where file != "LOCK" {
            TestSupport.write(target + "/" + file, TestSupport.read(directory + "/" + file))
        }
        return target
    }

    static func flip(_ path: String, at offset: Int, xor: UInt8 = 0xFF) {
        var bytes = TestSupport.read(path)
        bytes[offset] ^= xor
        TestSupport.write(path, bytes)
    }

    static func truncate(_ path: String, to size: Int) {
        TestSupport.write(path, Array(TestSupport.read(path).prefix(size)))
    }

    /// Every file's bytes, to show a read-only command changed nothing.
    static func contents(_ directory: String) -> [String: [UInt8]] {
        Dictionary(uniqueKeysWithValues: TestSupport.files(directory).map { ($0, TestSupport.read(directory + "/" + $0)) })
    }

    /// Whether a strict open (on a scratch copy: open cuts torn tails) succeeds.
    static func strictOpenSucceeds(_ directory: String) -> Bool {
        let scratch = TestSupport.temporaryDirectory("scratch")
        defer { TestSupport.remove(scratch) }
        for file in TestSupport.files(directory) where file != "LOCK" {
            TestSupport.write(scratch + "/" + file, TestSupport.read(directory + "/" + file))
        }
        guard let store = try? TestSupport.open(scratch, options, fileSystem: TestSupport.fastFileSystem) else { return false }
        try? store.close()
        return true
    }
}
