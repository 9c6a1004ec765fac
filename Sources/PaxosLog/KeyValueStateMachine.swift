/// A state machine whose state is a value: it applies chosen records in order and can be saved to
/// and restored from a snapshot. ``StateMachineRunner`` drives one and compacts by policy. For
/// state that lives in a database or is larger than memory, see ``StateMachine`` and
/// ``OnDiskStateMachine``.
public protocol ReplicatedStateMachine: Sendable {
    /// The empty state (before position 1).
    init()
    /// The state a snapshot holds.
    /// - Throws: when `snapshot` is not one this machine wrote.
    init(snapshot: [UInt8]) throws
    /// Applies one chosen record. Must be deterministic: every replica applies the same records
    /// in the same order and must reach the same state. Must not fail on bad input (ignore it).
    mutating func apply(_ record: [UInt8])
    /// The state's bytes; `init(snapshot:)` of them gives back an equal state.
    func snapshot() -> [UInt8]
    /// Writes the same bytes as ``snapshot()`` in chunks, so the whole snapshot is never in
    /// memory. Default: ``snapshot()``, written in 1 MiB pieces.
    func writeSnapshot(to output: SnapshotOutput) async throws
    /// The state a snapshot holds, read in chunks. Default: the whole data read into one array
    /// for ``init(snapshot:)``.
    /// - Throws: when the snapshot is not one this machine wrote, or cannot be read.
    init(reading input: SnapshotInput) async throws
}

/// The built-in example state machine: a string key-value map. Records are UTF-8 text:
///
///     set KEY VALUE      (VALUE is the rest of the record, spaces included)
///     del KEY
///
/// Anything else is ignored (counted in ``ignoredRecords``). `paxlog compact --state-machine kv`,
/// `paxlog serve --state-machine kv` and the tests use it.
///
/// Snapshot format (little-endian): `"PXKV" version:u8 = 1 count:u64 (keyLength:u32 key
/// valueLength:u32 value){count}`, keys in ascending byte order — so equal states have equal
/// snapshots, byte for byte.
public struct KeyValueStateMachine: ReplicatedStateMachine, Hashable {
    public private(set) var values: [String: String] = [:]
    /// Records applied that were not `set` or `del` commands.
    public private(set) var ignoredRecords = 0

    public init() {}

    public enum SnapshotError: Error, Hashable, CustomStringConvertible {
        case malformed(String)
        public var description: String {
            switch self { case .malformed(let why): return "not a key-value snapshot: \(why)" }
        }
    }

    public init(snapshot: [UInt8]) throws {
        var reader = ByteReader(snapshot)
        guard reader.take(4) == Array("PXKV".utf8) else { throw SnapshotError.malformed("bad magic") }
        guard reader.u8() == 1 else { throw SnapshotError.malformed("unknown version") }
        guard let count = reader.u64() else { throw SnapshotError.malformed("truncated count") }
        for _ in 0..<count {
            guard let kl = reader.u32(), let k = reader.take(Int(kl)), let vl = reader.u32(), let v = reader.take(Int(vl)) else {
                throw SnapshotError.malformed("truncated entry")
            }
            values[String(decoding: k, as: UTF8.self)] = String(decoding: v, as: UTF8.self)
        }
        guard reader.isAtEnd else { throw SnapshotError.malformed("trailing bytes") }
    }

    public mutating func apply(_ record: [UInt8]) {
        guard let text = String(validating: record, as: UTF8.self) else {
            ignoredRecords += 1
            return
        }
        let parts = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        switch (parts.first, parts.count) {
        case ("set", 3) where !parts[1].isEmpty:
            values[String(parts[1])] = String(parts[2])
        case ("del", 2) where !parts[1].isEmpty:
            values[String(parts[1])] = nil
        default:
            ignoredRecords += 1
        }
    }

    public func snapshot() -> [UInt8] {
        var out: [UInt8] = []
        encodeSnapshot { out.append(contentsOf: $0) }
        return out
    }

