import Foundation
import Logging
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PaxosLogTesting
import PaxosTransport
import Testing

/// What an operator runs: mutual TLS between real `paxlog serve` processes, certificate rotation
/// by SIGHUP under load, `/metrics`, `paxlog status`, and a clean SIGTERM.
@Suite(.serialized) struct OperationsProcessTests {
    @Test func mutualTLSClusterServesMetricsStatusRotatesAndStopsCleanly() async throws {
        let base = NSTemporaryDirectory() + "paxoslog-e2e-ops-certs-\(getpid())"
        let ca = try TestCertificateAuthority(name: "ca", directory: base)
        let client = try ca.issue(node: nil, file: "client")
        let metricsPorts = try LocalCluster.freePorts(3)
        try await withCluster("ops") { cluster in
            for n in cluster.nodes {
                let issued = try ca.issue(node: n.id, file: "node-\(n.id)")
                cluster.nodeArguments[n.id] = ["--tls-cert", issued.certificate, "--tls-key", issued.privateKey, "--tls-ca", ca.certificate,
                                               "--tls-require-client-cert", "yes", "--metrics", "127.0.0.1:\(metricsPorts[Int(n.id) - 1])"]
            }
            cluster.clientTLS = try TLSCredentials(files: TLSFiles(certificate: client.certificate, privateKey: client.privateKey, certificateAuthority: ca.certificate), nodeID: nil)
            try cluster.startAll()
            let firstLeader = try await cluster.waitForLeader()
            let clusterArgs = ["--cluster", cluster.clientAddresses.map(\.description).joined(separator: ","), "--cluster-name", cluster.clusterName]
            let tlsArgs = ["--tls-ca", ca.certificate, "--tls-cert", client.certificate, "--tls-key", client.privateKey]

            // Appends under load while every replica's certificate is re-issued and reloaded.
            let load = Load()
            let running = Task { await load.run(cluster, streams: 4, tag: "tls") }
            try await eventually("appends over TLS") { load.ackCount >= 50 }
            for n in cluster.nodes {
                _ = try ca.issue(node: n.id, file: "node-\(n.id)")  // same paths, new certificate and key
                cluster.signal(n.id, SIGHUP)
            }
            try await eventually("every replica reloaded") {
                cluster.nodes.allSatisfy { (try? String(contentsOfFile: $0.logFile, encoding: .utf8))?.contains("TLS certificates reloaded") ?? false }
            }
            // Connections opened after the reload use the new certificates: restart a follower.
            let follower = cluster.nodes.first { $0.id != firstLeader }!.id
            _ = cluster.terminate(follower)
            try cluster.start(follower)
            let before = load.ackCount
            try await eventually("appends after the rotation") { load.ackCount >= before + 50 }

            // A client without a certificate is refused (the replicas require one).
            let noCert = try runPaxlog(["status"] + clusterArgs + ["--tls-ca", ca.certificate, "--json"])
            #expect(noCert.status == 1, "status without a client certificate: \(noCert)")

            // `paxlog status`: JSON for scripts, exit 0 with a leader and a healthy majority (the
            // restart may have moved leadership: wait for whoever leads to be followed).
            var status = try runPaxlog(["status"] + clusterArgs + tlsArgs + ["--json"])
            try await eventually("a leader followed by a majority") {
                status = (try? runPaxlog(["status"] + clusterArgs + tlsArgs + ["--json"])) ?? status
                return status.status == 0
            }
            let report = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
            #expect(report["healthy"] as? Bool == true)
            let leader = NodeID(try #require(report["leader"] as? Int))
            #expect(await cluster.leader() == leader)
            let members = try #require(report["members"] as? [[String: Any]])
            #expect(members.count == 3)
            for m in members {
                #expect(m["reachable"] as? Bool == true)
                #expect(m["version"] as? String != nil)
                #expect((m["dataDirectoryBytes"] as? Int ?? 0) > 0)
                #expect(m["lagBehindLeader"] != nil)
            }
            #expect(members.filter { $0["role"] as? String == "leader" }.count == 1)
            let table = try runPaxlog(["status"] + clusterArgs + tlsArgs)
            #expect(table.status == 0 && table.stdout.contains("healthy: leader \(leader)"), "\(table.stdout)")

            // `/metrics` on the leader: Prometheus text with the node label.
            let text = try await httpGet(port: metricsPorts[Int(leader) - 1], path: "/metrics")
            #expect(statusLine(text).hasSuffix(" 200 OK"), "\(text.prefix(200))")
            let node = "node=\"\(leader)\""
            for name in ["paxoslog_appended_records_total", "paxoslog_append_duration_seconds_bucket", "paxoslog_fsync_duration_seconds_bucket",
                         "paxoslog_group_commit_appends_bucket", "paxoslog_chosen_slots_total", "paxoslog_storage_written_bytes_total",
                         "paxoslog_ballot_round", "paxoslog_data_directory_bytes", "paxoslog_storage_failed", "paxoslog_refused_handshakes_total",
                         "paxoslog_malformed_frames_total", "paxoslog_snapshot_transfers_sending",
                         "paxoslog_snapshot_transfers_started_total", "paxoslog_snapshot_transfers_finished_total", "paxoslog_follower_lag_slots"] {
                #expect(text.split(separator: "\n").contains { $0.hasPrefix(name) && $0.contains(node) }, "\(name){\(node)} missing")
            }
            // Histograms exist from the start: they must also have observations.
            for series in ["paxoslog_fsync_duration_seconds_count", "paxoslog_append_duration_seconds_count", "paxoslog_group_commit_appends_count",
                           "paxoslog_appended_records_total", "paxoslog_chosen_slots_total", "paxoslog_storage_written_bytes_total"] {
                #expect(sample(text, series, node: leader) ?? 0 > 0, "\(series){\(node)} has no observations")
            }
            #expect(sample(text, "paxoslog_storage_failed", node: leader) == 0)
            #expect(text.contains("paxoslog_is_leader{node=\"\(leader)\"} 1"), "leader gauge")
            #expect(text.contains("paxoslog_role{node=\"\(leader)\",role=\"leader\"} 1") || text.contains("paxoslog_role{role=\"leader\",node=\"\(leader)\"} 1"), "role gauge")
            // The refused certificate-less client was counted on the client port of the one it reached first.
            let refused = try await (1...3).asyncMap { try await httpGet(port: metricsPorts[$0 - 1], path: "/metrics") }
                .flatMap { $0.split(separator: "\n") }.filter { $0.hasPrefix("paxoslog_refused_handshakes_total") && $0.contains("port=\"client\"") }
                .compactMap { Double($0.split(separator: " ").last!) }.reduce(0, +)
            #expect(refused >= 1)
            #expect(statusLine(try await httpGet(port: metricsPorts[0], path: "/nope")).hasSuffix(" 404 Not Found"))

            load.stop()
            await running.value
            let top = load.acks.withLockedValue { $0 }.map(\.slot).max() ?? 0
            for n in cluster.nodes { try await eventually("node \(n.id) catching up") { await chosenThrough(cluster, n.id) >= top } }
            // SIGTERM: a clean shutdown, exit 0, said in the log.
            #expect(cluster.terminate(follower) == 0)
            let log = try String(contentsOfFile: cluster.node(follower).logFile, encoding: .utf8)
            #expect(log.contains("shut down cleanly"))
            // Two of three down: no healthy majority, exit 1.
            let other = cluster.nodes.first { $0.id != leader && $0.id != follower }!.id
            cluster.kill(other)
            let unhealthy = try runPaxlog(["status"] + clusterArgs + tlsArgs + ["--timeout", "1"])
            #expect(unhealthy.status == 1, "\(unhealthy)")
            #expect(unhealthy.stdout.contains("UNHEALTHY"), "\(unhealthy.stdout)")
            try verifyOffline(cluster, load.acks.withLockedValue { $0 })
        }
        try? FileManager.default.removeItem(atPath: base)
    }
}

/// The value of the series `name` with label `node="N"` (and no other label) in a Prometheus text exposition.
func sample(_ text: String, _ name: String, node: NodeID) -> Double? {
    let prefix = "\(name){node=\"\(node)\"} "
    return text.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Double($0.dropFirst(prefix.count)) }
}

/// The first line of an HTTP response.
func statusLine(_ response: String) -> String { response.components(separatedBy: "\r\n").first ?? "" }

/// The whole HTTP/1.0 response (status line, headers, body) to `GET path` on 127.0.0.1:port.
func httpGet(port: Int, path: String) async throws -> String {
    let collected = NIOLockedValueBox<[UInt8]>([])
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(collected)) }
        }
        .connect(host: "127.0.0.1", port: port).get()
    try await channel.writeAndFlush(ByteBuffer(string: "GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")).get()
    try await channel.closeFuture.get()
    return String(decoding: collected.withLockedValue { $0 }, as: UTF8.self)
}

private final class Collector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let bytes: NIOLockedValueBox<[UInt8]>
    init(_ bytes: NIOLockedValueBox<[UInt8]>) { self.bytes = bytes }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytes.withLockedValue { $0 += buffer.readableBytesView }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await transform(e)) }
        return out
    }
}
