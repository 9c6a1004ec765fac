import Dispatch
import Logging
import MultiPaxos
import NIOCore
import PaxosTransport
import SegmentLog

extension SegmentLogError {
    /// The slot asked for lies at or below the snapshot.
    var isCompacted: Bool {
        if case .compacted = code { return true }
        return false
    }

    var isClosed: Bool {
        if case .closed = code { return true }
        return false
    }
}

/// Loop-confined bookkeeping of snapshot transfers (see WIRE.md, "Snapshot transfer").
final class SnapshotTransfers: @unchecked Sendable {
    struct Outgoing {
        var sender: SnapshotSender
        let reader: SnapshotReader
    }

    struct Incoming {
        var receiver: SnapshotReceiver
        let writer: SnapshotWriter
        /// Bytes handed to the I/O queue but not yet written; a failure aborts the transfer.
        var failed = false
        var committing = false
    }

    var outgoing: [NodeID: Outgoing] = [:]
    var incoming: Incoming?
    /// Counters for tests and benchmarks.
    var sentBytes: UInt64 = 0
    var installed = 0

    /// The lowest snapshot slot an outgoing transfer is sending: the log just above it must stay
    /// on disk until the peer has caught up past it, so compaction does not delete it.
    var pinnedSlot: Slot? { outgoing.values.map(\.sender.offer.slot).min() }
}

extension ReplicaDriver {
    /// Chunk and window of a snapshot transfer: 2 MiB chunks (well below the 16 MiB frame
    /// limit) halve the per-message work of 1 MiB ones; a 64 MiB window keeps loopback and LAN
    /// links busy while the receiver syncs (16 MiB made the sender idle during every sync).
    static let snapshotChunkSize = 2 << 20
    static let snapshotWindowBytes: UInt64 = 64 << 20
    /// A received snapshot starts the writeback of every 4 MiB without waiting for it, so the
    /// disk writes while the transfer goes on (with waiting syncs it idled between them) and
    /// the final sync has at most a few MiB left.
    static let receivedSnapshotSyncInterval = 4 << 20

    // MARK: - Sending

    /// Starts streaming this replica's latest snapshot to `peer`, unless one is already going.
    func startSnapshotTransfer(to peer: NodeID) {
        guard !isClosed, failure == nil, snapshots.outgoing[peer] == nil, transport != nil else { return }
        let reader: SnapshotReader
        do {
            guard let r = try store.openSnapshot() else { return }
            reader = r
        } catch {
            logger.warning("cannot open snapshot for transfer", metadata: ["peer": "\(peer)", "error": "\(error)"])
            return
        }
        let offer = SnapshotOffer(slot: reader.slot, length: reader.length, checksum: reader.checksum, chosenThrough: readableThrough)
        // Ticks: retry after ~0.5 s of silence, give up after ~30 s.
        let retry = Swift.max(1, Int(500_000_000 / Swift.max(1, configuration.tickInterval.nanoseconds)))
        let sender = SnapshotSender(peer: peer, offer: offer, chunkSize: Self.snapshotChunkSize,
                                    windowBytes: Self.snapshotWindowBytes, retryTicks: retry, giveUpTicks: retry * 60)
        snapshots.outgoing[peer] = .init(sender: sender, reader: reader)
        logger.info("sending snapshot", metadata: ["peer": "\(peer)", "slot": "\(offer.slot)", "bytes": "\(offer.length)"])
        pumpSnapshot(to: peer)
    }

