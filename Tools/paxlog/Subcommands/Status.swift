import ArgumentParser
import Foundation
import Logging
import NIOPosix
import PaxosLog
import PaxosTransport

/// `paxlog status`: every member's view of the cluster, like `etcdctl endpoint status`.
///
/// Exit 0 when a leader exists and a majority of the members named are healthy (reachable, no
/// storage failure, following that leader); 1 otherwise; 2 for a usage error.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show each member's role, ballot, leader, positions, lag, snapshot, disk use and version.",
        discussion: """
        Asks every address in --cluster (their client ports), each on its own connection. Exit 0 \
        when a leader exists and a majority of the members named are healthy (reachable, storage \
        not failed, following that leader), 1 otherwise: usable as a health check.
        """
    )

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "Seconds to wait for each member.") var timeout: Double = 2
    @Flag(help: "One JSON object: {\"healthy\": …, \"leader\": …, \"members\": [...]}.") var json = false

    struct Member: Encodable {
        var address: String
        var reachable: Bool
        var error: String?
        var node: UInt32?
        var role: String?
        var leader: UInt32?
        var ballot: String?
        var ballotRound: UInt64?
        var ballotNode: UInt32?
        var chosenThrough: UInt64?
        var lastAccepted: UInt64?
        var lagBehindLeader: UInt64?
        var snapshotSlot: UInt64?
        var dataDirectoryBytes: Int?
        var failure: String?
        var version: String?
        /// Where the replica's client port is bound (as it reports it).
        var clientAddress: String?
        var healthy: Bool
    }

    struct Report: Encodable {
        var healthy: Bool
        var leader: UInt32?
        var healthyMembers: Int
        var members: [Member]
    }

    func run() async throws {
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        let base = try cluster.clientConfiguration()
        var members: [Member] = []
        await withTaskGroup(of: (Int, Member).self) { group in
            for (i, address) in base.addresses.enumerated() {
                var configuration = base
                configuration.addresses = [address]
                configuration.connectTimeout = .milliseconds(Int64(timeout * 1000))
                configuration.requestTimeout = .milliseconds(Int64(timeout * 1000))
                configuration.attemptTimeout = .milliseconds(Int64(timeout * 1000))
                configuration.maxRedirects = 0
                group.addTask { (i, await Self.ask(configuration, timeout: timeout)) }
            }
            var byIndex: [Int: Member] = [:]
            for await (i, m) in group { byIndex[i] = m }
            members = (0..<base.addresses.count).map { byIndex[$0]! }
        }
        let report = Self.assess(members)
        if json {
            print(jsonLine(report))
        } else {
            print(Self.table(report))
        }
        if !report.healthy { throw ExitCode(1) }
    }

    /// One member's status, or why it could not be had.
    static func ask(_ configuration: PaxosClientConfiguration, timeout: Double) async -> Member {
        let address = configuration.addresses[0].description
        let unreachable = { (why: String) in Member(address: address, reachable: false, error: why, healthy: false) }
        do {
            return try await withThrowingTaskGroup(of: Member?.self) { group in
                group.addTask {
                    let client = try await PaxosClient.connect(configuration: configuration, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "paxlog.status"))
                    defer { Task { await client.close() } }
                    let s = try await client.status()
                    let detail = { (key: String) in s.details.first { $0.key == key }?.value }
                    return Member(address: address, reachable: true, node: s.nodeID, role: detail("role"), leader: s.leaderID,
                                  ballot: "\(s.ballot)", ballotRound: s.ballot.round, ballotNode: s.ballot.node, chosenThrough: s.chosenThrough, lastAccepted: s.lastAccepted,
                                  snapshotSlot: detail("snapshot_slot").flatMap { UInt64($0) },
                                  dataDirectoryBytes: detail("data_directory_bytes").flatMap { Int($0) },
                                  failure: detail("failure"), version: detail("version"), clientAddress: detail("client_address"), healthy: false)
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                    return nil
                }
                let first = try await group.next()!
                group.cancelAll()
                return first ?? unreachable("no answer within \(timeout) s")
            }
        } catch {
            return unreachable("\(error)")
        }
    }

    /// Lag, health, and the verdict. The leader is the member that says it leads with the highest
    /// ballot (two can claim it briefly after an election; the older one is deposed).
    static func assess(_ members: [Member]) -> Report {
        var members = members
        let leader = members.filter { $0.reachable && $0.role == "leader" && $0.failure == nil }
            .max { ($0.ballotRound ?? 0, $0.ballotNode ?? 0) < ($1.ballotRound ?? 0, $1.ballotNode ?? 0) }
        for i in members.indices where members[i].reachable {
            if let leader, let lc = leader.chosenThrough, let c = members[i].chosenThrough {
                members[i].lagBehindLeader = lc > c ? lc - c : 0
            }
            members[i].healthy = members[i].failure == nil && leader != nil && members[i].leader == leader?.node
        }
        let healthy = members.filter(\.healthy).count
        return Report(healthy: leader != nil && healthy > members.count / 2, leader: leader?.node, healthyMembers: healthy, members: members)
    }

    static func table(_ report: Report) -> String {
        var rows = [["ADDRESS", "NODE", "ROLE", "LEADER", "BALLOT", "CHOSEN", "ACCEPTED", "LAG", "SNAPSHOT", "DATA", "VERSION", "STATE"]]
        for m in report.members {
            guard m.reachable else {
                rows.append([m.address, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "unreachable: \(m.error ?? "?")"])
                continue
            }
            let dash = { (v: (any CustomStringConvertible)?) in v.map { "\($0)" } ?? "-" }
            rows.append([m.address, dash(m.node), dash(m.role), dash(m.leader), dash(m.ballot), dash(m.chosenThrough), dash(m.lastAccepted),
                         dash(m.lagBehindLeader), dash(m.snapshotSlot), m.dataDirectoryBytes.map(byteCount) ?? "-", dash(m.version),
                         m.failure.map { "storage failed: \($0)" } ?? (m.healthy ? "ok" : "not following the leader")])
        }
        var lines = alignedColumns(rows)
        lines.append(report.healthy
            ? "healthy: leader \(report.leader!), \(report.healthyMembers) of \(report.members.count) members healthy"
            : "UNHEALTHY: \(report.leader.map { "leader \($0)" } ?? "no leader"), \(report.healthyMembers) of \(report.members.count) members healthy (a majority is \(report.members.count / 2 + 1))")
        return lines.joined(separator: "\n")
    }
}

private func byteCount(_ n: Int) -> String {
    n >= 1 << 30 ? String(format: "%.1f GiB", Double(n) / Double(1 << 30))
        : n >= 1 << 20 ? String(format: "%.1f MiB", Double(n) / Double(1 << 20)) : "\(n / 1024) KiB"
}
