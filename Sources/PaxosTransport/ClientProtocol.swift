import MultiPaxos
import NIOCore

/// How fresh a read must be.
public enum ReadConsistency: UInt8, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// What the replica asked has chosen and readable now: always available, and may be stale (a
    /// follower behind, or a leader deposed without knowing yet).
    case local = 0
    /// Reflects every append acknowledged before the read started, by any replica: the replica
    /// gets a read-barrier position from the leader (asking it over its client port when it is
    /// a follower), waits until it has applied through it, then reads.
    case linearizable = 1

    public var description: String {
        switch self {
        case .local: return "local"
        case .linearizable: return "linearizable"
        }
    }
}

/// A request from a client to a replica. Several records per `append` amortise the round trip;
/// the server answers with one position per record, in order.
public enum ClientRequest: Hashable, Sendable {
    /// Append these records, in this order, under identities `id`, `id.advanced(by: 1)`, …: a
    /// retry with the same identities (`isRetry`: the replicas look them up in their client
    /// sessions first) answers the first attempt's positions instead of appending again.
    /// Answered by `appended`, `redirect` or `error`.
    case append([[UInt8]], id: ProposalID, isRetry: Bool = false)
    /// Read chosen entries from `fromSlot` on, at most `maxCount`. Answered by `entries`,
    /// `redirect` (a linearizable read that needs the leader) or `error`.
    case read(fromSlot: Slot, maxCount: UInt32, consistency: ReadConsistency)
    /// Ask for the replica's view of the cluster. Answered by `status`.
    case status
    /// Ask the leader for a read-barrier position (a follower asks it before a linearizable
    /// read). Answered by `barrier`, `redirect` (not the leader) or `error`.
    case barrier
    /// Ask for the member list as the leader sees it (with each member's positions). Answered by
    /// `members`; a follower that knows the leader answers `redirect`, one that knows none
    /// answers its own list (without positions). Client version 4.
    case members
    /// Ask the leader to hand leadership to the voter `to`. Answered by `leadershipTransferred`
    /// once `to` leads, `redirect` (not the leader) or `error` (`invalidRequest`: not a member;
    /// `timeout`: `to` did not take over in time, and the leader leads on). Client version 4.
    case transferLeadership(to: NodeID)

    enum Kind: UInt8 {
        case append = 1
        case read = 2
        case status = 3
        case barrier = 4
        case members = 5
        case transferLeadership = 6
    }
}

/// A server-side error code. An open set: the facade may add codes without breaking clients,
/// which treat an unknown code as a generic failure.
public struct ClientErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Too much in flight; retry later.
    public static let overloaded = ClientErrorCode(rawValue: 1)
    /// A retried append's identity is older than the replicas' client sessions remember: it is
    /// in the log at most once, and whether it is cannot be told by retrying (outcome unknown);
    /// read the log.
    public static let sessionExpired = ClientErrorCode(rawValue: 10)
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
        case .sessionExpired: return "session expired"
        default: return "error \(rawValue)"
        }
    }
}

/// An error a server returns for one request.
public struct ClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What a failed append did to the log.
    public enum Outcome: UInt8, Hashable, Sendable, CustomStringConvertible {
        /// Definitely not appended, now or later: retrying cannot duplicate it.
        case notAppended = 1
        /// May have been appended, or may still be: retry with the same identity (which answers
        /// the first attempt's positions if it was), or read the log.
        case unknown = 2

        public var description: String {
            switch self {
            case .notAppended: return "not appended"
            case .unknown: return "outcome unknown"
            }
        }
    }

    public var code: ClientErrorCode
    public var message: String
    /// For an append: whether its records were appended, as the server knows it. Nil for other
    /// requests (and from a server that could not tell: take it as ``Outcome/unknown``).
    public var outcome: Outcome?

    public init(code: ClientErrorCode, message: String, outcome: Outcome? = nil) {
        self.code = code
        self.message = message
        self.outcome = outcome
    }
    public var description: String { "\(code): \(message)" + (outcome.map { " (\($0))" } ?? "") }
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
    /// The server's readable watermark when it read (for a linearizable read, at or above its
    /// barrier): the read reflects the log through here. A reader has everything up to it once
    /// `nextSlot` passes it; reading on, linearizably, would only find the no-ops later barriers
    /// add, and newer appends.
    public var readThrough: Slot

    /// - Parameter readThrough: nil: the last slot examined (`nextSlot - 1`).
    public init(entries: [ClientEntry], nextSlot: Slot, readThrough: Slot? = nil) {
        self.entries = entries
        self.nextSlot = nextSlot
        self.readThrough = readThrough ?? (Swift.max(nextSlot, 1) - 1)
    }

    /// Whether the read examined everything through ``readThrough``.
    public var isComplete: Bool { nextSlot > readThrough }
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

