import MultiPaxos
import SegmentLog

extension Replica {
    /// A peer needs chosen slots the core no longer holds in memory: read them from storage.
    /// Only slots readable here (chosen and durable) are sent, and at most one catch-up reply's
    /// worth per request (the core's `maxCatchUpEntries` and `maxCatchUpBytes`): the peer asks
    /// again for the rest.
    func serveCatchUp(_ request: SnapshotRequest) {
        guard request.fromSlot <= readableThrough else { return }
        if let snapshot = storage.snapshotSlot, request.fromSlot <= snapshot {
            // Compacted here too: only the snapshot (then the log after it) can help the peer.
            return startSnapshotTransfer(to: request.peer)
        }
        // One read in flight per peer: a peer repeats its request until answered, and each read
        // holds up to `maxCatchUpBytes`, so memory stays bounded by peers, not by requests.
        guard snapshots.catchUpReads.insert(request.peer).inserted else { return }
        let limits = core.configuration
        let through = Swift.min(readableThrough, request.fromSlot + Slot(limits.maxCatchUpEntries) - 1)
        storage.readChosen(from: request.fromSlot, through: through, maxBytes: limits.maxCatchUpBytes) { result in
            self.snapshots.catchUpReads.remove(request.peer)
            guard !self.isClosed, self.failure == nil else { return }
            switch result {
            case .success(let stored):
                guard stored.first?.slot == request.fromSlot else { return }
                let reply = CatchUpReply(entries: stored.map(Entry.init), chosenThrough: self.core.chosenThrough)
                self.network.send(Envelope(from: self.configuration.nodeID, to: request.peer, message: .catchUpReply(reply)))
            case .failure(let error as SegmentLogError) where error.isCompacted:
                // Compacted between the check and the read.
                self.startSnapshotTransfer(to: request.peer)
            case .failure(let error):
                self.logger.warning("cannot serve catch-up from storage", metadata: [
                    "peer": "\(request.peer)", "from_slot": "\(request.fromSlot)", "error": "\(error)",
                ])
            }
        }
    }
}
