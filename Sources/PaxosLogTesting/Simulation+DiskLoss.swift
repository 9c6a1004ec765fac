#if canImport(Glibc)
import Glibc
#endif
import MultiPaxos
import PaxosLog
import SegmentLog

// Disk loss: a replica's whole disk, or part of it, is gone when it restarts.
//
// Fault model (drawn from a random stream of its own, so a run without disk loss replays exactly
// as before, and one with it as before until its first loss; counted in `SimulationReport`):
// - wiped: a crashed replica comes back on an empty directory (a replaced disk, `rm -rf` of the
//   data directory): every segment, snapshot and its identity file are gone;
// - log deleted: the segments and snapshots are gone, the identity file stays;
// - tail cut: tolerant recovery or `paxlog repair --truncate-after-corruption` cut the log at
//   damage: the identity is marked as needing rejoin first (the real `markLostState`, with either
//   reason), then a suffix of the records (none to all) is cut.
// In each case the replica may have forgotten promises it made and votes it cast. An acceptor
// that votes again without them can let a second value be chosen at a slot a client was told is
// acknowledged (issue 21: the votes that chose it and the voters that missed it are a majority
// again once one voter forgot).
//
// The guard: the replica restarts through the real identity check (`ReplicaIdentity.admit`, the
// rules `PaxosLog.open` applies before recovery), over `SimulatedDirectory`, an in-memory file
// system that holds the disk's identity file and lists its segments. A multi-member replica
// refuses an empty directory (`notBootstrapped`), one whose log is gone or that is marked as cut
// (`needsRejoin`), and stays down: learner rejoin does not exist yet.
//
// Why that is safe: a value chosen at a slot was accepted by a majority Q. A member of Q that
// lost its disk never answers again, so it is in no later Phase 1 quorum; every later quorum is a
// majority of replicas that kept their state, and meets Q in one that still holds its vote, which
// Phase 1 then re-proposes. An acceptor with amnesia that answered would break exactly that: the
// quorum could meet Q only in it. The oracle keeps counting the votes the lost disk cast before
// (`InvariantChecker.votes`), so a second value getting a majority later is still seen.
// The price is availability: the schedule loses the state of at most a minority of disks for
// good (lost, or broken by misdirected writes, together), so the others still make progress and
// the liveness check, which skips refused replicas, still holds.
//
// The planted bug `StorageBug.wipedReplicaVotes` opens such a directory as a voter (bootstraps it
// again, or ignores its mark); the simulation must then see a second value chosen at a slot.

/// How a simulated disk lost its state.
public enum DiskLoss: String, Sendable, Hashable, CaseIterable {
    /// Every file is gone, the identity too.
    case wiped
    /// The segments and snapshots are gone; the identity file stays.
    case logDeleted
    /// Tolerant recovery or repair cut records at damage, after marking the identity.
    case tailCut
}

extension Simulation {
    /// This run's cluster id: from the seed, so the run replays.
    var clusterID: ClusterID {
        var mix = SplitMix64(seed: options.seed ^ 0xC1D5_7E11_0000_0021)
        return ClusterID(high: mix.next(), low: mix.next())
    }

    /// Formats replica `i`'s empty directory as an initial member, as `PaxosLog.bootstrap`
    /// (`paxlog init`) does: the identity first, then the first segment.
    func bootstrap(_ i: Int) {
        let configuration = replicaConfiguration(for: nodes[i].id)
        let directory = SimulatedDirectory(disk: nodes[i].disk)
        do {
            let requirement = ReplicaIdentity.bootstrapRequirement(for: configuration, clusterID: clusterID)
            _ = try requirement.establish(directory: configuration.dataDirectory, fileSystem: directory, logger: configuration.logger)
            nodes[i].disk.hasLog = true
        } catch {
            checker.failStorage("bootstrapping node \(nodes[i].id) failed: \(error)")
        }
    }

