/// The sending side of one snapshot transfer to one peer, as a deterministic state machine with
/// no I/O: the driver reads the bytes it names and sends the messages it returns.
///
/// Protocol (see WIRE.md): the sender offers (`slot`, `length`, `checksum`); the receiver answers
/// with the offset it wants (0, or how much it already holds of that very snapshot, so a
/// transfer cut by a dropped connection resumes); the sender streams chunks within a window of
/// unacknowledged bytes; the receiver acknowledges progress, asks for a resend when a chunk
/// arrives out of order, and says `installed` once the snapshot is durable there. Lost messages
/// are recovered by timeouts (ticks): re-offer before the first answer, go-back-N after it.
public struct SnapshotSender: Sendable {
    public enum Outcome: Hashable, Sendable {
        /// The peer holds the snapshot (or was already past it).
        case installed
        /// The peer refused it.
        case refused
        /// The peer stopped answering; a later catch-up request starts a new transfer.
        case abandoned
    }

    /// What the driver must do now.
    public enum Action: Hashable, Sendable {
        /// Send this offer.
        case offer(SnapshotOffer)
        /// Read `count` bytes at `offset` and send them as a ``SnapshotChunk`` (with
        /// `done` = `isLast`). `count` may be 0 only for an empty snapshot.
        case chunk(offset: UInt64, count: Int, isLast: Bool)
    }

    public let peer: NodeID
    public let offer: SnapshotOffer
    public let chunkSize: Int
    /// Bytes sent but not acknowledged, at most.
    public let windowBytes: UInt64
    let retryTicks: Int
    let giveUpTicks: Int

    /// The receiver holds every byte below this offset.
    public private(set) var acknowledged: UInt64 = 0
    /// Next offset to send.
    public private(set) var nextToSend: UInt64 = 0
    public private(set) var outcome: Outcome? = nil
    var answered = false
    var offerDue = true
    var emptySent = false
    var idleTicks = 0
    var silentTicks = 0
    /// The offset of the last go-back: every chunk behind a gap draws the same `resend`, and
    /// only the first may rewind, or one lost chunk would resend the window once per chunk.
    var rewoundTo: UInt64? = nil

    /// - Parameters:
    ///   - chunkSize: bytes per chunk (keep well below the transport's frame limit).
    ///   - windowBytes: unacknowledged bytes in flight at most.
    ///   - retryTicks: ticks without an answer before re-offering or going back.
    ///   - giveUpTicks: ticks without any answer before the transfer is abandoned.
    public init(peer: NodeID, offer: SnapshotOffer, chunkSize: Int = 1 << 20, windowBytes: UInt64 = 8 << 20,
                retryTicks: Int = 50, giveUpTicks: Int = 1_000) {
        self.peer = peer
        self.offer = offer
        self.chunkSize = Swift.max(1, chunkSize)
        self.windowBytes = Swift.max(UInt64(self.chunkSize), windowBytes)
        self.retryTicks = Swift.max(1, retryTicks)
        self.giveUpTicks = Swift.max(self.retryTicks, giveUpTicks)
    }

    public var isFinished: Bool { outcome != nil }

    /// The messages to send now: the offer when due, then chunks while the window allows.
    public mutating func poll() -> [Action] {
        guard outcome == nil else { return [] }
        if !answered {
            guard offerDue else { return [] }
            offerDue = false
            return [.offer(offer)]
        }
        let length = offer.length
        if length == 0 {
            guard !emptySent else { return [] }
            emptySent = true
            return [.chunk(offset: 0, count: 0, isLast: true)]
        }
        var out: [Action] = []
        while nextToSend < length, nextToSend - acknowledged < windowBytes {
            let count = Int(Swift.min(UInt64(chunkSize), length - nextToSend))
            out.append(.chunk(offset: nextToSend, count: count, isLast: nextToSend + UInt64(count) == length))
            nextToSend += UInt64(count)
        }
        return out
    }

