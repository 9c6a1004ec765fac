/// A ballot as the storage engine sees it: `(round, node)`, ordered by round, then node.
///
/// SegmentLog does not know the consensus module; the caller maps its own ballot type onto this.
public struct LogBallot: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var round: UInt64
    public var node: UInt32

    public init(round: UInt64, node: UInt32) {
        self.round = round
        self.node = node
    }

    public static let zero = LogBallot(round: 0, node: 0)

    public static func < (lhs: LogBallot, rhs: LogBallot) -> Bool {
        (lhs.round, lhs.node) < (rhs.round, rhs.node)
    }

    public var description: String { "\(round).\(node)" }
}

/// One accepted value for one slot: what an acceptor stores per slot.
public struct LogEntry: Sendable, Hashable {
    public var slot: UInt64
    /// The ballot under which the value was accepted.
    public var ballot: LogBallot
    /// A no-op a new leader uses to fill a hole; its `payload` is empty.
    public var isNoop: Bool
    /// The identity of the proposal that carried the record, if it had one.
    public var proposal: LogProposalID?
    public var payload: [UInt8]

    public init(slot: UInt64, ballot: LogBallot, isNoop: Bool = false, proposal: LogProposalID? = nil, payload: [UInt8]) {
        self.slot = slot
        self.ballot = ballot
        self.isNoop = isNoop
        self.proposal = proposal
        self.payload = payload
    }

    /// Bytes of the entry in an accepted payload: header, identity if any, value.
    var encodedSize: Int {
        Format.entryHeaderSize + (proposal == nil ? 0 : Format.entryProposalSize) + payload.count
    }
}

/// A proposal's identity as the storage engine sees it (a client's id and its sequence number);
/// the caller maps its own type onto this.
public struct LogProposalID: Hashable, Sendable {
    public var client: UInt64
    public var sequence: UInt64

    public init(client: UInt64, sequence: UInt64) {
        self.client = client
        self.sequence = sequence
    }
}

/// One unit of acceptor state the store persists. Records apply in append order; a later
/// `accepted` entry for a slot supersedes an earlier one.
public enum LogRecord: Sendable, Hashable {
    /// The acceptor promised not to accept below this ballot. The latest promise record wins.
    case promise(LogBallot)
    /// Accepted values, many slots in one record (split into several when above
    /// `Options.maxRecordBytes`). Large batches are LZ4-compressed when that shrinks them.
    case accepted([LogEntry])
    /// Every slot up to and including `through` is chosen. The watermark never moves back.
    case chosen(through: UInt64)
    /// A durable snapshot covers every slot up to and including `slot`; entries at or below it are
    /// compacted. Written by `SegmentStore.writeSnapshot`, never by `append`.
    case snapshot(slot: UInt64)
    /// Entries for `from` and every later slot are discarded. Written by `truncateSuffix(after:)`.
    case suffixTruncated(from: UInt64)
}

/// The acceptor state a store holds, as of the last durable append.
public struct AcceptorState: Sendable, Hashable {
    /// The ballot of the latest promise record, if any.
    public var promised: LogBallot?
    /// The chosen watermark, if any slot is known chosen.
    public var chosenThrough: UInt64?
    /// The slot the latest durable snapshot covers (through); entries at or below are compacted.
    public var snapshotSlot: UInt64?
    /// The lowest slot with a readable entry.
    public var firstSlot: UInt64?
    /// The highest slot with a readable entry.
    public var lastSlot: UInt64?
    /// How many slots have a readable entry.
    public var entryCount: Int = 0
    /// Sequence numbers of the oldest and newest segment files.
    public var firstSegment: UInt64 = 0
    public var lastSegment: UInt64 = 0

    public init() {}
}

/// When an append counts as durable.
public enum SyncPolicy: Sendable, Hashable {
    /// `fdatasync` before acknowledging: nothing acknowledged is lost in a power failure.
    case always
    /// Acknowledge after `write`; `fdatasync` at most every `milliseconds`. A power failure can
    /// lose the last interval; a process crash loses nothing acknowledged.
    case interval(milliseconds: Int)
    /// Never sync except when rolling segments and on close. For tests and benchmarks.
    case never
}

/// What recovery does with damage other than a torn tail of the last segment.
public enum RecoveryMode: Sendable, Hashable {
    /// Fail `open` with `.corruption` naming file, offset and reason (the default).
    case strict
    /// Keep the valid prefix: cut the log at the first damage (saving the cut bytes beside it),
    /// set later segments aside, and go on. For operators after a `verify`, not for routine use.
    case tolerant
}

