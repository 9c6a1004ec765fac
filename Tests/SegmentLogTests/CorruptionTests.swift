import Foundation
import Testing
@testable import SegmentLog

/// Damage every byte of a small multi-segment log, one at a time, and reopen: each case must be
/// reported as corruption naming the damaged file, or be a torn tail of the last segment whose
/// cut loses only records at or after the damage. No wrong value may ever be returned.
@Suite("Corruption")
struct CorruptionTests {
    struct Pristine {
        var files: [(name: String, bytes: [UInt8])]
        var truth: [UInt64: LogEntry]
        /// slot → (file name, end offset of the frame holding it).
        var location: [UInt64: (String, Int)]
        var promises: Set<LogBallot>
    }

    /// A log of 4+ preallocated 1 KiB segments: promises, raw and LZ4 batches, chosen markers.
    static func makeLog(_ dir: String) async throws -> Pristine {
        var options = SegmentStore.Options(segmentSize: 1024, compressionThreshold: 200)
        options.preallocate = true
        let store = try TestSupport.open(dir, options, fileSystem: TestSupport.fastFileSystem)
        var truth: [UInt64: LogEntry] = [:]
        var promises: Set<LogBallot> = []
        for s in stride(from: UInt64(1), through: 48, by: 3) {
            let ballot = LogBallot(round: s, node: 2)
            promises.insert(ballot)
            let entries = (s..<s + 3).map { TestSupport.entry($0, size: $0 % 4 == 0 ? 150 : 20, compressible: $0 % 4 == 0) }
            try await store.append([.promise(ballot), .accepted(entries), .chosen(through: s)])
            for e in entries { truth[e.slot] = e }
        }
        try store.close()
        var location: [UInt64: (String, Int)] = [:]
        let scanner = SegmentScanner(directory: dir)
        for file in try scanner.segmentFiles() {
            _ = try scanner.scan(file, decode: true) { record in
                if case .accepted(let entries)? = record.record {
                    for e in entries { location[e.slot] = (file.name, Int(record.offset) + 16 + record.storedLength) }
                }
            }
        }
        let names = TestSupport.files(dir).filter { $0.hasSuffix(".seg") }
        return Pristine(files: names.map { ($0, TestSupport.read(dir + "/" + $0)) }, truth: truth, location: location, promises: promises)
    }

    static func install(_ pristine: Pristine, into dir: String, damage: (Int, Int, UInt8)?) {
        for name in TestSupport.files(dir) { TestSupport.remove(dir + "/" + name) }
        for (i, file) in pristine.files.enumerated() {
            var bytes = file.bytes
            if let (f, offset, xor) = damage, f == i { bytes[offset] ^= xor }
            TestSupport.write(dir + "/" + file.name, bytes)
        }
    }

    enum Outcome { case corruption, tornTail, clean }