    /// Sends what the sender's window allows. Chunks are read and sent on the serial I/O queue,
    /// in order, so the event loop never waits for the disk.
    func pumpSnapshot(to peer: NodeID) {
        guard var out = snapshots.outgoing[peer], let transport else { return }
        let actions = out.sender.poll()
        if let outcome = out.sender.outcome {
            finishOutgoing(peer, outcome)
            return
        }
        snapshots.outgoing[peer] = out
        guard !actions.isEmpty else { return }
        let me = configuration.nodeID
        let reader = out.reader
        let slot = out.sender.offer.slot
        let logger = self.logger
        for action in actions {
            switch action {
            case .offer(let offer):
                transport.send(Envelope(from: me, to: peer, message: .snapshotOffer(offer)))
            case .chunk(let offset, let count, let isLast):
                snapshots.sentBytes += UInt64(count)
                snapshotIO.async {
                    do {
                        let data = try reader.read(at: offset, maxCount: count)
                        transport.send(Envelope(from: me, to: peer, message: .snapshotChunk(SnapshotChunk(slot: slot, offset: offset, data: data, done: isLast))))
                    } catch {
                        logger.warning("cannot read snapshot for transfer", metadata: ["peer": "\(peer)", "error": "\(error)"])
                    }
                }
            }
        }
    }

    func onSnapshotAck(from peer: NodeID, _ ack: SnapshotAck) {
        guard var out = snapshots.outgoing[peer] else { return }
        out.sender.onAck(ack)
        snapshots.outgoing[peer] = out
        pumpSnapshot(to: peer)
    }

    func finishOutgoing(_ peer: NodeID, _ outcome: SnapshotSender.Outcome) {
        guard let out = snapshots.outgoing.removeValue(forKey: peer) else { return }
        let reader = out.reader
        snapshotIO.async { reader.close() }
        logger.info("snapshot transfer finished", metadata: ["peer": "\(peer)", "slot": "\(out.sender.offer.slot)", "outcome": "\(outcome)"])
    }

    func tickSnapshotTransfers() {
        for peer in Array(snapshots.outgoing.keys) {
            snapshots.outgoing[peer]!.sender.tick()
            pumpSnapshot(to: peer)
        }
    }

    // MARK: - Receiving

    func onSnapshotOffer(from peer: NodeID, _ offer: SnapshotOffer) {
        guard let transport else { return }
        let me = configuration.nodeID
        func reply(_ ack: SnapshotAck) { transport.send(Envelope(from: me, to: peer, message: .snapshotAck(ack))) }
        if offer.slot <= core.chosenThrough {
            return reply(SnapshotAck(slot: offer.slot, nextOffset: offer.length, status: .installed))
        }
        if var incoming = snapshots.incoming {
            if incoming.receiver.matches(offer), !incoming.failed {
                // The same snapshot again (a retry, a reconnect, or a new leader): resume.
                if incoming.committing { return }
                let ack = incoming.receiver.resume(from: peer)
                snapshots.incoming = incoming
                return reply(ack)
            }
            if incoming.committing || offer.slot < incoming.receiver.offer.slot {
                return reply(SnapshotAck(slot: offer.slot, nextOffset: 0, status: .refused))
            }
            // A newer snapshot supersedes the partial one.
            let writer = incoming.writer
            snapshotIO.async { writer.abort() }
            snapshots.incoming = nil
        }
        let writer: SnapshotWriter
        do {
            writer = try store.beginSnapshot(slot: offer.slot)
            writer.syncInterval = Self.receivedSnapshotSyncInterval
            writer.writesBehind = true
        } catch {
            logger.warning("cannot receive snapshot", metadata: ["from": "\(peer)", "slot": "\(offer.slot)", "error": "\(error)"])
            return reply(SnapshotAck(slot: offer.slot, nextOffset: 0, status: .refused))
        }
        logger.info("receiving snapshot", metadata: ["from": "\(peer)", "slot": "\(offer.slot)", "bytes": "\(offer.length)"])
        snapshots.incoming = .init(receiver: SnapshotReceiver(from: peer, offer: offer), writer: writer)
        reply(SnapshotAck(slot: offer.slot, nextOffset: 0, status: .next))
    }

