import Foundation
import GRDB
import PaxosLog

/// A SQLite database as PaxosLog's on-disk state machine: each log entry is one SQL statement,
/// applied in a transaction that also records the applied position, so the database file itself
/// is the snapshot and the log is compacted on its word (``OnDiskStateMachine``).
///
/// Statements run in log order on every replica; one that fails (bad SQL, a constraint) fails
/// the same way everywhere, is rolled back alone, and its error is recorded by position, so the
/// replica that took the write can tell its client. Statements must be deterministic
/// (no `random()`, no `datetime('now')`): every replica must reach the same file contents.
actor SQLiteStateMachine: OnDiskStateMachine {
    let directory: String
    var path: String { directory + "/db.sqlite" }
    private var queue: DatabaseQueue?
    private var applied: PaxosLog.Position = 0

    init(directory: String) { self.directory = directory }

    static func open(path: String) throws -> DatabaseQueue {
        var configuration = GRDB.Configuration()
        // FULL: a commit is durable when it returns, so `sync()` has nothing left to do.
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        return try DatabaseQueue(path: path, configuration: configuration)
    }

    private func database() throws -> DatabaseQueue {
        guard let queue else { throw PaxosLogError(.closed, "the database at \(path) is not open") }
        return queue
    }

    func open() async throws -> PaxosLog.Position {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // Exports a crash left behind.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasPrefix("export-") {
            try? FileManager.default.removeItem(atPath: directory + "/" + name)
        }
        let queue = try Self.open(path: path)
        let position = try await queue.write { db -> Int64 in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS _paxos_applied (id INTEGER PRIMARY KEY CHECK (id = 1), position INTEGER NOT NULL);
                INSERT OR IGNORE INTO _paxos_applied (id, position) VALUES (1, 0);
                CREATE TABLE IF NOT EXISTS _paxos_errors (position INTEGER PRIMARY KEY, message TEXT NOT NULL);
                """)
            return try Int64.fetchOne(db, sql: "SELECT position FROM _paxos_applied") ?? 0
        }
        self.queue = queue
        applied = PaxosLog.Position(position)
        return applied
    }

    func apply(_ entries: [PaxosLog.Entry]) async throws {
        guard let last = entries.last else { return }
        try await database().write { db in
            for entry in entries {
                let sql = String(decoding: entry.bytes, as: UTF8.self)
                do {
                    // The bookkeeping tables are the replica's, not the application's.
                    guard !sql.lowercased().contains("_paxos_") else { throw PaxosLogError(.invalidArgument, "statements may not name the _paxos_ tables") }
                    try db.inSavepoint {
                        try db.execute(sql: sql)
                        return .commit
                    }
                } catch {
                    try db.execute(sql: "INSERT OR REPLACE INTO _paxos_errors (position, message) VALUES (?, ?)",
                                   arguments: [Int64(entry.position), "\(error)"])
                }
            }
            // Bounded: the errors of the last 100,000 positions are kept.
            try db.execute(sql: "DELETE FROM _paxos_errors WHERE position < ?", arguments: [Int64(last.position) - 100_000])
            try db.execute(sql: "UPDATE _paxos_applied SET position = ?", arguments: [Int64(last.position)])
        }
        applied = last.position
    }

    /// Every transaction commits durably (`synchronous = FULL`): what is applied is durable.
    func sync() async throws -> PaxosLog.Position { applied }

    /// A consistent copy of the database (`VACUUM INTO`), which carries its own applied position.
    func prepareSnapshot() async throws -> any StateSnapshot {
        let copy = directory + "/export-\(UUID().uuidString).sqlite"
        try await database().writeWithoutTransaction { db in try db.execute(sql: "VACUUM INTO ?", arguments: [copy]) }
        let position = try await DatabaseQueue(path: copy).read { db in try Int64.fetchOne(db, sql: "SELECT position FROM _paxos_applied") ?? 0 }
        return FileSnapshot(path: copy, position: PaxosLog.Position(position))
    }

    /// Replaces the database file with the snapshot's, then reopens it.
    func restore(from input: SnapshotInput) async throws {
        let incoming = directory + "/restore.sqlite.tmp"
        FileManager.default.createFile(atPath: incoming, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: incoming) else { throw PaxosLogError(.storage, "cannot create \(incoming)") }
        while true {
            let chunk = try await input.read()
            if chunk.isEmpty { break }
            try handle.write(contentsOf: chunk)
        }
        try handle.synchronize()
        try handle.close()
        try queue?.close()
        queue = nil
        for suffix in ["-journal", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        guard rename(incoming, path) == 0 else { throw PaxosLogError(.storage, "cannot rename \(incoming) to \(path): errno \(errno)") }
        let position = try await open()
        guard position == input.position else {
            throw PaxosLogError(.storage, "the snapshot through \(input.position) holds a database at position \(position)")
        }
    }

    /// A read-only query's rows as a JSON object `{"columns": [...], "rows": [[...]]}`.
    func query(_ sql: String) async throws -> Data {
        try await database().read { db in
            let rows = try Row.fetchAll(db, sql: sql)
            let columns = rows.first.map { Array($0.columnNames) } ?? []
            return try JSONEncoder().encode(QueryResult(columns: columns, rows: rows.map { row in row.databaseValues.map(JSONValue.init) }))
        }
    }

    struct QueryResult: Encodable {
        let columns: [String]
        let rows: [[JSONValue]]
    }

    /// A column value in JSON, blobs as base64 text. (JSONEncoder: Foundation's
    /// JSONSerialization on Linux refuses values it gets from here.)
    enum JSONValue: Encodable {
        case null, integer(Int64), real(Double), text(String)

        init(_ value: DatabaseValue) {
            switch value.storage {
            case .null: self = .null
            case .int64(let i): self = .integer(i)
            case .double(let d): self = .real(d)
            case .string(let s): self = .text(s)
            case .blob(let b): self = .text(b.base64EncodedString())
            }
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .null: try c.encodeNil()
            case .integer(let i): try c.encode(i)
            case .real(let d): try c.encode(d)
            case .text(let s): try c.encode(s)
            }
        }
    }

    /// The error the statement at `position` failed with, if it failed.
    func error(at position: PaxosLog.Position) async throws -> String? {
        try await database().read { db in
            try String.fetchOne(db, sql: "SELECT message FROM _paxos_errors WHERE position = ?", arguments: [Int64(position)])
        }
    }

    func close() throws {
        try queue?.close()
        queue = nil
    }
}

/// A `VACUUM INTO` copy streamed to the log in 1 MiB chunks, then deleted.
struct FileSnapshot: StateSnapshot {
    let path: String
    let position: PaxosLog.Position

    func save(to output: SnapshotOutput) async throws {
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw PaxosLogError(.storage, "cannot open \(path)") }
        defer { try? handle.close() }
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            try await output.write([UInt8](chunk))
        }
    }
}
