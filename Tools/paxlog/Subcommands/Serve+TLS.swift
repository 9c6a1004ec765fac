import ArgumentParser
import Dispatch
import Foundation
import Logging
import MultiPaxos
import PaxosTransport

extension Serve {
    /// The TLS credentials the `tls-*` keys name, loaded and checked now so that a bad path or a
    /// key that does not match fails the start with a message naming the file; nil without them.
    static func loadTLS(_ keys: [String: String], nodeID: NodeID) throws -> TLSCredentials? {
        let given = ["tls-cert", "tls-key", "tls-ca"].filter { keys[$0] != nil }
        if given.isEmpty {
            guard keys["tls-require-client-cert"] == nil else { throw ValidationError("--tls-require-client-cert needs --tls-cert, --tls-key and --tls-ca") }
            return nil
        }
        guard given.count == 3 else {
            throw ValidationError("TLS needs all of --tls-cert, --tls-key and --tls-ca; missing: \(["tls-cert", "tls-key", "tls-ca"].filter { keys[$0] == nil }.map { "--" + $0 }.joined(separator: ", "))")
        }
        var files = TLSFiles(certificate: keys["tls-cert"]!, privateKey: keys["tls-key"]!, certificateAuthority: keys["tls-ca"]!)
        switch keys["tls-require-client-cert"] {
        case nil, "no", "false": break
        case "yes", "true": files.requireClientCertificates = true
        case let other?: throw ValidationError("--tls-require-client-cert must be yes or no, not '\(other)'")
        }
        do {
            return try TLSCredentials(files: files, nodeID: nodeID)
        } catch {
            throw CLIError(error.message)
        }
    }

    /// Signal sources live as long as the process: a released source stops delivering.
    nonisolated(unsafe) private static var hangupSource: (any DispatchSourceSignal)?

    /// On SIGHUP, reads the TLS files again: connections opened afterwards use the new
    /// certificate, key and CA; open ones keep theirs. A failed reload keeps the old ones and
    /// says why in the log (the replica keeps running). Without TLS, SIGHUP is logged and
    /// ignored, so a service manager's reload never kills the replica.
    static func reloadOnHangup(_ tls: TLSCredentials?, logger: Logger) {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "paxlog.sighup"))
        source.setEventHandler {
            guard let tls else { return logger.notice("SIGHUP: nothing to reload (no TLS configured)") }
            do {
                try tls.reload()
                logger.notice("TLS certificates reloaded", metadata: ["certificate": "\(tls.files.certificate ?? "-")"])
            } catch {
                logger.error("TLS reload failed, keeping the previous certificates: \((error as? TransportError)?.message ?? "\(error)")")
            }
        }
        source.resume()
        hangupSource = source
    }
}
