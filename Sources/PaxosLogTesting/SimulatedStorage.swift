#if canImport(Glibc)
import Glibc
#endif
import MultiPaxos
import PaxosLog
import SegmentLog

// Simulated storage for the simulator: a replica's storage as a log of records, each protected
// by its (modelled) CRC, plus snapshot files. It makes the replica take the decisions
// `SegmentStore` would, under the faults `SegmentStore` can meet.
//
// Fault model (rates per run, drawn from the seed; counted in `FaultCounters`):
// - crash: what was synced survives; of what was written but not synced, all, none, a prefix,
//   or a prefix whose last record is torn (its CRC fails) survives. Recovery cuts a torn last
//   record (end of log) and fails closed on a damaged record with valid ones after it.
// - read corruption: a read returns flipped bits; the record CRC catches it (a `.corruption`
//   error, not a value). Transient: the next read may succeed.
// - latent read error: a read fails with EIO. Transient.
// - misdirected write: a write lands on an older synced record instead of beside it, destroying
//   it; reads of it fail their CRC, and recovery fails closed (the replica stays down).
// - fsync failure: the sync fails; what it covered may or may not have reached the disk; the
//   store refuses every later write and the replica must stop voting, never retry.
// - ENOSPC: an append fails and the store refuses every later write.
// - disk loss (Simulation+DiskLoss.swift): a crashed replica's disk is wiped, loses its log, or
//   has its tail cut by tolerant recovery; the real identity guard then keeps the replica down.
// The schedule never destroys every copy of something: misdirected writes and disk losses
// together hit at most a minority of replicas (`Simulation.mayDamagePermanently`,
// `Simulation.maybeLoseDisk`), so a violation is the code's fault.

/// Fault counters of a whole run.
public struct FaultCounters: Sendable, Hashable {
    public var tornWrites = 0
    public var lostUnsynced = 0
    public var readCorruptions = 0
    public var misdirectedWrites = 0
    public var eio = 0
    public var fsyncFailures = 0
    public var enospc = 0
    public init() {}
}

/// Rates of storage faults, per operation.
public struct StorageFaultRates: Sendable, Hashable {
    public var readCorruption = 0.0
    public var eio = 0.0
    public var misdirectedWrite = 0.0
    public var fsyncFailure = 0.0
    public var enospc = 0.0
    public init() {}
    public static let none = StorageFaultRates()
}

/// Deliberately broken storage behaviours (the model of `SegmentStore`'s recovery).
public enum StorageBug: String, Sendable, Hashable, CaseIterable {
    /// Recovery skips a damaged record in the middle of the log and keeps going, instead of
    /// failing closed: the votes it held are forgotten.
    case recoveryIgnoresDamage
    /// A replica whose disk lost its state (Simulation+DiskLoss.swift) is opened as a voter all
    /// the same: its empty directory is bootstrapped again (`paxlog init` on a member that lost
    /// its disk), and a cut one's needs-rejoin mark is ignored. The identity guard bypassed.
    case wipedReplicaVotes
}

/// What survives a crash: synced records and snapshot files.
final class SimulatedDisk {
    struct Stored {
        var record: LogRecord
        /// Its CRC fails: torn by a crash, or overwritten by a misdirected write.
        var damaged = false
    }

    var records: [Stored] = []
    /// Durable snapshot files by slot (written, synced, renamed, directory synced).
    var snapshotFiles: [Slot: [UInt8]] = [:]
    /// Client-session tables saved beside snapshots (`snapshot-<slot>.table`), durable once saved.
    var snapshotTables: [Slot: [UInt8]] = [:]
    /// Recovery failed closed on damage: the replica stays down (an operator would repair it).
    var brokenBeyondRecovery = false
    /// The directory's other files by name, written and read by the real identity code through
    /// ``SimulatedDirectory``: the identity file (`IDENTITY`). Durable once renamed in place.
    var files: [String: [UInt8]] = [:]
    /// Its segment files exist (bootstrapping creates the first one right after the identity).
    var hasLog = false
    /// How the disk lost its state, if it ever did in this run (Simulation+DiskLoss.swift).
    var lost: DiskLoss? = nil
    /// The planted bug `wipedReplicaVotes` opened it as a voter after it lost its state.
    var reopenedByBug = false
    /// Why the identity guard refused to open the directory as a voter, once it has.
    var refused: String? = nil
}

/// One incarnation's view of a replica's storage. A crash ends it; a restart makes a new one
/// over the same disk.
final class SimulatedStorage: ReplicaStorage, @unchecked Sendable {
    let disk: SimulatedDisk
    unowned let world: Simulation
    var rates: StorageFaultRates
    let bug: StorageBug?
    private var rng: SplitMix64
    /// Written, not yet synced, in order after `disk.records`.
    private var written: [SimulatedDisk.Stored] = []
    /// Appends waiting for a sync: the count of `written` each covers, and its completion.
    private var waiting: [(through: Int, completion: @Sendable (Result<Void, SegmentLogError>) -> Void)] = []
    private var failed: SegmentLogError?
    private(set) var dead = false
    /// Slots at or below this one were compacted away (`truncatePrefix`).
    private var truncatedBelow: Slot = 0

