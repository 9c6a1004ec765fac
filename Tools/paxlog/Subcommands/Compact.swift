import ArgumentParser
import Foundation
import Logging
import PaxosLog
import SegmentLog

/// `paxlog compact DIR --through SLOT`: offline compaction of one replica's data directory.
struct Compact: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a snapshot covering every slot through SLOT and delete the segments wholly below it (offline).",
        discussion: """
        Exactly one snapshot source:
          --snapshot FILE        a snapshot the application produced for SLOT;
          --snapshotter "CMD"    runs CMD (with /bin/sh -c), feeds it the previous snapshot and the chosen
                                 entries up to SLOT on stdin, stores its stdout as the new snapshot. The stdin
                                 framing (little-endian):
                                   stream   := "PXSNAPIN" version:u8=1 previous entry* end
                                   previous := 0x00 | 0x01 slot:u64 length:u64 data[length]
                                   entry    := 'E' slot:u64 flags:u8 (bit0 no-op) length:u32 payload[length]
                                   end      := 'Z' through:u64
                                 `paxlog kv-snapshotter` is a reference snapshotter for the kv state machine;
          --state-machine kv     the built-in key-value state machine (records `set K V`, `del K`).
        Refuses, changing nothing (exit 1, one line on stderr): a SLOT beyond the chosen watermark or not above the \
        current snapshot, a directory held by a live replica, a snapshotter that fails or writes nothing (or an empty --snapshot file), a \
        damaged log or snapshot (the current snapshot's data is read in full and its CRC checked first). \
        Exit 2 on I/O errors and on a path that is not a data directory (nothing is created in it).
        """
    )

    @Argument(help: "The replica's data directory.") var directory: String
    @Option(help: "Compact through this slot (at most the chosen watermark).") var through: UInt64
    @Option(help: "File holding the snapshot for SLOT.") var snapshot: String?
    @Option(help: "Command producing the snapshot on stdout from the framed input on stdin.") var snapshotter: String?
    @Option(help: "Built-in state machine to compute the snapshot with: kv.") var stateMachine: String?
    @Flag(help: "Say what would be written and deleted; change nothing.") var dryRun = false
    @Flag(help: "Print the result as one JSON object.") var json = false

    func validate() throws {
        let sources = [snapshot != nil, snapshotter != nil, stateMachine != nil].filter { $0 }.count
        guard sources == 1 else { throw ValidationError("give exactly one of --snapshot, --snapshotter, --state-machine") }
        if let m = stateMachine, m != "kv" { throw ValidationError("--state-machine: only 'kv' is built in") }
        guard through >= 1 else { throw ValidationError("--through must be at least 1") }
    }

    struct Report: Encodable {
        var directory: String
        var snapshot_slot: UInt64
        var snapshot_bytes: UInt64
        var segments_deleted: Int
        var bytes_freed: Int64
        var dry_run: Bool
        var seconds: Double
    }

    struct Refusal: Error { var reason: String }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)  // a snapshotter that stops reading must not kill us
        do {
            try await compact()
        } catch let r as Refusal {
            FileHandle.standardError.write(Data("paxlog compact: refused: \(r.reason)\n".utf8))
            throw ExitCode(1)
        } catch let e as ExitCode {
            throw e
        } catch {
            FileHandle.standardError.write(Data("paxlog compact: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    func compact() async throws {
        let start = Date()
        // Before anything touches it: opening a store creates LOCK and a first segment (exit 2 and
        // the other tools' message, via the generic catch in `run`).
        try LogInspector(directory: directory).checkIsLog()
        if let path = snapshot {
            // Reading a directory fails only mid-copy, with an error that names no file.
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw CLIError("--snapshot \(path): no such file") }
            if isDirectory.boolValue { throw CLIError("--snapshot \(path) is a directory, not a snapshot file") }
        }
        if dryRun { return try planDryRun(start: start) }
        let fileSystem: any FileSystem = ProcessInfo.processInfo.environment["PAXLOG_KILL_AT"].map { KillSwitchFileSystem(step: $0) } ?? PosixFileSystem()
        if try SegmentStore.isLocked(directory: directory) {
            throw Refusal(reason: "\(directory) is locked by a live replica; stop it or compact through the running log")
        }
        var options = SegmentStore.Options()
        options.createIfMissing = false
        // Offline compaction is run to free disk space: delete the segments it removes instead of
        // keeping them for reuse (opening with 0 also deletes files a live replica kept).
        options.recycleSegments = 0
        let store: SegmentStore
        do {
            // Only warnings reach stderr: a refusal must be one line.
            var logger = Logger(label: "paxlog.compact", factory: { StreamLogHandler.standardError(label: $0) })
            logger.logLevel = .warning
            store = try SegmentStore.open(directory: directory, options: options, fileSystem: fileSystem, logger: logger)
        } catch let e as SegmentLogError {
            if case .locked = e.code { throw Refusal(reason: "\(directory) is locked by a live replica") }
            if case .corruption = e.code { throw Refusal(reason: "\(e); run `paxlog verify`") }
            throw e
        }
        defer { try? store.close() }
        let state = store.state
        let previous = state.snapshotSlot
        try checkThrough(chosen: state.chosenThrough, snapshot: previous)
        // Opening checks only the snapshot's header (recovery must stay fast); its data is read
        // here in full, or damage in it would be built on and sealed under the new snapshot's CRC.
        if previous != nil, let reader = try store.openSnapshot() {
            defer { reader.close() }
            // A marker has no data to build on: the state lives in the application's storage.
            if reader.holdsExternalState, snapshot == nil {
                throw Refusal(reason: "the snapshot through \(reader.slot) is a marker of state an application holds (an on-disk state machine): there is no previous state to apply entries to; compact with the application running, or give --snapshot")
            }
            do { try reader.verify() } catch let e as SegmentLogError {
                if case .corruption = e.code { throw Refusal(reason: "\(e); run `paxlog verify`") }
                throw e
            }
        }
        let plan = try store.segmentsWhollyBelow(through + 1)

        let progress = Progress(start: start)
        let writer = try store.beginSnapshot(slot: through)
        do {
            if let path = snapshot {
                try copyFile(path, into: writer, progress: progress)
            } else if stateMachine != nil {
                var machine = KeyValueStateMachine()
                if previous != nil, let reader = try store.openSnapshot() {
                    machine = try KeyValueStateMachine(snapshot: try reader.read(at: 0, maxCount: Int(reader.length)))
                }
                try forEachEntry(store, from: (previous ?? 0) + 1, through: through, progress: progress) { e in
                    if !e.isNoop { machine.apply(e.payload) }
                }
                try writer.write(machine.snapshot())
            } else if let command = snapshotter {
                try runSnapshotter(command, store: store, previous: previous, into: writer, progress: progress)
            }
            // No state machine's snapshot is empty: an empty source (/dev/null, a file not yet
            // written) would replace the state and let the segments holding it go.
            guard writer.length > 0 else {
                throw Refusal(reason: snapshot.map { "the snapshot file \($0) is empty" } ?? "the snapshotter wrote nothing")
            }
            try await writer.commit()
        } catch {
            writer.abort()
            progress.finish()
            throw error
        }
        let deleted = try store.truncatePrefix(below: through + 1)
        progress.finish()
        let report = Report(directory: directory, snapshot_slot: through, snapshot_bytes: writer.length, segments_deleted: deleted,
                            bytes_freed: plan.prefix(deleted).reduce(0) { $0 + $1.bytes }, dry_run: false, seconds: Date().timeIntervalSince(start))
        if json {
            print(jsonLine(report))
        } else {
            print("wrote snapshot-\(through) (\(report.snapshot_bytes) bytes); deleted \(deleted) segment file(s), freed \(report.bytes_freed) bytes in \(String(format: "%.2f", report.seconds)) s")
        }
    }

    /// Refuses a `--through` beyond the chosen watermark or not above the current snapshot.
    func checkThrough(chosen: UInt64?, snapshot previous: UInt64?) throws {
        let chosen = chosen ?? 0
        guard through <= chosen else { throw Refusal(reason: "slot \(through) is beyond the chosen watermark \(chosen)") }
        if let previous, through <= previous { throw Refusal(reason: "slot \(through) is not above the current snapshot \(previous)") }
    }

    /// `--dry-run`: says what a run would write and delete, from the read-only walk `inspect`
    /// makes. Opening a store is no way to find out: recovery writes (it cuts a torn tail,
    /// creates the next segment after a sealed one, deletes leftover files, creates LOCK).
    /// Refuses what a run would refuse; a run may still fail later (a snapshotter, I/O).
    func planDryRun(start: Date) throws {
        let inspector = LogInspector(directory: directory)
        if try inspector.isLocked() {
            throw Refusal(reason: "\(directory) is locked by a live replica; stop it or compact through the running log")
        }
        let report = try inspector.inspect()
        // A run refuses damage when it opens the store (strict recovery), or before writing for
        // the snapshot's data; the walk finds the same.
        if let d = report.damage.first {
            let more = report.damage.count > 1 ? " (and \(report.damage.count - 1) more)" : ""
            throw Refusal(reason: "corruption in \(d.file) at offset \(d.offset): \(d.reason)\(more); run `paxlog verify`")
        }
        let state = report.state ?? ReplayedState()
        let previous = state.snapshotSlot
        try checkThrough(chosen: state.chosenThrough, snapshot: previous)
        // What `truncatePrefix(below: through + 1)` would delete: oldest first, up to the first
        // segment with a slot above `through`, never the active (last) segment, unless the last
        // one is sealed: then opening the store creates a new active segment after it.
        var candidates = report.segments[...]
        if candidates.last?.sealed != true { candidates = candidates.dropLast() }
        let plan = candidates.prefix(SegmentStore.countWhollyBelow(through + 1, maxSlots: candidates.lazy.map(\.lastSlot)))
        let freed = plan.reduce(Int64(0)) { $0 + $1.fileSize }

        let source = snapshot.map { "file \($0)" } ?? snapshotter.map { "the output of `\($0)`" } ?? "the kv state machine"
        if json {
            print(jsonLine(Report(directory: directory, snapshot_slot: through, snapshot_bytes: 0, segments_deleted: plan.count,
                                  bytes_freed: freed, dry_run: true, seconds: Date().timeIntervalSince(start))))
        } else {
            print("would write snapshot-\(through) from \(source), covering slots \((previous ?? 0) + 1)…\(through) on top of \(previous.map { "snapshot \($0)" } ?? "the empty state")")
            print("would delete \(plan.count) segment file(s), \(freed) bytes:")
            for s in plan { print("  \(s.path)  \(s.fileSize) bytes  max slot \(s.lastSlot.map(String.init) ?? "-")") }
        }
    }

    /// Streams `path` into the snapshot in 1 MiB chunks.
    func copyFile(_ path: String, into writer: SnapshotWriter, progress: Progress) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw Refusal(reason: "cannot read snapshot file \(path)") }
        defer { try? handle.close() }
        while true {
            let chunk: Data?
            do { chunk = try handle.read(upToCount: 1 << 20) } catch { throw CLIError("reading snapshot file \(path): \(error.localizedDescription)") }
            guard let chunk, !chunk.isEmpty else { break }
            try writer.write([UInt8](chunk))
            progress.note(bytes: chunk.count)
        }
    }

    /// Calls `body` for every chosen entry in `from...through`, read in batches; every slot must be there.
    func forEachEntry(_ store: SegmentStore, from: UInt64, through: UInt64, progress: Progress, _ body: (LogEntry) throws -> Void) throws {
        var next = from
        while next <= through {
            let last = Swift.min(through, next + 4095)
            for e in try store.entries(from: next, through: last) {
                guard e.slot == next else { throw CLIError("chosen slot \(next) is missing from the log (next stored: \(e.slot))") }
                try body(e)
                next += 1
                progress.note(entries: 1, bytes: e.payload.count)
            }
            guard next == last + 1 else { throw CLIError("chosen slots \(next)…\(last) are missing from the log") }
        }
    }

    /// Runs the snapshotter: one thread feeds its stdin, this one reads its stdout into the snapshot.
    func runSnapshotter(_ command: String, store: SegmentStore, previous: UInt64?, into writer: SnapshotWriter, progress: Progress) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        do { try process.run() } catch { throw Refusal(reason: "cannot start the snapshotter: \(error)") }
        let feedError = LockedBox<(any Error)?>(nil)
        let feeder = Thread {
            let fd = input.fileHandleForWriting.fileDescriptor
            do {
                let reader = previous != nil ? try store.openSnapshot() : nil
                try writeAll(fd, SnapshotterStream.header(previous: reader.map { ($0.slot, $0.length) }))
                if let reader {
                    var offset: UInt64 = 0
                    while offset < reader.length {
                        let chunk = try reader.read(at: offset, maxCount: 1 << 20)
                        try writeAll(fd, chunk)
                        offset += UInt64(chunk.count)
                    }
                }
                try forEachEntry(store, from: (previous ?? 0) + 1, through: through, progress: progress) { e in
                    try writeAll(fd, SnapshotterStream.entry(slot: e.slot, isNoop: e.isNoop, payload: e.payload))
                }
                try writeAll(fd, SnapshotterStream.end(through: through))
            } catch {
                feedError.value = error
            }
            try? input.fileHandleForWriting.close()
        }
        feeder.start()
        let out = output.fileHandleForReading
        while let chunk = try out.read(upToCount: 1 << 20), !chunk.isEmpty {
            try writer.write([UInt8](chunk))
        }
        process.waitUntilExit()
        while !feeder.isFinished { usleep(1000) }
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw Refusal(reason: "the snapshotter failed (\(process.terminationReason == .exit ? "exit status" : "signal") \(process.terminationStatus))")
        }
        guard writer.length > 0 else { throw Refusal(reason: "the snapshotter wrote nothing") }
        // A snapshotter may stop reading early (EPIPE here); a failure to read the log may not
        // pass: the snapshot would silently miss entries.
        if let error = feedError.value, !(error is BrokenPipe) {
            throw CLIError("feeding the snapshotter failed: \(error)")
        }
    }
}