extension SegmentStore {
    /// Tuning and policy for a store. The defaults suit a production WAL.
    public struct Options: Sendable {
        /// A segment rolls when the next write would take it past this size (64 MiB). A single
        /// record larger than a segment gets a segment of its own.
        public var segmentSize: Int = 64 << 20
        /// Accepted batches whose encoded payload is larger than this are LZ4-compressed, and
        /// stored compressed only when that is smaller.
        public var compressionThreshold: Int = 4 << 10
        /// The largest payload of one record; bigger `accepted` batches are split over records.
        /// An entry that alone exceeds it is refused.
        public var maxRecordBytes: Int = 16 << 20
        public var syncPolicy: SyncPolicy = .always
        public var recoveryMode: RecoveryMode = .strict
        /// Reserve each new segment with `fallocate` so appends do not extend the file.
        public var preallocate: Bool = true
        /// Create the directory if it does not exist.
        public var createIfMissing: Bool = true
        /// The nice value the commit threads (writer, syncer, acknowledger) ask for; `nil` leaves
        /// them at the process's priority. Every acknowledgement waits for these threads to wake
        /// after each `fdatasync`, so on a busy machine their scheduling delay is commit latency:
        /// with 256 appenders on 2 cores that a compiler kept busy, -10 gave 15–28% more
        /// appends/s; on a quiet machine it makes no measurable difference. Lowering a nice
        /// value needs `CAP_SYS_NICE` or a `RLIMIT_NICE` that allows it; without either the
        /// threads keep the default priority and the store logs that once, at `notice`.
        public var commitThreadNice: Int32? = -10
        /// Segment files that prefix truncation keeps for reuse instead of deleting (RocksDB's
        /// `recycle_log_file_num`, PostgreSQL's recycled WAL segments). A new segment in a
        /// reused file writes over blocks that were written before, so an `fdatasync` there does
        /// not also have to record newly written extents: on this project's test machine (ext4)
        /// syncs took 300–340 µs instead of 450–540. Costs up to this many segments of disk space. 0 deletes.
        public var recycleSegments: Int = 4
        /// Group commit delay, in microseconds (PostgreSQL's `commit_delay`): when the previous
        /// sync acknowledged at least `commitDelayMinimumAppends` appends, the store waits this
        /// long (plus the kernel's timer slack, 50 µs by default) before the next sync, so that
        /// sync also covers appenders whose previous acknowledgements are still being processed.
        /// Without it, many closed-loop appenders split into two cohorts that each wait about two
        /// syncs. Off (0) by default: with 256 local appenders, 100 µs gave 274,000–285,000
        /// records/s (p99 1.5–1.7 ms) where syncs were fast, but 11–35% less where they were slow.
        public var commitDelayMicroseconds: Int = 0
        public var commitDelayMinimumAppends: Int = 64

        public init(segmentSize: Int = 64 << 20, compressionThreshold: Int = 4 << 10,
                    syncPolicy: SyncPolicy = .always, recoveryMode: RecoveryMode = .strict) {
            self.segmentSize = segmentSize
            self.compressionThreshold = compressionThreshold
            self.syncPolicy = syncPolicy
            self.recoveryMode = recoveryMode
        }
    }

    /// Counters since open, for benchmarks and tests.
    public struct Statistics: Sendable, Hashable {
        /// `append` calls acknowledged.
        public var appends: Int = 0
        /// Group commits: appends acknowledged together after one sync (under `.always`), however
        /// many writes that sync covered.
        public var groupCommits: Int = 0
        /// `fdatasync` calls on segment files.
        public var dataSyncs: Int = 0
        /// Bytes written to segment files (record framing and compression included).
        public var bytesWritten: Int = 0
        /// Raw payload bytes of the records written, before compression.
        public var rawPayloadBytes: Int = 0
        /// Stored payload bytes of the records written, after compression.
        public var storedPayloadBytes: Int = 0
        public var segmentsCreated: Int = 0
        public var segmentsDeleted: Int = 0
        /// New segments that reused a file compaction freed (counted in `segmentsCreated` too).
        public var segmentsRecycled: Int = 0
        /// Syncs that waited `Options.commitDelayMicroseconds` first.
        public var delayedCommits: Int = 0
    }

    /// A snapshot of application state covering every slot through `slot`.
    public struct Snapshot: Sendable, Hashable {
        public var slot: UInt64
        public var data: [UInt8]

        public init(slot: UInt64, data: [UInt8]) {
            self.slot = slot
            self.data = data
        }
    }
}
