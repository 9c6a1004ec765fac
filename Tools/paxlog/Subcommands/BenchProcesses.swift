import ArgumentParser
import Atomics
import Foundation
import Logging
import MultiPaxos
import NIOCore
import PaxosLogTesting
import PaxosTransport

/// `paxlog bench processes`: three `paxlog serve` processes on loopback, and this process as the
/// load generator (``AppendLoad``, the client protocol over TCP): the deployment a database sees.
/// The replicas' CPU is read from `getrusage(RUSAGE_CHILDREN)` once they have exited.
struct BenchProcesses: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "processes",
        abstract: "Replicated append throughput and latency: 3 `paxlog serve` processes plus this load process."
    )

    @OptionGroup var options: BenchOptions
    @Option(help: "Replicas.") var replicas = 3
    @Option(help: "Clients (one connection each) the load spreads its streams over; a database links one.") var connections = 1
    @Option(help: "Append requests each client keeps in flight (its appendRequestsInFlight).") var requestsInFlight = 1
    @Flag(help: "Mutual TLS 1.3 between the replicas and TLS (with a client certificate) to the client port; certificates made with openssl in the bench directory.")
    var tls = false

    func validate() throws {
        if connections < 1 { throw ValidationError("--connections must be ≥ 1") }
        if requestsInFlight < 1 { throw ValidationError("--requests-in-flight must be ≥ 1") }
    }

    func run() async throws {
        let (base, created) = try options.makeDirectory()
        defer { if created && !options.keep { try? FileManager.default.removeItem(atPath: base) } }
        let limits = try options.measureLimits(in: base)
        let payload = options.payloadGenerator()
        let executable = try Self.ownExecutable()
        var reports: [BenchReport] = []
        let logger = Logger(label: "paxlog.bench")

        for concurrency in options.concurrencies! {
            let directory = "\(base)/processes-c\(concurrency)"
            try? FileManager.default.removeItem(atPath: directory)
            let cluster = try LocalCluster(
                executable: executable, size: replicas, baseDirectory: directory, clusterName: "paxlog-bench",
                extraArguments: ["--sync", options.sync, "--compression", options.compression, "--log-level", "warning"]
            )
            var clientTLS: TLSCredentials? = nil
            if tls { clientTLS = try Self.useTLS(cluster, directory: directory) }
            let children0 = ResourceUsage.children
            try cluster.startAll()
            let leader: NodeID
            do {
                leader = try await cluster.waitForLeader(timeout: 30)
            } catch {
                cluster.terminateAll()
                throw error
            }
            BenchProgress.note("processes c=\(concurrency): node \(leader) leads")
            var addresses = cluster.clientAddresses
            addresses.swapAt(0, Int(leader) - 1)
            var client = PaxosClientConfiguration(addresses: addresses, clusterName: cluster.clusterName)
            client.appendRequestsInFlight = requestsInFlight
            client.tls = clientTLS
            // Warm-up: connections and the first Accepts stay out of the figures.
            _ = try await AppendLoad(configuration: client, concurrency: 1, batch: 1).run(.payload(payload, count: 1)) { _, _ in }

            let before = await Self.storage(cluster, logger: logger)
            let loadBefore = BenchReport.loadAverage()
            let usage0 = ResourceUsage.current()
            let done = ManagedAtomic<Int>(0)
            let progress = BenchProgress.start(label: "processes c=\(concurrency)", total: options.recordCount, duration: options.duration, done: done)
            var load = AppendLoad(configuration: client, concurrency: concurrency, batch: 1)
            load.connections = connections
            load.deadline = options.duration.map { .now() + .nanoseconds(Int64($0 * 1e9)) }
            let count = options.recordCount ?? Int.max / 2
            let result = try await load.run(.payload(payload, count: count)) { _, _ in done.wrappingIncrement(ordering: .relaxed) }
            progress.cancel()
            let usage1 = ResourceUsage.current()
            let after = await Self.storage(cluster, logger: logger)
            cluster.terminateAll()
            let children1 = ResourceUsage.children
            if result.summary.failed > 0 {
                BenchProgress.note("processes c=\(concurrency): \(result.summary.failed) appends failed: \(result.errors.sorted { $0.value > $1.value }.prefix(3))")
            }

            var storage = StorageTotals()
            var details: [String: Double] = ["leader": Double(leader), "failed": Double(result.summary.failed)]
            for id in before.keys.sorted() {
                guard let b = before[id], let a = after[id] else { continue }
                let d = a - b
                storage = storage + d
                details["node\(id)_fsyncs"] = Double(d.fsyncs)
                details["node\(id)_group_commits"] = Double(d.groupCommits)
            }
            let leaderCommits = before[leader].flatMap { b in after[leader].map { ($0 - b).groupCommits } } ?? 0
            let loadCPU = usage1.cpuSeconds - usage0.cpuSeconds
            let replicaCPU = children1.cpuSeconds - children0.cpuSeconds
            details["replicas_cpu_seconds"] = replicaCPU
            details["replicas_peak_rss_mb"] = children1.peakRSSMB
            details["requests_in_flight"] = Double(requestsInFlight)
            details["tls"] = tls ? 1 : 0
            let usage = ResourceUsage(cpuSeconds: loadCPU + replicaCPU, peakRSSMB: max(children1.peakRSSMB, usage1.peakRSSMB))
            let report = BenchReport(
                scenario: tls ? "processes-tls" : "processes", replicas: replicas, concurrency: concurrency, options: options,
                load: ClosedLoop.Result(records: result.summary.acknowledged, seconds: result.seconds, histogram: result.histogram),
                storage: storage, leaderGroupCommits: leaderCommits, usage: usage, loadCPUSeconds: loadCPU, limits: limits,
                loadBefore: loadBefore, details: details
            )
            BenchReport.emit(report, json: options.json)
            reports.append(report)
            if !options.keep { try? FileManager.default.removeItem(atPath: directory) }
        }
        if !options.json {
            BenchReport.printTable(reports, limits: limits)
            for r in reports {
                print(String(format: "  processes c=%d: load generator %.1f s CPU, replicas %.1f s CPU (whole life, incl. start-up)",
                             r.concurrency, r.load_cpu_seconds, r.details["replicas_cpu_seconds"] ?? 0))
            }
            if options.keep { print("logs kept in \(base)") }
        }
    }

    /// Each running replica's storage counters, from its status details.
    static func storage(_ cluster: LocalCluster, logger: Logger) async -> [NodeID: StorageTotals] {
        var out: [NodeID: StorageTotals] = [:]
        for n in cluster.nodes {
            guard let s = try? await cluster.status(n.id, logger: logger) else { continue }
            var d: [String: String] = [:]
            for detail in s.details { d[detail.key] = detail.value }
            out[n.id] = StorageTotals(details: d)
        }
        return out
    }

    /// Makes a CA and a certificate per replica (and one for the load's client) in `directory`,
    /// has every replica serve with them (client certificates required), and returns the client's.
    static func useTLS(_ cluster: LocalCluster, directory: String) throws -> TLSCredentials {
        let ca = try TestCertificateAuthority(name: "bench-ca", directory: "\(directory)/tls")
        for n in cluster.nodes {
            let issued = try ca.issue(node: n.id, file: "node-\(n.id)")
            cluster.nodeArguments[n.id] = ["--tls-cert", issued.certificate, "--tls-key", issued.privateKey, "--tls-ca", ca.certificate,
                                           "--tls-require-client-cert", "yes"]
        }
        let client = try ca.issue(node: nil, file: "client")
        let credentials = try TLSCredentials(files: TLSFiles(certificate: client.certificate, privateKey: client.privateKey, certificateAuthority: ca.certificate), nodeID: nil)
        cluster.clientTLS = credentials
        return credentials
    }

    /// This `paxlog` binary, to start the replicas with.
    static func ownExecutable() throws -> String {
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        guard FileManager.default.isExecutableFile(atPath: path) else { throw CLIError("cannot find the paxlog executable (\(path))") }
        return path
    }
}
