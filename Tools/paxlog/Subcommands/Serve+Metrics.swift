import ArgumentParser
import Logging
import Metrics
import MultiPaxos
import NIOConcurrencyHelpers
import PaxosLog
import Prometheus

extension Serve {
    /// Bootstraps swift-metrics with a Prometheus registry for this process's one replica and
    /// serves it on `address` (`HOST:PORT`) at `/metrics`.
    ///
    /// Metrics the library creates without a `node` dimension get this replica's id, so every
    /// series carries `node` and several replicas scraped into one Prometheus can be told apart.
    /// Call before opening the log: metrics created before the bootstrap go nowhere.
    /// - Returns: the endpoint, to shut down with the replica, and a hook to set the replica to
    ///   sample before each scrape.
    static func startMetrics(address: String, nodeID: NodeID, logger: Logger) async throws -> (MetricsEndpoint, NIOLockedValueBox<PaxosLog?>) {
        let parts = address.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count >= 2, let port = Int(parts.last!), (0...65535).contains(port) else {
            throw ValidationError("--metrics: '\(address)' is not HOST:PORT")
        }
        let host = parts.dropLast().joined(separator: ":")
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Appends and syncs take tens of microseconds to tens of milliseconds: the default buckets
        // (5 ms and up) would put nearly all of them in the first one.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .seconds(1), .seconds(10),
        ]
        factory.defaultValueHistogramBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
        let node = "\(nodeID)"
        factory.nameAndLabelSanitizer = { name, labels in
            labels.contains { $0.0 == "node" } ? (name, labels) : (name, labels + [("node", node)])
        }
        MetricsSystem.bootstrap(factory)
        let replica = NIOLockedValueBox<PaxosLog?>(nil)
        let endpoint: MetricsEndpoint
        do {
            endpoint = try await MetricsEndpoint.start(host: host, port: port, logger: logger) {
                await replica.withLockedValue { $0 }?.publishMetrics()
                return registry.emitToBuffer()
            }
        } catch {
            throw CLIError("--metrics: cannot listen on \(address): \(error)")
        }
        return (endpoint, replica)
    }
}
