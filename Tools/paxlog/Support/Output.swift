import Foundation
import Histogram

/// Buffered stdout for high-rate line output (one line per record), safe from many tasks.
final class LineWriter: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer: [UInt8] = []

    func write(_ line: String) {
        lock.withLock {
            buffer.append(contentsOf: line.utf8)
            buffer.append(10)
            if buffer.count >= 1 << 16 { flushLocked() }
        }
    }

    func flush() { lock.withLock { flushLocked() } }

    private func flushLocked() {
        guard !buffer.isEmpty else { return }
        FileHandle.standardOutput.write(Data(buffer))
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Latency percentiles in microseconds, as the JSON outputs name them.
struct LatencySummary: Encodable {
    var p50: UInt64, p90: UInt64, p99: UInt64, p999: UInt64, max: UInt64

    init(_ h: Histogram<UInt64>) {
        p50 = h.valueAtPercentile(50); p90 = h.valueAtPercentile(90); p99 = h.valueAtPercentile(99)
        p999 = h.valueAtPercentile(99.9); max = h.max
    }

    var text: String { "p50 \(p50) µs  p90 \(p90) µs  p99 \(p99) µs  p99.9 \(p999) µs  max \(max) µs" }
}

/// Rows as aligned columns, two spaces apart; the last column is not padded (it may be long).
func alignedColumns(_ rows: [[String]]) -> [String] {
    guard let first = rows.first else { return [] }
    let widths = first.indices.map { c in rows.map { $0[c].count }.max()! }
    return rows.map { row in
        row.indices.map { $0 == row.count - 1 ? row[$0] : row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
}

func jsonLine(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: (try? encoder.encode(value)) ?? Data("{}".utf8), as: UTF8.self)
}

func newLatencyHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
}
