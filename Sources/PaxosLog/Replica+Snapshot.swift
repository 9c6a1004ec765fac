import MultiPaxos
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

/// Bookkeeping of what the replica sends lagging peers: snapshot transfers (see WIRE.md,
/// "Snapshot transfer") and catch-up read from storage; confined to the replica's executor.
final class SnapshotTransfers: @unchecked Sendable {
    struct Outgoing {
        var sender: SnapshotSender
        let source: any SnapshotSource
    }

    struct Incoming {
        var receiver: SnapshotReceiver
        let sink: any SnapshotSink
        /// A write failed: the transfer is being aborted.
        var failed = false
        /// The last chunk arrived and the commit runs: nothing else touches the sink.
        var committing = false
    }

    var outgoing: [NodeID: Outgoing] = [:]
    var incoming: Incoming?
    /// Peers whose catch-up is being read from storage (``Replica/serveCatchUp(_:)``).
    var catchUpReads: Set<NodeID> = []
    /// Counters for tests and benchmarks.
    var sentBytes: UInt64 = 0
    var installed = 0
    /// Outgoing transfers started and finished (whatever their outcome).
    var started = 0
    var finished = 0

    /// The lowest snapshot slot an outgoing transfer is sending: the log just above it must stay
    /// on disk until the peer has caught up past it, so compaction does not delete it.
    var pinnedSlot: Slot? { outgoing.values.map(\.sender.offer.slot).min() }
}

extension Replica {
    // MARK: - Sending

    /// Starts streaming this replica's latest snapshot to `peer`, unless one is already going.
    func startSnapshotTransfer(to peer: NodeID) {
        guard !isClosed, failure == nil, snapshots.outgoing[peer] == nil else { return }
        let source: any SnapshotSource
        do {
            guard let s = try storage.openSnapshotSource() else { return }
            // The client sessions as of the snapshot travel after it: this replica's table as of
            // that slot, which also serves an on-disk state machine's export (no table file).
            source = sessions.encoded(through: s.slot).map { TabledSnapshotSource(s, table: $0) } ?? s
        } catch {
            logger.warning("cannot open snapshot for transfer", metadata: ["peer": "\(peer)", "error": "\(error)"])
            return
        }
        let table = source as? TabledSnapshotSource
        let offer = SnapshotOffer(slot: source.slot, length: source.length, checksum: source.checksum, chosenThrough: readableThrough,
                                  tableLength: UInt64(table?.table.count ?? 0), tableChecksum: table?.tableChecksum ?? 0)
        // Ticks: retry after ~0.5 s of silence, give up after ~30 s.
        let retry = Swift.max(1, Int(500_000_000 / Swift.max(1, configuration.tickInterval.nanoseconds)))
        let sender = SnapshotSender(peer: peer, offer: offer, chunkSize: configuration.snapshotChunkSize,
                                    windowBytes: configuration.snapshotWindowBytes, retryTicks: retry, giveUpTicks: retry * 60)
        snapshots.outgoing[peer] = .init(sender: sender, source: source)
        snapshots.started += 1
        logger.info("sending snapshot", metadata: ["peer": "\(peer)", "slot": "\(offer.slot)", "bytes": "\(offer.length)"])
        pumpSnapshot(to: peer)
    }

