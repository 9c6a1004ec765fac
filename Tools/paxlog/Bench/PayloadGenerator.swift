/// The records a benchmark appends: `random` bytes (incompressible, the worst case for LZ4) or
/// `text`, realistic and compressible log lines. A pool of distinct records is made once up
/// front so generating them costs nothing during the measured run.
struct PayloadGenerator: Sendable {
    enum Kind: String, CaseIterable, Sendable { case random, text }

    let kind: Kind
    let size: Int
    private let pool: [[UInt8]]

    /// Most bytes the pool holds: 4,096 records of 1 MiB would be 4 GiB of the benchmark's own
    /// memory, which peak-RSS figures would then mostly measure.
    static let maxPoolBytes = 64 << 20

    init(kind: Kind, size: Int, poolSize: Int = 4096, seed: UInt64 = 0x5EED) {
        self.kind = kind
        self.size = size
        var rng = SplitMix(seed)
        let count = Swift.max(16, Swift.min(poolSize, Self.maxPoolBytes / Swift.max(size, 1)))
        pool = (0..<count).map { i in
            switch kind {
            case .random: return (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case .text: return Self.logLine(i, size: size, rng: &rng)
            }
        }
    }

    /// Record number `i` (records repeat every `poolSize`).
    func record(_ i: Int) -> [UInt8] { pool[i % pool.count] }

    /// Consecutive records concatenated to about `bytes`: what a group commit writes.
    func concatenated(bytes: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes + size)
        var i = 0
        while out.count < bytes {
            out += record(i)
            i += 1
            if size == 0 { break }
        }
        return out
    }

    /// An access-log-like line, padded with more key=value fields or cut to `size`.
    private static func logLine(_ i: Int, size: Int, rng: inout SplitMix) -> [UInt8] {
        let levels = ["INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"]
        let methods = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
        let paths = ["/api/v1/users", "/api/v1/orders", "/api/v2/search", "/static/app.js", "/healthz", "/api/v1/carts"]
        let statuses = [200, 200, 200, 201, 204, 304, 404, 500]
        func pick<T>(_ a: [T]) -> T { a[Int(rng.next() % UInt64(a.count))] }
        let ms = rng.next() % 1000
        let s = (i / 1000) % 60
        var line = "2025-11-22T21:\(pad2((i / 60_000) % 60)):\(pad2(s)).\(ms)Z \(pick(levels)) http req=\(String(rng.next() % 1_000_000_000, radix: 16)) "
            + "\(pick(methods)) \(pick(paths))/\(rng.next() % 100_000) status=\(pick(statuses)) dur_ms=\(rng.next() % 250) "
            + "client=10.\(rng.next() % 256).\(rng.next() % 256).\(rng.next() % 256)"
        let extras = ["user_agent=\"Mozilla/5.0 (X11; Linux x86_64)\"", "region=eu-west-1", "cache=miss", "cache=hit",
                      "bytes=\(rng.next() % 65536)", "trace=\(String(rng.next(), radix: 16))", "shard=\(rng.next() % 64)"]
        while line.utf8.count < size { line += " " + pick(extras) }
        return Array(line.utf8.prefix(size))
    }

    private static func pad2(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
}

/// A small deterministic generator, so every run appends the same records.
struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
