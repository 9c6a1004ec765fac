import ArgumentParser
import Foundation
import SegmentLog

// Shared by the offline commands (inspect, dump, verify, repair): one-line errors, exit codes,
// the locked-directory note, progress lines, and a tiny ordered JSON writer (key order and
// exact integers matter to scripts; JSONSerialization gives neither).

/// Exit codes every offline command shares: scripts can trust them.
enum OfflineExit {
    /// The log is clean (a torn tail is not damage), or the repair succeeded / had nothing to do.
    static let ok = ExitCode(0)
    /// Damage found (verify, inspect, dump), or a repair refused or not performed.
    static let problem = ExitCode(1)
    /// Usage error, missing directory, not a log, newer format, locked (repair), I/O error.
    static let failure = ExitCode(2)
}

/// Writes `paxlog: <message>` to stderr.
func complain(_ message: String) {
    FileHandle.standardError.write(Data("paxlog: \(message)\n".utf8))
}

/// Runs an offline command body, turning `OfflineToolError` and other errors into one line on
/// stderr and exit code 2.
func runOffline(_ body: () throws -> ExitCode) throws {
    let code: ExitCode
    do {
        code = try body()
    } catch let error as ExitCode {
        throw error
    } catch let error as OfflineToolError {
        complain(error.description)
        throw OfflineExit.failure
    } catch {
        complain("\(error)")
        throw OfflineExit.failure
    }
    if code != OfflineExit.ok { throw code }
}

/// The read-only commands' policy on a directory a live replica holds: read it anyway (the log is
/// append-only, so what is on disk is a consistent prefix) and say so on stderr, because the
/// last record may be mid-append and show as a torn tail.
func noteIfLocked(_ directory: String, locked: () throws -> Bool) -> Bool {
    guard (try? locked()) == true else { return false }
    complain("note: \(directory) is held by a live replica; reading it anyway (read-only). The log is append-only, "
        + "so this is a consistent prefix, but an append in flight may show as a torn tail.")
    return true
}

/// Prints "paxlog <command>: X of Y MiB (P%)" on stderr once the work has taken a second, then at
/// most once a second. On a terminal the line is rewritten in place.
final class ProgressLine {
    private let label: String
    private let start = Date()
    private var lastPrint: Date?
    private let inPlace = isatty(STDERR_FILENO) != 0
    private var printed = false

    init(_ label: String) { self.label = label }

    func update(_ done: Int64, _ total: Int64) {
        let now = Date()
        guard now.timeIntervalSince(start) >= 1 else { return }
        if let lastPrint, now.timeIntervalSince(lastPrint) < 1, done < total { return }
        lastPrint = now
        let percent = total > 0 ? Double(done) * 100 / Double(total) : 100
        let text = String(format: "paxlog %@: %.0f of %.0f MiB (%.0f%%)", label, Double(done) / 1048576, Double(total) / 1048576, percent)
        FileHandle.standardError.write(Data((inPlace ? "\r" + text : text + "\n").utf8))
        printed = true
    }

    func finish() {
        if printed && inPlace { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// A JSON value that keeps object keys in the order given.
indirect enum JSON {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    static func optional<T>(_ value: T?, _ make: (T) -> JSON) -> JSON { value.map(make) ?? .null }

    var text: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .uint(let u): out += String(u)
        case .double(let d): out += d.isFinite ? String(format: "%.6g", d) : "null"
        case .string(let s): JSON.quote(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let pairs):
            out += "{"
            for (i, (key, value)) in pairs.enumerated() {
                if i > 0 { out += "," }
                JSON.quote(key, into: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        }
    }

    static func quote(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

func hex32(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}

func ballotJSON(_ ballot: LogBallot?) -> JSON {
    JSON.optional(ballot) { .object([("round", .uint($0.round)), ("node", .uint(UInt64($0.node)))]) }
}

func fileName(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
}

/// One damage item as JSON; `damageLine` is its human form. Both carry the same fields.
func damageJSON(_ d: LogDamage) -> JSON {
    .object([
        ("kind", .string(d.kind.rawValue)),
        ("file", .string(d.file)),
        ("offset", .int(d.offset)),
        ("recordType", JSON.optional(d.recordType) { .string($0) }),
        ("expectedCRC", JSON.optional(d.expectedCRC) { .string(hex32($0)) }),
        ("actualCRC", JSON.optional(d.actualCRC) { .string(hex32($0)) }),
        ("reason", .string(d.reason)),
        ("resumedAt", JSON.optional(d.resumedAt) { .int($0) }),
        ("skippedBytes", .int(d.skippedBytes)),
    ])
}

func damageLine(_ d: LogDamage) -> String {
    var line = "\(d.kind.rawValue): \(d.file) offset \(d.offset)"
    if let type = d.recordType { line += " (\(type) record)" }
    var reason = d.reason
    if d.expectedCRC != nil, let r = reason.range(of: "CRC mismatch: stored ") {
        reason = String(reason[..<r.lowerBound]) + "CRC mismatch"  // the CRCs follow, once
    }
    line += ": \(reason)"
    if let expected = d.expectedCRC, let actual = d.actualCRC {
        line += "; expected CRC \(hex32(expected)), actual \(hex32(actual))"
    }
    if let resumed = d.resumedAt {
        line += "; skipped \(d.skippedBytes) bytes to the next valid record at offset \(resumed)"
    } else if d.skippedBytes > 0 && d.kind == .record {
        line += "; no valid record after it in this file (\(d.skippedBytes) bytes)"
    }
    return line
}

func tornTailJSON(_ t: TornTail?) -> JSON {
    JSON.optional(t) {
        .object([("file", .string($0.file)), ("offset", .int($0.offset)), ("bytes", .int($0.bytes)), ("reason", .string($0.reason))])
    }
}

func tornTailLine(_ t: TornTail) -> String {
    "torn tail: \(t.file) offset \(t.offset): \(t.bytes) bytes of an incomplete append (\(t.reason)); "
        + "not damage: it was never acknowledged, and recovery or `paxlog repair` cuts it"
}
