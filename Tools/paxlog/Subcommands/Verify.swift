import ArgumentParser
import Foundation
import SegmentLog

/// `paxlog verify DIR`: reads every byte, checks every CRC and structural rule, reports all damage.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every byte of a data directory and report all damage.",
        discussion: """
            Reads every segment, checks headers, the sequence of segment files, the state each \
            header carries, every record's header, CRC and payload, and the snapshot the log names. \
            Keeps going past damage and reports each place: file, offset, record type, expected and \
            actual CRC. An incomplete last append (torn tail) is reported but is not damage: \
            recovery cuts it. Clean here means a replica opens the log without complaint.

            Read-only: never writes, never takes the lock. On a directory a live replica holds it \
            still reads (the log is append-only, so it sees a consistent prefix) and says so on \
            stderr; an append in flight may then show as a torn tail.

            Exit status: 0 clean, 1 damage found, 2 usage or I/O error (one line on stderr).
            """
    )

    @Argument(help: "The data directory.") var directory: String
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func run() throws {
        try runOffline {
            let verifier = LogVerifier(directory: directory)
            let locked = noteIfLocked(directory, locked: verifier.isLocked)
            let progress = ProgressLine("verify")
            let start = Date()
            let report = try verifier.verify(progress: progress.update)
            progress.finish()
            let seconds = Date().timeIntervalSince(start)
            if json {
                print(JSON.object([
                    ("directory", .string(directory)),
                    ("clean", .bool(report.isClean)),
                    ("locked", .bool(locked)),
                    ("formatVersion", .uint(UInt64(report.formatVersion))),
                    ("segments", .int(Int64(report.segments.count))),
                    ("records", .int(Int64(report.records))),
                    ("bytesRead", .int(report.bytesRead)),
                    ("seconds", .double(seconds)),
                    ("damage", .array(report.damage.map(damageJSON))),
                    ("tornTail", tornTailJSON(report.tornTail)),
                    ("notes", .array(report.notes.map { .string($0) })),
                ]).text)
            } else {
                let rate = seconds > 0 ? Double(report.bytesRead) / seconds / 1e6 : 0
                print("checked \(report.segments.count) segments, \(report.records) records, \(report.bytesRead) bytes in "
                    + String(format: "%.2f s (%.0f MB/s)", seconds, rate))
                for d in report.damage { print(damageLine(d)) }
                if let torn = report.tornTail { print(tornTailLine(torn)) }
                for note in report.notes { print("note: \(note)") }
                print(report.isClean ? "clean" : "damaged: \(report.damage.count) problem\(report.damage.count == 1 ? "" : "s")")
            }
            return report.isClean ? OfflineExit.ok : OfflineExit.problem
        }
    }
}
