import MultiPaxos
import NIOCore

/// The binary codec for consensus messages: the body of an `envelope` frame.
///
///     envelope := from:u32 to:u32 type:u8 body
///
/// One `MessageType` byte and one encode/decode pair per `Message` case. To add a case: give it a
/// new, never-reused type byte, add its two functions below, and bump ``WireVersion/current`` if
/// peers running the previous version would receive it. Decoders are strict (no trailing bytes)
/// so that any disagreement between versions surfaces as a counted, closed connection rather than
/// a misread message.
public enum MessageCodec {
    /// The type byte of each `Message` case. Never reuse a retired value.
    public enum MessageType: UInt8, Sendable, CaseIterable {
        case prepare = 1
        case promise = 2
        case reject = 3
        case accept = 4
        case accepted = 5
        case heartbeat = 6
        case heartbeatReply = 7
        case catchUpRequest = 8
        case catchUpReply = 9
        case snapshotOffer = 10
        case snapshotChunk = 11
        case snapshotAck = 12
        /// Since wire version 2.
        case preVote = 13
        /// Since wire version 2.
        case preVoteReply = 14
        /// Since wire version 5.
        case timeoutNow = 15
    }

    /// The type byte `message` is encoded with.
    public static func messageType(of message: Message) -> MessageType {
        switch message {
        case .prepare: return .prepare
        case .promise: return .promise
        case .reject: return .reject
        case .accept: return .accept
        case .accepted: return .accepted
        case .heartbeat: return .heartbeat
        case .heartbeatReply: return .heartbeatReply
        case .catchUpRequest: return .catchUpRequest
        case .catchUpReply: return .catchUpReply
        case .snapshotOffer: return .snapshotOffer
        case .snapshotChunk: return .snapshotChunk
        case .snapshotAck: return .snapshotAck
        case .preVote: return .preVote
        case .preVoteReply: return .preVoteReply
        case .timeoutNow: return .timeoutNow
        }
    }

