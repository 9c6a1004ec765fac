import Foundation
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOPosix
import PaxosLog
import PaxosLogTesting
import PaxosTransport
import SegmentLog
import Testing

/// Runs `paxlog` with `arguments`; returns its exit status (or signal), stdout and stderr.
func runPaxlog(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, signaled: Bool, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try paxlogExecutable())
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, p.terminationReason == .uncaughtSignal, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// Names and sizes of a directory's files: "nothing changed" means this is equal before and after.
func listing(_ dir: String) -> [String: Int] {
    var out: [String: Int] = [:]
    for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
        out[name] = (try? FileManager.default.attributesOfItem(atPath: "\(dir)/\(name)")[.size] as? Int) ?? -1
    }
    return out
}

/// The kv state a data directory holds: its snapshot, then its chosen entries after it.
func kvState(_ dir: String) throws -> (machine: KeyValueStateMachine, snapshot: UInt64?, chosen: UInt64) {
    let store = try SegmentStore.open(directory: dir, logger: Logger(label: "verify"))
    defer { try? store.close() }
    let s = store.state
    var machine = KeyValueStateMachine()
    if let snap = try store.readSnapshot() { machine = try KeyValueStateMachine(snapshot: snap.data) }
    let from = (s.snapshotSlot ?? 0) + 1
    let chosen = s.chosenThrough ?? 0
    if from <= chosen {
        let entries = try store.entries(from: from, through: chosen)
        #expect(entries.map(\.slot) == Array(from...chosen), "\(dir): chosen entries above the snapshot are missing")
        for e in entries where !e.isNoop { machine.apply(e.payload) }
    }
    return (machine, s.snapshotSlot, chosen)
}

func kvRecord(_ i: Int) -> [UInt8] {
    i % 9 == 8 ? KeyValueStateMachine.delete("key\(i % 37)") : KeyValueStateMachine.set("key\(i % 37)", "value-\(i)")
}

@Suite(.serialized) struct CompactionProcessTests {
    /// A replica directory written directly: entries 1…400 (kv records), chosen through 380,
    /// 2 KiB segments so compaction has many files to delete.
    func makeDirectory(_ dir: String) async throws -> [[UInt8]] {
        var options = SegmentStore.Options()
        options.segmentSize = 2048
        let store = try SegmentStore.open(directory: dir, options: options, logger: Logger(label: "setup"))
        let records = (0..<400).map(kvRecord)
        for start in stride(from: 0, to: 400, by: 20) {
            var batch: [LogEntry] = []
            for i in start..<start + 20 {
                let noop = i % 50 == 49
                batch.append(LogEntry(slot: UInt64(i + 1), ballot: LogBallot(round: 1, node: 1), isNoop: noop, payload: noop ? [] : records[i]))
            }
            try await store.append([.accepted(batch)])
        }
        try await store.append([.chosen(through: 380)])
        try store.close()
        return (0..<400).map { $0 % 50 == 49 ? [] : records[$0] }
    }

    func expected(_ records: [[UInt8]], through: Int) -> KeyValueStateMachine {
        var m = KeyValueStateMachine()
        for r in records.prefix(through) where !r.isEmpty { m.apply(r) }
        return m
    }

    /// An empty scratch directory for one test (a leftover of an earlier run is removed first).
    func freshDirectory(_ name: String) throws -> String {
        let base = NSTemporaryDirectory() + "paxoslog-compact-\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: base)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        return base
    }

