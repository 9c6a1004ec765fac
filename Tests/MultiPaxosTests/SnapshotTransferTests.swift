@_spi(Testing) import MultiPaxos
import Testing

/// The I/O-free snapshot transfer protocol, driven over a lossy, reordering channel, and the
/// core's `installSnapshot` input.
@Suite struct SnapshotTransferTests {
    struct Channel {
        var rng: SplitMix64
        var loss: Double
        var toReceiver: [SnapshotChunk] = []
        var offers: [SnapshotOffer] = []
        var toSender: [SnapshotAck] = []
    }

    /// Runs a transfer of `data` to completion; returns the bytes the receiver assembled and the
    /// bytes the sender sent (to measure waste). `cutAt`: offset after which the "connection
    /// drops" (every message in flight is lost) once.
    func transfer(_ data: [UInt8], seed: UInt64, loss: Double, receiverHas partial: [UInt8] = []) -> (received: [UInt8], sent: Int, ticks: Int) {
        let offer = SnapshotOffer(slot: 42, length: UInt64(data.count), checksum: 7, chosenThrough: 50)
        var sender = SnapshotSender(peer: 2, offer: offer, chunkSize: 100, windowBytes: 400, retryTicks: 3, giveUpTicks: 10_000)
        var receiver = SnapshotReceiver(from: 1, offer: offer)
        var file: [UInt8] = []
        // Resume: the receiver already holds a prefix of this very snapshot.
        if !partial.isEmpty {
            _ = receiver.onChunk(SnapshotChunk(slot: 42, offset: 0, data: partial, done: partial.count == data.count))
            file = partial
        }
        var ch = Channel(rng: SplitMix64(seed: seed), loss: loss)
        var sent = 0
        var ticks = 0
        var installed = false
        while !sender.isFinished, ticks < 5_000 {
            for a in sender.poll() {
                switch a {
                case .offer(let o): if !ch.rng.chance(loss) { ch.offers.append(o) }
                case .chunk(let offset, let count, let isLast):
                    sent += count
                    let c = SnapshotChunk(slot: 42, offset: offset, data: Array(data[Int(offset)..<Int(offset) + count]), done: isLast)
                    // Lossy runs also reorder; lossless ones model one TCP connection (in order).
                    if !ch.rng.chance(loss) { ch.toReceiver.insert(c, at: loss > 0 ? ch.rng.below(ch.toReceiver.count + 1) : ch.toReceiver.count) }
                }
            }
            for o in ch.offers {
                let ack = installed ? SnapshotAck(slot: 42, nextOffset: o.length, status: .installed) : receiver.resume(from: 1)
                if !ch.rng.chance(loss) { ch.toSender.append(ack) }
            }
            ch.offers = []
            for c in ch.toReceiver {
                guard !installed else { continue }
                switch receiver.onChunk(c) {
                case .write(let ack, let complete):
                    file += c.data
                    if complete { installed = true }
                    if !ch.rng.chance(loss) { ch.toSender.append(ack) }
                case .reply(let ack):
                    if !ch.rng.chance(loss) { ch.toSender.append(ack) }
                case .ignore: break
                }
            }
            ch.toReceiver = []
            for a in ch.toSender { sender.onAck(a) }
            ch.toSender = []
            sender.tick()
            ticks += 1
        }
        #expect(sender.outcome == .installed)
        return (file, sent, ticks)
    }

    @Test func losslessTransferSendsEveryByteOnce() {
        let data = (0..<1234).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let r = transfer(data, seed: 1, loss: 0)
        #expect(r.received == data)
        #expect(r.sent == data.count)
    }

