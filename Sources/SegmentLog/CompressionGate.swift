import Atomics

/// Stops trying LZ4 for a while after a payload did not compress well.
///
/// Compressing incompressible data (already-compressed or encrypted records, random benchmark
/// payloads) costs the full LZ4 pass for nothing: on a 3-replica cluster it was about 5% of all
/// CPU. After a frame saves less than 1/8 of its bytes, the next `skipAfterMiss` eligible frames
/// are stored raw without trying; compressible streams never miss, so they are unaffected.
/// Shared by the appenders of one store; races on the counter only shift when trying resumes.
final class CompressionGate: Sendable {
    static let skipAfterMiss = 16
    private let skipping = ManagedAtomic<Int>(0)

    /// Whether the next eligible frame should be compressed.
    func shouldTry() -> Bool {
        if skipping.load(ordering: .relaxed) <= 0 { return true }
        skipping.wrappingDecrement(ordering: .relaxed)
        return false
    }

    /// Records the outcome of one attempt; `packed` is 0 when LZ4 could not shrink it at all.
    func record(raw: Int, packed: Int) {
        if packed <= 0 || packed > raw - raw / 8 {
            skipping.store(Self.skipAfterMiss, ordering: .relaxed)
        }
    }
}