    init(disk: SimulatedDisk, world: Simulation, rates: StorageFaultRates, bug: StorageBug?, seed: UInt64) {
        self.disk = disk
        self.world = world
        self.rates = rates
        self.bug = bug
        self.rng = SplitMix64(seed: seed)
    }

    var hasUnsynced: Bool { !written.isEmpty }

    // MARK: - Writes

    func append(_ records: [LogRecord], completion: @escaping @Sendable (Result<Void, SegmentLogError>) -> Void) {
        guard !dead else { return }
        if let failed { return world.executor.execute { completion(.failure(failed)) } }
        if rng.chance(rates.enospc) {
            world.faults.enospc += 1
            let error = SegmentLogError(.io(errno: ENOSPC, path: "simulated segment"), "write: no space left on device")
            failed = SegmentLogError(.storeFailed, "an earlier write failed", cause: error)
            return world.executor.execute { completion(.failure(error)) }
        }
        if rng.chance(rates.misdirectedWrite), disk.records.count > 1, world.mayDamagePermanently(disk) {
            // The write lands on an older record instead: that record's CRC now fails.
            world.faults.misdirectedWrites += 1
            disk.records[rng.below(disk.records.count - 1)].damaged = true
        }
        world.observeAppended(records, node: world.nodeID(of: disk))
        for r in records { written.append(.init(record: r)) }
        waiting.append((written.count, completion))
    }

    /// The `fdatasync` the replica's appends wait for: what was written becomes durable, or the
    /// sync fails and the store refuses further writes.
    func sync() {
        guard !dead, failed == nil, !written.isEmpty else { return }
        if rng.chance(rates.fsyncFailure) {
            world.faults.fsyncFailures += 1
            // The kernel may have written some of the pages before it failed.
            keepSomeOfWritten()
            let error = SegmentLogError(.syncFailed(errno: EIO, path: "simulated segment"), "fdatasync failed")
            failed = error
            let w = waiting
            waiting = []
            for x in w { world.executor.execute { x.completion(.failure(error)) } }
            return
        }
        world.observeDurable(written.map(\.record), node: world.nodeID(of: disk))
        disk.records.append(contentsOf: written)
        written = []
        let w = waiting
        waiting = []
        for x in w { world.executor.execute { x.completion(.success(())) } }
    }

    /// The process dies: unsynced writes are lost, all, none, or a prefix, whose last record may be torn.
    func crash() {
        guard !dead else { return }
        dead = true
        keepSomeOfWritten()
        waiting = []
    }

    private func keepSomeOfWritten() {
        guard !written.isEmpty else { return }
        var kept = written.count
        switch rng.below(4) {
        case 0: break
        case 1: kept = 0
        default: kept = rng.below(written.count + 1)
        }
        var survivors = Array(written.prefix(kept))
        if !survivors.isEmpty, rng.chance(0.3) {
            survivors[survivors.count - 1].damaged = true
            world.faults.tornWrites += 1
        }
        world.faults.lostUnsynced += written.count - kept
        world.observeDurable(survivors.filter { !$0.damaged }.map(\.record), node: world.nodeID(of: disk))
        disk.records.append(contentsOf: survivors)
        written = []
    }

    // MARK: - Reads

    func entries(from: Slot, through: Slot, maxBytes: Int) throws -> [LogEntry] {
        if dead { throw SegmentLogError(.closed, "the store is closed") }
        if from <= compactedThrough { throw SegmentLogError(.compacted(slot: from), "slot \(from) was compacted") }
        if rng.chance(rates.readCorruption) {
            world.faults.readCorruptions += 1
            throw SegmentLogError(.corruption(file: "simulated segment", offset: 0, reason: "record CRC mismatch on read"), "read")
        }
        if rng.chance(rates.eio) {
            world.faults.eio += 1
            throw SegmentLogError(.io(errno: EIO, path: "simulated segment"), "pread")
        }
        var latest: [Slot: LogEntry] = [:]
        // Synced records, then the written ones after them (page cache), without copying either.
        for records in [disk.records, written] {
            for stored in records {
                guard case .accepted(let es) = stored.record else { continue }
                for e in es where e.slot >= from && e.slot <= through {
                    if stored.damaged {
                        throw SegmentLogError(.corruption(file: "simulated segment", offset: 0, reason: "record CRC mismatch at slot \(e.slot)"), "read")
                    }
                    latest[e.slot] = e
                }
            }
        }
        var out: [LogEntry] = []
        var bytes = 0
        var s = from
        while s <= through, let e = latest[s], bytes < maxBytes {
            out.append(e)
            bytes += e.payload.count
            s += 1
        }
        return out
    }