    func copyDirectory(_ from: String, _ to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    @Test func offlineCompactRefusesAndCompacts() async throws {
        let base = try freshDirectory("offline")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let pristine = "\(base)/pristine"
        let records = try await makeDirectory(pristine)
        let before = listing(pristine)

        // Refusals: exit 1, one line on stderr, nothing changed.
        for (args, reason) in [
            (["--through", "381", "--state-machine", "kv"], "beyond the chosen watermark"),
            (["--through", "100", "--snapshotter", "cat >/dev/null; exit 3"], "snapshotter failed"),
            (["--through", "100", "--snapshotter", "cat >/dev/null"], "wrote nothing"),
            (["--through", "100", "--snapshotter", "true"], "wrote nothing"),
        ] {
            let r = try runPaxlog(["compact", pristine] + args)
            #expect(r.status == 1 && !r.signaled, "\(args): exit \(r.status)")
            #expect(r.stderr.contains(reason) && r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
            #expect(listing(pristine) == before, "\(args) changed the directory")
        }
        // Usage errors: two sources, or none.
        #expect(try runPaxlog(["compact", pristine, "--through", "5", "--state-machine", "kv", "--snapshot", "/dev/null"]).status != 0)
        #expect(try runPaxlog(["compact", pristine, "--through", "5"]).status != 0)
        // A directory held by a live store.
        do {
            let held = try SegmentStore.open(directory: pristine, logger: Logger(label: "holder"))
            let r = try runPaxlog(["compact", pristine, "--through", "100", "--state-machine", "kv"])
            try held.close()
            #expect(r.status == 1 && r.stderr.contains("locked"), "\(r.stderr)")
        }
        #expect(listing(pristine).filter { $0.key != "LOCK" } == before.filter { $0.key != "LOCK" })
        // Dry run: says what it would do, changes nothing.
        let dry = try runPaxlog(["compact", pristine, "--through", "300", "--state-machine", "kv", "--dry-run", "--json"])
        #expect(dry.status == 0, "\(dry.stderr)")
        let plan = try JSONSerialization.jsonObject(with: Data(dry.stdout.utf8)) as? [String: Any]
        let planned = plan?["segments_deleted"] as? Int ?? 0
        #expect(planned > 5)
        #expect(listing(pristine) == before)

        // The three sources give the same snapshot for the kv machine.
        var snapshots: [[UInt8]] = []
        for (name, args) in [
            ("kv", ["--state-machine", "kv"]),
            ("snapshotter", ["--snapshotter", "'\(try paxlogExecutable())' kv-snapshotter"]),
        ] {
            let dir = "\(base)/\(name)"
            try copyDirectory(pristine, dir)
            let r = try runPaxlog(["compact", dir, "--through", "300", "--json"] + args)
            #expect(r.status == 0, "\(name): \(r.stderr)")
            let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            #expect(report?["snapshot_slot"] as? Int == 300)
            #expect(report?["segments_deleted"] as? Int == planned)
            #expect((report?["bytes_freed"] as? Int ?? 0) > 0)
            // Offline compaction frees the space: no segment is kept for reuse.
            #expect(!(try FileManager.default.contentsOfDirectory(atPath: dir)).contains { $0.hasSuffix(".free") })
            let state = try kvState(dir)
            #expect(state.snapshot == 300 && state.chosen == 380)
            #expect(state.machine == expected(records, through: 380))
            let store = try SegmentStore.open(directory: dir, logger: Logger(label: "t"))
            snapshots.append(try store.readSnapshot()!.data)
            try store.close()
        }
        #expect(snapshots[0] == snapshots[1])
        #expect(try KeyValueStateMachine(snapshot: snapshots[0]) == expected(records, through: 300))
        // --snapshot FILE, and a second compaction on top of the first.
        let file = "\(base)/snap.bin"
        try Data(expected(records, through: 350).snapshot()).write(to: URL(fileURLWithPath: file))
        let again = try runPaxlog(["compact", "\(base)/kv", "--through", "350", "--snapshot", file])
        #expect(again.status == 0, "\(again.stderr)")
        let state = try kvState("\(base)/kv")
        #expect(state.snapshot == 350 && state.machine == expected(records, through: 380))
        // Not above the current snapshot: refused.
        #expect(try runPaxlog(["compact", "\(base)/kv", "--through", "350", "--state-machine", "kv"]).status == 1)
    }

    /// Every file's bytes but LOCK's (compact takes the lock): "changed nothing" at byte level.
    func bytes(_ dir: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name != "LOCK" {
            out[name] = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name)"))
        }
        return out
    }

