import ArgumentParser
import Foundation
import PaxosLog

/// `paxlog`: inspect, verify, repair and compact PaxosLog data directories, run replicas, measure.
///
/// Exit codes: 0 success; 1 the check found a problem (e.g. `verify` found damage); 2 usage or
/// I/O error. Errors are one line on stderr.
@main
struct Paxlog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paxlog",
        abstract: "Inspect, verify, repair, compact and benchmark PaxosLog replicated write-ahead logs.",
        version: PaxosLog.version,
        subcommands: [
            Init.self,
            Serve.self,
            Append.self,
            Read.self,
            Status.self,
            Member.self,
            Leader.self,
            Demo.self,
            Bench.self,
            Inspect.self,
            Dump.self,
            Verify.self,
            Repair.self,
            Compact.self,
            KVSnapshotter.self,
        ]
    )

    /// ArgumentParser's own `main`, except that usage errors exit 2 (its default is 64), so every
    /// subcommand keeps the exit-code contract above.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as CLIError {
            // One line on stderr, exit 2, as CLIError promises (ArgumentParser's default is
            // "Error: …" and 1, which scripts would take for a command's own verdict).
            FileHandle.standardError.write(Data("paxlog: \(error.description)\n".utf8))
            Foundation.exit(2)
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