    /// Sends what the sender's window allows. Chunks are read in order and sent as their reads
    /// complete (in the same order), so the executor never waits for the disk.
    func pumpSnapshot(to peer: NodeID) {
        guard var out = snapshots.outgoing[peer] else { return }
        let actions = out.sender.poll()
        if let outcome = out.sender.outcome {
            finishOutgoing(peer, outcome)
            return
        }
        snapshots.outgoing[peer] = out
        let me = configuration.nodeID
        let slot = out.sender.offer.slot
        for action in actions {
            switch action {
            case .offer(let offer):
                network.send(Envelope(from: me, to: peer, message: .snapshotOffer(offer)))
            case .chunk(let offset, let count, let isLast):
                snapshots.sentBytes += UInt64(count)
                out.source.read(at: offset, count: count) { result in
                    switch result {
                    case .success(let data):
                        self.network.send(Envelope(from: me, to: peer, message: .snapshotChunk(SnapshotChunk(slot: slot, offset: offset, data: data, done: isLast))))
                    case .failure(let error):
                        // The sender's retry resends from the peer's last ack.
                        self.logger.warning("cannot read snapshot for transfer", metadata: ["peer": "\(peer)", "error": "\(error)"])
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
        snapshots.finished += 1
        out.source.close()
        logger.info("snapshot transfer finished", metadata: ["peer": "\(peer)", "slot": "\(out.sender.offer.slot)", "outcome": "\(outcome)"])
    }

    func tickSnapshotTransfers() {
        for peer in snapshots.outgoing.keys.sorted() {
            snapshots.outgoing[peer]!.sender.tick()
            pumpSnapshot(to: peer)
        }
    }

    // MARK: - Receiving

    private func reply(to peer: NodeID, _ ack: SnapshotAck) {
        network.send(Envelope(from: configuration.nodeID, to: peer, message: .snapshotAck(ack)))
    }

    func onSnapshotOffer(from peer: NodeID, _ offer: SnapshotOffer) {
        if offer.slot <= core.chosenThrough {
            return reply(to: peer, SnapshotAck(slot: offer.slot, nextOffset: offer.length, status: .installed))
        }
        if var incoming = snapshots.incoming {
            if incoming.receiver.matches(offer), !incoming.failed {
                // The same snapshot again (a retry, a reconnect, or a new leader): resume.
                if incoming.committing { return }
                let ack = incoming.receiver.resume(from: peer)
                snapshots.incoming = incoming
                return reply(to: peer, ack)
            }
            if incoming.committing || offer.slot < incoming.receiver.offer.slot {
                return reply(to: peer, SnapshotAck(slot: offer.slot, nextOffset: 0, status: .refused))
            }
            // A newer snapshot supersedes the partial one.
            incoming.sink.abort()
            snapshots.incoming = nil
        }
        let sink: any SnapshotSink
        do {
            let inner = try storage.beginSnapshotSink(slot: offer.slot)
            do {
                sink = try TabledSnapshotSink(inner, offer: offer, storage: storage, maxTableBytes: ClientSessions.maxEncodedBytes(sessions.limits))
            } catch {
                inner.abort()
                throw error
            }
        } catch {
            logger.warning("cannot receive snapshot", metadata: ["from": "\(peer)", "slot": "\(offer.slot)", "error": "\(error)"])
            return reply(to: peer, SnapshotAck(slot: offer.slot, nextOffset: 0, status: .refused))
        }
        logger.info("receiving snapshot", metadata: ["from": "\(peer)", "slot": "\(offer.slot)", "bytes": "\(offer.length)"])
        snapshots.incoming = .init(receiver: SnapshotReceiver(from: peer, offer: offer), sink: sink)
        reply(to: peer, SnapshotAck(slot: offer.slot, nextOffset: 0, status: .next))
    }

    func onSnapshotChunk(from peer: NodeID, _ chunk: SnapshotChunk) {
        guard var incoming = snapshots.incoming, !incoming.failed, incoming.receiver.offer.slot == chunk.slot else {
            if chunk.slot <= core.chosenThrough {
                reply(to: peer, SnapshotAck(slot: chunk.slot, nextOffset: chunk.offset, status: .installed))
            }
            return
        }
        let action = incoming.receiver.onChunk(chunk)
        snapshots.incoming = incoming
        switch action {
        case .ignore:
            return
        case .reply(let ack):
            reply(to: peer, ack)
        case .write(let ack, let complete):
            let sink = incoming.sink
            let offer = incoming.receiver.offer
            if complete { snapshots.incoming?.committing = true }
            sink.write(chunk.data) { error in
                guard self.snapshots.incoming?.sink === sink else { return }
                if let error { return self.incomingFailed(error) }
                guard complete else { return self.reply(to: peer, ack) }
                if self.bug == .installBeforeCommit { self.snapshotInstalled(offer, from: peer, ack: ack) }
                // Durable before the core acts on it: file, rename, directory, marker + chosen.
                sink.commit(expectedLength: offer.length, expectedChecksum: offer.checksum) { error in
                    if let error { return self.incomingFailed(error) }
                    self.snapshotInstalled(offer, from: peer, ack: ack)
                }
            }
        }
    }

    private func incomingFailed(_ error: any Error) {
        guard let incoming = snapshots.incoming else { return }
        logger.warning("snapshot receive failed", metadata: ["slot": "\(incoming.receiver.offer.slot)", "error": "\(error)"])
        incoming.sink.abort()
        snapshots.incoming = nil
        reply(to: incoming.receiver.from, SnapshotAck(slot: incoming.receiver.offer.slot, nextOffset: 0, status: .refused))
    }

    /// Moves the client sessions to a snapshot installed through `slot`: to the table received
    /// with it, or past a gap when it came without one (or its table cannot be read).
    private func installSessions(snapshot slot: Slot) {
        if let saved = savedSessions(snapshot: slot) { sessions = saved } else { sessions.skip(to: slot) }
    }

    /// The client sessions saved beside the snapshot through `slot`, or nil when there is no
    /// table. A damaged one is only logged: the table is derived from the chosen log, and
    /// without it retries older than the snapshot answer `sessionExpired` and a repeat
    /// straddling it is read twice on this replica; no acknowledged record is at stake.
    func savedSessions(snapshot slot: Slot) -> ClientSessions? {
        guard bug != .sessionsNotRestored else { return nil }
        do {
            guard let table = try storage.snapshotTable(slot: slot) else { return nil }
            return try ClientSessions(decoding: table, limits: configuration.sessionLimits, snapshot: slot)
        } catch {
            logger.error("cannot read the client-session table of snapshot \(slot): starting without it", metadata: ["error": "\(error)"])
            return nil
        }
    }

    private func snapshotInstalled(_ offer: SnapshotOffer, from peer: NodeID, ack: SnapshotAck) {
        guard !isClosed, failure == nil else { return }
        if snapshots.incoming?.receiver.offer.slot == offer.slot { snapshots.incoming = nil }
        // Caught up past it meanwhile (or already acted on, with the planted bug): nothing to move.
        guard offer.slot > core.chosenThrough else { return reply(to: peer, ack) }
        snapshots.installed += 1
        logger.info("installed snapshot", metadata: ["from": "\(peer)", "slot": "\(offer.slot)", "bytes": "\(offer.length)"])
        core.installSnapshot(through: offer.slot)
        installSessions(snapshot: offer.slot)
        duplicates.forget(through: offer.slot)
        forgetRetained(through: offer.slot)
        observer?.replica(configuration.nodeID, installedSnapshotThrough: offer.slot)
        advanceReadable(to: offer.slot)
        reply(to: peer, ack)
        scheduleDrain()
    }

    // MARK: - Local compaction

    /// After a local snapshot through `slot` is durable: forget the slots in memory.
    /// - Returns: the slot below which segments may be deleted now (none an outgoing transfer
    ///   still needs).
    package func compacted(through slot: Slot) -> Slot {
        core.compact(through: slot)
        // Readers get `compacted` at or below the snapshot.
        duplicates.forget(through: slot)
        forgetRetained(through: slot)
        let keep = snapshots.pinnedSlot.map { Swift.min($0, slot) } ?? slot
        return keep + 1
    }
}