    /// Appends the encoding of `envelope` (an envelope frame's body) to `buffer`.
    public static func encode(_ envelope: Envelope, into buffer: inout ByteBuffer) {
        buffer.writeWire(envelope.from)
        buffer.writeWire(envelope.to)
        buffer.writeWire(messageType(of: envelope.message).rawValue)
        switch envelope.message {
        case .prepare(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeWire(m.fromSlot)
            buffer.writeBool(m.leaderTransfer)
        case .promise(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeWire(m.fromSlot)
            buffer.writeWire(m.chosenThrough)
            buffer.writeWireArray(m.accepted) { $0.writeEntry($1) }
        case .reject(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeBallot(m.promised)
        case .accept(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeWire(m.firstSlot)
            buffer.writeWire(m.chosenThrough)
            buffer.writeWireValues(m.values)
        case .accepted(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeWire(m.firstSlot)
            buffer.writeWire(m.lastSlot)
        case .heartbeat(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeWire(m.chosenThrough)
        case .heartbeatReply(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeWire(m.chosenThrough)
            buffer.writeWire(m.lastAccepted)
        case .catchUpRequest(let m):
            buffer.writeWire(m.fromSlot)
            buffer.writeWire(m.throughSlot)
        case .catchUpReply(let m):
            buffer.writeWire(m.chosenThrough)
            buffer.writeWireArray(m.entries) { $0.writeEntry($1) }
        case .snapshotOffer(let m):
            buffer.writeWire(m.slot)
            buffer.writeWire(m.length)
            buffer.writeWire(m.checksum)
            buffer.writeWire(m.chosenThrough)
            buffer.writeWire(m.tableLength)
            buffer.writeWire(m.tableChecksum)
        case .snapshotChunk(let m):
            buffer.writeWire(m.slot)
            buffer.writeWire(m.offset)
            buffer.writeBool(m.done)
            buffer.writeWireBytes(m.data)
        case .snapshotAck(let m):
            buffer.writeWire(m.slot)
            buffer.writeWire(m.nextOffset)
            buffer.writeWire(m.status.rawValue)
        case .preVote(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeWire(m.chosenThrough)
        case .preVoteReply(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeBool(m.granted)
            buffer.writeBallot(m.promised)
            buffer.writeWire(m.chosenThrough)
        case .timeoutNow(let m):
            buffer.writeBallot(m.ballot)
            buffer.writeWire(m.lastSlot)
        }
    }

    /// Decodes an envelope frame's body. The whole buffer must be one envelope.
    ///
    /// - Throws: ``WireError`` on an unknown message type, a truncated field, trailing bytes, or
    ///   a ballot round or slot no correct replica sends (``Message/outOfRange``).
    public static func decode(_ buffer: inout ByteBuffer) throws(WireError) -> Envelope {
        let from = try buffer.readWire(NodeID.self, "envelope.from")
        let to = try buffer.readWire(NodeID.self, "envelope.to")
        let rawType = try buffer.readWire(UInt8.self, "envelope.type")
        guard let type = MessageType(rawValue: rawType) else {
            throw WireError(.unknownType, "message type \(rawType)")
        }
        let message: Message
        switch type {
        case .prepare:
            message = .prepare(Prepare(ballot: try buffer.readBallot(), fromSlot: try buffer.readWire(Slot.self, "prepare.fromSlot"),
                                       leaderTransfer: try buffer.readBool("prepare.leaderTransfer")))
        case .promise:
            let ballot = try buffer.readBallot()
            let fromSlot = try buffer.readWire(Slot.self, "promise.fromSlot")
            let chosenThrough = try buffer.readWire(Slot.self, "promise.chosenThrough")
            let accepted = try buffer.readWireArray("promise.accepted", minimumElementSize: WireSize.minEntry) { buffer throws(WireError) in try buffer.readEntry() }
            message = .promise(Promise(ballot: ballot, fromSlot: fromSlot, accepted: accepted, chosenThrough: chosenThrough))
        case .reject:
            message = .reject(Reject(ballot: try buffer.readBallot(), promised: try buffer.readBallot()))
        case .accept:
            let ballot = try buffer.readBallot()
            let firstSlot = try buffer.readWire(Slot.self, "accept.firstSlot")
            let chosenThrough = try buffer.readWire(Slot.self, "accept.chosenThrough")
            let values = try buffer.readWireValues("accept.values")
            message = .accept(Accept(ballot: ballot, firstSlot: firstSlot, values: values, chosenThrough: chosenThrough))
        case .accepted:
            message = .accepted(Accepted(
                ballot: try buffer.readBallot(),
                firstSlot: try buffer.readWire(Slot.self, "accepted.firstSlot"),
                lastSlot: try buffer.readWire(Slot.self, "accepted.lastSlot")))
        case .heartbeat:
            message = .heartbeat(Heartbeat(ballot: try buffer.readBallot(), chosenThrough: try buffer.readWire(Slot.self, "heartbeat.chosenThrough")))
        case .heartbeatReply:
            message = .heartbeatReply(HeartbeatReply(
                ballot: try buffer.readBallot(),
                chosenThrough: try buffer.readWire(Slot.self, "heartbeatReply.chosenThrough"),
                lastAccepted: try buffer.readWire(Slot.self, "heartbeatReply.lastAccepted")))
        case .catchUpRequest:
            message = .catchUpRequest(CatchUpRequest(
                fromSlot: try buffer.readWire(Slot.self, "catchUpRequest.fromSlot"),
                throughSlot: try buffer.readWire(Slot.self, "catchUpRequest.throughSlot")))
        case .catchUpReply:
            let chosenThrough = try buffer.readWire(Slot.self, "catchUpReply.chosenThrough")
            let entries = try buffer.readWireArray("catchUpReply.entries", minimumElementSize: WireSize.minEntry) { buffer throws(WireError) in try buffer.readEntry() }
            message = .catchUpReply(CatchUpReply(entries: entries, chosenThrough: chosenThrough))
        case .snapshotOffer:
            message = .snapshotOffer(SnapshotOffer(
                slot: try buffer.readWire(Slot.self, "snapshotOffer.slot"),
                length: try buffer.readWire(UInt64.self, "snapshotOffer.length"),
                checksum: try buffer.readWire(UInt32.self, "snapshotOffer.checksum"),
                chosenThrough: try buffer.readWire(Slot.self, "snapshotOffer.chosenThrough"),
                tableLength: try buffer.readWire(UInt64.self, "snapshotOffer.tableLength"),
                tableChecksum: try buffer.readWire(UInt32.self, "snapshotOffer.tableChecksum")))
        case .snapshotChunk:
            let slot = try buffer.readWire(Slot.self, "snapshotChunk.slot")
            let offset = try buffer.readWire(UInt64.self, "snapshotChunk.offset")
            let done = try buffer.readBool("snapshotChunk.done")
            let data = try buffer.readWireBytes("snapshotChunk.data")
            message = .snapshotChunk(SnapshotChunk(slot: slot, offset: offset, data: data, done: done))
        case .snapshotAck:
            let slot = try buffer.readWire(Slot.self, "snapshotAck.slot")
            let next = try buffer.readWire(UInt64.self, "snapshotAck.nextOffset")
            let rawStatus = try buffer.readWire(UInt8.self, "snapshotAck.status")
            guard let status = SnapshotAck.Status(rawValue: rawStatus) else {
                throw WireError(.invalidValue, "snapshot ack status \(rawStatus)")
            }
            message = .snapshotAck(SnapshotAck(slot: slot, nextOffset: next, status: status))
        case .preVote:
            message = .preVote(PreVote(ballot: try buffer.readBallot(), chosenThrough: try buffer.readWire(Slot.self, "preVote.chosenThrough")))
        case .preVoteReply:
            message = .preVoteReply(PreVoteReply(
                ballot: try buffer.readBallot(),
                granted: try buffer.readBool("preVoteReply.granted"),
                promised: try buffer.readBallot(),
                chosenThrough: try buffer.readWire(Slot.self, "preVoteReply.chosenThrough")))
        case .timeoutNow:
            message = .timeoutNow(TimeoutNow(ballot: try buffer.readBallot(), lastSlot: try buffer.readWire(Slot.self, "timeoutNow.lastSlot")))
        }
        try buffer.checkFullyRead("envelope")
        if let reason = message.outOfRange { throw WireError(.invalidValue, reason) }
        return Envelope(from: from, to: to, message: message)
    }

    /// The exact encoded size of `envelope`'s body, so the encoder can reserve it in one step.
    public static func encodedSize(_ envelope: Envelope) -> Int {
        let header = 4 + 4 + 1
        switch envelope.message {
        case .prepare: return header + WireSize.ballot + 8 + 1
        case .promise(let m): return header + WireSize.ballot + 8 + 8 + 4 + m.accepted.reduce(0) { $0 + WireSize.entry($1) }
        case .reject: return header + 2 * WireSize.ballot
        case .accept(let m): return header + WireSize.ballot + 8 + 8 + 4 + m.values.reduce(0) { $0 + WireSize.value($1) }
        case .accepted: return header + WireSize.ballot + 16
        case .heartbeat: return header + WireSize.ballot + 8
        case .heartbeatReply: return header + WireSize.ballot + 16
        case .catchUpRequest: return header + 16
        case .catchUpReply(let m): return header + 8 + 4 + m.entries.reduce(0) { $0 + WireSize.entry($1) }
        case .snapshotOffer: return header + 8 + 8 + 4 + 8 + 8 + 4
        case .snapshotChunk(let m): return header + 8 + 8 + 1 + 4 + m.data.count
        case .snapshotAck: return header + 8 + 8 + 1
        case .preVote: return header + WireSize.ballot + 8
        case .preVoteReply: return header + WireSize.ballot + 1 + WireSize.ballot + 8
        case .timeoutNow: return header + WireSize.ballot + 8
        }
    }
}
