import ArgumentParser

/// `paxlog bench SCENARIO`: throughput and latency, read against the machine's own limits.
///
/// `local`, `cluster` and `processes` share ``BenchOptions`` and print ``BenchReport``s (a table,
/// or one JSON object per scenario with `--json`); each measures ``MachineLimits`` first.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure throughput and latency.",
        subcommands: [BenchLocal.self, BenchCluster.self, BenchProcesses.self, BenchReads.self, BenchTransfer.self, BenchCore.self, BenchCompaction.self, BenchCrashWriter.self]
    )
}