    @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6, 7, 8])
    func lossyReorderingTransferCompletes(seed: UInt64) {
        let data = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
        let r = transfer(data, seed: seed, loss: 0.2)
        #expect(r.received == data)
    }

    @Test func resumesFromWhatTheReceiverHolds() {
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0) }
        let r = transfer(data, seed: 9, loss: 0, receiverHas: Array(data[0..<700]))
        #expect(r.received == data)
        #expect(r.sent == 300, "only the missing bytes are sent after a resume")
    }

    @Test func emptySnapshotAndMalformedChunks() {
        #expect(transfer([], seed: 3, loss: 0).received == [])
        let offer = SnapshotOffer(slot: 5, length: 10, checksum: 0, chosenThrough: 5)
        var r = SnapshotReceiver(from: 1, offer: offer)
        // Past the end, overflowing offsets, a wrong `done`, another slot: never written.
        #expect(r.onChunk(SnapshotChunk(slot: 5, offset: 0, data: Array(repeating: 0, count: 11), done: true)) == .reply(SnapshotAck(slot: 5, nextOffset: 0, status: .resend)))
        #expect(r.onChunk(SnapshotChunk(slot: 5, offset: .max, data: [1, 2], done: false)) == .reply(SnapshotAck(slot: 5, nextOffset: 0, status: .resend)))
        #expect(r.onChunk(SnapshotChunk(slot: 5, offset: 0, data: Array(repeating: 0, count: 10), done: false)) == .reply(SnapshotAck(slot: 5, nextOffset: 0, status: .resend)))
        #expect(r.onChunk(SnapshotChunk(slot: 6, offset: 0, data: [1], done: false)) == .ignore)
        #expect(r.received == 0)
        // A sender told an offset beyond the snapshot stops instead of reading past its end.
        var s = SnapshotSender(peer: 2, offer: offer)
        _ = s.poll()
        s.onAck(SnapshotAck(slot: 5, nextOffset: 11, status: .next))
        #expect(s.outcome == .refused)
    }

    @Test func senderGivesUpOnASilentPeer() {
        var s = SnapshotSender(peer: 2, offer: SnapshotOffer(slot: 1, length: 1, checksum: 0, chosenThrough: 1), retryTicks: 2, giveUpTicks: 10)
        var offers = 0
        for _ in 0..<20 {
            for case .offer in s.poll() { offers += 1 }
            s.tick()
        }
        #expect(s.outcome == .abandoned)
        #expect(offers == 5)
    }

    @Test func installSnapshotDiscardsVotesAndCatchesUp() {
        var c = Configuration(id: 2, members: [1, 2, 3], randomSeed: 2)
        c.electionTimeoutTicks = 1000...1000
        var core = PaxosCore(configuration: c)
        // A vote for slot 3 in an old ballot, then a heartbeat from a leader far ahead.
        core.step(Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: 1, node: 1), firstSlot: 3, values: [.data([9])], chosenThrough: 0))))
        _ = core.takeReady()
        core.step(Envelope(from: 1, to: 2, message: .heartbeat(Heartbeat(ballot: Ballot(round: 2, node: 1), chosenThrough: 100))))
        let before = core.takeReady()
        #expect(before.messages.contains { if case .catchUpRequest(let r) = $0.message { return r.fromSlot == 1 } else { return false } })
        core.installSnapshot(through: 80)
        #expect(core.chosenThrough == 80)
        #expect(core.entry(at: 3) == nil, "votes at or below the snapshot are discarded")
        #expect(core.firstHeldSlot == 81)
        let after = core.takeReady()
        #expect(after.installedSnapshot == 80)
        #expect(after.chosen.isEmpty)
        #expect(after.records.isEmpty, "storage recorded the snapshot and its chosen watermark already")
        // An older snapshot is a no-op.
        core.installSnapshot(through: 50)
        #expect(core.takeReady().installedSnapshot == nil)
        // The log after the snapshot is learned as usual.
        core.step(Envelope(from: 1, to: 2, message: .catchUpReply(CatchUpReply(entries: [Entry(slot: 81, ballot: Ballot(round: 2, node: 1), value: .data([1]))], chosenThrough: 100))))
        #expect(core.takeReady().chosen.map(\.slot) == [81])
    }

    @Test func snapshotMessagesAreNotTheCoresBusiness() {
        var core = PaxosCore(configuration: Configuration(id: 2, members: [1, 2, 3], randomSeed: 2))
        _ = core.takeReady()
        core.step(Envelope(from: 1, to: 2, message: .snapshotOffer(SnapshotOffer(slot: 9, length: 1, checksum: 0, chosenThrough: 9))))
        core.step(Envelope(from: 1, to: 2, message: .snapshotChunk(SnapshotChunk(slot: 9, offset: 0, data: [1], done: true))))
        core.step(Envelope(from: 1, to: 2, message: .snapshotAck(SnapshotAck(slot: 9, nextOffset: 1, status: .installed))))
        #expect(core.takeReady().isEmpty)
        #expect(core.chosenThrough == 0)
    }
}
