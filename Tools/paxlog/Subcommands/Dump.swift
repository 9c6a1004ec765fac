import ArgumentParser
import Foundation
import MultiPaxos
import SegmentLog

/// `paxlog dump DIR`: the chosen entries, or with `--all-records` every record in file order.
struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the chosen entries of a data directory, or every record.",
        discussion: """
            Chosen entries are the slots at or below the chosen watermark (and above the snapshot), \
            each with its latest accepted entry, in slot order. With --json, one object per line: \
            {"slot": N, "ballot": {"round": R, "node": K}, "kind": "value"|"noop", "client": "<hex>", \
            "sequence": N, "repeatOf": N, "value": "<base64>"}. `repeatOf` (text: "repeat of slot N") \
            marks a retried record whose first attempt a later leader also got chosen: readers skip \
            it and read the record at slot N (only repeats of a slot the dump itself printed are found).

            With --all-records, every record in file order (promises, accepts, superseded or not, \
            watermarks, snapshot and truncation markers), each with its file and offset; accepted \
            records are printed one entry per line with its status (current, superseded, truncated, \
            compacted, after-damage).

            On a damaged log the entries come from the valid prefix (what a repaired replica keeps); \
            the damage is named on stderr and the exit status is 1.

            Read-only: never writes, never takes the lock. On a directory a live replica holds it \
            still reads (the log is append-only, so it sees a consistent prefix) and says so on stderr.

            Exit status: 0 ok, 1 damage found (entries printed from the valid prefix), 2 usage or I/O error.
            """
    )

    @Argument(help: "The data directory.") var directory: String
    @Option(help: "Lowest slot to print.") var from: UInt64?
    @Option(help: "Highest slot to print.") var to: UInt64?
    @Flag(help: "One JSON object per line.") var json = false
    @Flag(help: "Every record in file order, not just the chosen entries.") var allRecords = false

    func validate() throws {
        if let from, let to, from > to { throw ValidationError("--from \(from) is above --to \(to)") }
    }

    func run() throws {
        try runOffline {
            let inspector = LogInspector(directory: directory)
            _ = noteIfLocked(directory, locked: inspector.isLocked)
            let progress = ProgressLine("dump")
            var out = OutputBuffer()
            let report: LogReport
            if allRecords {
                report = try inspector.allRecords(from: from, through: to, progress: progress.update) { record in
                    out.line(json ? recordJSON(record).text : recordLine(record))
                }
            } else {
                var firstSlots: [ProposalID: UInt64] = [:]
                report = try inspector.chosenEntries(from: from, through: to, progress: progress.update) { entry in
                    var repeatOf: UInt64?
                    if let p = entry.proposal, case let id = ProposalID(client: p.client, sequence: p.sequence), id.isRetriable {
                        if let first = firstSlots[id] { repeatOf = first } else { firstSlots[id] = entry.slot }
                    }
                    out.line(json ? entryJSON(entry, repeatOf: repeatOf).text : entryLine(entry, repeatOf: repeatOf))
                }
            }
            out.flush()
            progress.finish()
            for d in report.damage { complain("warning: \(damageLine(d))") }
            if !report.isClean {
                complain("warning: the log is damaged; \(allRecords ? "records after the damage are marked after-damage" : "entries shown are from the valid prefix before the first damage")")
            }
            if !allRecords, let state = report.state {
                if let snapshot = state.snapshotSlot, (from ?? 0) <= snapshot {
                    complain("note: slots at or below \(snapshot) are compacted into the snapshot")
                }
                if state.chosenThrough == nil { complain("note: no slot is chosen yet") }
            }
            return report.isClean ? OfflineExit.ok : OfflineExit.problem
        }
    }
}

/// Collects output lines and writes them in large chunks: a dump can be millions of lines.
struct OutputBuffer {
    private var pending = ""

    mutating func line(_ text: String) {
        pending += text
        pending += "\n"
        if pending.utf8.count >= 1 << 16 { flush() }
    }

