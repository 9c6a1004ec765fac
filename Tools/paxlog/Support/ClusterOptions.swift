import ArgumentParser
import Foundation
import Logging
import NIOPosix
import PaxosTransport

/// Options every client command shares: where the cluster is and how to prove membership.
struct ClusterOptions: ParsableArguments {
    @Option(name: .customLong("cluster"), help: "Client addresses of the replicas: HOST:PORT[,HOST:PORT…].")
    var addresses: String

    @Option(name: .customLong("cluster-name"), help: "The cluster's name (must match the replicas').")
    var clusterName = "paxoslog"

    @Option(help: "File holding the shared secret, if the cluster uses one.")
    var secretFile: String?

    @Option(help: "TLS: the CA certificate (PEM) that signs the replicas' certificates; turns TLS on.")
    var tlsCa: String?
    @Option(help: "TLS: this client's certificate (PEM), for replicas that require one (with --tls-key).")
    var tlsCert: String?
    @Option(help: "TLS: the client certificate's private key (PEM).")
    var tlsKey: String?

    func clientConfiguration() throws -> PaxosClientConfiguration {
        var list: [PeerAddress] = []
        for item in addresses.split(separator: ",") {
            guard let a = PeerAddress(parsing: String(item)) else {
                throw ValidationError("--cluster: '\(item)' is not HOST:PORT")
            }
            list.append(a)
        }
        guard !list.isEmpty else { throw ValidationError("--cluster: no address given") }
        var configuration = PaxosClientConfiguration(addresses: list, clusterName: clusterName, secret: try readSecret(secretFile))
        configuration.tls = try clientTLS()
        return configuration
    }
}

extension ClusterOptions {
    /// A client of the cluster whose calls end within `timeout` seconds, retries included.
    /// - Throws: ``CLIError`` (exit 2) when no replica could be reached.
    func connect(timeout: Double, label: String) async throws -> PaxosClient {
        var configuration = try clientConfiguration()
        configuration.requestTimeout = .nanoseconds(Int64(timeout * 1e9))
        configuration.attemptTimeout = min(configuration.attemptTimeout, configuration.requestTimeout)
        do {
            return try await PaxosClient.connect(configuration: configuration, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: label))
        } catch {
            throw CLIError("cannot connect to \(configuration.addresses.map(\.description).joined(separator: ",")): \(error)")
        }
    }

    /// The client's TLS credentials, or nil without `--tls-ca`.
    func clientTLS() throws -> TLSCredentials? {
        guard let ca = tlsCa else {
            guard tlsCert == nil, tlsKey == nil else { throw ValidationError("--tls-cert and --tls-key need --tls-ca") }
            return nil
        }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        do {
            return try TLSCredentials(files: TLSFiles(certificate: tlsCert, privateKey: tlsKey, certificateAuthority: ca), nodeID: nil)
        } catch {
            throw CLIError(error.message)
        }
    }
}

/// Reads a secret file (trailing newline ignored); nil when no file is named.
func readSecret(_ path: String?) throws -> [UInt8]? {
    guard let path else { return nil }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CLIError("cannot read secret file \(path)")
    }
    var bytes = [UInt8](data)
    while let last = bytes.last, last == 10 || last == 13 { bytes.removeLast() }
    guard !bytes.isEmpty else { throw CLIError("secret file \(path) is empty") }
    return bytes
}

/// A one-line failure: `paxlog: <message>` on stderr, exit 2.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
