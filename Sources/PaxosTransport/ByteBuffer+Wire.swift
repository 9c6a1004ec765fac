import MultiPaxos
import NIOCore

// Primitive field encodings shared by every frame body. All integers are big-endian.
// Reads throw `WireError` instead of returning optionals so that each body decoder is a straight
// sequence of `try` lines, and so that no input can reach a force-unwrap.

extension ByteBuffer {
    mutating func readWire<T: FixedWidthInteger>(_: T.Type, _ field: StaticString) throws(WireError) -> T {
        guard let value = readInteger(endianness: .big, as: T.self) else {
            throw WireError(.truncated, "\(field)")
        }
        return value
    }

    mutating func readBool(_ field: StaticString) throws(WireError) -> Bool {
        switch try readWire(UInt8.self, field) {
        case 0: return false
        case 1: return true
        case let other: throw WireError(.invalidValue, "\(field): boolean \(other)")
        }
    }

    /// Reads a `u32` byte count then that many bytes; one copy, into a fresh array.
    mutating func readWireBytes(_ field: StaticString) throws(WireError) -> [UInt8] {
        let count = Int(try readWire(UInt32.self, field))
        guard let bytes = readBytes(length: count) else {
            throw WireError(.truncated, "\(field): \(count) bytes, \(readableBytes) left")
        }
        return bytes
    }

    /// Reads a `u16` byte count then that many UTF-8 bytes.
    mutating func readWireString(_ field: StaticString) throws(WireError) -> String {
        let count = Int(try readWire(UInt16.self, field))
        guard let slice = readSlice(length: count) else {
            throw WireError(.truncated, "\(field): \(count) bytes, \(readableBytes) left")
        }
        // Validate rather than repair: a peer that sends broken UTF-8 is broken.
        guard let string = slice.withUnsafeReadableBytes({ String(validating: $0, as: UTF8.self) }) else {
            throw WireError(.invalidValue, "\(field): not UTF-8")
        }
        return string
    }

    /// Reads a `u32` element count and checks it against the bytes left, so that a forged count
    /// cannot make the decoder reserve gigabytes before failing.
    mutating func readWireCount(_ field: StaticString, minimumElementSize: Int) throws(WireError) -> Int {
        let count = Int(try readWire(UInt32.self, field))
        guard count <= readableBytes / Swift.max(minimumElementSize, 1) else {
            throw WireError(.truncated, "\(field): \(count) elements cannot fit in \(readableBytes) bytes")
        }
        return count
    }

    /// Reads an array: a `u32` element count (checked like ``readWireCount(_:minimumElementSize:)``)
    /// then that many elements, each read by `readElement`.
    mutating func readWireArray<Element>(
        _ field: StaticString, minimumElementSize: Int,
        _ readElement: (inout ByteBuffer) throws(WireError) -> Element
    ) throws(WireError) -> [Element] {
        let count = try readWireCount(field, minimumElementSize: minimumElementSize)
        var elements: [Element] = []
        elements.reserveCapacity(count)
        for _ in 0..<count { elements.append(try readElement(&self)) }
        return elements
    }

    func checkFullyRead(_ what: StaticString) throws(WireError) {
        guard readableBytes == 0 else {
            throw WireError(.trailingBytes, "\(what): \(readableBytes) bytes after the last field")
        }
    }

    mutating func writeWire<T: FixedWidthInteger>(_ value: T) {
        writeInteger(value, endianness: .big, as: T.self)
    }

    mutating func writeBool(_ value: Bool) {
        writeInteger(value ? 1 : 0, as: UInt8.self)
    }

    /// Writes an array: a `u32` element count, then each element with `writeElement`.
    mutating func writeWireArray<C: Collection>(_ elements: C, _ writeElement: (inout ByteBuffer, C.Element) -> Void) {
        writeWire(UInt32(truncatingIfNeeded: elements.count))
        for element in elements { writeElement(&self, element) }
    }

    mutating func writeWireBytes(_ bytes: [UInt8]) {
        writeInteger(UInt32(truncatingIfNeeded: bytes.count), endianness: .big, as: UInt32.self)
        writeBytes(bytes)
    }

    /// Writes a string as `u16` length + UTF-8, cut at 65 535 bytes (strings here are names and
    /// human-readable reasons; cutting is better than refusing to send a refusal).
    mutating func writeWireString(_ string: String) {
        var utf8 = Array(string.utf8)
        if utf8.count > Int(UInt16.max) {
            utf8.removeLast(utf8.count - Int(UInt16.max))
            // Do not leave half a scalar behind: drop continuation bytes at the cut.
            while let last = utf8.last, last & 0xC0 == 0x80 { utf8.removeLast() }
            if let last = utf8.last, last >= 0xC0 { utf8.removeLast() }
        }
        writeInteger(UInt16(utf8.count), endianness: .big, as: UInt16.self)
        writeBytes(utf8)
    }

    /// Writes `host:string port:u16`.
    mutating func writeWireAddress(_ address: PeerAddress) {
        writeWireString(address.host)
        writeWire(UInt16(truncatingIfNeeded: address.port))
    }

    mutating func readWireAddress(_ field: StaticString) throws(WireError) -> PeerAddress {
        let host = try readWireString(field)
        return PeerAddress(host: host, port: Int(try readWire(UInt16.self, field)))
    }

    // MARK: Consensus value types

    mutating func writeBallot(_ ballot: Ballot) {
        writeWire(ballot.round)
        writeWire(ballot.node)
    }

    mutating func readBallot() throws(WireError) -> Ballot {
        let round = try readWire(UInt64.self, "ballot.round")
        let node = try readWire(NodeID.self, "ballot.node")
        return Ballot(round: round, node: node)
    }