    /// The identity check replica `i` passes before its storage recovers, as `PaxosLog.open`'s.
    /// - Returns: whether the replica may start (as a voter: there is no other way yet).
    func admit(_ i: Int) -> Bool {
        let disk = nodes[i].disk
        let configuration = replicaConfiguration(for: nodes[i].id)
        let directory = SimulatedDirectory(disk: disk)
        do {
            let identity = try ReplicaIdentity.admit(configuration, fileSystem: directory)
            if let lost = disk.lost, !disk.reopenedByBug {
                // Only a planted bug reopens a lost disk; the real guard must never.
                checker.failStorage("node \(nodes[i].id) was admitted as a voter after its disk lost its state (\(lost)), identity \(identity)")
            }
            return true
        } catch {
            if options.storageBug == .wipedReplicaVotes, disk.lost != nil {
                // The guard bypassed: bootstrap again, or ignore the mark.
                trace("node \(nodes[i].id) refused (\(error)); planted bug: opened as a voter anyway")
                let requirement = ReplicaIdentity.bootstrapRequirement(for: configuration, clusterID: clusterID)
                do {
                    var identity = try requirement.establish(directory: configuration.dataDirectory, fileSystem: directory, logger: configuration.logger)
                    if identity.lostState != nil {
                        identity.lostState = nil
                        try identity.write(directory: configuration.dataDirectory, fileSystem: directory)
                    }
                } catch {
                    checker.failStorage("planted bug: re-bootstrapping node \(nodes[i].id) failed: \(error)")
                    return false
                }
                disk.hasLog = true
                disk.reopenedByBug = true
                return true
            }
            if disk.refused == nil { report.refusedRestarts += 1 }
            disk.refused = "\(error)"
            trace("node \(nodes[i].id) refuses to start: \(error)")
            let code = (error as? PaxosLogError)?.code
            if disk.lost == nil {
                checker.failStorage("node \(nodes[i].id) refused a directory that kept its state: \(error)")
            } else if code != .notBootstrapped && code != .needsRejoin {
                checker.failStorage("node \(nodes[i].id) refused its lost disk with \(error), not notBootstrapped or needsRejoin")
            }
            return false
        }
    }

    /// Disks whose state is gone for good in this run: lost (even if a planted bug reopened
    /// them: they forgot all the same), or broken by damage.
    func permanentlyLost(_ n: Node) -> Bool {
        n.disk.lost != nil || n.disk.brokenBeyondRecovery || n.disk.records.contains(where: \.damaged)
    }

    /// Right after replica `i` crashed, while faults are on: its disk may lose its state, if the
    /// disks lost for good stay a minority with it.
    func maybeLoseDisk(_ i: Int) {
        guard faultsOn, diskLossRate > 0, diskLossRNG.chance(diskLossRate) else { return }
        let others = nodes.indices.filter { $0 != i && permanentlyLost(nodes[$0]) }.count
        guard others + 1 <= (members.count - 1) / 2 else { return }
        let draw = diskLossRNG.below(10)
        loseDisk(i, draw < 5 ? .wiped : draw < 7 ? .logDeleted : .tailCut)
    }

