import ArgumentParser
import Foundation
import SegmentLog

/// `paxlog inspect DIR`: what is in a data directory, and anything odd about it.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Summarise a data directory: segments, acceptor state, slots, compression, oddities.",
        discussion: """
            Shows the format version, the identity (cluster id, node id, incarnation, and whether \
            the replica must rejoin before it votes), each segment (file, sequence, size, slot range, records, raw \
            and stored payload bytes), the promised ballot, chosen watermark, snapshot, first and \
            last slot and compression ratio, and flags anything odd: damage, a torn tail, holes in \
            the slot range, superseded accepts, leftover files. State is replayed from the valid \
            prefix (everything before the first damage), which is what a repaired replica keeps.

            Read-only: never writes, never takes the lock. On a directory a live replica holds it \
            still reads (the log is append-only, so it sees a consistent prefix) and says so on \
            stderr.

            Exit status: 0 no damage, 1 damage found (still summarised), 2 usage or I/O error.
            """
    )

    @Argument(help: "The data directory.") var directory: String
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func run() throws {
        try runOffline {
            let inspector = LogInspector(directory: directory)
            let locked = noteIfLocked(directory, locked: inspector.isLocked)
            let progress = ProgressLine("inspect")
            let report = try inspector.inspect(progress: progress.update)
            progress.finish()
            let state = report.state ?? ReplayedState()
            if json {
                print(JSON.object([
                    ("directory", .string(directory)),
                    ("clean", .bool(report.isClean)),
                    ("locked", .bool(locked)),
                    ("formatVersion", .uint(UInt64(report.formatVersion))),
                    ("identity", JSON.optional(report.identity) { id in
                        .object([
                            ("clusterID", .string("\(id.clusterID)")),
                            ("nodeID", .uint(UInt64(id.nodeID))),
                            ("incarnation", .uint(id.incarnation)),
                            ("needsRejoin", .bool(id.needsRejoin)),
                            ("lostState", JSON.optional(id.lostState) { .string("\($0)") }),
                        ])
                    }),
                    ("promised", ballotJSON(state.promised)),
                    ("chosenThrough", JSON.optional(state.chosenThrough) { .uint($0) }),
                    ("snapshotSlot", JSON.optional(state.snapshotSlot) { .uint($0) }),
                    ("firstSlot", JSON.optional(state.firstSlot) { .uint($0) }),
                    ("lastSlot", JSON.optional(state.lastSlot) { .uint($0) }),
                    ("entries", .int(Int64(state.entryCount))),
                    ("supersededAccepts", .int(Int64(state.supersededAccepts))),
                    ("holes", .uint(state.holes)),
                    ("chosenWithoutEntry", .uint(state.chosenWithoutEntry)),
                    ("records", .int(Int64(report.records))),
                    ("rawBytes", .int(report.rawPayloadBytes)),
                    ("storedBytes", .int(report.storedPayloadBytes)),
                    ("compressionRatio", .double(report.compressionRatio)),
                    ("segments", .array(report.segments.map(segmentJSON))),
                    ("snapshotFiles", .array(report.snapshotFiles.map { .string($0) })),
                    ("damage", .array(report.damage.map(damageJSON))),
                    ("tornTail", tornTailJSON(report.tornTail)),
                    ("notes", .array(report.notes.map { .string($0) })),
                ]).text)
            } else {
                printHuman(report, state)
            }
            return report.isClean ? OfflineExit.ok : OfflineExit.problem
        }
    }

    private func segmentJSON(_ s: SegmentSummary) -> JSON {
        .object([
            ("file", .string(s.path)),
            ("sequence", .uint(s.sequence)),
            ("size", .int(s.fileSize)),
            ("headerValid", .bool(s.headerValid)),
            ("recycled", .bool(s.recycled)),
            ("headerPromised", ballotJSON(s.headerPromised)),
            ("headerChosenThrough", JSON.optional(s.headerChosenThrough) { .uint($0) }),
            ("headerSnapshotSlot", JSON.optional(s.headerSnapshotSlot) { .uint($0) }),
            ("firstSlot", JSON.optional(s.firstSlot) { .uint($0) }),
            ("lastSlot", JSON.optional(s.lastSlot) { .uint($0) }),
            ("entries", .int(Int64(s.entries))),
            ("records", .int(Int64(s.records))),
            ("rawBytes", .int(s.rawPayloadBytes)),
            ("storedBytes", .int(s.storedPayloadBytes)),
            ("dataEnd", .int(s.dataEnd)),
        ])
    }

    private func printHuman(_ report: LogReport, _ state: ReplayedState) {
        func opt<T>(_ v: T?) -> String { v.map { "\($0)" } ?? "none" }
        print("directory       \(directory)")
        print("format          version \(report.formatVersion)")
        print("identity        \(report.identity.map { "\($0)" } ?? "none")")
        print("promised        \(opt(state.promised))")
        print("chosen through  \(opt(state.chosenThrough))")
        print("snapshot        \(opt(state.snapshotSlot))")
        print("slots           first \(opt(state.firstSlot)), last \(opt(state.lastSlot)), \(state.entryCount) entries")
        print("records         \(report.records) (raw \(report.rawPayloadBytes) bytes, stored \(report.storedPayloadBytes) bytes, "
            + String(format: "compression %.2fx)", report.compressionRatio))
        print("segments        \(report.segments.count)")
        let header = ["SEQUENCE", "FILE", "SIZE", "DATA END", "SLOTS", "ENTRIES", "RECORDS", "RAW", "STORED"]
        var rows = [header]
        for s in report.segments {
            let slots = s.firstSlot.map { first in "\(first)-\(s.lastSlot ?? first)" } ?? "-"
            rows.append([String(s.sequence), s.name, String(s.fileSize), s.headerValid ? String(s.dataEnd) : "bad header",
                         slots, String(s.entries), String(s.records), String(s.rawPayloadBytes), String(s.storedPayloadBytes)])
        }
        let widths = header.indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        for row in rows {
            print("  " + row.enumerated().map { c, cell in cell.padding(toLength: widths[c], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
        let findings = report.damage.map(damageLine) + (report.tornTail.map { [tornTailLine($0)] } ?? [])
            + report.notes.map { "note: \($0)" }
        print("findings        \(findings.isEmpty ? "none" : String(findings.count))")
        for f in findings { print("  " + f) }
    }
}
