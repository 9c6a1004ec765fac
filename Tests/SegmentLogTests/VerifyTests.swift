import Foundation
import Testing
@testable import SegmentLog

@Suite("LogVerifier")
struct VerifyTests {
    @Test("a generated log is clean, every segment and record is read")
    func clean() async throws {
        let fixture = try await OfflineFixture.make()
        defer { TestSupport.remove(fixture.directory) }
        let report = try LogVerifier(directory: fixture.directory).verify()
        #expect(report.isClean)
        #expect(report.tornTail == nil)
        #expect(report.segments.count == fixture.segments.count)
        #expect(report.segments.count >= 3)
        let scanned = try (0..<fixture.segments.count).reduce(0) { $0 + (try fixture.records($1).count) }
        #expect(report.records == scanned)
        let sizes = fixture.segments.reduce(Int64(0)) { $0 + Int64(TestSupport.read($1).count) }
        #expect(report.bytesRead == sizes)
        #expect(report.rawPayloadBytes > report.storedPayloadBytes, "the 3000-byte value is LZ4-compressed")
    }

    @Test("a flipped byte in a segment header is damage with both CRCs; later segments are still read")
    func segmentHeader() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let target = copy + "/" + fixture.segments[1].split(separator: "/").last!
        OfflineFixture.flip(target, at: 30)
        let report = try LogVerifier(directory: copy).verify()
        #expect(report.damage.count == 1)
        let damage = try #require(report.damage.first)
        #expect(damage.kind == .segmentHeader)
        #expect(damage.file == target)
        #expect(damage.offset == 0)
        #expect(damage.expectedCRC != nil && damage.actualCRC != nil && damage.expectedCRC != damage.actualCRC)
        #expect(report.segments[2].records > 0, "verification continued into the next segment")
        #expect(!OfflineFixture.strictOpenSucceeds(copy))
    }

    @Test("a flipped byte in a record header is damage at that record; the scan resumes at the next one")
    func recordHeader() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let records = try fixture.records(0)
        let target = copy + "/" + fixture.segments[0].split(separator: "/").last!
        OfflineFixture.flip(target, at: records[1].offset + 8)  // raw length
        let report = try LogVerifier(directory: copy).verify()
        #expect(report.damage.count == 1)
        let damage = try #require(report.damage.first)
        #expect(damage.kind == .record)
        #expect(damage.file == target)
        #expect(damage.offset == Int64(records[1].offset))
        #expect(damage.resumedAt == Int64(records[2].offset))
        #expect(damage.recordType == "accepted")
        #expect(report.segments[0].records == records.count - 1)
    }

    @Test("a flipped payload byte is a CRC mismatch naming the record type and both CRCs")
    func payload() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let records = try fixture.records(0)
        let target = copy + "/" + fixture.segments[0].split(separator: "/").last!
        OfflineFixture.flip(target, at: records[2].offset + 16 + 40)
        let report = try LogVerifier(directory: copy).verify()
        let damage = try #require(report.damage.first)
        #expect(report.damage.count == 1)
        #expect(damage.kind == .record)
        #expect(damage.offset == Int64(records[2].offset))
        #expect(damage.recordType == "accepted")
        let expected = try #require(damage.expectedCRC)
        let actual = try #require(damage.actualCRC)
        #expect(expected != actual)
        #expect(damage.resumedAt == Int64(records[3].offset))
        #expect(damage.skippedBytes == Int64(records[3].offset - records[2].offset))
    }

    @Test("damage in several places is all reported, in log order")
    func severalPlaces() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let names = fixture.segments.map { String($0.split(separator: "/").last!) }
        let first = try fixture.records(0)
        let second = try fixture.records(1)
        OfflineFixture.flip(copy + "/" + names[0], at: first[1].offset + 20)
        OfflineFixture.flip(copy + "/" + names[0], at: first[3].offset + 20)
        OfflineFixture.flip(copy + "/" + names[1], at: second[0].offset + 20)
        let report = try LogVerifier(directory: copy).verify()
        #expect(report.damage.map(\.offset) == [first[1].offset, first[3].offset, second[0].offset].map(Int64.init))
        #expect(report.damage.map(\.file) == [names[0], names[0], names[1]].map { copy + "/" + $0 })
    }

    @Test("a truncated last segment is a torn tail, not damage, as recovery sees it")
    func truncatedTail() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let last = fixture.segments.count - 1
        let records = try fixture.records(last)
        let target = copy + "/" + fixture.segments[last].split(separator: "/").last!
        let cutAt = records[records.count - 1].offset + 10
        OfflineFixture.truncate(target, to: cutAt)
        let report = try LogVerifier(directory: copy).verify()
        #expect(report.isClean)
        let torn = try #require(report.tornTail)
        #expect(torn.file == target)
        #expect(torn.offset == Int64(records[records.count - 1].offset))
        let kept = TestSupport.read(target)
        #expect(torn.bytes == Int64((kept.lastIndex { $0 != 0 } ?? 0) + 1 - records[records.count - 1].offset))
        #expect(torn.bytes > 0 && torn.bytes <= 10)
        #expect(OfflineFixture.strictOpenSucceeds(copy))
    }

    @Test("an empty directory, random files, a missing path and a plain file are refused with typed errors")
    func notALog() throws {
        let empty = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(empty) }
        #expect(throws: OfflineToolError.self) { try LogVerifier(directory: empty).verify() }
        do {
            _ = try LogVerifier(directory: empty).verify()
        } catch let error as OfflineToolError {
            #expect(error.code == .notALog(path: empty))
        }
        for i in 0..<4 {
            TestSupport.write(empty + "/random-\(i).dat", TestSupport.payload(slot: UInt64(i), size: 5000))
        }
        do {
            _ = try LogVerifier(directory: empty).verify()
            Issue.record("random files verified")
        } catch let error as OfflineToolError {
            #expect(error.code == .notALog(path: empty))
        }
        do {
            _ = try LogVerifier(directory: empty + "/missing").verify()
            Issue.record("a missing directory verified")
        } catch let error as OfflineToolError {
            #expect(error.code == .notFound(path: empty + "/missing"))
        }
        do {
            _ = try LogVerifier(directory: empty + "/random-0.dat").verify()
            Issue.record("a plain file verified")
        } catch let error as OfflineToolError {
            #expect(error.code == .notADirectory(path: empty + "/random-0.dat"))
        }
        // Random bytes under a segment's name are a log whose segment is damaged.
        TestSupport.write(empty + "/00000000000000000001.seg", TestSupport.payload(slot: 9, size: 5000))
        let report = try LogVerifier(directory: empty).verify()
        #expect(report.damage.map(\.kind) == [.segmentHeader])
        #expect(report.notes.filter { $0.contains("unexpected file") }.count == 4)
    }

    @Test("a segment of a newer format version is an error, not damage")
    func newerVersion() async throws {
        let fixture = try await OfflineFixture.make()
        defer { TestSupport.remove(fixture.directory) }
        let path = fixture.segments[0]
        var bytes = TestSupport.read(path)
        bytes[8] = UInt8(Format.version + 1)
        let crc = bytes.withUnsafeBytes { Format.crc(0, UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
        withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { bytes[60 + i] = $0[i] } }
        TestSupport.write(path, bytes)
        do {
            _ = try LogVerifier(directory: fixture.directory).verify()
            Issue.record("a newer format verified")
        } catch let error as OfflineToolError {
            #expect(error.code == .newerFormat(file: path, version: Format.version + 1, supported: Format.version))
        }
    }

    @Test("a missing middle segment and a header that disagrees with the records before it are damage")
    func structuralRules() async throws {
        let fixture = try await OfflineFixture.make()
        let gap = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(gap) }
        TestSupport.remove(gap + "/" + fixture.segments[1].split(separator: "/").last!)
        let report = try LogVerifier(directory: gap).verify()
        #expect(report.damage.map(\.kind) == [.missingSegment])
        #expect(report.damage.first?.file == gap + "/" + fixture.segments[1].split(separator: "/").last!)

        // Re-sign segment 2's header with a different promise: CRC-valid, but not what the
        // records of segment 1 left behind.
        let path = fixture.segments[1]
        var bytes = TestSupport.read(path)
        bytes[12] |= UInt8(Format.flagPromised)
        bytes[24] = 99
        let crc = bytes.withUnsafeBytes { Format.crc(0, UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
        withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { bytes[60 + i] = $0[i] } }
        TestSupport.write(path, bytes)
        let state = try LogVerifier(directory: fixture.directory).verify()
        #expect(state.damage.map(\.kind) == [.segmentState])
    }

    @Test("verify is clean exactly when a strict open succeeds, over single-byte damage to the whole log")
    func agreesWithRecovery() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let pristine = fixture.segments.map { TestSupport.read($0) }
        let names = fixture.segments.map { String($0.split(separator: "/").last!) }
        var cases = 0
        for (f, bytes) in pristine.enumerated() {
            // Only the written part: flips in the zero-filled preallocation are all torn tails.
            let end = bytes.lastIndex(where: { $0 != 0 }).map { $0 + 1 } ?? 0
            for offset in stride(from: f, to: end, by: 13) {
                var damaged = bytes
                damaged[offset] ^= 0x5A
                TestSupport.write(copy + "/" + names[f], damaged)
                let report = try LogVerifier(directory: copy).verify()
                #expect(report.isClean == OfflineFixture.strictOpenSucceeds(copy), "file \(names[f]) offset \(offset)")
                TestSupport.write(copy + "/" + names[f], bytes)
                cases += 1
            }
        }
        #expect(cases > 100)
    }

    @Test("verify never writes: no LOCK is created, no byte changes, and a live store's directory is read")
    func readOnly() async throws {
        let fixture = try await OfflineFixture.make()
        defer { TestSupport.remove(fixture.directory) }
        TestSupport.remove(fixture.directory + "/LOCK")
        let before = OfflineFixture.contents(fixture.directory)
        let verifier = LogVerifier(directory: fixture.directory)
        #expect(try !verifier.isLocked())
        _ = try verifier.verify()
        _ = try LogInspector(directory: fixture.directory).inspect()
        _ = try LogInspector(directory: fixture.directory).chosenEntries { _ in }
        _ = try LogInspector(directory: fixture.directory).allRecords { _ in }
        _ = try LogRepair(directory: fixture.directory).run(truncateAfterCorruption: true, dryRun: true)
        #expect(OfflineFixture.contents(fixture.directory) == before)

        let store = try TestSupport.open(fixture.directory, OfflineFixture.options, fileSystem: TestSupport.fastFileSystem)
        defer { try? store.close() }
        #expect(try verifier.isLocked())
        let report = try verifier.verify()
        #expect(report.isClean)
    }
}