/// What a member does in the cluster. An open set, like ``ClientErrorCode``: learners (members
/// that receive the log and do not vote) will be a role of their own, and a client that does not
/// know a role shows its number rather than failing to decode the answer.
public struct MemberRole: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The voter that leads (as the answering replica knows it).
    public static let leader = MemberRole(rawValue: 1)
    /// A voter that does not lead (every voter while no leader is known).
    public static let follower = MemberRole(rawValue: 2)

    public var description: String {
        switch self {
        case .leader: return "leader"
        case .follower: return "follower"
        default: return "role \(rawValue)"
        }
    }
}

/// One member of the cluster as a replica sees it: what ``ClientRequest/members`` answers, and
/// what `PaxosLog.members()` returns.
public struct MemberStatus: Hashable, Sendable {
    public var id: NodeID
    /// Where replicas reach it, as the answering replica's configuration gives it.
    public var peerAddress: PeerAddress
    /// Where clients reach it (its client port), as the answering replica's configuration gives it.
    public var clientAddress: PeerAddress
    public var role: MemberRole
    /// Whether this row is the replica that answered.
    public var isSelf: Bool
    /// Every slot through here that the leader assigned, this member has accepted durably in the
    /// leader's ballot; for the leader's own row, the highest slot it holds a vote for. Known to
    /// the leader (and to each replica for itself); nil otherwise.
    public var acknowledgedThrough: Slot?
    /// This member's chosen watermark: its own (chosen and durable, readable) for the answering
    /// replica's row; the one its last heartbeat reply reported for the leader's followers
    /// (0 before the first); nil when the answering replica does not lead.
    public var chosenThrough: Slot?

