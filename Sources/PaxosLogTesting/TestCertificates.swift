import Foundation
import MultiPaxos

/// A throwaway certificate authority for TLS tests, made with the `openssl` binary
/// (Tools/install-deps installs it): EC P-256 keys, valid for two days, node certificates naming
/// their id as `URI:paxoslog://node/ID` (what `TLSCredentials` binds).
public struct TestCertificateAuthority: Sendable {
    /// The directory holding every file this authority made.
    public let directory: String
    /// The CA certificate (PEM): what `--tls-ca` takes.
    public let certificate: String
    let key: String
    let name: String

    /// One issued certificate and its key.
    public struct Issued: Sendable {
        public var certificate: String
        public var privateKey: String
    }

    /// Creates a CA named `name` in `directory` (created if missing).
    /// - Throws: ``ClusterError`` with openssl's output when it fails.
    public init(name: String, directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.name = name
        certificate = "\(directory)/\(name).pem"
        key = "\(directory)/\(name).key"
        try Self.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                          "-out", certificate, "-days", "2", "-subj", "/CN=\(name)",
                          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    }

    /// A certificate for replica `node` (or, with nil, a client certificate naming no node),
    /// written as `<file>.pem` and `<file>.key`.
    public func issue(node: NodeID?, file: String) throws -> Issued {
        let out = Issued(certificate: "\(directory)/\(file).pem", privateKey: "\(directory)/\(file).key")
        let csr = "\(directory)/\(file).csr", ext = "\(directory)/\(file).ext"
        var san = "subjectAltName=IP:127.0.0.1"
        if let node { san += ",URI:paxoslog://node/\(node)" }
        try Data("\(san)\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n".utf8).write(to: URL(fileURLWithPath: ext))
        try Self.openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", out.privateKey,
                          "-out", csr, "-subj", "/CN=\(node.map { "node-\($0)" } ?? "client-\(file)")"])
        try Self.openssl(["x509", "-req", "-in", csr, "-CA", certificate, "-CAkey", key, "-CAcreateserial", "-out", out.certificate,
                          "-days", "2", "-extfile", ext])
        return out
    }

    static func openssl(_ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl"] + arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ClusterError("openssl \(arguments.prefix(2).joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))")
        }
    }
}
