import ArgumentParser

/// `paxlog bench SCENARIO`: throughput and latency, read against the machine's own limits.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure throughput and latency.",
        subcommands: [BenchLocal.self, BenchCore.self, BenchCrashWriter.self, BenchCompaction.self]
    )
}
