import SegmentLog

/// The deterministic workload of the SegmentLog crash test: the child process (`paxlog bench
/// crash-writer`) appends these entries and the test process checks them after each SIGKILL, so
/// both sides derive every value from the slot number alone.
public enum SegmentLogCrashWorkload {
    /// Segment size the crash test uses: small, so kills land during rolls too.
    public static let segmentSize = 64 << 10

    /// The entry the workload writes for `slot`: sizes from 0 B to 6 KiB, some compressible.
    public static func entry(_ slot: UInt64) -> LogEntry {
        let size: Int
        let compressible: Bool
        switch slot % 10 {
        case 0: size = 6000; compressible = true
        case 1: size = 0; compressible = false
        case 7: size = 2500; compressible = false
        default: size = Int(slot * 37 % 300); compressible = false
        }
        var bytes = [UInt8](repeating: 0, count: size)
        var x = slot &* 0x9E37_79B9_7F4A_7C15 | 1
        for i in 0..<size {
            if compressible {
                bytes[i] = UInt8(truncatingIfNeeded: (UInt64(i) / 16) &+ slot)
            } else {
                x ^= x << 13
                x ^= x >> 7
                x ^= x << 17
                bytes[i] = UInt8(truncatingIfNeeded: x)
            }
        }
        return LogEntry(slot: slot, ballot: LogBallot(round: slot / 100 + 1, node: 1), isNoop: false, payload: bytes)
    }

    /// Every 50th append also carries a promise of this ballot.
    public static func promise(_ slot: UInt64) -> LogBallot? {
        slot % 50 == 0 ? LogBallot(round: slot, node: 2) : nil
    }
}
