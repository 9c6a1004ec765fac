/// A state machine an application runs over the log: it applies chosen records in order and can
/// be saved to and restored from a snapshot. ``StateMachineRunner`` drives one and compacts by
/// policy.
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
        var out = Array("PXKV".utf8)
        out.append(1)
        out.appendLE(UInt64(values.count))
        for key in values.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            let k = Array(key.utf8), v = Array(values[key]!.utf8)
            out.appendLE(UInt32(k.count)); out.append(contentsOf: k)
            out.appendLE(UInt32(v.count)); out.append(contentsOf: v)
        }
        return out
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
