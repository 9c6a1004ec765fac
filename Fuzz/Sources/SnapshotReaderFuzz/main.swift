// The snapshot reader: the input becomes a snapshot file; `SnapshotFile.read` must return it or
// throw `SegmentLogError`, never trap. Round trip: a file made by `encodeHeader` + data reads
// back as that slot and data.
//
// Input: byte 0 is control. Bit 0: set the header's length and data CRC to match the data
// (the bytes after the 40-byte header); bit 1: set the header CRC; bit 2: name the file after
// the header's slot (else `snapshot-00000000000000000007.snap`).
import FuzzSupport
@testable import SegmentLog

#if canImport(Glibc)
import Glibc
#endif

let directory = fuzzDirectory("snapshot")
let fileSystem = PosixFileSystem()

func write(_ bytes: [UInt8], name: String) -> String {
    let path = directory + "/" + name
    let fd = Glibc.open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
    fuzzCheck(fd >= 0, "create: errno \(errno)")
    fuzzCheck(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count, "short write")
    close(fd)
    return path
}

func read(_ path: String, verifyData: Bool) -> SegmentStore.Snapshot? {
    refusedAs(SegmentLogError.self, "read") { try SnapshotFile.read(path: path, fileSystem: fileSystem, verifyData: verifyData) }
}

runFuzzer { input in
    guard let control = input.first else { return }
    var file = Array(input[1...])
    let header = Format.snapshotHeaderSize
    if file.count >= header {
        file.withUnsafeMutableBytes { out in
            let data = UnsafeRawBufferPointer(rebasing: out[header...])
            if control & 1 != 0 {
                out.putLE(UInt64(data.count), at: 24)
                out.putLE(Format.crc(0, data), at: 32)
            }
            if control & 2 != 0 { out.putLE(Format.crc(0, UnsafeRawBufferPointer(rebasing: out[0..<36])), at: 36) }
        }
    }
    var slot: UInt64 = 7
    if control & 4 != 0, file.count >= header { slot = file.withUnsafeBytes { $0.le(16) } }
    let path = write(file, name: Format.snapshotFileName(slot))
    let full = read(path, verifyData: true)
    let headerOnly = read(path, verifyData: false)
    if let full {
        fuzzCheck(headerOnly?.slot == full.slot, "the header check refuses a file the full read accepts")
        fuzzCheck(full.data == Array(file[header...]), "data read back differs from the file's")
    }
    unlink(path)

    // Round trip: any slot and data the header can name.
    let data = Array(file.dropFirst(min(file.count, 8)))
    let roundSlot: UInt64 = file.count >= 8 ? file.withUnsafeBytes { $0.le(0) } : 0
    let made = SnapshotFile.encodeHeader(slot: roundSlot, length: UInt64(data.count), dataCRC: data.withUnsafeBytes { Format.crc(0, $0) }) + data
    let madePath = write(made, name: Format.snapshotFileName(roundSlot))
    let back = read(madePath, verifyData: true)
    fuzzCheck(back == SegmentStore.Snapshot(slot: roundSlot, data: data), "round trip of slot \(roundSlot), \(data.count) bytes: \(String(describing: back))")
    unlink(madePath)
}