    mutating func writeValue(_ value: Value) {
        switch value {
        case .noop:
            writeWire(UInt8(0))
        case .data(let bytes):
            writeWire(UInt8(1))
            writeWireBytes(bytes)
        case .identified(let id, let bytes):
            writeWire(UInt8(2))
            writeWire(id.client)
            writeWire(id.sequence)
            writeWireBytes(bytes)
        }
    }

    /// Writes `values` as ``writeWireArray(_:_:)`` with ``writeValue(_:)`` would, byte for byte,
    /// but reserves the space once and fills it in one buffer access: writing the tag, the length
    /// and the bytes of each value as three writes cost three capacity and uniqueness checks per
    /// value, a third of an Accept's encoding time.
    mutating func writeWireValues(_ values: [Value]) {
        writeWire(UInt32(truncatingIfNeeded: values.count))
        var size = 0
        for value in values { size += WireSize.value(value) }
        writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out -> Int in
            var at = 0
            for value in values {
                switch value {
                case .noop:
                    out.storeBytes(of: 0, toByteOffset: at, as: UInt8.self)
                    at += 1
                case .data(let bytes), .identified(_, let bytes):
                    if let id = value.proposalID {
                        out.storeBytes(of: 2, toByteOffset: at, as: UInt8.self)
                        out.storeBytes(of: id.client.bigEndian, toByteOffset: at + 1, as: UInt64.self)
                        out.storeBytes(of: id.sequence.bigEndian, toByteOffset: at + 9, as: UInt64.self)
                        at += 16
                    } else {
                        out.storeBytes(of: 1, toByteOffset: at, as: UInt8.self)
                    }
                    out.storeBytes(of: UInt32(truncatingIfNeeded: bytes.count).bigEndian, toByteOffset: at + 1, as: UInt32.self)
                    at += 5
                    // `size` counted these bytes, so the slice stays within `out`.
                    bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[at ..< at + $0.count]).copyMemory(from: $0) }
                    at += bytes.count
                }
            }
            precondition(at == size, "writeWireValues: wrote \(at) bytes, sized \(size)")
            return at
        }
    }

    /// Reads what ``writeWireValues(_:)`` wrote (a `u32` count, then each value as
    /// ``readValue()`` reads it) with one buffer access for the whole array instead of three reads
    /// per value. Every length is checked against the bytes left before it is used, so a
    /// malformed body is a ``WireError`` exactly where `readValue` would have thrown one.
    mutating func readWireValues(_ field: StaticString) throws(WireError) -> [Value] {
        let count = try readWireCount(field, minimumElementSize: WireSize.minValue)
        var values: [Value] = []
        values.reserveCapacity(count)
        let (consumed, error) = withUnsafeReadableBytes { raw -> (Int, WireError?) in
            let end = raw.count
            var at = 0
            for _ in 0 ..< count {
                guard at < end else { return (at, WireError(.truncated, "value.tag")) }
                let tag = raw[at]
                at += 1
                switch tag {
                case 0:
                    values.append(.noop)
                case 1, 2:
                    var id: ProposalID? = nil
                    if tag == 2 {
                        guard end - at >= 16 else { return (at, WireError(.truncated, "value.proposal")) }
                        id = ProposalID(client: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)),
                                        sequence: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self)))
                        at += 16
                    }
                    guard end - at >= 4 else { return (at, WireError(.truncated, "value.data")) }
                    let length = Int(UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
                    at += 4
                    guard end - at >= length else {
                        return (at, WireError(.truncated, "value.data: \(length) bytes, \(end - at) left"))
                    }
                    // One copy, into the value's own array (one allocation per value remains).
                    let bytes = Array(UnsafeRawBufferPointer(rebasing: raw[at ..< at + length]))
                    values.append(id.map { .identified($0, bytes) } ?? .data(bytes))
                    at += length
                default:
                    return (at, WireError(.unknownType, "value tag \(tag)"))
                }
            }
            return (at, nil)
        }
        if let error { throw error }
        moveReaderIndex(forwardBy: consumed)
        return values
    }

    mutating func readValue() throws(WireError) -> Value {
        switch try readWire(UInt8.self, "value.tag") {
        case 0: return .noop
        case 1: return .data(try readWireBytes("value.data"))
        case 2:
            let id = ProposalID(client: try readWire(UInt64.self, "value.client"), sequence: try readWire(UInt64.self, "value.sequence"))
            return .identified(id, try readWireBytes("value.data"))
        case let tag: throw WireError(.unknownType, "value tag \(tag)")
        }
    }

    mutating func writeEntry(_ entry: Entry) {
        writeWire(entry.slot)
        writeBallot(entry.ballot)
        writeValue(entry.value)
    }

    mutating func readEntry() throws(WireError) -> Entry {
        let slot = try readWire(Slot.self, "entry.slot")
        let ballot = try readBallot()
        let value = try readValue()
        return Entry(slot: slot, ballot: ballot, value: value)
    }
}

/// Encoded sizes, used to reserve an output buffer once instead of growing it while encoding.
enum WireSize {
    static let ballot = 12
    /// Smallest encoding of a `Value` (a no-op tag).
    static let minValue = 1
    /// Smallest encoding of an `Entry`: slot + ballot + no-op tag.
    static let minEntry = 8 + ballot + minValue

    static func value(_ value: Value) -> Int {
        switch value {
        case .noop: return 1
        case .data(let bytes): return 1 + 4 + bytes.count
        case .identified(_, let bytes): return 1 + 16 + 4 + bytes.count
        }
    }

    static func entry(_ entry: Entry) -> Int { 8 + ballot + value(entry.value) }
}