    func readChosen(from: Slot, through: Slot, maxBytes: Int, completion: @escaping @Sendable (Result<[LogEntry], any Error>) -> Void) {
        let result = Result<[LogEntry], any Error> { try entries(from: from, through: through, maxBytes: maxBytes) }
        world.executor.execute { completion(result) }
    }

    /// The value of `slot` in the latest synced record holding it: what a crash now would keep.
    func durableValue(_ slot: Slot) -> Value? {
        for stored in disk.records.reversed() where !stored.damaged {
            if case .accepted(let es) = stored.record, let e = es.last(where: { $0.slot == slot }) {
                return Value(e)
            }
        }
        return nil
    }

    // MARK: - Snapshots

    /// The snapshot whose marker is durable, if its file is there.
    var snapshotSlot: Slot? {
        var slot: Slot? = nil
        for stored in disk.records where !stored.damaged {
            if case .snapshot(let s) = stored.record, disk.snapshotFiles[s] != nil { slot = Swift.max(slot ?? 0, s) }
        }
        return slot
    }

    func snapshotTable(slot: Slot) throws -> [UInt8]? {
        disk.snapshotTables[slot]
    }

    /// Saves the table of the snapshot through `slot` (before that snapshot is committed, as
    /// `PaxosLog.compact` does); the others are gone, as superseded tables are.
    func saveSnapshotTable(slot: Slot, bytes: [UInt8]) {
        guard !dead else { return }
        disk.snapshotTables = disk.snapshotTables.filter { $0.key >= (snapshotSlot ?? 0) }
        disk.snapshotTables[slot] = bytes
    }

    func saveSnapshotTable(slot: Slot, bytes: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        saveSnapshotTable(slot: slot, bytes: bytes)
        world.executor.execute { completion(nil) }
    }

    private var compactedThrough: Slot { Swift.max(snapshotSlot ?? 0, truncatedBelow) }

    func openSnapshotSource() throws -> (any SnapshotSource)? {
        guard let slot = snapshotSlot, let bytes = disk.snapshotFiles[slot] else { return nil }
        return SimulatedSnapshotSource(slot: slot, bytes: bytes, storage: self)
    }

    func beginSnapshotSink(slot: Slot) throws -> any SnapshotSink {
        SimulatedSnapshotSink(slot: slot, storage: self)
    }

    /// The application's snapshot (or one received): the file is durable at once, then its
    /// marker (and, for a received one, the chosen watermark) is appended behind everything
    /// before it; `completion` runs once the marker is durable.
    func commitSnapshot(slot: Slot, bytes: [UInt8], markChosen: Bool, completion: @escaping @Sendable ((any Error)?) -> Void) {
        guard !dead else { return }
        disk.snapshotFiles[slot] = bytes
        var records: [LogRecord] = [.snapshot(slot: slot)]
        if markChosen { records.append(.chosen(through: slot)) }
        append(records) { result in
            if case .failure(let e) = result { completion(e) } else { completion(nil) }
        }
    }

    /// Deletes what lies below `slot` (whole segments, in `SegmentStore`): reads below fail as compacted.
    func truncatePrefix(below slot: Slot) {
        truncatedBelow = Swift.max(truncatedBelow, slot - 1)
    }

    // MARK: - Recovery

    /// Scans the disk as `SegmentStore` recovery does: a damaged last record is a torn tail and
    /// is cut; a damaged record with valid ones after it is corruption (fails closed).
    /// - Returns: the state a restarting core needs, and every chosen value through its watermark.
    func recover() throws -> (state: DurableState, chosen: [Value]) {
        if let last = disk.records.last, last.damaged { disk.records.removeLast() }
        if let k = disk.records.firstIndex(where: \.damaged) {
            if bug == .recoveryIgnoresDamage {
                disk.records.remove(at: k)
            } else {
                disk.brokenBeyondRecovery = true
                throw SegmentLogError(.corruption(file: "simulated segment", offset: Int64(k), reason: "record CRC mismatch before valid records"), "recovery")
            }
        }
        var promised = Ballot.zero
        var chosen: Slot = 0
        var latest: [Slot: LogEntry] = [:]
        for stored in disk.records {
            switch stored.record {
            case .promise(let b): promised = Swift.max(promised, Ballot(round: b.round, node: b.node))
            case .accepted(let es): for e in es { latest[e.slot] = e }
            case .chosen(let t): chosen = Swift.max(chosen, t)
            case .snapshot, .suffixTruncated: break
            }
        }
        let snapshot = snapshotSlot ?? 0
        var values: [Value] = []
        if snapshot > 0, let decoded = SimulationSnapshot.decode(disk.snapshotFiles[snapshot] ?? []) { values = decoded }
        chosen = Swift.max(chosen, snapshot)
        let base = chosen
        if chosen > Slot(values.count) {
            for s in (Slot(values.count) + 1)...chosen {
                guard let e = latest[s] else {
                    throw SegmentLogError(.corruption(file: "simulated segment", offset: 0, reason: "chosen slot \(s) has no entry"), "recovery")
                }
                values.append(Value(e))
            }
        }
        let votes = latest.values.filter { $0.slot > base }.sorted { $0.slot < $1.slot }
            .map(Entry.init)
        return (DurableState(promised: promised, entries: votes, chosenThrough: chosen, compactedThrough: base), values)
    }
}

