#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// Where a replica's or client's TLS material lives: PEM files, read by ``TLSCredentials``.
public struct TLSFiles: Hashable, Sendable {
    /// This side's certificate (chain, leaf first). A replica's must name its node id (see
    /// ``TLSCredentials``). Only a client may go without one (nil), and only to client ports
    /// that do not require it.
    public var certificate: String?
    /// The private key of ``certificate``.
    public var privateKey: String?
    /// The CA certificate(s) that sign every member's and client's certificate; nothing else is
    /// trusted (the system roots are not used).
    public var certificateAuthority: String
    /// On a replica's client port: clients must present a certificate signed by the CA. Peer
    /// ports always require one. Default false.
    public var requireClientCertificates: Bool = false

    public init(certificate: String?, privateKey: String?, certificateAuthority: String, requireClientCertificates: Bool = false) {
        self.certificate = certificate
        self.privateKey = privateKey
        self.certificateAuthority = certificateAuthority
        self.requireClientCertificates = requireClientCertificates
    }
}

/// TLS 1.3 contexts for peer and client connections, loaded from ``TLSFiles`` and reloadable.
///
/// **Node identity.** A replica's certificate names its node id as a URI subject alternative
/// name, `paxoslog://node/ID` (for example `URI:paxoslog://node/2`). The CA vouches for that
/// binding: on a peer connection each side checks that the other's certificate names the node
/// id it claims in the PaxosLog handshake (the acceptor: the id in `hello`; the initiator: the
/// id it dialled), so a member cannot speak as another even though all share one CA. Host names
/// are not checked: the node id is the identity, and addresses may be IPs or change. Client
/// certificates need no id.
///
/// **Rotation.** ``reload()`` reads the files again and builds new contexts; connections opened
/// afterwards use them, open connections keep the session they negotiated. A reload that fails
/// (a missing file, a key that does not match) keeps the old contexts and throws.
public final class TLSCredentials: Sendable {
    public let files: TLSFiles
    /// The node id this side's certificate must name (nil for a client).
    public let nodeID: NodeID?
    private let contexts: NIOLockedValueBox<Contexts>

    struct Contexts: @unchecked Sendable {  // NIOSSLContext is thread-safe and immutable once built
        /// Peer ports: the client's certificate is always verified. Nil without a certificate.
        var peerServer: NIOSSLContext?
        /// Client ports: verified when ``TLSFiles/requireClientCertificates`` is set.
        var clientPortServer: NIOSSLContext?
        var client: NIOSSLContext
    }

    /// Loads and checks the files.
    /// - Parameter nodeID: for a replica, its id: its certificate must name it.
    /// - Throws: ``TransportError`` `.invalidConfiguration` naming the file and what is wrong.
    public init(files: TLSFiles, nodeID: NodeID?) throws(TransportError) {
        self.files = files
        self.nodeID = nodeID
        self.contexts = NIOLockedValueBox(try Self.load(files, nodeID: nodeID))
    }

    /// Reads the files again; new connections use what they hold.
    /// - Throws: ``TransportError`` `.invalidConfiguration`; the previous contexts stay in use.
    public func reload() throws(TransportError) {
        let fresh = try Self.load(files, nodeID: nodeID)
        contexts.withLockedValue { $0 = fresh }
    }

    /// Server contexts exist only with a certificate: credentials made for a client without one
    /// cannot serve (the connection is closed at once instead).
    func peerServerContext() throws(TransportError) -> NIOSSLContext {
        guard let c = contexts.withLockedValue({ $0.peerServer }) else { throw Self.noCertificate }
        return c
    }

    func clientPortServerContext() throws(TransportError) -> NIOSSLContext {
        guard let c = contexts.withLockedValue({ $0.clientPortServer }) else { throw Self.noCertificate }
        return c
    }

    private static let noCertificate = TransportError(.invalidConfiguration, "TLS credentials without a certificate cannot serve")
    var clientContext: NIOSSLContext { contexts.withLockedValue { $0.client } }

