// Segment recovery: the input becomes segment 1 of a fresh directory; `SegmentStore.open` must
// succeed or throw `SegmentLogError`, never trap or hang. A store that opened must reopen to the
// same state (recovery is idempotent), and every indexed slot must read back.
//
// Input: byte 0 is control. Bit 0: prepend a valid header for sequence 1 (else the rest is the
// whole file). Bit 1: rewrite each record's CRC to match, so mutations reach the decoders
// instead of stopping at the checksum. Bit 2: tolerant recovery instead of strict.
import FuzzSupport
import Logging
@testable import SegmentLog

#if canImport(Glibc)
import Glibc
#endif

let directory = fuzzDirectory("recovery")
let logger = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }

/// Removes everything in `directory` (it holds no subdirectories: the store makes none).
func empty() {
    guard let dir = opendir(directory) else { return }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { unlink(directory + "/" + name) }
    }
}

/// Sets every record CRC that the stored lengths reach to the value the sequence's mask gives.
func fixCRCs(_ file: inout [UInt8], sequence: UInt64) {
    file.withUnsafeMutableBytes { out in
        var p = Format.segmentHeaderSize
        while out.count - p >= Format.recordHeaderSize {
            let stored = Int(UnsafeRawBufferPointer(out).le(p + 4, as: UInt32.self))
            guard stored <= out.count - p - Format.recordHeaderSize else { return }
            let end = p + Format.recordHeaderSize + stored
            let crc = Format.crc(0, UnsafeRawBufferPointer(rebasing: out[(p + 4)..<end])) ^ Format.segmentMask(sequence)
            out.putLE(crc, at: p)
            p = end
        }
    }
}

func open(_ options: SegmentStore.Options) -> SegmentStore? {
    refusedAs(SegmentLogError.self, "open") { try SegmentStore.open(directory: directory, options: options, logger: logger) }
}

runFuzzer { input in
    guard let control = input.first else { return }
    var file = Array(input[1...])
    if control & 1 != 0 { file = SegmentHeader(sequence: 1).encoded() + file }
    if control & 2 != 0 { fixCRCs(&file, sequence: 1) }
    empty()
    let fd = Glibc.open(directory + "/" + Format.segmentFileName(1), O_CREAT | O_WRONLY | O_TRUNC, 0o644)
    fuzzCheck(fd >= 0, "create: errno \(errno)")
    fuzzCheck(file.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == file.count, "short write")
    close(fd)

    var options = SegmentStore.Options()
    options.segmentSize = 1 << 16
    options.preallocate = false
    options.commitThreadNice = nil
    options.recoveryMode = control & 4 != 0 ? .tolerant : .strict
    guard let store = open(options) else { return }
    let state = store.state
    if let first = state.firstSlot, let last = state.lastSlot {
        fuzzCheck(first <= last && UInt64(state.entryCount) <= last - first + 1, "index \(state)")
        do {
            let entries = try store.entries(from: first, through: last)
            fuzzCheck(entries.count == state.entryCount, "\(entries.count) entries read, \(state.entryCount) indexed")
        } catch {
            fuzzCheck(error is SegmentLogError, "read threw an untyped error: \(error)")
        }
    }
    do { try store.close() } catch { fatalError("close after a clean open threw \(error)") }

    options.recoveryMode = .strict
    guard let again = open(options) else { fatalError("a store that opened does not reopen") }
    fuzzCheck(again.state == state, "reopened as \(again.state), was \(state)")
    try? again.close()
}