    /// Replica `i`'s disk (the replica is down) loses its state as `kind` says.
    func loseDisk(_ i: Int, _ kind: DiskLoss) {
        precondition(nodes[i].replica == nil, "a disk is lost only while its replica is down")
        let disk = nodes[i].disk
        switch kind {
        case .wiped:
            disk.files = [:]
            fallthrough
        case .logDeleted:
            disk.records = []
            disk.snapshotFiles = [:]
            disk.hasLog = false
        case .tailCut:
            let configuration = replicaConfiguration(for: nodes[i].id)
            do {
                // The mark first, durably, as SegmentStore's recovery and repair do.
                let reason: DirectoryIdentity.LostState = diskLossRNG.chance(0.5) ? .tolerantRecovery : .repair
                try DirectoryIdentity.markLostState(reason, directory: configuration.dataDirectory,
                                                    fileSystem: SimulatedDirectory(disk: disk), logger: nil)
            } catch {
                checker.failStorage("marking node \(nodes[i].id)'s directory failed: \(error)")
            }
            disk.records.removeLast(diskLossRNG.below(disk.records.count + 1))
        }
        disk.lost = kind
        report.diskLossKinds.insert(kind)
        disk.refused = nil
        disk.reopenedByBug = false
        report.diskLosses += 1
        // The durability contract held for what the disk had; it starts again from nothing. Votes
        // cast before the loss still count towards what was chosen.
        checker.observeDiskLoss(node: nodes[i].id)
        trace("disk of \(nodes[i].id) lost: \(kind)")
    }

    /// Issue 21's scenario, scripted on three replicas: with one replica (C) down, appends are
    /// acknowledged by the other two (the leader L and B); then B loses its disk and restarts while
    /// L is down, beside C, which missed the appends. B and C would be a majority: with the real
    /// guard B stays down and nothing is chosen until L is back (then the liveness check runs);
    /// with `StorageBug.wipedReplicaVotes` they choose other values at the acknowledged slots.
    /// Random faults are off (set the options: no crashes, partitions, loss, storage faults or
    /// disk losses; clients propose as usual). Ticks are bounded, never wall time.
    /// - Returns: the report; `violation` is the first invariant broken, if any.
    package func runLostDiskScenario() -> SimulationReport {
        precondition(nodes.count == 3, "the scenario is scripted for three replicas")
        let never = 1_000_000
        func stepUntil(_ limit: Int, _ done: () -> Bool) -> Bool {
            for _ in 0..<limit where checker.violation == nil {
                if done() { return true }
                step()
            }
            return done()
        }
        guard stepUntil(300, { nodes.contains { $0.replica?.core.isLeader == true } }) else {
            checker.failLiveness("scenario: no leader was elected")
            return finish()
        }
        let l = nodes.firstIndex { $0.replica?.core.isLeader == true }!
        let b = (l + 1) % 3, c = (l + 2) % 3
        trace("scenario: leader \(nodes[l].id), B \(nodes[b].id), C \(nodes[c].id)")
        crash(c, restartAfter: never)
        let ackedBefore = checker.acknowledged.count
        guard stepUntil(300, { checker.acknowledged.count >= ackedBefore + 3 }) else {
            checker.failLiveness("scenario: no appends were acknowledged while C was down")
            return finish()
        }
        crash(b, restartAfter: never)
        loseDisk(b, .wiped)
        crash(l, restartAfter: never)
        // What L sent is delivered or lost before C is back: C learns nothing from L.
        _ = stepUntil(options.maxDelay + 1, { false })
        restart(c)
        restart(b)
        _ = stepUntil(300, { false })
        // L comes back (the liveness check restarts every replica that is down).
        if checker.violation == nil { checkLiveness() }
        return finish()
    }

    /// Every acknowledged record is still at its slot on every replica that learned through it.
    func checkAcknowledgedKept() {
        for (slot, value) in checker.acknowledged.sorted(by: { $0.key < $1.key }) {
            for n in nodes where n.replica != nil && n.learned.count >= Int(slot) && n.learned[Int(slot) - 1] != value {
                checker.fail("acknowledged \(checker.describe(value)) at slot \(slot), but node \(n.id) holds \(checker.describe(n.learned[Int(slot) - 1])) there")
                return
            }
        }
    }
}

/// A replica's simulated data directory as a `FileSystem`, for the real identity code: its
/// files (the identity) live in the ``SimulatedDisk`` and survive crashes; its segments and
/// snapshots are listed from what the disk holds (their bytes are the disk's records, not files).
/// Writes are durable at once: a crash half-way through writing the identity is not modelled.
final class SimulatedDirectory: FileSystem, @unchecked Sendable {
    let disk: SimulatedDisk
    private var descriptors: [Int32: String] = [:]
    private var nextFD: Int32 = 3