    /// The prefix of the URI subject alternative name that carries a node id.
    public static let nodeURIPrefix = "paxoslog://node/"

    /// The node id a certificate names (its first `paxoslog://node/ID` URI), if any.
    public static func nodeID(of certificate: NIOSSLCertificate) -> NodeID? {
        for name in certificate._subjectAlternativeNames() where name.nameType == .uri {
            let text = String(decoding: name.contents, as: UTF8.self)
            if text.hasPrefix(nodeURIPrefix), let id = NodeID(text.dropFirst(nodeURIPrefix.count)) { return id }
        }
        return nil
    }

    private static func load(_ files: TLSFiles, nodeID: NodeID?) throws(TransportError) -> Contexts {
        func read(_ what: String, _ path: String) throws(TransportError) -> [NIOSSLCertificate] {
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMFile(path)
            } catch {
                throw TransportError(.invalidConfiguration, "\(what) \(path): cannot read a PEM certificate (\(error))")
            }
            guard !certificates.isEmpty else { throw TransportError(.invalidConfiguration, "\(what) \(path): no certificate in the file") }
            return certificates
        }
        let authorities = try read("TLS CA", files.certificateAuthority)
        guard let certificatePath = files.certificate, let keyPath = files.privateKey else {
            guard nodeID == nil, files.certificate == nil, files.privateKey == nil else {
                throw TransportError(.invalidConfiguration, "TLS needs both a certificate and its key\(nodeID == nil ? "" : " on a replica")")
            }
            var client = TLSConfiguration.makeClientConfiguration()
            client.minimumTLSVersion = .tlsv13
            client.trustRoots = .certificates(authorities)
            client.certificateVerification = .noHostnameVerification
            do {
                return Contexts(peerServer: nil, clientPortServer: nil, client: try NIOSSLContext(configuration: client))
            } catch {
                throw TransportError(.invalidConfiguration, "TLS CA \(files.certificateAuthority) is unusable (\(error))")
            }
        }
        let chain = try read("TLS certificate", certificatePath)
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw TransportError(.invalidConfiguration, "TLS key \(keyPath): cannot read a PEM private key (\(error))")
        }
        if let nodeID {
            let named = Self.nodeID(of: chain[0])
            guard named == nodeID else {
                throw TransportError(.invalidConfiguration, "TLS certificate \(certificatePath) names \(named.map { "node \($0)" } ?? "no node (no \(nodeURIPrefix)ID URI SAN)"), but this is node \(nodeID)")
            }
        }
        let now = time(nil)
        guard chain[0].notValidAfter > now, chain[0].notValidBefore <= now else {
            throw TransportError(.invalidConfiguration, "TLS certificate \(certificatePath) is not valid now (expired or not yet valid)")
        }

        func configure(_ c: inout TLSConfiguration) {
            c.minimumTLSVersion = .tlsv13
            c.trustRoots = .certificates(authorities)
            c.certificateChain = chain.map { .certificate($0) }
            c.privateKey = .privateKey(key)
        }
        var server = TLSConfiguration.makeServerConfiguration(certificateChain: [], privateKey: .privateKey(key))
        configure(&server)
        server.certificateVerification = .noHostnameVerification
        var clientPort = server
        clientPort.certificateVerification = files.requireClientCertificates ? .noHostnameVerification : .none
        var client = TLSConfiguration.makeClientConfiguration()
        configure(&client)
        client.certificateVerification = .noHostnameVerification
        do {
            return Contexts(peerServer: try NIOSSLContext(configuration: server),
                            clientPortServer: try NIOSSLContext(configuration: clientPort),
                            client: try NIOSSLContext(configuration: client))
        } catch {
            throw TransportError(.invalidConfiguration, "TLS key \(keyPath) does not match certificate \(certificatePath), or one is unusable (\(error))")
        }
    }
}
