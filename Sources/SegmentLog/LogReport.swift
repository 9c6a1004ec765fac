/// What an offline pass over a data directory found: segments, damage, a torn tail, oddities,
/// and (from `LogInspector`) the acceptor state a replica would recover.
///
/// Damage is reported, never thrown: a verifier must keep going to find all of it.
public struct LogReport: Sendable {
    /// The data directory examined.
    public var directory: String
    /// The format version of the segments read (every readable header carries the same one).
    public var formatVersion: UInt16 = Format.version
    /// Segment files in sequence order, readable or not.
    public var segments: [SegmentSummary] = []
    /// Every problem found, in log order (snapshot problems last). Empty means the log is clean.
    public var damage: [LogDamage] = []
    /// An incomplete last append: end of log, not damage. Recovery (and `repair`) cut it.
    public var tornTail: TornTail?
    /// Things worth knowing that are not damage: leftover temporary files, side files from earlier
    /// recoveries, stale snapshot files, superseded accepts, holes in the slot range.
    public var notes: [String] = []
    /// Snapshot files present, in slot order (only the one the log names is verified).
    public var snapshotFiles: [String] = []
    /// Bytes of segment and snapshot files read.
    public var bytesRead: Int64 = 0
    /// Valid records, and their payload bytes as stored (after LZ4) and raw (before).
    public var records: Int = 0
    public var storedPayloadBytes: Int64 = 0
    public var rawPayloadBytes: Int64 = 0
    /// The acceptor state replayed from the valid prefix (what tolerant recovery keeps); set by
    /// `LogInspector`, nil from `LogVerifier`, which does not replay.
    public var state: ReplayedState?
    /// The directory's identity (`IDENTITY`), nil if it has none or it is damaged (then `damage`
    /// says so).
    public var identity: DirectoryIdentity?

    /// Whether no damage was found (a torn tail is not damage).
    public var isClean: Bool { damage.isEmpty }

    /// Raw payload bytes per stored payload byte (1 when nothing was compressed or nothing stored).
    public var compressionRatio: Double {
        storedPayloadBytes == 0 ? 1 : Double(rawPayloadBytes) / Double(storedPayloadBytes)
    }

    public init(directory: String) {
        self.directory = directory
    }
}

/// One segment file as found.
public struct SegmentSummary: Sendable, Hashable {
    /// File name (`<20 digits>.seg`) and full path.
    public var name: String
    public var path: String
    public var sequence: UInt64
    public var fileSize: Int64
    /// Whether the header decoded and named this file's sequence.
    public var headerValid: Bool
    /// Acceptor state the header carries (the state when the segment was created).
    public var headerPromised: LogBallot?
    public var headerChosenThrough: UInt64?
    public var headerSnapshotSlot: UInt64?
    /// Valid records in the segment, and their payload bytes as stored and raw.
    public var records: Int = 0
    public var storedPayloadBytes: Int64 = 0
    public var rawPayloadBytes: Int64 = 0
    /// Offset just past the last valid record (where a writer would append).
    public var dataEnd: Int64
    /// Offset just past the last non-zero byte: bytes beyond `dataEnd` up to here are damage or
    /// a torn tail; beyond it is preallocated zero space. In a sealed segment, just past the
    /// segment-end record; in a recycled one whose records end at stale bytes of the file's
    /// earlier use, `dataEnd`.
    public var contentEnd: Int64 = 0
    /// The segment reuses a file compaction freed (its header says so).
    public var recycled = false
    /// The segment ends in a segment-end record: its writer moved on. When the last segment is
    /// sealed, opening the log creates the next one, and this one is no longer the active segment.
    public var sealed = false
    /// Lowest and highest slot of any accepted entry in the segment (superseded or not).
    public var firstSlot: UInt64?
    public var lastSlot: UInt64?
    /// Accepted entries in the segment.
    public var entries: Int = 0
}

/// One place where the bytes of a log are not what a writer wrote, or break a structural rule.
public struct LogDamage: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        /// A segment header that does not decode, or names another sequence.
        case segmentHeader = "segment-header"
        /// A segment file missing from the middle of the sequence.
        case missingSegment = "missing-segment"
        /// A record whose header or CRC is bad (bytes were changed or lost).
        case record
        /// A record whose CRC verifies but whose payload does not decode (written wrong).
        case payload
        /// A segment header whose acceptor state disagrees with the previous segment's records.
        case segmentState = "segment-state"
        /// The snapshot the log names is missing or does not verify.
        case snapshot
        /// A segment that later segments follow ends without its segment-end record: the records
        /// it held after that point were lost (zeroed or cut off).
        case unsealedSegment = "unsealed-segment"
        /// The identity file (`IDENTITY`) does not verify: which cluster and node the directory
        /// belongs to is unknown.
        case identity
    }

    public var kind: Kind
    /// Path of the damaged file (for a missing segment, the path it should have).
    public var file: String
    /// Byte offset in `file` of the damaged record or header.
    public var offset: Int64
    /// The record's type, when its header is readable enough to say.
    public var recordType: String?
    /// CRC stored in the file and CRC computed over its bytes, when a CRC check failed.
    public var expectedCRC: UInt32?
    public var actualCRC: UInt32?
    /// What is wrong, in words.
    public var reason: String
    /// Offset of the next valid record in the same file, where the scan resumed, if any.
    public var resumedAt: Int64?
    /// Bytes skipped from `offset` to `resumedAt` (or to the last non-zero byte of the file).
    public var skippedBytes: Int64
    /// For an accepted record whose only fault is its CRC: the slots its payload still appears to
    /// hold. Unverified (the CRC failed), but the best guess at what the damage cost.
    public var apparentSlots: ClosedRange<UInt64>?
}

/// An incomplete append at the end of the last segment: no valid record follows it.
public struct TornTail: Sendable, Hashable {
    public var file: String
    public var offset: Int64
    /// Non-zero bytes from `offset` to the last non-zero byte: what a cut saves to a side file.
    public var bytes: Int64
    public var reason: String
}

/// The acceptor state a replica would recover from the log's valid prefix.
public struct ReplayedState: Sendable, Hashable {
    public var promised: LogBallot?
    public var chosenThrough: UInt64?
    public var snapshotSlot: UInt64?
    /// Lowest and highest slot with a readable (latest) entry, and how many slots have one.
    public var firstSlot: UInt64?
    public var lastSlot: UInt64?
    public var entryCount: Int = 0
    /// Accepted entries later replaced by another accept for the same slot.
    public var supersededAccepts: Int = 0
    /// Slots between `firstSlot` and `lastSlot` with no entry, and the first of them.
    public var holes: UInt64 = 0
    public var firstHole: UInt64?
    /// Slots at or below the chosen watermark (and above the snapshot) without a local entry.
    public var chosenWithoutEntry: UInt64 = 0

    public init() {}
}