    func onSnapshotChunk(from peer: NodeID, _ chunk: SnapshotChunk) {
        guard let transport else { return }
        let me = configuration.nodeID
        guard var incoming = snapshots.incoming, !incoming.failed, incoming.receiver.offer.slot == chunk.slot else {
            if chunk.slot <= core.chosenThrough {
                transport.send(Envelope(from: me, to: peer, message: .snapshotAck(SnapshotAck(slot: chunk.slot, nextOffset: chunk.offset, status: .installed))))
            }
            return
        }
        let action = incoming.receiver.onChunk(chunk)
        snapshots.incoming = incoming
        switch action {
        case .ignore:
            return
        case .reply(let ack):
            transport.send(Envelope(from: me, to: peer, message: .snapshotAck(ack)))
        case .write(let ack, let complete):
            let writer = incoming.writer
            let offer = incoming.receiver.offer
            if complete { snapshots.incoming?.committing = true }
            snapshotIO.async {
                do {
                    try writer.write(chunk.data)
                } catch {
                    self.loop.execute { self.incomingFailed(error) }
                    return
                }
                if !complete {
                    transport.send(Envelope(from: me, to: peer, message: .snapshotAck(ack)))
                    return
                }
                // Durable before the core acts on it: file, rename, directory, marker + chosen.
                // Nothing else touches the writer now (`committing` stops further chunks).
                Task {
                    do {
                        try await writer.commit(expectedLength: offer.length, expectedChecksum: offer.checksum, markChosen: true)
                        self.loop.execute { self.snapshotInstalled(offer, from: peer, ack: ack) }
                    } catch {
                        self.loop.execute { self.incomingFailed(error) }
                    }
                }
            }
        }
    }

    private func incomingFailed(_ error: any Error) {
        guard let incoming = snapshots.incoming else { return }
        logger.warning("snapshot receive failed", metadata: ["slot": "\(incoming.receiver.offer.slot)", "error": "\(error)"])
        let writer = incoming.writer
        snapshotIO.async { writer.abort() }
        snapshots.incoming = nil
        transport?.send(Envelope(from: configuration.nodeID, to: incoming.receiver.from,
                                 message: .snapshotAck(SnapshotAck(slot: incoming.receiver.offer.slot, nextOffset: 0, status: .refused))))
    }

    private func snapshotInstalled(_ offer: SnapshotOffer, from peer: NodeID, ack: SnapshotAck) {
        snapshots.incoming = nil
        snapshots.installed += 1
        logger.info("installed snapshot", metadata: ["from": "\(peer)", "slot": "\(offer.slot)", "bytes": "\(offer.length)"])
        core.installSnapshot(through: offer.slot)
        advanceReadable(to: offer.slot)
        transport?.send(Envelope(from: configuration.nodeID, to: peer, message: .snapshotAck(ack)))
        scheduleDrain()
    }

    // MARK: - Local compaction

    /// After a local snapshot through `slot` is durable: forget the slots in memory and delete
    /// the segments wholly below it — but none an outgoing transfer still needs.
    /// - Returns: the slot below which segments may be deleted now.
    func compacted(through slot: Slot) -> EventLoopFuture<Slot> {
        loop.submit {
            self.core.compact(through: slot)
            let keep = self.snapshots.pinnedSlot.map { Swift.min($0, slot) } ?? slot
            return keep + 1
        }
    }

    /// Whether `position` is chosen here, waiting until it is also durable (readable) here:
    /// what compaction may cover. An append returns once chosen, a moment before the local
    /// chosen record is synced.
    func chosenAndReadable(_ position: Slot) async throws -> Bool {
        let chosen = try await loop.submit { self.core.chosenThrough }.get()
        guard position <= chosen else { return false }
        guard let readable = await waitReadable(after: position - 1) else {
            throw PaxosLogError(.closed, "the log was closed")
        }
        return readable >= position
    }

    /// Counters of snapshot transfers (for tests and benchmarks).
    func snapshotCounters() -> EventLoopFuture<(sentBytes: UInt64, installed: Int, sending: Int)> {
        loop.submit { (self.snapshots.sentBytes, self.snapshots.installed, self.snapshots.outgoing.count) }
    }
}