final class SimulatedSnapshotSource: SnapshotSource, @unchecked Sendable {
    let slot: Slot
    let bytes: [UInt8]
    unowned let storage: SimulatedStorage

    init(slot: Slot, bytes: [UInt8], storage: SimulatedStorage) {
        self.slot = slot
        self.bytes = bytes
        self.storage = storage
    }

    var length: UInt64 { UInt64(bytes.count) }
    var checksum: UInt32 { SimulationSnapshot.checksum(bytes) }

    func read(at offset: UInt64, count: Int, completion: @escaping @Sendable (Result<[UInt8], any Error>) -> Void) {
        let start = Swift.min(Int(offset), bytes.count)
        let chunk = Array(bytes[start..<Swift.min(start + count, bytes.count)])
        storage.world.executor.execute { completion(.success(chunk)) }
    }

    func close() {}
}

final class SimulatedSnapshotSink: SnapshotSink, @unchecked Sendable {
    let slot: Slot
    unowned let storage: SimulatedStorage
    private var bytes: [UInt8] = []
    private var aborted = false

    init(slot: Slot, storage: SimulatedStorage) {
        self.slot = slot
        self.storage = storage
    }

    func write(_ chunk: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        bytes.append(contentsOf: chunk)
        storage.world.executor.execute { completion(nil) }
    }

    func commit(expectedLength: UInt64, expectedChecksum: UInt32, completion: @escaping @Sendable ((any Error)?) -> Void) {
        guard !aborted, UInt64(bytes.count) == expectedLength, SimulationSnapshot.checksum(bytes) == expectedChecksum else {
            return storage.world.executor.execute {
                completion(SegmentLogError(.invalidArgument, "received snapshot does not match its offer"))
            }
        }
        storage.world.observeReceivedSnapshot(bytes, slot: slot, disk: storage.disk)
        storage.commitSnapshot(slot: slot, bytes: bytes, markChosen: true, completion: completion)
    }

    func abort() { aborted = true }
}

/// The simulated application's snapshot: the chosen values of slots `1 ... n`.
enum SimulationSnapshot {
    static func encode(_ values: some Sequence<Value>) -> [UInt8] {
        var out: [UInt8] = []
        for v in values {
            switch v {
            case .noop: out.append(0)
            case .data(let b):
                out.append(1)
                out.append(UInt8(b.count))
                out.append(contentsOf: b)
            case .identified(let id, let b):
                out.append(2)
                out.append(UInt8(b.count))
                withUnsafeBytes(of: id.client.littleEndian) { out.append(contentsOf: $0) }
                withUnsafeBytes(of: id.sequence.littleEndian) { out.append(contentsOf: $0) }
                out.append(contentsOf: b)
            }
        }
        return out
    }

    static func decode(_ bytes: [UInt8]) -> [Value]? {
        var out: [Value] = []
        var k = 0
        while k < bytes.count {
            if bytes[k] == 0 { out.append(.noop); k += 1; continue }
            if bytes[k] == 2, k + 18 <= bytes.count, k + 18 + Int(bytes[k + 1]) <= bytes.count {
                let id = bytes.withUnsafeBytes {
                    ProposalID(client: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: k + 2, as: UInt64.self)),
                               sequence: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: k + 10, as: UInt64.self)))
                }
                out.append(.identified(id, Array(bytes[(k + 18)..<(k + 18 + Int(bytes[k + 1]))])))
                k += 18 + Int(bytes[k + 1])
                continue
            }
            guard bytes[k] == 1, k + 1 < bytes.count, k + 2 + Int(bytes[k + 1]) <= bytes.count else { return nil }
            out.append(.data(Array(bytes[(k + 2)..<(k + 2 + Int(bytes[k + 1]))])))
            k += 2 + Int(bytes[k + 1])
        }
        return out
    }

    /// FNV-1a, standing in for the store's crc32.
    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var h: UInt32 = 2_166_136_261
        for b in bytes { h = (h ^ UInt32(b)) &* 16_777_619 }
        return h
    }
}