    /// Opens the damaged log and checks the rules; returns what happened.
    static func check(_ pristine: Pristine, dir: String, damagedFile: Int, offset: Int) throws -> Outcome {
        let isLast = damagedFile == pristine.files.count - 1
        let name = pristine.files[damagedFile].name
        let store: SegmentStore
        do {
            store = try TestSupport.open(dir, fileSystem: TestSupport.fastFileSystem)
        } catch let error as SegmentLogError {
            guard case .corruption(let file, _, _) = error.code else {
                Issue.record("byte \(offset) of \(name): unexpected error \(error)")
                return .corruption
            }
            #expect(file == dir + "/" + name, "byte \(offset) of \(name): corruption reported in \(file)")
            return .corruption
        }
        defer { try? store.close() }
        #expect(isLast || offset >= Format.segmentHeaderSize, "byte \(offset) of \(name) was not detected")
        var missing = 0
        for (slot, truth) in pristine.truth {
            if let got = try store.entry(at: slot) {
                #expect(got == truth, "byte \(offset) of \(name): wrong value for slot \(slot)")
            } else {
                missing += 1
                let (file, end) = pristine.location[slot]!
                #expect(isLast && file == name && end > offset, "byte \(offset) of \(name): lost slot \(slot)")
            }
        }
        if let promised = store.state.promised { #expect(pristine.promises.contains(promised)) }
        let torn = TestSupport.files(dir).contains { $0.contains(".torn-") }
        if !isLast { #expect(missing == 0) }
        return torn ? .tornTail : .clean
    }

    @Test("every single-byte corruption is detected or a torn tail, and never yields a wrong value")
    func everyByte() async throws {
        let source = TestSupport.temporaryDirectory()
        let dir = TestSupport.temporaryDirectory()
        defer {
            TestSupport.remove(source)
            TestSupport.remove(dir)
        }
        let pristine = try await Self.makeLog(source)
        #expect(pristine.files.count >= 4)
        var outcomes: [String: Int] = [:]
        for (f, file) in pristine.files.enumerated() {
            for offset in 0..<file.bytes.count {
                Self.install(pristine, into: dir, damage: (f, offset, 0x5A))
                let outcome = try Self.check(pristine, dir: dir, damagedFile: f, offset: offset)
                outcomes["\(outcome)", default: 0] += 1
                if f < pristine.files.count - 1 {
                    #expect(outcome == .corruption, "byte \(offset) of older segment \(file.name) was not reported")
                }
            }
        }
        #expect(outcomes["corruption", default: 0] > 0 && outcomes["tornTail", default: 0] > 0)
    }

    @Test("every truncation of the last segment is a clean end or a torn tail; appends continue")
    func truncatedLastSegment() async throws {
        let source = TestSupport.temporaryDirectory()
        let dir = TestSupport.temporaryDirectory()
        defer {
            TestSupport.remove(source)
            TestSupport.remove(dir)
        }
        let pristine = try await Self.makeLog(source)
        let last = pristine.files.count - 1
        for length in stride(from: 0, through: pristine.files[last].bytes.count, by: 1) {
            Self.install(pristine, into: dir, damage: nil)
            let path = dir + "/" + pristine.files[last].name
            TestSupport.write(path, Array(pristine.files[last].bytes.prefix(length)))
            if length < Format.segmentHeaderSize {
                // Segment headers are synced before the file is renamed into place: never torn.
                #expect(throws: SegmentLogError.self) { try TestSupport.open(dir).close() }
                continue
            }
            let store = try TestSupport.open(dir, fileSystem: TestSupport.fastFileSystem)
            for (slot, truth) in pristine.truth {
                if let got = try store.entry(at: slot) {
                    #expect(got == truth)
                } else {
                    let (file, end) = pristine.location[slot]!
                    #expect(file == pristine.files[last].name && end > length, "length \(length): lost slot \(slot)")
                }
            }
            if length % 97 == 0 {
                try await store.append([.accepted([TestSupport.entry(1000, salt: UInt64(length))])])
                try store.close()
                let again = try TestSupport.open(dir)
                #expect(try again.entry(at: 1000) == TestSupport.entry(1000, salt: UInt64(length)))
                try again.close()
            } else {
                try store.close()
            }
        }
    }

    @Test("tolerant mode keeps the valid prefix of a corrupt log and goes on")
    func tolerant() async throws {
        let source = TestSupport.temporaryDirectory()
        let dir = TestSupport.temporaryDirectory()
        defer {
            TestSupport.remove(source)
            TestSupport.remove(dir)
        }
        let pristine = try await Self.makeLog(source)
        // Damage the first record of the second segment.
        Self.install(pristine, into: dir, damage: (1, Format.segmentHeaderSize + 20, 0xFF))
        #expect(throws: SegmentLogError.self) { try TestSupport.open(dir).close() }
        let store = try TestSupport.open(dir, .init(recoveryMode: .tolerant))
        for (slot, truth) in pristine.truth {
            if let got = try store.entry(at: slot) {
                #expect(got == truth)
                #expect(pristine.location[slot]!.0 == pristine.files[0].name)
            }
        }
        #expect(store.state.entryCount > 0)
        try await store.append([.accepted([TestSupport.entry(500)])])
        try store.close()
        #expect(TestSupport.files(dir).contains { $0.hasSuffix(".discarded") })
        let strict = try TestSupport.open(dir)
        #expect(try strict.entry(at: 500) == TestSupport.entry(500))
        try strict.close()
    }

    @Test("a record copied into another segment fails its CRC (records are bound to their segment)")
    func misplacedRecord() async throws {
        let source = TestSupport.temporaryDirectory()
        let dir = TestSupport.temporaryDirectory()
        defer {
            TestSupport.remove(source)
            TestSupport.remove(dir)
        }
        var pristine = try await Self.makeLog(source)
        // Replace segment 2's records with segment 1's (same offsets, valid CRCs for segment 1).
        var second = pristine.files[1].bytes
        let first = pristine.files[0].bytes
        second.replaceSubrange(Format.segmentHeaderSize..<min(first.count, second.count),
                               with: first[Format.segmentHeaderSize..<min(first.count, second.count)])
        pristine.files[1].bytes = second
        Self.install(pristine, into: dir, damage: nil)
        do {
            try TestSupport.open(dir).close()
            Issue.record("misplaced records were accepted")
        } catch let error as SegmentLogError {
            #expect(error.code.corruptionFile == dir + "/" + pristine.files[1].name)
            #expect("\(error)".contains("CRC"))
        }
    }
}