    /// The snapshot in pieces of about `chunkSize` bytes, handed to `emit` in order.
    func encodeSnapshot(chunkSize: Int = 1 << 20, _ emit: ([UInt8]) throws -> Void) rethrows {
        var out = Array("PXKV".utf8)
        out.reserveCapacity(chunkSize + 4096)
        out.append(1)
        out.appendLE(UInt64(values.count))
        // Keys compared as UTF-8 views, not copied into arrays per comparison (n log n allocations).
        for (key, value) in values.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            out.appendLE(UInt32(key.utf8.count)); out.append(contentsOf: key.utf8)
            out.appendLE(UInt32(value.utf8.count)); out.append(contentsOf: value.utf8)
            if out.count >= chunkSize {
                try emit(out)
                out.removeAll(keepingCapacity: true)
            }
        }
        if !out.isEmpty { try emit(out) }
    }

    /// Streams the snapshot in 1 MiB pieces: the sorted pairs (references to the map's strings)
    /// are the only full-size copy, and at most one piece waits in memory.
    public func writeSnapshot(to output: SnapshotOutput) async throws {
        var pairs = values.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }).makeIterator()
        var out = Array("PXKV".utf8)
        out.reserveCapacity((1 << 20) + 4096)
        out.append(1)
        out.appendLE(UInt64(values.count))
        var done = false
        while !done {
            while out.count < 1 << 20 {
                guard let pair = pairs.next() else { done = true; break }
                out.appendLE(UInt32(pair.key.utf8.count)); out.append(contentsOf: pair.key.utf8)
                out.appendLE(UInt32(pair.value.utf8.count)); out.append(contentsOf: pair.value.utf8)
            }
            if !out.isEmpty { try await output.write(out) }
            out.removeAll(keepingCapacity: true)
        }
    }

    /// Reads a snapshot entry by entry, never holding more than one key and value beyond the map.
    public init(reading input: SnapshotInput) async throws {
        func le<T: FixedWidthInteger>(_ b: [UInt8]) -> T { b.reversed().reduce(T(0)) { $0 << 8 | T($1) } }
        func field(_ n: Int, _ what: String) async throws -> [UInt8] {
            // A length beyond what is left is malformed: never reserve it.
            guard UInt64(n) <= input.length - input.bytesRead else { throw SnapshotError.malformed("truncated \(what)") }
            let b = try await input.read(exactly: n)
            guard b.count == n else { throw SnapshotError.malformed("truncated \(what)") }
            return b
        }
        guard try await field(4, "magic") == Array("PXKV".utf8) else { throw SnapshotError.malformed("bad magic") }
        guard try await field(1, "version") == [1] else { throw SnapshotError.malformed("unknown version") }
        let count: UInt64 = le(try await field(8, "count"))
        var values: [String: String] = [:]
        for _ in 0..<count {
            let kl: UInt32 = le(try await field(4, "entry"))
            let k = try await field(Int(kl), "entry")
            let vl: UInt32 = le(try await field(4, "entry"))
            let v = try await field(Int(vl), "entry")
            values[String(decoding: k, as: UTF8.self)] = String(decoding: v, as: UTF8.self)
        }
        // Reading to the end also checks the snapshot's crc32.
        guard try await input.read(maxCount: 1).isEmpty else { throw SnapshotError.malformed("trailing bytes") }
        self.init()
        self.values = values
    }

    /// The record that sets `key` to `value` (`key` must not contain a space).
    public static func set(_ key: String, _ value: String) -> [UInt8] { Array("set \(key) \(value)".utf8) }
    /// The record that deletes `key`.
    public static func delete(_ key: String) -> [UInt8] { Array("del \(key)".utf8) }

    public static func == (a: Self, b: Self) -> Bool { a.values == b.values }
    public func hash(into h: inout Hasher) { h.combine(values) }
}

/// Bounds-checked little-endian reads: bad input yields nil, never a trap.
struct ByteReader {
    let bytes: [UInt8]
    var index = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    var isAtEnd: Bool { index == bytes.count }
    var remaining: Int { bytes.count - index }

    mutating func take(_ n: Int) -> [UInt8]? {
        guard n >= 0, n <= remaining else { return nil }
        defer { index += n }
        return Array(bytes[index..<index + n])
    }

    mutating func u8() -> UInt8? { take(1)?[0] }
    mutating func u32() -> UInt32? { take(4).map { b in b.reversed().reduce(0) { $0 << 8 | UInt32($1) } } }
    mutating func u64() -> UInt64? { take(8).map { b in b.reversed().reduce(0) { $0 << 8 | UInt64($1) } } }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }
}
