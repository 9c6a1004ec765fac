import ArgumentParser
import PaxosLogTesting
#if canImport(Glibc)
import Glibc
#endif

/// `paxlog bench core`: the consensus core alone (no storage, no sockets), to show it is never
/// the bottleneck. Build with `swift build -c release --product paxlog`.
///
/// Allocations are counted when the process runs with the counter in
/// `Benchmarks/alloc-counter/` preloaded (it wraps malloc/calloc/realloc/memalign and exports
/// `paxos_alloc_count`); otherwise they are reported as unavailable.
struct BenchCore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "core",
        abstract: "Throughput of the Multi-Paxos core: replicas on a fault-free simulated network, one thread."
    )

    @Option(help: "Replicas in the cluster.") var replicas = 3
    @Option(help: "Bytes per value.") var valueBytes = 64
    @Option(help: "Proposals per batch.") var batch = 256
    @Option(help: "Slots to choose in the measured run.") var slots = 4_000_000
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func run() throws {
        var bench = CoreBenchmark(replicas: replicas, valueBytes: valueBytes, batch: batch)
        // Warm up: caches, deque capacities.
        while bench.chosen < 100_000 { bench.step() }
        let start0 = bench.result
        let allocs0 = allocationCount()
        let clock = ContinuousClock()
        let t0 = clock.now
        while bench.chosen - start0.chosenSlots < slots { bench.step() }
        let elapsed = clock.now - t0
        let allocs1 = allocationCount()
        let r = bench.result
        let n = r.chosenSlots - start0.chosenSlots
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        let perSecond = Double(n) / seconds
        let allocsPerSlot = allocs0.flatMap { a0 in allocs1.map { Double($0 - a0) / Double(n) } }
        let msgs = r.messages - start0.messages
        if json {
            print("{\"scenario\":\"core\",\"replicas\":\(replicas),\"valueBytes\":\(valueBytes),\"batch\":\(batch),\"slots\":\(n),"
                + "\"seconds\":\(seconds),\"slotsPerSecond\":\(Int(perSecond)),\"messages\":\(msgs),"
                + "\"allocationsPerSlot\":\(allocsPerSlot.map { String($0) } ?? "null")}")
        } else {
            print("core: \(replicas) replicas, \(valueBytes) B values, batches of \(batch), one thread, no faults")
            print("  chosen slots    \(n) in \(String(format3(seconds))) s")
            print("  throughput      \(Int(perSecond)) slots/s")
            print("  messages        \(msgs) (\(format3(Double(msgs) / Double(n) * Double(batch))) per batch)")
            if let a = allocsPerSlot {
                print("  allocations     \(format3(a)) per slot (malloc+calloc+realloc+memalign, all replicas)")
            } else {
                print("  allocations     n/a: run with LD_PRELOAD=Benchmarks/alloc-counter/libpaxos_alloc_counter.so")
            }
        }
    }

    func format3(_ x: Double) -> String {
        let scaled = (x * 1000).rounded() / 1000
        return String(scaled)
    }

    /// Reads the preloaded allocation counter, if there is one.
    func allocationCount() -> Int? {
        #if canImport(Glibc)
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "paxos_alloc_count") else { return nil }
        typealias Fn = @convention(c) () -> UInt64
        return Int(unsafeBitCast(sym, to: Fn.self)())
        #else
        return nil
        #endif
    }
}
