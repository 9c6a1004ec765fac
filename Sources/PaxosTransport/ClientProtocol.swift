import MultiPaxos
import NIOCore

/// A request from a client to a replica. Several records per `append` amortise the round trip;
/// the server answers with one position per record, in order.
public enum ClientRequest: Hashable, Sendable {
    /// Append these records, in this order. Answered by `appended`, `redirect` or `error`.
    case append([[UInt8]])
    /// Read chosen entries from `fromSlot` on, at most `maxCount`. Answered by `entries` or `error`.
    case read(fromSlot: Slot, maxCount: UInt32)
    /// Ask for the replica's view of the cluster. Answered by `status`.
    case status

    enum Kind: UInt8 {
        case append = 1
        case read = 2
        case status = 3
    }
}

/// A server-side error code. An open set: the facade may add codes without breaking clients,
/// which treat an unknown code as a generic failure.
public struct ClientErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Too much in flight; retry later.
    public static let overloaded = ClientErrorCode(rawValue: 1)
    /// No majority reachable; the outcome of an append may be unknown.
    public static let noQuorum = ClientErrorCode(rawValue: 2)
    /// This replica is not the leader and does not know one to redirect to.
    public static let notLeader = ClientErrorCode(rawValue: 3)
    /// The request cannot be served as asked (e.g. empty append, zero count).
    public static let invalidRequest = ClientErrorCode(rawValue: 4)
    /// The requested slots were compacted away.
    public static let compacted = ClientErrorCode(rawValue: 5)
    /// The replica is stopping.
    public static let shuttingDown = ClientErrorCode(rawValue: 6)
    /// Anything else; the message says what.
    public static let `internal` = ClientErrorCode(rawValue: 7)
    /// The request timed out on the server; the outcome of an append is unknown.
    public static let timeout = ClientErrorCode(rawValue: 8)
    /// Another value was chosen at the slot after a leader change: the append was not applied,
    /// and retrying it is safe.
    public static let superseded = ClientErrorCode(rawValue: 9)

    public var description: String {
        switch self {
        case .overloaded: return "overloaded"
        case .noQuorum: return "no quorum"
        case .notLeader: return "not leader"
        case .invalidRequest: return "invalid request"
        case .compacted: return "compacted"
        case .shuttingDown: return "shutting down"
        case .internal: return "internal"
        case .timeout: return "timeout"
        case .superseded: return "superseded"
        default: return "error \(rawValue)"
        }
    }
}

/// An error a server returns for one request.
public struct ClientError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: ClientErrorCode
    public var message: String
    public init(code: ClientErrorCode, message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code): \(message)" }
}

/// One chosen record returned by a read.
public struct ClientEntry: Hashable, Sendable {
    public var slot: Slot
    public var bytes: [UInt8]
    public init(slot: Slot, bytes: [UInt8]) {
        self.slot = slot
        self.bytes = bytes
    }
}

/// The answer to a read: the entries, and where the next read should start (no-ops are skipped,
/// so the next slot cannot be derived from the last entry).
public struct ReadResult: Hashable, Sendable {
    public var entries: [ClientEntry]
    /// The first slot the server did not examine; pass it as the next `fromSlot`.
    public var nextSlot: Slot
    public init(entries: [ClientEntry], nextSlot: Slot) {
        self.entries = entries
        self.nextSlot = nextSlot
    }
}

/// A replica's view of the cluster.
public struct ClientStatus: Hashable, Sendable {
    public var nodeID: NodeID
    /// The leader this replica knows of, if any.
    public var leaderID: NodeID?
    /// The highest ballot this replica knows.
    public var ballot: Ballot
    /// Every slot up to here is chosen and known to this replica.
    public var chosenThrough: Slot
    /// The highest slot this replica accepted anything for.
    public var lastAccepted: Slot
    /// Free-form facts (role, uptime, data directory, ...) so the facade can report more
    /// without a wire version bump. Ordered as sent.
    public var details: [Detail]

    public struct Detail: Hashable, Sendable {
        public var key: String
        public var value: String
        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }

