import CLZ4
import CZlib
import Foundation

/// The machine's own limits, measured in the same run as the scenarios so every figure can be
/// read as a fraction of what the disk and one core can do at that moment (the machine is shared:
/// a figure from another hour says little).
///
/// - `fdatasync_per_second`: 4 KiB appends to a preallocated file on the benchmark's file system,
///   each followed by `fdatasync`: the ceiling on group commits per second.
/// - `seq_write_mb_per_second`: 1 MiB `write`s to a new file and one `fdatasync` at the end.
/// - `lz4_*_mb_per_second`, `crc32_gb_per_second`: one core, on a buffer made of the benchmark's
///   own records (so random records show LZ4's incompressible speed and text its usual one).
struct MachineLimits: Codable, Sendable {
    var fdatasync_per_second: Double
    var seq_write_mb_per_second: Double
    var lz4_compress_mb_per_second: Double
    var lz4_decompress_mb_per_second: Double
    var crc32_gb_per_second: Double
    /// LZ4 ratio (raw ÷ compressed) of the payload buffer: what compression could at best save.
    var lz4_ratio_of_payload: Double
    var seconds_measuring: Double

    /// Measures every limit; about 3 s on an idle machine.
    /// - Parameters:
    ///   - directory: a directory on the file system the scenarios write to (a temporary file is
    ///     created and removed there).
    ///   - payload: records as the benchmark generates them.
    static func measure(directory: String, payload: PayloadGenerator) throws -> MachineLimits {
        let t0 = monotonicSeconds()
        let sample = payload.concatenated(bytes: 1 << 20)
        let fsyncs = try fdatasyncRate(directory: directory, seconds: 1.0)
        let seq = try sequentialWriteRate(directory: directory, bytes: 128 << 20)
        let (compress, decompress, ratio) = lz4Rates(sample)
        return MachineLimits(
            fdatasync_per_second: fsyncs, seq_write_mb_per_second: seq,
            lz4_compress_mb_per_second: compress, lz4_decompress_mb_per_second: decompress,
            crc32_gb_per_second: crc32Rate(sample), lz4_ratio_of_payload: ratio,
            seconds_measuring: monotonicSeconds() - t0
        )
    }

    /// 4 KiB `pwrite` + `fdatasync` pairs at increasing offsets of a preallocated 16 MiB file.
    static func fdatasyncRate(directory: String, seconds: Double) throws -> Double {
        let path = directory + "/limits-fdatasync.tmp"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CLIError("cannot create \(path): errno \(errno)") }
        defer { close(fd); unlink(path) }
        let fileSize = 16 << 20
        if posix_fallocate(fd, 0, off_t(fileSize)) != 0 { _ = ftruncate(fd, off_t(fileSize)) }
        fsync(fd)
        let page = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { page.deallocate() }
        page.initializeMemory(as: UInt8.self, repeating: 0x5A, count: 4096)
        let start = monotonicSeconds()
        var n = 0
        while monotonicSeconds() - start < seconds {
            let offset = (n * 4096) % fileSize
            guard pwrite(fd, page, 4096, off_t(offset)) == 4096, fdatasync(fd) == 0 else {
                throw CLIError("fdatasync measurement failed in \(directory): errno \(errno)")
            }
            n += 1
        }
        return Double(n) / (monotonicSeconds() - start)
    }

    /// `bytes` written in 1 MiB `write`s to a new file, then one `fdatasync`; the time includes it.
    static func sequentialWriteRate(directory: String, bytes: Int) throws -> Double {
        let path = directory + "/limits-seqwrite.tmp"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CLIError("cannot create \(path): errno \(errno)") }
        defer { close(fd); unlink(path) }
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        for i in 0..<chunk { buffer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 7), toByteOffset: i, as: UInt8.self) }
        let start = monotonicSeconds()
        var written = 0
        while written < bytes {
            let n = write(fd, buffer, chunk)
            guard n > 0 else { throw CLIError("sequential write measurement failed: errno \(errno)") }
            written += n
        }
        guard fdatasync(fd) == 0 else { throw CLIError("fdatasync failed: errno \(errno)") }
        return Double(written) / 1e6 / (monotonicSeconds() - start)
    }

    /// Compress and decompress `sample` repeatedly for at least 0.25 s each.
    static func lz4Rates(_ sample: [UInt8]) -> (compress: Double, decompress: Double, ratio: Double) {
        let bound = Int(LZ4_compressBound(Int32(sample.count)))
        var packed = [UInt8](repeating: 0, count: bound)
        var unpacked = [UInt8](repeating: 0, count: sample.count)
        var packedSize: Int32 = 0
        let compress = repeatFor(seconds: 0.25, bytesPerRound: sample.count) {
            packedSize = sample.withUnsafeBytes { src in
                packed.withUnsafeMutableBytes { dst in
                    LZ4_compress_default(src.baseAddress!.assumingMemoryBound(to: CChar.self), dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                         Int32(src.count), Int32(dst.count))
                }
            }
        }
        let decompress = repeatFor(seconds: 0.25, bytesPerRound: sample.count) {
            _ = packed.withUnsafeBytes { src in
                unpacked.withUnsafeMutableBytes { dst in
                    LZ4_decompress_safe(src.baseAddress!.assumingMemoryBound(to: CChar.self), dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                        packedSize, Int32(dst.count))
                }
            }
        }
        precondition(unpacked == sample, "LZ4 round trip of the limits sample failed")
        return (compress, decompress, Double(sample.count) / Double(max(packedSize, 1)))
    }

    /// zlib `crc32` over `sample`, in GB/s.
    static func crc32Rate(_ sample: [UInt8]) -> Double {
        var crc: UInt = 0
        let mbps = repeatFor(seconds: 0.25, bytesPerRound: sample.count) {
            crc = sample.withUnsafeBufferPointer { CZlib.crc32(crc, $0.baseAddress, UInt32($0.count)) }
        }
        withExtendedLifetime(crc) {}
        return mbps / 1000
    }

    /// Runs `body` until `seconds` have passed (at least 4 rounds); returns MB/s.
    private static func repeatFor(seconds: Double, bytesPerRound: Int, _ body: () -> Void) -> Double {
        body()  // warm up
        let start = monotonicSeconds()
        var rounds = 0
        while rounds < 4 || monotonicSeconds() - start < seconds {
            body()
            rounds += 1
        }
        return Double(rounds * bytesPerRound) / 1e6 / (monotonicSeconds() - start)
    }

    var text: String {
        String(format: "fdatasync %.0f/s · seq write %.0f MB/s · LZ4 %.0f / %.0f MB/s (ratio %.2f) · CRC32 %.2f GB/s",
               fdatasync_per_second, seq_write_mb_per_second, lz4_compress_mb_per_second, lz4_decompress_mb_per_second,
               lz4_ratio_of_payload, crc32_gb_per_second)
    }
}

func monotonicSeconds() -> Double {
    Double(monotonicNanoseconds()) / 1e9
}

func monotonicNanoseconds() -> UInt64 {
    DispatchTime.now().uptimeNanoseconds
}