    public init(id: NodeID, peerAddress: PeerAddress, clientAddress: PeerAddress, role: MemberRole, isSelf: Bool,
                acknowledgedThrough: Slot? = nil, chosenThrough: Slot? = nil) {
        self.id = id
        self.peerAddress = peerAddress
        self.clientAddress = clientAddress
        self.role = role
        self.isSelf = isSelf
        self.acknowledgedThrough = acknowledgedThrough
        self.chosenThrough = chosenThrough
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
    /// The answer to a barrier request: every append acknowledged before the request arrived is
    /// at or below this position.
    case barrier(Slot)
    /// The answer to a members request, in the order of the answering replica's configuration.
    case members([MemberStatus])
    /// The answer to a transfer: `leaderID` leads now, as the former leader sees it.
    case leadershipTransferred(leaderID: NodeID)

    enum Kind: UInt8 {
        case appended = 1
        case redirect = 2
        case error = 3
        case entries = 4
        case status = 5
        case barrier = 6
        case members = 7
        case leadershipTransferred = 8
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
        case .append(let records, _, _): return 30 + records.reduce(0) { $0 + 4 + $1.count }
        case .read, .status, .barrier, .members, .transferLeadership: return 22
        }
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeWire(id)
        switch request {
        case .append(let records, let proposal, let isRetry):
            buffer.writeWire(ClientRequest.Kind.append.rawValue)
            buffer.writeWire(proposal.client)
            buffer.writeWire(proposal.sequence)
            buffer.writeBool(isRetry)
            buffer.writeWireArray(records) { $0.writeWireBytes($1) }
        case .read(let fromSlot, let maxCount, let consistency):
            buffer.writeWire(ClientRequest.Kind.read.rawValue)
            buffer.writeWire(fromSlot)
            buffer.writeWire(maxCount)
            buffer.writeWire(consistency.rawValue)
        case .status:
            buffer.writeWire(ClientRequest.Kind.status.rawValue)
        case .barrier:
            buffer.writeWire(ClientRequest.Kind.barrier.rawValue)
        case .members:
            buffer.writeWire(ClientRequest.Kind.members.rawValue)
        case .transferLeadership(let target):
            buffer.writeWire(ClientRequest.Kind.transferLeadership.rawValue)
            buffer.writeWire(target)
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
            let client = try buffer.readWire(UInt64.self, "append.client")
            let sequence = try buffer.readWire(UInt64.self, "append.sequence")
            let isRetry = try buffer.readBool("append.isRetry")
            let records = try buffer.readWireArray("append.records", minimumElementSize: 4) { buffer throws(WireError) in
                try buffer.readWireBytes("append.record")
            }
            request = .append(records, id: ProposalID(client: client, sequence: sequence), isRetry: isRetry)
        case .read:
            let fromSlot = try buffer.readWire(Slot.self, "read.fromSlot")
            let maxCount = try buffer.readWire(UInt32.self, "read.maxCount")
            let raw = try buffer.readWire(UInt8.self, "read.consistency")
            guard let consistency = ReadConsistency(rawValue: raw) else { throw WireError(.unknownType, "read consistency \(raw)") }
            request = .read(fromSlot: fromSlot, maxCount: maxCount, consistency: consistency)
        case .status:
            request = .status
        case .barrier:
            request = .barrier
        case .members:
            request = .members
        case .transferLeadership:
            request = .transferLeadership(to: try buffer.readWire(NodeID.self, "transfer.to"))
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
        case .entries(let result): return 29 + result.entries.reduce(0) { $0 + 12 + $1.bytes.count }
        case .barrier, .leadershipTransferred: return 17
        case .members(let members): return 13 + members.reduce(0) { $0 + 48 + $1.peerAddress.host.utf8.count + $1.clientAddress.host.utf8.count }
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
            buffer.writeWire(error.outcome?.rawValue ?? 0)
        case .entries(let result):
            buffer.writeWire(ClientResponse.Kind.entries.rawValue)
            buffer.writeWire(result.nextSlot)
            buffer.writeWire(result.readThrough)
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
        case .barrier(let position):
            buffer.writeWire(ClientResponse.Kind.barrier.rawValue)
            buffer.writeWire(position)
        case .members(let members):
            buffer.writeWire(ClientResponse.Kind.members.rawValue)
            buffer.writeWireArray(members) { buffer, m in
                buffer.writeWire(m.id)
                buffer.writeWireAddress(m.peerAddress)
                buffer.writeWireAddress(m.clientAddress)
                buffer.writeWire(m.role.rawValue)
                buffer.writeBool(m.isSelf)
                buffer.writeBool(m.acknowledgedThrough != nil)
                if let slot = m.acknowledgedThrough { buffer.writeWire(slot) }
                buffer.writeBool(m.chosenThrough != nil)
                if let slot = m.chosenThrough { buffer.writeWire(slot) }
            }
        case .leadershipTransferred(let leaderID):
            buffer.writeWire(ClientResponse.Kind.leadershipTransferred.rawValue)
            buffer.writeWire(leaderID)
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
            let message = try buffer.readWireString("error.message")
            let raw = try buffer.readWire(UInt8.self, "error.outcome")
            let outcome: ClientError.Outcome?
            if raw == 0 {
                outcome = nil
            } else if let known = ClientError.Outcome(rawValue: raw) {
                outcome = known
            } else {
                throw WireError(.unknownType, "error outcome \(raw)")
            }
            response = .error(ClientError(code: ClientErrorCode(rawValue: code), message: message, outcome: outcome))
        case .entries:
            let nextSlot = try buffer.readWire(Slot.self, "entries.nextSlot")
            let readThrough = try buffer.readWire(Slot.self, "entries.readThrough")
            let entries = try buffer.readWireArray("entries.entries", minimumElementSize: 12) { buffer throws(WireError) in
                let slot = try buffer.readWire(Slot.self, "entry.slot")
                return ClientEntry(slot: slot, bytes: try buffer.readWireBytes("entry.bytes"))
            }
            response = .entries(ReadResult(entries: entries, nextSlot: nextSlot, readThrough: readThrough))
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
        case .barrier:
            response = .barrier(try buffer.readWire(Slot.self, "barrier.position"))
        case .members:
            // The smallest member: id, two addresses with empty hosts, role, three bools.
            response = .members(try buffer.readWireArray("members.members", minimumElementSize: 16) { buffer throws(WireError) in
                let id = try buffer.readWire(NodeID.self, "member.id")
                let peerAddress = try buffer.readWireAddress("member.peerAddress")
                let clientAddress = try buffer.readWireAddress("member.clientAddress")
                let role = MemberRole(rawValue: try buffer.readWire(UInt8.self, "member.role"))
                let isSelf = try buffer.readBool("member.isSelf")
                let acknowledged: Slot? = try buffer.readBool("member.hasAcknowledged") ? try buffer.readWire(Slot.self, "member.acknowledgedThrough") : nil
                let chosen: Slot? = try buffer.readBool("member.hasChosen") ? try buffer.readWire(Slot.self, "member.chosenThrough") : nil
                return MemberStatus(id: id, peerAddress: peerAddress, clientAddress: clientAddress, role: role, isSelf: isSelf,
                                    acknowledgedThrough: acknowledged, chosenThrough: chosen)
            })
        case .leadershipTransferred:
            response = .leadershipTransferred(leaderID: try buffer.readWire(NodeID.self, "transferred.leaderID"))
        case nil:
            throw WireError(.unknownType, "response kind \(raw)")
        }
        try buffer.checkFullyRead("response")
        return ClientResponseFrame(id: id, response: response)
    }
}