    public init(nodeID: NodeID, leaderID: NodeID?, ballot: Ballot, chosenThrough: Slot, lastAccepted: Slot, details: [Detail] = []) {
        self.nodeID = nodeID
        self.leaderID = leaderID
        self.ballot = ballot
        self.chosenThrough = chosenThrough
        self.lastAccepted = lastAccepted
        self.details = details
    }
}

/// A server's answer to one ``ClientRequest``.
public enum ClientResponse: Hashable, Sendable {
    /// The records of an append are chosen, at these slots (one per record, in request order).
    case appended([Slot])
    /// This replica is not the leader; try that one. Either part may be unknown.
    case redirect(leaderID: NodeID?, leaderAddress: String?)
    /// The request failed.
    case error(ClientError)
    /// The answer to a read.
    case entries(ReadResult)
    /// The answer to a status request.
    case status(ClientStatus)

    enum Kind: UInt8 {
        case appended = 1
        case redirect = 2
        case error = 3
        case entries = 4
        case status = 5
    }
}

/// A request with the id its response will carry. Ids are chosen by the client, unique per
/// connection among requests in flight; responses may come back in any order.
public struct ClientRequestFrame: Hashable, Sendable {
    public var id: UInt64
    public var request: ClientRequest
    public init(id: UInt64, request: ClientRequest) {
        self.id = id
        self.request = request
    }

    var encodedSizeHint: Int {
        switch request {
        case .append(let records): return 13 + records.reduce(0) { $0 + 4 + $1.count }
        case .read, .status: return 21
        }
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeWire(id)
        switch request {
        case .append(let records):
            buffer.writeWire(ClientRequest.Kind.append.rawValue)
            buffer.writeWireArray(records) { $0.writeWireBytes($1) }
        case .read(let fromSlot, let maxCount):
            buffer.writeWire(ClientRequest.Kind.read.rawValue)
            buffer.writeWire(fromSlot)
            buffer.writeWire(maxCount)
        case .status:
            buffer.writeWire(ClientRequest.Kind.status.rawValue)
        }
    }

    /// Decodes a request frame's body.
    /// - Throws: ``WireError`` on an unknown kind, a truncated field, or trailing bytes.
    public static func decode(_ buffer: inout ByteBuffer) throws(WireError) -> ClientRequestFrame {
        let id = try buffer.readWire(UInt64.self, "request.id")
        let raw = try buffer.readWire(UInt8.self, "request.kind")
        let request: ClientRequest
        switch ClientRequest.Kind(rawValue: raw) {
        case .append:
            request = .append(try buffer.readWireArray("append.records", minimumElementSize: 4) { buffer throws(WireError) in
                try buffer.readWireBytes("append.record")
            })
        case .read:
            request = .read(fromSlot: try buffer.readWire(Slot.self, "read.fromSlot"), maxCount: try buffer.readWire(UInt32.self, "read.maxCount"))
        case .status:
            request = .status
        case nil:
            throw WireError(.unknownType, "request kind \(raw)")
        }
        try buffer.checkFullyRead("request")
        return ClientRequestFrame(id: id, request: request)
    }
}

/// A response with the id of the request it answers.
public struct ClientResponseFrame: Hashable, Sendable {
    public var id: UInt64
    public var response: ClientResponse
    public init(id: UInt64, response: ClientResponse) {
        self.id = id
        self.response = response
    }

