import ArgumentParser

/// `paxlog`: inspect, verify, repair and compact PaxosLog data directories, run replicas, measure.
///
/// Exit codes: 0 success; 1 the check found a problem (e.g. `verify` found damage); 2 usage or
/// I/O error. Errors are one line on stderr.
@main
struct Paxlog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paxlog",
        abstract: "Inspect, verify, repair, compact and benchmark PaxosLog replicated write-ahead logs.",
        subcommands: [
            Serve.self,
            Append.self,
            Read.self,
            Demo.self,
            Bench.self,
            Compact.self,
            KVSnapshotter.self,
        ]
    )
}
