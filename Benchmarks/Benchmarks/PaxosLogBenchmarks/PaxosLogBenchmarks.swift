// Hot-path microbenchmarks with allocation counts, so a regression shows up as a number.
//   cd Benchmarks && swift package benchmark
//   cd Benchmarks && swift package benchmark --filter "Accept.*"
import Benchmark
import CBenchLZ4
import CBenchZlib
import Foundation
import Logging
import MultiPaxos
import NIOCore
import PaxosLogTesting
import PaxosTransport
import SegmentLog

/// 256 B records, the size the throughput targets are stated in; random (incompressible) and
/// text (compressible log lines).
private func records(_ count: Int, size: Int = 256, text: Bool = false) -> [[UInt8]] {
    var state: UInt64 = 0x5EED
    func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    return (0..<count).map { i in
        if text {
            let line = "2025-11-22T21:00:\(i % 60)Z INFO http req=\(next() % 1_000_000) GET /api/v1/users/\(next() % 10_000) status=200 dur_ms=\(next() % 250) "
            return Array(String(repeating: line, count: size / line.utf8.count + 1).utf8.prefix(size))
        }
        return (0..<size).map { _ in UInt8(truncatingIfNeeded: next()) }
    }
}

private func acceptEnvelope(batch: Int) -> Envelope {
    let values = records(batch).map { Value.data($0) }
    return Envelope(from: 1, to: 2, message: .accept(Accept(ballot: Ballot(round: 7, node: 1), firstSlot: 1_000_000, values: values, chosenThrough: 999_999)))
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal, .peakMemoryResident],
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )

    // MARK: Wire codec: one Accept carrying a batch of 256 B values (replication's hot path).

    for batch in [1, 64, 512] {
        let envelope = acceptEnvelope(batch: batch)
        Benchmark("Accept encode, batch \(batch) × 256 B", configuration: .init(scalingFactor: .kilo)) { benchmark in
            var buffer = ByteBufferAllocator().buffer(capacity: MessageCodec.encodedSize(envelope))
            for _ in benchmark.scaledIterations {
                buffer.clear()
                MessageCodec.encode(envelope, into: &buffer)
                blackHole(buffer.readableBytes)
            }
        }
        var encoded = ByteBufferAllocator().buffer(capacity: 0)
        MessageCodec.encode(envelope, into: &encoded)
        Benchmark("Accept decode, batch \(batch) × 256 B", configuration: .init(scalingFactor: .kilo)) { benchmark in
            for _ in benchmark.scaledIterations {
                var copy = encoded
                blackHole(try MessageCodec.decode(&copy))
            }
        }
    }

    // MARK: Storage: a batch record encoded, CRC'd and written to the page cache (sync=never).

    for (batch, text) in [(1, false), (512, false), (512, true)] {
        let name = "Storage append, batch \(batch) × 256 B \(text ? "text" : "random"), sync=never"
        Benchmark(name, configuration: .init(scalingFactor: batch == 1 ? .kilo : .one)) { benchmark in
            let directory = NSTemporaryDirectory() + "/paxlog-microbench-\(UUID().uuidString)"
            var options = SegmentStore.Options(syncPolicy: .never)
            options.segmentSize = 256 << 20
            let store = try SegmentStore.open(directory: directory, options: options, logger: Logger(label: "microbench"))
            defer {
                try? store.close()
                try? FileManager.default.removeItem(atPath: directory)
            }
            let values = records(batch, text: text)
            var slot: UInt64 = 1
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                let entries = values.map { v -> LogEntry in
                    defer { slot += 1 }
                    return LogEntry(slot: slot, ballot: LogBallot(round: 1, node: 1), payload: v)
                }
                try await store.append([.accepted(entries)])
            }
            benchmark.stopMeasurement()
        }
    }

    // MARK: CRC32 (zlib) and LZ4 on 128 KiB of records, as one group commit writes them.

    for text in [false, true] {
        let sample = records(512, text: text).flatMap { $0 }
        let kind = text ? "text" : "random"
        Benchmark("CRC32 128 KiB \(kind)", configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal], scalingFactor: .one)) { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(sample.withUnsafeBufferPointer { crc32(0, $0.baseAddress, UInt32($0.count)) })
            }
        }
        var packed = [UInt8](repeating: 0, count: Int(LZ4_compressBound(Int32(sample.count))))
        var packedSize: Int32 = 0
        Benchmark("LZ4 compress 128 KiB \(kind)", configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal], scalingFactor: .one)) { benchmark in
            for _ in benchmark.scaledIterations {
                packedSize = sample.withUnsafeBytes { src in
                    packed.withUnsafeMutableBytes { dst in
                        LZ4_compress_default(src.baseAddress!.assumingMemoryBound(to: CChar.self), dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                             Int32(src.count), Int32(dst.count))
                    }
                }
            }
            blackHole(packedSize)
        }
        let compressed = sample.withUnsafeBytes { src in
            packed.withUnsafeMutableBytes { dst in
                Array(UnsafeRawBufferPointer(start: dst.baseAddress, count: Int(LZ4_compress_default(
                    src.baseAddress!.assumingMemoryBound(to: CChar.self), dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                    Int32(src.count), Int32(dst.count)))))
            }
        }
        var out = [UInt8](repeating: 0, count: sample.count)
        Benchmark("LZ4 decompress 128 KiB \(kind)", configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal], scalingFactor: .one)) { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(compressed.withUnsafeBytes { src in
                    out.withUnsafeMutableBytes { dst in
                        LZ4_decompress_safe(src.baseAddress!.assumingMemoryBound(to: CChar.self), dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                            Int32(src.count), Int32(dst.count))
                    }
                })
            }
        }
    }

    // MARK: The consensus core: 3 replicas on a fault-free simulated network, batches of 256.
    // One iteration = one round of the simulation; throughput in rounds, allocations per round.

    Benchmark("Consensus core, 3 replicas, 256 B × batch 256, one round", configuration: .init(scalingFactor: .kilo)) { benchmark in
        var bench = CoreBenchmark(replicas: 3, valueBytes: 256, batch: 256)
        while bench.chosen < 50_000 { bench.step() }
        let before = bench.chosen
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { bench.step() }
        benchmark.stopMeasurement()
        blackHole(bench.chosen - before)
    }
}