    /// Handles the receiver's answer.
    public mutating func onAck(_ ack: SnapshotAck) {
        guard outcome == nil, ack.slot == offer.slot else { return }
        idleTicks = 0
        silentTicks = 0
        switch ack.status {
        case .installed:
            outcome = .installed
        case .refused:
            outcome = .refused
        case .next, .resend:
            guard ack.nextOffset <= offer.length else {
                outcome = .refused
                return
            }
            if ack.status == .resend, answered, ack.nextOffset == rewoundTo {
                return
            }
            if !answered || ack.status == .resend {
                // An answer to an offer, or a gap: continue exactly where the receiver stands.
                answered = true
                acknowledged = ack.nextOffset
                nextToSend = ack.nextOffset
                emptySent = false
                rewoundTo = ack.status == .resend ? ack.nextOffset : nil
            } else if ack.nextOffset > acknowledged {
                acknowledged = ack.nextOffset
                if nextToSend < acknowledged { nextToSend = acknowledged }
            }
        }
    }

    /// Advances time: re-offers or goes back to the last acknowledged offset after `retryTicks`
    /// without an answer; gives up after `giveUpTicks`.
    public mutating func tick() {
        guard outcome == nil else { return }
        silentTicks += 1
        if silentTicks >= giveUpTicks {
            outcome = .abandoned
            return
        }
        idleTicks += 1
        guard idleTicks >= retryTicks else { return }
        idleTicks = 0
        // Ask again where the receiver stands: it may have restarted and lost a partial copy.
        answered = false
        offerDue = true
    }
}

/// The receiving side of one snapshot transfer, without I/O: it decides which chunks to write
/// (strictly in order, so the file grows contiguously) and what to answer.
public struct SnapshotReceiver: Sendable {
    /// What the driver must do with a chunk.
    public enum Action: Hashable, Sendable {
        /// Append `chunk.data` to the snapshot file, then send `ack`. When `complete`, verify the
        /// length and checksum, make the snapshot durable, call
        /// ``PaxosCore/installSnapshot(through:)``, and answer ``SnapshotAck/Status-swift.enum/installed`` instead.
        case write(ack: SnapshotAck, complete: Bool)
        /// Write nothing; send `ack` (a duplicate, a gap, or another snapshot's chunk).
        case reply(SnapshotAck)
        /// Not for this transfer: ignore.
        case ignore
    }

    public let offer: SnapshotOffer
    public private(set) var from: NodeID
    /// Bytes written so far (the next offset wanted).
    public private(set) var received: UInt64 = 0
    /// All bytes received; waiting for the driver to commit.
    public private(set) var isComplete = false

    public init(from: NodeID, offer: SnapshotOffer) {
        self.from = from
        self.offer = offer
    }

    /// Whether `offer` is this very snapshot (a resumed transfer, possibly from a new sender).
    public func matches(_ offer: SnapshotOffer) -> Bool {
        offer.slot == self.offer.slot && offer.length == self.offer.length && offer.checksum == self.offer.checksum
            && offer.tableLength == self.offer.tableLength && offer.tableChecksum == self.offer.tableChecksum
    }

    /// Answer to a repeated offer of the same snapshot: continue from what is held.
    public mutating func resume(from sender: NodeID) -> SnapshotAck {
        from = sender
        return SnapshotAck(slot: offer.slot, nextOffset: received, status: .next)
    }

    /// Decides what to do with `chunk`.
    public mutating func onChunk(_ chunk: SnapshotChunk) -> Action {
        guard chunk.slot == offer.slot else { return .ignore }
        guard !isComplete else { return .ignore }
        let end = chunk.offset.addingReportingOverflow(UInt64(chunk.data.count))
        guard chunk.offset == received, !end.overflow, end.partialValue <= offer.length,
              chunk.done == (end.partialValue == offer.length) else {
            // Out of order (a lost chunk), duplicated, or malformed: restate where we stand.
            return .reply(SnapshotAck(slot: offer.slot, nextOffset: received, status: .resend))
        }
        received = end.partialValue
        if received == offer.length {
            isComplete = true
            return .write(ack: SnapshotAck(slot: offer.slot, nextOffset: received, status: .installed), complete: true)
        }
        return .write(ack: SnapshotAck(slot: offer.slot, nextOffset: received, status: .next), complete: false)
    }
}
