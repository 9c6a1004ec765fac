import Foundation
import Logging
import SegmentLog
import Testing

/// Runs the real `paxlog` binary's offline commands (inspect, dump, verify, repair) on generated
/// logs and damaged copies: exit codes, one-line errors, and `--json` that parses and agrees with
/// the human output.
@Suite("paxlog offline tools")
struct OfflineToolsTests {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
        var lines: [String] { stdout.split(separator: "\n").map(String.init) }
        /// One JSON document (or, with `jsonLines`, one per line).
        func json() throws -> [String: Any] {
            try #require(JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any])
        }
        func jsonLines() throws -> [[String: Any]] {
            try lines.map { try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        }
    }

    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("paxlog")

    static func paxlog(_ arguments: String...) throws -> Run {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read before waiting: a dump can fill the pipe.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                   stderr: String(decoding: stderr, as: UTF8.self))
    }

    static func temporaryDirectory(_ name: String = #function) -> String {
        let path = NSTemporaryDirectory() + "/paxlog-tools-\(name.filter { $0.isLetter })-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func payload(_ slot: UInt64) -> [UInt8] {
        slot % 7 == 0 ? Array(String(repeating: "slot \(slot) compressible text. ", count: 200).utf8)
            : Array("value-\(slot)".utf8) + [0, 1, 2, UInt8(slot % 256)]
    }

    /// A log of several 2 KiB segments: promises, 120 slots (every 7th a 5 KiB LZ4 value), a
    /// re-accept of slots 50...52, a no-op at 121, chosen through 110.
    static func makeLog(_ name: String = #function) async throws -> String {
        let directory = temporaryDirectory(name)
        var logger = Logger(label: "offline-tools-tests")
        logger.logLevel = .critical
        var options = SegmentStore.Options(segmentSize: 2048, compressionThreshold: 1024)
        options.syncPolicy = .never
        let store = try SegmentStore.open(directory: directory, options: options, logger: logger)
        try await store.append([.promise(LogBallot(round: 1, node: 3))])
        for first in stride(from: UInt64(1), through: 120, by: 6) {
            let entries = (first..<first + 6).map { LogEntry(slot: $0, ballot: LogBallot(round: 1, node: 3), payload: payload($0)) }
            try await store.append([.accepted(entries)])
        }
        try await store.append([.promise(LogBallot(round: 2, node: 1))])
        let again = (UInt64(50)...52).map { LogEntry(slot: $0, ballot: LogBallot(round: 2, node: 1), payload: Array("again \($0)".utf8)) }
        try await store.append([.accepted(again + [LogEntry(slot: 121, ballot: LogBallot(round: 2, node: 1), isNoop: true, payload: [])]),
                                .chosen(through: 110)])
        try store.close()
        return directory
    }

    static func segments(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".seg") }.sorted()
            .map { directory + "/" + $0 }
    }

    static func copy(_ directory: String, _ name: String = #function) throws -> String {
        let target = temporaryDirectory(name + "copy")
        for file in try FileManager.default.contentsOfDirectory(atPath: directory) where file != "LOCK" {
            try FileManager.default.copyItem(atPath: directory + "/" + file, toPath: target + "/" + file)
        }
        return target
    }

    static func flip(_ path: String, at offset: Int) throws {
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[offset] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Offsets of the records of one segment, via the library's scanner.
    static func recordOffsets(_ directory: String, segment: Int) throws -> [Int] {
        let scanner = SegmentScanner(directory: directory)
        var offsets: [Int] = []
        _ = try scanner.scan(try scanner.segmentFiles()[segment]) { offsets.append(Int($0.offset)) }
        return offsets
    }

    static func contents(_ directory: String) throws -> [String: Data] {
        var result: [String: Data] = [:]
        for file in try FileManager.default.contentsOfDirectory(atPath: directory) {
            result[file] = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file))
        }
        return result
    }

    @Test("every command on a clean log: exit 0, JSON agrees with the text, nothing written")
    func cleanLog() async throws {
        let directory = try await Self.makeLog()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let before = try Self.contents(directory)

        let verify = try Self.paxlog("verify", directory)
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.lines.last == "clean")
        let verifyJSON = try Self.paxlog("verify", directory, "--json").json()
        #expect(verifyJSON["clean"] as? Bool == true)
        let segmentCount = try #require(verifyJSON["segments"] as? Int)
        #expect(segmentCount == Self.segments(directory).count)
        #expect(verify.lines.first?.hasPrefix("checked \(segmentCount) segments, \(verifyJSON["records"] as? Int ?? -1) records, \(verifyJSON["bytesRead"] as? Int ?? -1) bytes") == true)

        let inspect = try Self.paxlog("inspect", directory)
        #expect(inspect.status == 0)
        let inspectJSON = try Self.paxlog("inspect", directory, "--json").json()
        #expect(inspect.lines.contains("promised        2.1"))
        #expect((inspectJSON["promised"] as? [String: Any])?["round"] as? Int == 2)
        #expect(inspect.lines.contains("chosen through  \(inspectJSON["chosenThrough"] as? Int ?? -1)"))
        #expect(inspectJSON["chosenThrough"] as? Int == 110)
        #expect(inspect.lines.contains("slots           first 1, last 121, 121 entries"))
        #expect(inspectJSON["lastSlot"] as? Int == 121 && inspectJSON["entries"] as? Int == 121)
        #expect(inspectJSON["supersededAccepts"] as? Int == 3)
        #expect((inspectJSON["compressionRatio"] as? Double ?? 0) > 1)
        let jsonSegments = try #require(inspectJSON["segments"] as? [[String: Any]])
        #expect(jsonSegments.count == segmentCount)
        for segment in jsonSegments {
            let name = (segment["file"] as? String ?? "").split(separator: "/").last.map(String.init) ?? ""
            let row = try #require(inspect.lines.first { $0.contains(name) })
            #expect(row.split(separator: " ").map(String.init).contains(String(segment["records"] as? Int ?? -1)))
        }

        let dump = try Self.paxlog("dump", directory)
        let dumpJSON = try Self.paxlog("dump", directory, "--json")
        #expect(dump.status == 0 && dumpJSON.status == 0)
        let entries = try dumpJSON.jsonLines()
        #expect(entries.map { $0["slot"] as? Int } == (1...110).map { $0 })
        #expect(dump.lines.count == entries.count)
        for (line, entry) in zip(dump.lines, entries) {
            let slot = try #require(entry["slot"] as? Int)
            let ballot = try #require(entry["ballot"] as? [String: Any])
            let value = try #require(Data(base64Encoded: entry["value"] as? String ?? "-"))
            #expect(line.hasPrefix("slot \(slot) ballot \(ballot["round"] as? Int ?? -1).\(ballot["node"] as? Int ?? -1) value \(value.count) bytes"))
            #expect(entry["kind"] as? String == "value")
            if !(50...52).contains(slot) { #expect([UInt8](value) == Self.payload(UInt64(slot))) }
        }
        #expect(entries[49]["ballot"] as? [String: Int] == ["round": 2, "node": 1])

        let ranged = try Self.paxlog("dump", directory, "--from", "7", "--to", "9", "--json").jsonLines()
        #expect(ranged.map { $0["slot"] as? Int } == [7, 8, 9])

        let all = try Self.paxlog("dump", directory, "--all-records")
        let allJSON = try Self.paxlog("dump", directory, "--all-records", "--json").jsonLines()
        #expect(all.status == 0 && all.lines.count == allJSON.count)
        #expect(allJSON.filter { $0["type"] as? String == "promise" }.count == 2)
        #expect(allJSON.filter { $0["status"] as? String == "superseded" }.map { $0["slot"] as? Int } == [50, 51, 52])
        #expect(allJSON.contains { $0["kind"] as? String == "noop" && $0["slot"] as? Int == 121 })
        for (line, record) in zip(all.lines, allJSON) {
            let file = (record["file"] as? String ?? "").split(separator: "/").last.map(String.init) ?? ""
            #expect(line.hasPrefix("\(file)@\(record["offset"] as? Int ?? -1) \(record["type"] as? String ?? "")"))
        }

        let repair = try Self.paxlog("repair", directory)
        #expect(repair.status == 0)
        #expect(repair.stdout.contains("nothing to repair"))
        var after = try Self.contents(directory)
        after["LOCK"] = before["LOCK"]  // repair takes the lock, creating LOCK if needed
        #expect(after == before, "read-only commands and a no-op repair change nothing")
    }

    @Test("damaged copies: header, record header, payload: verify exits 1 and JSON names the same places")
    func damagedCopies() async throws {
        let directory = try await Self.makeLog()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let offsets = try Self.recordOffsets(directory, segment: 0)
        let cases: [(String, Int, Int)] = [
            ("segment header", 1, 40),
            ("record header", 0, offsets[1] + 4),
            ("payload", 0, offsets[2] + 16 + 5),
        ]
        for (label, segment, offset) in cases {
            let copy = try Self.copy(directory, label.filter { $0.isLetter })
            defer { try? FileManager.default.removeItem(atPath: copy) }
            let target = Self.segments(copy)[segment]
            try Self.flip(target, at: offset)
            let before = try Self.contents(copy)

            let verify = try Self.paxlog("verify", copy)
            #expect(verify.status == 1, "\(label)")
            let json = try Self.paxlog("verify", copy, "--json")
            #expect(json.status == 1)
            let damage = try #require(try json.json()["damage"] as? [[String: Any]])
            #expect(damage.count == 1, "\(label)")
            let first = try #require(damage.first)
            #expect(first["file"] as? String == target)
            let line = try #require(verify.lines.first { $0.contains(target) })
            #expect(line.contains("offset \(first["offset"] as? Int ?? -1)"))
            if let expected = first["expectedCRC"] as? String, let actual = first["actualCRC"] as? String {
                #expect(line.contains("expected CRC \(expected), actual \(actual)"))
            }
            #expect(verify.lines.last == "damaged: 1 problem")

            let inspect = try Self.paxlog("inspect", copy, "--json")
            #expect(inspect.status == 1)
            #expect((try inspect.json()["damage"] as? [[String: Any]])?.count == 1)
            let dump = try Self.paxlog("dump", copy, "--json")
            #expect(dump.status == 1)
            #expect(dump.stderr.contains("paxlog: warning:"))
            _ = try dump.jsonLines()
            #expect(try Self.contents(copy) == before, "read-only commands wrote to \(label) copy")

            let refused = try Self.paxlog("repair", copy)
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("--truncate-after-corruption"))
            #expect(try Self.contents(copy).filter { $0.key != "LOCK" } == before.filter { $0.key != "LOCK" })

            let dry = try Self.paxlog("repair", copy, "--dry-run", "--truncate-after-corruption")
            #expect(dry.status == 0)
            #expect(dry.stdout.contains("loses "))
            let repaired = try Self.paxlog("repair", copy, "--truncate-after-corruption")
            #expect(repaired.status == 0, "\(label): \(repaired.stderr)")
            #expect(repaired.stdout.contains("repaired: the log now verifies clean"))
            #expect(try Self.paxlog("verify", copy).status == 0)
        }
    }

    @Test("a truncated tail: verify exits 0 and reports it; repair cuts it into a side file")
    func truncatedTail() async throws {
        let directory = try await Self.makeLog()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let last = Self.segments(directory).count - 1
        let offsets = try Self.recordOffsets(directory, segment: last)
        let path = Self.segments(directory)[last]
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(offsets[offsets.count - 1] + 20).write(to: URL(fileURLWithPath: path))

        let verify = try Self.paxlog("verify", directory)
        #expect(verify.status == 0)
        #expect(verify.stdout.contains("torn tail: \(path) offset \(offsets[offsets.count - 1])"))
        let torn = try #require(try Self.paxlog("verify", directory, "--json").json()["tornTail"] as? [String: Any])
        #expect(torn["offset"] as? Int == offsets[offsets.count - 1])
        let tornBytes = try #require(torn["bytes"] as? Int)
        #expect((1...20).contains(tornBytes), "up to the last non-zero byte of the 20 left")
        #expect(verify.stdout.contains("\(tornBytes) bytes of an incomplete append"))

        let repair = try Self.paxlog("repair", directory)
        #expect(repair.status == 0, "\(repair.stderr)")
        #expect(FileManager.default.fileExists(atPath: path + ".torn-\(offsets[offsets.count - 1])"))
        let after = try Self.paxlog("verify", directory, "--json").json()
        #expect(after["clean"] as? Bool == true && after["tornTail"] is NSNull)
        #expect((after["notes"] as? [String])?.contains { $0.contains(".torn-") } == true)
    }

    @Test("not a log: empty, random files, missing, a plain file, a newer format, bad usage: exit 2, one line")
    func refusals() async throws {
        let empty = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let random = Self.temporaryDirectory("random")
        defer { try? FileManager.default.removeItem(atPath: random) }
        for i in 0..<3 {
            try Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }).write(to: URL(fileURLWithPath: random + "/file\(i).bin"))
        }
        for command in ["inspect", "dump", "verify", "repair"] {
            for (directory, expected) in [(empty, "not a PaxosLog data directory"), (random, "not a PaxosLog data directory"),
                                          (empty + "/missing", "no such directory"), (random + "/file0.bin", "not a directory")] {
                let run = try Self.paxlog(command, directory)
                #expect(run.status == 2, "\(command) \(directory)")
                #expect(run.stdout.isEmpty)
                #expect(run.stderr.hasPrefix("paxlog: ") && run.stderr.contains(expected), "\(command): \(run.stderr)")
                #expect(run.stderr.split(separator: "\n").count == 1)
            }
        }
        #expect(try Self.contents(empty).isEmpty, "repair created nothing in a directory that is not a log")

        let directory = try await Self.makeLog()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = Self.segments(directory)[0]
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[8] = 9
        let crc = bytes.prefix(60).withUnsafeBytes { zlibCRC($0) }
        withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { bytes[60 + i] = $0[i] } }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let newer = try Self.paxlog("verify", directory)
        #expect(newer.status == 2)
        #expect(newer.stderr.contains("format version 9 is newer"))

        #expect(try Self.paxlog("verify").status == 2)
        #expect(try Self.paxlog("dump", directory, "--from", "9", "--to", "3").status == 2)
    }

    @Test("dump marks a repeat of a retried identity with the slot readers read it at")
    func dumpMarksRepeats() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "offline-tools-tests")
        logger.logLevel = .critical
        let store = try SegmentStore.open(directory: directory, logger: logger)
        let ballot = LogBallot(round: 1, node: 1)
        let retried = LogProposalID(client: 0x42, sequence: 7)
        // The replica's own ids (top bit set) are never retried, so never repeats.
        let own = LogProposalID(client: 1 << 63 | 5, sequence: 1)
        let entries = [
            LogEntry(slot: 1, ballot: ballot, proposal: retried, payload: Array("r".utf8)),
            LogEntry(slot: 2, ballot: ballot, proposal: own, payload: Array("o".utf8)),
            LogEntry(slot: 3, ballot: ballot, proposal: retried, payload: Array("r".utf8)),
            LogEntry(slot: 4, ballot: ballot, proposal: own, payload: Array("o".utf8)),
        ]
        try await store.append([.accepted(entries), .chosen(through: 4)])
        try store.close()
        let lines = try Self.paxlog("dump", directory, "--json").jsonLines()
        #expect(lines.map { $0["repeatOf"] as? Int } == [nil, nil, 1, nil])
        let text = try Self.paxlog("dump", directory).lines
        #expect(text.count == 4 && text[2].contains("repeat of slot 1") && !text[3].contains("repeat"))
    }

    @Test("a directory a live replica holds: read-only commands read it and say so; repair refuses")
    func locked() async throws {
        let directory = try await Self.makeLog()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "offline-tools-tests")
        logger.logLevel = .critical
        let store = try SegmentStore.open(directory: directory, options: SegmentStore.Options(segmentSize: 8192), logger: logger)
        defer { try? store.close() }
        for command in ["inspect", "dump", "verify"] {
            let run = try Self.paxlog(command, directory)
            #expect(run.status == 0, "\(command): \(run.stderr)")
            #expect(run.stderr.contains("held by a live replica; reading it anyway"))
        }
        #expect(try Self.paxlog("inspect", directory, "--json").json()["locked"] as? Bool == true)
        let repair = try Self.paxlog("repair", directory)
        #expect(repair.status == 2)
        #expect(repair.stderr.hasPrefix("paxlog: ") && repair.stderr.contains("held by a live replica"))
    }
}

/// zlib's CRC-32 (IEEE, reflected), bitwise: the tests re-sign a header without linking zlib.
func zlibCRC(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = (crc >> 1) ^ (0xEDB8_8320 & (0 &- (crc & 1))) }
    }
    return ~crc
}