    init(disk: SimulatedDisk) { self.disk = disk }

    private func name(_ path: String) -> String { String(path.split(separator: "/").last ?? Substring(path)) }

    private func file(_ fd: Int32) throws -> String {
        guard let n = descriptors[fd] else { throw FileSystemError(errno: EBADF, function: "simulated fd") }
        return n
    }

    func open(_ path: String, mode: FileOpenMode) throws -> Int32 {
        let n = name(path)
        switch mode {
        case .readOnly, .readWrite:
            guard disk.files[n] != nil else { throw FileSystemError(errno: ENOENT, function: "open") }
        case .readWriteCreate:
            if disk.files[n] == nil { disk.files[n] = [] }
        case .createNew:
            guard disk.files[n] == nil else { throw FileSystemError(errno: EEXIST, function: "open") }
            disk.files[n] = []
        }
        let fd = nextFD
        nextFD += 1
        descriptors[fd] = n
        return fd
    }

    func close(_ fd: Int32) throws { descriptors[fd] = nil }

    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        let bytes = disk.files[try file(fd)] ?? []
        let start = Swift.min(Int(offset), bytes.count)
        let n = Swift.min(buffer.count, bytes.count - start)
        for k in 0..<n { buffer[k] = bytes[start + k] }
        return n
    }

    func pwrite(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        let n = try file(fd)
        var bytes = disk.files[n] ?? []
        if bytes.count < Int(offset) + buffer.count { bytes += [UInt8](repeating: 0, count: Int(offset) + buffer.count - bytes.count) }
        for k in 0..<buffer.count { bytes[Int(offset) + k] = buffer[k] }
        disk.files[n] = bytes
        return buffer.count
    }

    func fdatasync(_ fd: Int32) throws { _ = try file(fd) }
    func syncDirectory(_ path: String) throws {}

    func truncate(_ fd: Int32, to size: Int64) throws {
        let n = try file(fd)
        var bytes = disk.files[n] ?? []
        if bytes.count > Int(size) { bytes.removeLast(bytes.count - Int(size)) } else { bytes += [UInt8](repeating: 0, count: Int(size) - bytes.count) }
        disk.files[n] = bytes
    }

    func allocate(_ fd: Int32, offset: Int64, length: Int64) throws { throw FileSystemError(errno: EOPNOTSUPP, function: "fallocate") }
    func size(_ fd: Int32) throws -> Int64 { Int64(disk.files[try file(fd)]?.count ?? 0) }

    func rename(_ from: String, to: String) throws {
        guard let bytes = disk.files.removeValue(forKey: name(from)) else { throw FileSystemError(errno: ENOENT, function: "rename") }
        disk.files[name(to)] = bytes
        for (fd, n) in descriptors where n == name(from) { descriptors[fd] = name(to) }
    }

    func remove(_ path: String) throws {
        guard disk.files.removeValue(forKey: name(path)) != nil else { throw FileSystemError(errno: ENOENT, function: "unlink") }
    }

    /// The files, then a segment name while the disk holds a log, and the snapshot files; sorted.
    func listDirectory(_ path: String) throws -> [String] {
        var names = Array(disk.files.keys)
        // The names SegmentLog's Format gives the first segment and a snapshot file.
        if disk.hasLog { names.append("00000000000000000001.seg") }
        for slot in disk.snapshotFiles.keys {
            let digits = String(slot)
            names.append("snapshot-" + String(repeating: "0", count: 20 - digits.count) + digits + ".snap")
        }
        return names.sorted()
    }

    func createDirectory(_ path: String) throws {}
    func fileExists(_ path: String) -> Bool { disk.files[name(path)] != nil }
    func lockExclusive(_ fd: Int32) throws {}
}
