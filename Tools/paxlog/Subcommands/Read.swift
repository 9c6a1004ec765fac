import ArgumentParser
import Foundation
import Logging
import NIOPosix
import PaxosTransport

/// `paxlog read`: prints chosen entries from a replica.
struct Read: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print chosen entries from a slot on.")

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "First slot.") var from: UInt64 = 1
    @Option(help: "At most this many entries (default: all chosen so far).") var count: Int?
    @Flag(help: "One JSON object per line: {\"slot\": N, \"value\": \"<base64>\"}.") var json = false

    func run() async throws {
        let client: PaxosClient
        do {
            client = try await PaxosClient.connect(configuration: try cluster.clientConfiguration(), group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "paxlog.read"))
        } catch let e as TransportError {
            throw CLIError("cannot connect: \(e)")
        }
        defer { Task { await client.close() } }
        let out = LineWriter()
        var next = Swift.max(from, 1)
        var remaining = count ?? Int.max
        while remaining > 0 {
            let page = try await client.read(from: next, maxCount: UInt32(Swift.min(remaining, 4096)))
            for e in page.entries {
                if json {
                    out.write("{\"slot\":\(e.slot),\"value\":\"\(Data(e.bytes).base64EncodedString())\"}")
                } else {
                    out.write("\(e.slot)\t\(String(decoding: e.bytes, as: UTF8.self))")
                }
            }
            remaining -= page.entries.count
            if page.nextSlot <= next { break }  // nothing more is chosen yet
            next = page.nextSlot
        }
        out.flush()
    }
}
