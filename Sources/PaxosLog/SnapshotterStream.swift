/// The framing `paxlog compact --snapshotter CMD` writes to CMD's standard input: the previous
/// snapshot (if any), then every chosen entry after it up to the compaction slot. CMD writes the
/// new snapshot's bytes to its standard output and exits 0.
///
/// ```
/// stream   := magic:"PXSNAPIN" version:u8 = 1 previous entry* end      (integers little-endian)
/// previous := 0x00                                   no previous snapshot: start from empty state
///           | 0x01 slot:u64 length:u64 data[length]  the snapshot covering every slot <= slot
/// entry    := 'E' slot:u64 flags:u8 length:u32 payload[length]
///             flags bit0: no-op (a hole a leader filled; length 0, apply nothing)
/// end      := 'Z' through:u64                        the new snapshot covers every slot <= through
/// ```
///
/// Entries come in slot order, every slot from `previous.slot + 1` (or 1) through `through`.
/// `paxlog kv-snapshotter` is a reference implementation for ``KeyValueStateMachine``.
public enum SnapshotterStream {
    public static let magic = Array("PXSNAPIN".utf8)
    public static let version: UInt8 = 1

    /// The stream header and the start of `previous`; for a previous snapshot, its `length`
    /// data bytes must follow.
    public static func header(previous: (slot: UInt64, length: UInt64)?) -> [UInt8] {
        var out = magic
        out.append(version)
        if let previous {
            out.append(1)
            out.appendLE(previous.slot)
            out.appendLE(previous.length)
        } else {
            out.append(0)
        }
        return out
    }

    /// One entry's framing, payload included.
    public static func entry(slot: UInt64, isNoop: Bool, payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "E")]
        out.reserveCapacity(14 + payload.count)
        out.appendLE(slot)
        out.append(isNoop ? 1 : 0)
        out.appendLE(UInt32(payload.count))
        out.append(contentsOf: payload)
        return out
    }

    public static func end(through: UInt64) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "Z")]
        out.appendLE(through)
        return out
    }

    public enum Item: Hashable, Sendable {
        case previous(slot: UInt64, data: [UInt8])
        case entry(slot: UInt64, isNoop: Bool, payload: [UInt8])
        case end(through: UInt64)
    }

    public struct DecodeError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Decodes a stream from `read(n)`, which returns exactly `n` bytes or nil at end of input;
    /// calls `handle` for each item. A previous snapshot is handed over whole (the kv reference
    /// snapshotter holds its state in memory anyway).
    public static func decode(read: (Int) throws -> [UInt8]?, handle: (Item) throws -> Void) throws {
        func need(_ n: Int, _ what: String) throws -> [UInt8] {
            guard let b = try read(n), b.count == n else { throw DecodeError(description: "truncated \(what)") }
            return b
        }
        func le<T: FixedWidthInteger>(_ b: [UInt8]) -> T { b.reversed().reduce(T(0)) { $0 << 8 | T($1) } }
        guard try need(8, "magic") == magic else { throw DecodeError(description: "bad magic") }
        guard try need(1, "version")[0] == version else { throw DecodeError(description: "unsupported version") }
        switch try need(1, "previous tag")[0] {
        case 0: break
        case 1:
            let slot: UInt64 = le(try need(8, "previous slot"))
            let length: UInt64 = le(try need(8, "previous length"))
            guard length <= 1 << 40 else { throw DecodeError(description: "implausible snapshot length \(length)") }
            try handle(.previous(slot: slot, data: try need(Int(length), "previous data")))
        default: throw DecodeError(description: "bad previous tag")
        }
        while true {
            switch try need(1, "item tag")[0] {
            case UInt8(ascii: "E"):
                let slot: UInt64 = le(try need(8, "entry slot"))
                let flags = try need(1, "entry flags")[0]
                let length: UInt32 = le(try need(4, "entry length"))
                try handle(.entry(slot: slot, isNoop: flags & 1 != 0, payload: try need(Int(length), "entry payload")))
            case UInt8(ascii: "Z"):
                try handle(.end(through: le(try need(8, "end slot"))))
                return
            case let t: throw DecodeError(description: "unknown item tag \(t)")
            }
        }
    }
}
