import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import PaxosTransport

/// `paxlog read`: prints chosen entries from a replica.
struct Read: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print chosen entries from a slot on.",
        discussion: """
        By default a page comes from whichever replica --cluster leads to, and may be stale (a \\
        follower behind, a leader deposed without knowing it). With --linearizable every page \\
        reflects every append acknowledged before it was asked: the replica takes a read barrier \\
        from the leader (one replicated round) and waits until it has applied through it. Each \\
        page is retried at other replicas until --timeout. Exit 0 when every page was read, 1 \\
        when a read failed (the reason on stderr), 2 on usage errors or when no replica could be \\
        reached.
        """
    )

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "First slot.") var from: UInt64 = 1
    @Option(help: "At most this many entries (default: all chosen so far).") var count: Int?
    @Flag(help: "Reflect every append acknowledged before the read (a read barrier at the leader), not just what one replica has.") var linearizable = false
    @Option(help: "Seconds each page may take, retries included (default 10).") var timeout: Double = 10
    @Flag(help: "One JSON object per line: {\"slot\": N, \"value\": \"<base64>\"}.") var json = false

    func validate() throws {
        if let count, count < 0 { throw ValidationError("--count must be ≥ 0") }
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be positive") }
    }

    func run() async throws {
        let client = try await cluster.connect(timeout: timeout, label: "paxlog.read")
        let out = LineWriter()
        var next = Swift.max(from, 1)
        var remaining = count ?? Int.max
        let consistency: ReadConsistency = linearizable ? .linearizable : .local
        do {
            while remaining > 0 {
                let page = try await client.read(from: next, maxCount: UInt32(Swift.min(remaining, 4096)), consistency: consistency)
                for e in page.entries {
                    if json {
                        out.write("{\"slot\":\(e.slot),\"value\":\"\(Data(e.bytes).base64EncodedString())\"}")
                    } else {
                        out.write("\(e.slot)\t\(String(decoding: e.bytes, as: UTF8.self))")
                    }
                }
                remaining -= page.entries.count
                // Done once the page reached the log's end as the replica read it. (Not "until a
                // page is empty": each linearizable page's barrier adds a no-op to read next.)
                if page.isComplete || page.nextSlot <= next { break }
                next = page.nextSlot
            }
        } catch {
            out.flush()
            await client.close()
            complain("read from slot \(next) failed: \(error)")
            throw ExitCode(1)
        }
        out.flush()
        await client.close()
    }
}