    /// A compacted log whose snapshot is damaged: one data byte flipped, or a header (CRC
    /// re-signed) naming another slot than its file. Every source refuses (exit 1, naming the
    /// file and the fault) and changes nothing, instead of sealing the damage under a new CRC.
    @Test func offlineCompactRefusesADamagedSnapshot() async throws {
        let base = try freshDirectory("damaged")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let pristine = "\(base)/pristine"
        let records = try await makeDirectory(pristine)
        let first = try runPaxlog(["compact", pristine, "--through", "300", "--state-machine", "kv"])
        #expect(first.status == 0, "\(first.stderr)")
        let name = "snapshot-00000000000000000300.snap"
        let file = "\(base)/snap.bin"
        try Data(expected(records, through: 350).snapshot()).write(to: URL(fileURLWithPath: file))

        let damages: [(String, String, (inout [UInt8]) -> Void)] = [
            ("data", "snapshot data CRC mismatch", { $0[40 + 25] ^= 0x01 }),
            ("slot", "snapshot header names slot 7, the file name says 300", { b in
                withUnsafeBytes(of: UInt64(7).littleEndian) { for i in 0..<8 { b[16 + i] = $0[i] } }
                let crc = b.prefix(36).withUnsafeBytes { zlibCRC($0) }
                withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { b[36 + i] = $0[i] } }
            }),
        ]
        for (label, reason, damage) in damages {
            let dir = "\(base)/\(label)"
            try copyDirectory(pristine, dir)
            var snapshot = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name)")))
            damage(&snapshot)
            try Data(snapshot).write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
            #expect(try runPaxlog(["verify", dir]).status == 1, "\(label): verify")
            let before = try bytes(dir)
            for source in [["--state-machine", "kv"], ["--snapshotter", "'\(try paxlogExecutable())' kv-snapshotter"], ["--snapshot", file]] {
                let r = try runPaxlog(["compact", dir, "--through", "350"] + source)
                #expect(r.status == 1 && !r.signaled, "\(label) \(source): exit \(r.status): \(r.stderr)")
                #expect(r.stderr.contains(name) && r.stderr.contains(reason), "\(label) \(source): \(r.stderr)")
                #expect(r.stderr.split(separator: "\n").count == 1, "\(label) \(source): \(r.stderr)")
                #expect(try bytes(dir) == before, "\(label) \(source) changed the directory")
            }
            #expect(try runPaxlog(["verify", dir]).status == 1, "\(label): verify after the refusals")
        }
    }

    /// Not a data directory (empty, unrelated files, missing, a plain file): exit 2 with the
    /// other tools' message, and nothing created (no LOCK, no first segment), dry run or not.
    @Test func offlineCompactRefusesWhatIsNotALog() throws {
        let base = try freshDirectory("notalog")
        try FileManager.default.createDirectory(atPath: "\(base)/empty", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(base)/other", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        try Data("notes\n".utf8).write(to: URL(fileURLWithPath: "\(base)/other/a.txt"))
        for (dir, message) in [("\(base)/empty", "not a PaxosLog data directory"), ("\(base)/other", "not a PaxosLog data directory"),
                               ("\(base)/missing", "no such directory"), ("\(base)/other/a.txt", "not a directory")] {
            let before = try FileManager.default.subpathsOfDirectory(atPath: base).sorted()
            for extra in [[], ["--dry-run"], ["--dry-run", "--json"]] {
                let r = try runPaxlog(["compact", dir, "--through", "1", "--state-machine", "kv"] + extra)
                #expect(r.status == 2 && !r.signaled, "\(dir) \(extra): exit \(r.status): \(r.stderr)")
                #expect(r.stdout.isEmpty)
                #expect(r.stderr.contains("\(dir): \(message)") && r.stderr.split(separator: "\n").count == 1, "\(dir) \(extra): \(r.stderr)")
                #expect(try FileManager.default.subpathsOfDirectory(atPath: base).sorted() == before, "\(dir) \(extra) created something")
            }
        }
    }

    /// `--dry-run` on logs that opening a store would write to: a torn tail, or a sealed last
    /// segment (recovery creates the next one), leftover `*.tmp`, `.free` and stale snapshot
    /// files, no LOCK. It changes no byte and creates nothing, and the run then deletes what
    /// it planned (with a sealed last segment, that segment too).
    @Test func offlineCompactDryRunWritesNothing() async throws {
        let base = try freshDirectory("dryrun")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let pristine = "\(base)/pristine"
        _ = try await makeDirectory(pristine)
        #expect(try runPaxlog(["compact", pristine, "--through", "200", "--state-machine", "kv"]).status == 0)
        do {
            // Every slot chosen, so the last segment can go too.
            let store = try SegmentStore.open(directory: pristine, logger: Logger(label: "setup"))
            try await store.append([.chosen(through: 400)])
            try store.close()
        }
        let snapshot = try Data(contentsOf: URL(fileURLWithPath: "\(pristine)/snapshot-00000000000000000200.snap"))

        for label in ["torn", "sealed"] {
            let dir = "\(base)/\(label)"
            try copyDirectory(pristine, dir)
            let last = try #require(try LogInspector(directory: dir).inspect().segments.last)
            let handle = try #require(FileHandle(forUpdatingAtPath: last.path))
            try handle.seek(toOffset: UInt64(last.dataEnd))
            if label == "torn" {
                try handle.write(contentsOf: Data([0x11, 0x11, 0x11, 0x11]))  // an append cut short
            } else {
                // What a roll leaves when it dies after the seal, before the next segment exists.
                var frame = [UInt8](repeating: 0, count: 16)
                frame[12] = 6
                let mask = withUnsafeBytes(of: last.sequence.littleEndian) { zlibCRC($0) }
                let crc = frame[4...].withUnsafeBytes { zlibCRC($0) } ^ mask
                withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { frame[i] = $0[i] } }
                try handle.write(contentsOf: Data(frame))
            }
            try handle.close()
            try Data("half".utf8).write(to: URL(fileURLWithPath: "\(dir)/snapshot-00000000000000000300.snap.1-0.tmp"))
            try Data([1, 2, 3]).write(to: URL(fileURLWithPath: "\(dir)/00000000000000000999.seg.free"))
            try snapshot.write(to: URL(fileURLWithPath: "\(dir)/snapshot-00000000000000000100.snap"))
            try FileManager.default.removeItem(atPath: "\(dir)/LOCK")
            let verify = try runPaxlog(["verify", dir])
            #expect(verify.status == 0 && verify.stdout.contains(label == "torn" ? "torn tail" : "clean"), "\(label): \(verify.stdout)")
            let before = try bytes(dir)

            let text = try runPaxlog(["compact", dir, "--through", "400", "--state-machine", "kv", "--dry-run"])
            #expect(text.status == 0, "\(label): \(text.stderr)")
            #expect(text.stdout.hasPrefix("would write snapshot-400 from the kv state machine, covering slots 201…400 on top of snapshot 200\n"))
            let dry = try runPaxlog(["compact", dir, "--through", "400", "--state-machine", "kv", "--dry-run", "--json"])
            #expect(dry.status == 0, "\(label): \(dry.stderr)")
            let plan = try #require(try JSONSerialization.jsonObject(with: Data(dry.stdout.utf8)) as? [String: Any])
            #expect(plan["dry_run"] as? Bool == true)
            #expect(text.stdout.contains("would delete \(plan["segments_deleted"] as? Int ?? -1) segment file(s), \(plan["bytes_freed"] as? Int ?? -1) bytes:"))
            #expect(try bytes(dir) == before, "\(label): the dry run changed the directory")
            #expect(!FileManager.default.fileExists(atPath: "\(dir)/LOCK"), "\(label): the dry run created LOCK")
            // Refusals come from the same read-only look.
            let beyond = try runPaxlog(["compact", dir, "--through", "401", "--state-machine", "kv", "--dry-run"])
            #expect(beyond.status == 1 && beyond.stderr.contains("beyond the chosen watermark 400"), "\(beyond.stderr)")
            #expect(try bytes(dir) == before && !FileManager.default.fileExists(atPath: "\(dir)/LOCK"))

            let run = try runPaxlog(["compact", dir, "--through", "400", "--state-machine", "kv", "--json"])
            #expect(run.status == 0, "\(label): \(run.stderr)")
            let done = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
            #expect(done["segments_deleted"] as? Int == plan["segments_deleted"] as? Int, "\(label): planned \(plan), did \(done)")
            #expect(done["bytes_freed"] as? Int == plan["bytes_freed"] as? Int, "\(label): planned \(plan), did \(done)")
            // The active segment stays; a sealed last one is not active once the store is opened.
            #expect(FileManager.default.fileExists(atPath: last.path) == (label == "torn"), "\(label)")
        }
    }

    /// `--snapshot` naming a directory: exit 2 naming it; an empty source (/dev/null, an empty
    /// file): refused like a snapshotter that writes nothing. Nothing changes either way.
    @Test func offlineCompactRefusesABadSnapshotFile() async throws {
        let base = try freshDirectory("snapfile")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let dir = "\(base)/data"
        _ = try await makeDirectory(dir)
        let empty = "\(base)/empty.bin"
        try Data().write(to: URL(fileURLWithPath: empty))
        let before = try bytes(dir)
        for (source, status, message) in [(base, Int32(2), "--snapshot \(base) is a directory"), ("/dev/null", 1, "the snapshot file /dev/null is empty"),
                                          (empty, 1, "the snapshot file \(empty) is empty")] {
            for extra in status == 2 ? [[], ["--dry-run"]] : [[]] {
                let r = try runPaxlog(["compact", dir, "--through", "300", "--snapshot", source] + extra)
                #expect(r.status == status && !r.signaled, "\(source) \(extra): exit \(r.status): \(r.stderr)")
                #expect(r.stderr.contains(message) && r.stderr.split(separator: "\n").count == 1, "\(source) \(extra): \(r.stderr)")
                #expect(try bytes(dir) == before, "\(source) \(extra) changed the directory")
            }
        }
    }

    /// SIGKILL at each step of a compaction: the directory opens (strict recovery verifies every
    /// record), holds every chosen entry above whatever snapshot it has, and a second compaction
    /// then completes.
    @Test(arguments: ["snapshot-write", "snapshot-sync", "snapshot-rename", "snapshot-renamed", "record", "recorded", "delete:1", "delete:3", "deleted"])
    func killedAtEachStepOfCompaction(step: String) async throws {
        let base = try freshDirectory("kill-\(step.replacingOccurrences(of: ":", with: "-"))")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let dir = "\(base)/data"
        let records = try await makeDirectory(dir)
        let r = try runPaxlog(["compact", dir, "--through", "300", "--state-machine", "kv"], environment: ["PAXLOG_KILL_AT": step])
        #expect(r.signaled && r.status == SIGKILL, "step \(step): not killed (exit \(r.status)): \(r.stderr)")
        let after = try kvState(dir)
        #expect(after.chosen == 380)
        #expect(after.snapshot == nil || after.snapshot == 300)
        #expect(after.machine == expected(records, through: 380), "step \(step): state differs after the crash")
        #expect(!listing(dir).keys.contains { $0.hasSuffix(".tmp") })
        // Finishing the job (or redoing it) works from any crash point.
        let redo = try runPaxlog(["compact", dir, "--through", after.snapshot == 300 ? "301" : "300", "--state-machine", "kv"])
        #expect(redo.status == 0, "step \(step): \(redo.stderr)")
        let final = try kvState(dir)
        #expect(final.machine == expected(records, through: 380))
    }

    /// Three `paxlog serve` replicas running the kv machine and compacting every 150 entries,
    /// under load; then one is killed, more load, it comes back and must catch up through a
    /// snapshot. Every replica's state (snapshot + log after it) equals the state of the chosen
    /// log computed without compaction.
    @Test func compactionUnderLoadAndCatchUpThroughASnapshot() async throws {
        let cluster = try makeCluster("compaction", extra: ["--state-machine", "kv", "--snapshot-every", "150", "--segment-size", "16384"])
        defer { try? FileManager.default.removeItem(atPath: cluster.baseDirectory) }
        try cluster.startAll()
        let leader = try await cluster.waitForLeader()
        let load = Load()
        var running = Task { await load.run(cluster, streams: 4, record: kvRecord) }
        try await eventually("appends with compaction", seconds: 60) { load.ackCount >= 400 }
        // A follower goes down; the others keep appending and compacting past it.
        let victim = cluster.nodes.map(\.id).first { $0 != leader }!
        cluster.kill(victim)
        let before = load.ackCount
        try await eventually("appends without the victim", seconds: 60) { load.ackCount >= before + 500 }
        load.stop()
        await running.value
        try cluster.start(victim)
        load.reset()
        running = Task { await load.run(cluster, streams: 2, record: kvRecord) }
        try await eventually("appends after the restart", seconds: 60) { load.ackCount >= 20 }
        load.stop()
        await running.value
        let top = load.allAcks.map(\.slot).max() ?? 0
        for n in cluster.nodes { try await eventually("node \(n.id) catching up", seconds: 60) { await chosenThrough(cluster, n.id) >= top } }
        cluster.terminateAll()

        let log = (try? String(contentsOfFile: cluster.node(victim).logFile, encoding: .utf8)) ?? ""
        #expect(log.contains("installed snapshot"), "node \(victim) caught up without a snapshot")
        var states: [KeyValueStateMachine] = []
        var chosen: [UInt64] = []
        for n in cluster.nodes {
            let s = try kvState(n.dataDirectory)
            #expect(s.snapshot != nil, "node \(n.id) never compacted")
            states.append(s.machine)
            chosen.append(s.chosen)
        }
        // Same chosen prefix → same state; compare replicas that reached the same watermark,
        // and every replica against the acknowledged records when no append failed.
        for i in 1..<states.count where chosen[i] == chosen[0] { #expect(states[i] == states[0], "node \(i + 1) state differs") }
        if load.failures.withLockedValue({ $0 }) == 0, chosen.allSatisfy({ $0 == top }) {
            var reference = KeyValueStateMachine()
            for a in load.allAcks.sorted(by: { $0.slot < $1.slot }) { reference.apply(a.bytes) }
            #expect(states[0] == reference)
        }
        #expect(states[0].values.count > 10)
    }
}
