import ArgumentParser
import Foundation
import PaxosTransport

/// `paxlog member`: the cluster's membership. Only `list` exists: membership is fixed for the
/// life of a cluster until membership change is built.
struct Member: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the cluster's members.",
        subcommands: [MemberList.self]
    )
}

/// `paxlog member list`: every member's addresses, role and positions, as the leader sees them.
struct MemberList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List every member: id, addresses, role, and how far it has acknowledged and learned the log.",
        discussion: """
        Asks the leader (a follower in --cluster redirects there). Positions are the leader's \
        view: ACKNOWLEDGED is the last slot through which the member has accepted everything the \
        leader assigned, CHOSEN its chosen watermark as its last heartbeat reply reported it (the \
        leader's own row: its own). While no leader is known a replica answers its own list, \
        without positions. Exit 0 when a list was had, 1 when the request failed (the reason on \
        stderr), 2 on usage errors or when no replica could be reached.
        """
    )

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "Seconds the request may take, retries included (default 10).") var timeout: Double = 10
    @Flag(help: "One JSON object: {\"answeredBy\": …, \"leader\": …, \"members\": [...]}.") var json = false

    struct Row: Encodable {
        var id: UInt32
        var address: String
        var clientAddress: String
        var role: String
        var isVoter: Bool
        /// Absent when the answering replica does not lead (and for rows not its own).
        var acknowledgedThrough: UInt64?
        var chosenThrough: UInt64?
    }

    struct Report: Encodable {
        /// The replica whose view this is (the leader, if one is known).
        var answeredBy: UInt32?
        var leader: UInt32?
        var members: [Row]
    }

    func validate() throws {
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be positive") }
    }

    func run() async throws {
        let client = try await cluster.connect(timeout: timeout, label: "paxlog.member")
        let members: [MemberStatus]
        do {
            members = try await client.members()
        } catch {
            await client.close()
            complain("member list failed: \(error.briefDescription)")
            throw ExitCode(1)
        }
        await client.close()
        let report = Report(
            answeredBy: members.first(where: \.isSelf)?.id, leader: members.first { $0.role == .leader }?.id,
            members: members.map {
                Row(id: $0.id, address: "\($0.peerAddress)", clientAddress: "\($0.clientAddress)", role: "\($0.role)",
                    isVoter: true /* no learners yet */, acknowledgedThrough: $0.acknowledgedThrough, chosenThrough: $0.chosenThrough)
            })
        print(json ? jsonLine(report) : Self.table(report))
    }

    static func table(_ report: Report) -> String {
        let dash = { (v: UInt64?) in v.map { "\($0)" } ?? "-" }
        var rows = [["ID", "ADDRESS", "CLIENT ADDRESS", "ROLE", "ACKNOWLEDGED", "CHOSEN"]]
        for m in report.members {
            rows.append(["\(m.id)", m.address, m.clientAddress, m.role, dash(m.acknowledgedThrough), dash(m.chosenThrough)])
        }
        var lines = alignedColumns(rows)
        let by = report.answeredBy.map { "node \($0)" } ?? "a replica"
        lines.append(report.leader != nil && report.leader == report.answeredBy
            ? "positions as leader \(report.leader!) sees them; every member is a voter"
            : "no leader known to \(by): positions are unknown; every member is a voter")
        return lines.joined(separator: "\n")
    }
}

extension PaxosClientError {
    /// The server's own words when it refused the request (they say why), else the whole error.
    var briefDescription: String {
        if code == .rejected, let server = serverError { return server.message }
        return description
    }
}
