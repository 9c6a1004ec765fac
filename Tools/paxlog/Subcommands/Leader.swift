import ArgumentParser
import Foundation
import MultiPaxos
import PaxosTransport

/// `paxlog leader`: leadership of a running cluster.
struct Leader: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move leadership of a running cluster.",
        subcommands: [LeaderTransfer.self]
    )
}

/// `paxlog leader transfer`: hands leadership to a named member, e.g. before restarting the leader.
struct LeaderTransfer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transfer",
        abstract: "Hand leadership to member --to, or to the follower furthest along (for a rolling restart); print the new leader.",
        discussion: """
        Finds the leader through --cluster (followers redirect) and asks it to hand over: it stops \
        taking appends (clients are redirected and retry), waits until the target has everything \
        it assigned, and tells it to campaign. Without --to the target is the follower that has \
        acknowledged the most, as the leader sees it (`paxlog member list`). Exit 0 once the target leads; 1 when the transfer \
        was refused or did not happen (the target is not a member, or it did not take over within \
        an election timeout and the old leader leads on; the reason on stderr); 2 on usage errors \
        or when no replica could be reached.
        """
    )

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "The member to hand leadership to (default: the follower furthest along).") var to: UInt32?
    @Option(help: "Seconds the request may take, redirects and retries included (default 10).") var timeout: Double = 10
    @Flag(help: "One JSON object: {\"leader\": N}.") var json = false

    func validate() throws {
        guard to.map({ $0 > 0 }) ?? true else { throw ValidationError("--to must be a member id (≥ 1)") }
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be positive") }
    }

    func run() async throws {
        let client = try await cluster.connect(timeout: timeout, label: "paxlog.leader")
        let leader: NodeID
        var target = to
        do {
            if target == nil { target = try await Self.furthestFollower(client) }
            leader = try await client.transferLeadership(to: target!)
        } catch {
            await client.close()
            complain("leadership transfer to \(target.map { "node \($0)" } ?? "a follower") failed: \((error as? PaxosClientError)?.briefDescription ?? "\(error)")")
            throw ExitCode(1)
        }
        await client.close()
        print(json ? jsonLine(["leader": leader]) : "node \(leader) leads")
    }
}

extension LeaderTransfer {
    /// The follower that has acknowledged the most, as the leader sees it (ties: the lower id).
    static func furthestFollower(_ client: PaxosClient) async throws -> NodeID {
        let followers = try await client.members().filter { $0.role != .leader }
        guard let best = followers.max(by: { ($0.acknowledgedThrough ?? 0, $1.id) < ($1.acknowledgedThrough ?? 0, $0.id) }) else {
            throw CLIError("the cluster has no follower to hand leadership to")
        }
        return best.id
    }
}