/// `paxlog kv-snapshotter` (hidden): a reference `--snapshotter` for the kv state machine. Reads
/// the framed stream on stdin, writes the kv snapshot on stdout.
struct KVSnapshotter: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kv-snapshotter", abstract: "Reference snapshotter for the kv state machine.", shouldDisplay: false)

    func run() throws {
        var machine = KeyValueStateMachine()
        var buffered = BufferedInput(fd: 0)
        try SnapshotterStream.decode(read: { try buffered.read($0) }) { item in
            switch item {
            case .previous(_, let data): machine = try KeyValueStateMachine(snapshot: data)
            case .entry(_, let isNoop, let payload): if !isNoop { machine.apply(payload) }
            case .end: break
            }
        }
        try writeAll(1, machine.snapshot())
    }
}

/// Exactly-n reads from a file descriptor, through a 64 KiB buffer.
struct BufferedInput {
    let fd: Int32
    var buffer: [UInt8] = []
    var index = 0

    init(fd: Int32) { self.fd = fd }

    mutating func read(_ n: Int) throws -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(n)
        while out.count < n {
            if index == buffer.count {
                buffer = [UInt8](repeating: 0, count: 1 << 16)
                let got = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if got < 0 {
                    if errno == EINTR { buffer = []; index = 0; continue }
                    throw CLIError("read: errno \(errno)")
                }
                buffer.removeSubrange(got...)
                index = 0
                if got == 0 { return out.isEmpty ? nil : out }
            }
            let take = Swift.min(n - out.count, buffer.count - index)
            out.append(contentsOf: buffer[index..<index + take])
            index += take
        }
        return out
    }
}

struct BrokenPipe: Error {}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
        if n < 0 {
            if errno == EINTR { continue }
            if errno == EPIPE { throw BrokenPipe() }
            throw CLIError("write: \(String(cString: strerror(errno)))")
        }
        done += n
    }
}

final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: T
    init(_ value: T) { _value = value }
    var value: T {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}

/// A progress line on stderr for runs longer than a second, at most once a second.
final class Progress: @unchecked Sendable {
    private let lock = NSLock()
    private let start: Date
    private var last: Date
    private var entries = 0
    private var bytes = 0
    private var shown = false

    init(start: Date) {
        self.start = start
        self.last = start
    }

    func note(entries: Int = 0, bytes: Int) {
        lock.withLock {
            self.entries += entries
            self.bytes += bytes
            let now = Date()
            guard now.timeIntervalSince(start) >= 1, now.timeIntervalSince(last) >= 1 else { return }
            last = now
            shown = true
            FileHandle.standardError.write(Data("\rcompacting: \(self.entries) entries, \(self.bytes >> 20) MiB read, \(Int(now.timeIntervalSince(start))) s".utf8))
        }
    }

    func finish() {
        lock.withLock { if shown { FileHandle.standardError.write(Data("\n".utf8)) } }
    }
}