    mutating func flush() {
        guard !pending.isEmpty else { return }
        FileHandle.standardOutput.write(Data(pending.utf8))
        pending = ""
    }
}

func entryJSON(_ entry: LogEntry, repeatOf: UInt64? = nil) -> JSON {
    .object([
        ("slot", .uint(entry.slot)),
        ("ballot", ballotJSON(entry.ballot)),
        ("kind", .string(entry.isNoop ? "noop" : "value")),
    ] + proposalJSON(entry) + (repeatOf.map { [("repeatOf", .uint($0))] } ?? []) + [
        ("value", .string(Data(entry.payload).base64EncodedString())),
    ])
}

/// The record's proposal identity, when it has one: what a client's retry is matched by.
func proposalJSON(_ entry: LogEntry) -> [(String, JSON)] {
    guard let id = entry.proposal else { return [] }
    return [("client", .string(String(id.client, radix: 16))), ("sequence", .uint(id.sequence))]
}

/// `slot 7 ballot 3.2 value 5 bytes "hello"`: short printable values quoted, others as hex.
func entryLine(_ entry: LogEntry, repeatOf: UInt64? = nil) -> String {
    let id = entry.proposal.map { "id \(String($0.client, radix: 16)):\($0.sequence) " } ?? ""
    let again = repeatOf.map { "repeat of slot \($0) " } ?? ""
    return "slot \(entry.slot) ballot \(entry.ballot) " + id + again + valueText(entry)
}

func valueText(_ entry: LogEntry) -> String {
    if entry.isNoop { return "noop" }
    let bytes = entry.payload
    let shown = bytes.prefix(48)
    let more = bytes.count > shown.count ? "..." : ""
    let preview: String
    if shown.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) {
        preview = "\"" + String(decoding: shown, as: UTF8.self).replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "\"", with: "\\\"") + "\"" + more
    } else {
        preview = "0x" + shown.map { String(format: "%02x", $0) }.joined() + more
    }
    return "value \(bytes.count) bytes \(preview)"
}

func recordJSON(_ r: DumpedRecord) -> JSON {
    var pairs: [(String, JSON)] = [
        ("file", .string(r.file)), ("offset", .int(r.offset)), ("type", .string(r.type)), ("codec", .string(r.codec)),
        ("storedLength", .int(Int64(r.storedLength))), ("rawLength", .int(Int64(r.rawLength))),
    ]
    if let entry = r.entry {
        pairs += [
            ("slot", .uint(entry.slot)), ("ballot", ballotJSON(entry.ballot)), ("kind", .string(entry.isNoop ? "noop" : "value")),
        ] + proposalJSON(entry) + [
            ("value", .string(Data(entry.payload).base64EncodedString())), ("status", .string(r.entryStatus?.rawValue ?? "current")),
        ]
    }
    switch r.record {
    case .promise(let ballot): pairs.append(("ballot", ballotJSON(ballot)))
    case .chosen(let through): pairs.append(("through", .uint(through)))
    case .snapshot(let slot): pairs.append(("slot", .uint(slot)))
    case .suffixTruncated(let from): pairs.append(("from", .uint(from)))
    case .accepted, .none: break
    }
    return .object(pairs)
}

/// `00000000000000000001.seg@64 promise 3.2`, `...@92 accepted slot 1 ballot 3.2 value 2 bytes "hi" current`.
func recordLine(_ r: DumpedRecord) -> String {
    var line = "\(fileName(r.file))@\(r.offset) \(r.type)"
    if let entry = r.entry {
        line += " slot \(entry.slot) ballot \(entry.ballot) \(valueText(entry)) \(r.entryStatus?.rawValue ?? "current")"
    }
    switch r.record {
    case .promise(let ballot): line += " \(ballot)"
    case .chosen(let through): line += " through \(through)"
    case .snapshot(let slot): line += " slot \(slot)"
    case .suffixTruncated(let from): line += " from \(from)"
    case .accepted, .none: break
    }
    return line
}