    var encodedSizeHint: Int {
        switch response {
        case .appended(let slots): return 13 + 8 * slots.count
        case .entries(let result): return 21 + result.entries.reduce(0) { $0 + 12 + $1.bytes.count }
        case .redirect, .error, .status: return 128
        }
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeWire(id)
        switch response {
        case .appended(let slots):
            buffer.writeWire(ClientResponse.Kind.appended.rawValue)
            buffer.writeWireArray(slots) { $0.writeWire($1) }
        case .redirect(let leaderID, let leaderAddress):
            buffer.writeWire(ClientResponse.Kind.redirect.rawValue)
            buffer.writeBool(leaderID != nil)
            if let leaderID { buffer.writeWire(leaderID) }
            buffer.writeBool(leaderAddress != nil)
            if let leaderAddress { buffer.writeWireString(leaderAddress) }
        case .error(let error):
            buffer.writeWire(ClientResponse.Kind.error.rawValue)
            buffer.writeWire(error.code.rawValue)
            buffer.writeWireString(error.message)
        case .entries(let result):
            buffer.writeWire(ClientResponse.Kind.entries.rawValue)
            buffer.writeWire(result.nextSlot)
            buffer.writeWireArray(result.entries) { buffer, entry in
                buffer.writeWire(entry.slot)
                buffer.writeWireBytes(entry.bytes)
            }
        case .status(let status):
            buffer.writeWire(ClientResponse.Kind.status.rawValue)
            buffer.writeWire(status.nodeID)
            buffer.writeBool(status.leaderID != nil)
            if let leaderID = status.leaderID { buffer.writeWire(leaderID) }
            buffer.writeBallot(status.ballot)
            buffer.writeWire(status.chosenThrough)
            buffer.writeWire(status.lastAccepted)
            let details = status.details.prefix(Int(UInt16.max))
            buffer.writeWire(UInt16(details.count))
            for pair in details {
                buffer.writeWireString(pair.key)
                buffer.writeWireString(pair.value)
            }
        }
    }

    /// Decodes a response frame's body.
    /// - Throws: ``WireError`` on an unknown kind, a truncated field, or trailing bytes.
    public static func decode(_ buffer: inout ByteBuffer) throws(WireError) -> ClientResponseFrame {
        let id = try buffer.readWire(UInt64.self, "response.id")
        let raw = try buffer.readWire(UInt8.self, "response.kind")
        let response: ClientResponse
        switch ClientResponse.Kind(rawValue: raw) {
        case .appended:
            response = .appended(try buffer.readWireArray("appended.slots", minimumElementSize: 8) { buffer throws(WireError) in
                try buffer.readWire(Slot.self, "appended.slot")
            })
        case .redirect:
            let leaderID: NodeID? = try buffer.readBool("redirect.hasLeaderID") ? try buffer.readWire(NodeID.self, "redirect.leaderID") : nil
            let address: String? = try buffer.readBool("redirect.hasAddress") ? try buffer.readWireString("redirect.leaderAddress") : nil
            response = .redirect(leaderID: leaderID, leaderAddress: address)
        case .error:
            let code = try buffer.readWire(UInt16.self, "error.code")
            response = .error(ClientError(code: ClientErrorCode(rawValue: code), message: try buffer.readWireString("error.message")))
        case .entries:
            let nextSlot = try buffer.readWire(Slot.self, "entries.nextSlot")
            let entries = try buffer.readWireArray("entries.entries", minimumElementSize: 12) { buffer throws(WireError) in
                let slot = try buffer.readWire(Slot.self, "entry.slot")
                return ClientEntry(slot: slot, bytes: try buffer.readWireBytes("entry.bytes"))
            }
            response = .entries(ReadResult(entries: entries, nextSlot: nextSlot))
        case .status:
            let nodeID = try buffer.readWire(NodeID.self, "status.nodeID")
            let leaderID: NodeID? = try buffer.readBool("status.hasLeader") ? try buffer.readWire(NodeID.self, "status.leaderID") : nil
            let ballot = try buffer.readBallot()
            let chosenThrough = try buffer.readWire(Slot.self, "status.chosenThrough")
            let lastAccepted = try buffer.readWire(Slot.self, "status.lastAccepted")
            let count = Int(try buffer.readWire(UInt16.self, "status.details"))
            var details: [ClientStatus.Detail] = []
            for _ in 0..<count {
                let key = try buffer.readWireString("status.key")
                details.append(.init(key, try buffer.readWireString("status.value")))
            }
            response = .status(ClientStatus(nodeID: nodeID, leaderID: leaderID, ballot: ballot, chosenThrough: chosenThrough, lastAccepted: lastAccepted, details: details))
        case nil:
            throw WireError(.unknownType, "response kind \(raw)")
        }
        try buffer.checkFullyRead("response")
        return ClientResponseFrame(id: id, response: response)
    }
}
