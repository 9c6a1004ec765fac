import Foundation
import MultiPaxos
import NIOCore
import NIOPosix
import PaxosLogTesting
import Testing
@testable import PaxosTransport

/// Mutual TLS between replicas and TLS on the client port, over loopback, with certificates
/// made for the test by `openssl` (TestCertificateAuthority).
@Suite(.serialized) struct TLSTests {
    /// Two CAs and the certificates the tests need, made once for the suite.
    struct Material: Sendable {
        let ca: TestCertificateAuthority
        let otherCA: TestCertificateAuthority
        let node: [NodeID: TestCertificateAuthority.Issued]
        let strangerNode2: TestCertificateAuthority.Issued
        let client: TestCertificateAuthority.Issued
        /// Both CAs' certificates in one file: what the stranger trusts, so that only the other
        /// side's verification of *its* certificate can keep it out.
        let bothCAs: String
    }

    static let material: Result<Material, any Error> = Result {
        let dir = NSTemporaryDirectory() + "paxoslog-tls-\(getpid())"
        let ca = try TestCertificateAuthority(name: "ca", directory: dir)
        let other = try TestCertificateAuthority(name: "other-ca", directory: dir)
        var node: [NodeID: TestCertificateAuthority.Issued] = [:]
        for id in NodeID(1)...3 { node[id] = try ca.issue(node: id, file: "node-\(id)") }
        let both = dir + "/both-cas.pem"
        try Data(try Data(contentsOf: URL(fileURLWithPath: ca.certificate)) + Data(contentsOf: URL(fileURLWithPath: other.certificate)))
            .write(to: URL(fileURLWithPath: both))
        return Material(ca: ca, otherCA: other, node: node, strangerNode2: try other.issue(node: 2, file: "stranger-2"),
                        client: try ca.issue(node: nil, file: "client"), bothCAs: both)
    }

    func credentials(_ issued: TestCertificateAuthority.Issued?, ca: TestCertificateAuthority, node: NodeID?, requireClients: Bool = false) throws -> TLSCredentials {
        try TLSCredentials(files: TLSFiles(certificate: issued?.certificate, privateKey: issued?.privateKey, certificateAuthority: ca.certificate,
                                           requireClientCertificates: requireClients), nodeID: node)
    }

    func heartbeat(_ from: NodeID, _ to: NodeID) -> Envelope {
        Envelope(from: from, to: to, message: .heartbeat(Heartbeat(ballot: Ballot(round: 1, node: from), chosenThrough: 1)))
    }

    /// Node 1 with the right certificate, and node 2 with `tls2`; node 2 sends to node 1 and
    /// node 1 to node 2. Returns what each received, and node 1's counters, after `wait`.
    func exchange(tls2: TLSCredentials, expectDelivery: Bool) async throws -> (toNode1: Int, toNode2: Int, refusedAt1: Int, refusedAt2: Int) {
        let m = try Self.material.get()
        let members = PeerTransportTests.members(try await freePorts(2, group: testGroup))
        let box1 = EnvelopeBox(), box2 = EnvelopeBox()
        var c1 = PeerTransportConfiguration(nodeID: 1, members: members, clusterName: "tls")
        c1.tls = try credentials(m.node[1], ca: m.ca, node: 1)
        c1.initialBackoff = .milliseconds(5); c1.maxBackoff = .milliseconds(50)
        var c2 = PeerTransportConfiguration(nodeID: 2, members: members, clusterName: "tls")
        c2.tls = tls2
        c2.initialBackoff = .milliseconds(5); c2.maxBackoff = .milliseconds(50)
        let t1 = try PeerTransport(configuration: c1, group: testGroup, logger: quietLogger) { box1.append($0) }
        let t2 = try PeerTransport(configuration: c2, group: testGroup, logger: quietLogger) { box2.append($0) }
        try await t1.start()
        try await t2.start()
        t2.send(heartbeat(2, 1))
        t1.send(heartbeat(1, 2))
        if expectDelivery {
            try await eventually("both delivered") { box1.count == 1 && box2.count == 1 }
        } else {
            // Refused: wait for both directions to have been refused at least once.
            try await eventually("both directions refused") {
                t1.counters.snapshot.refusedHandshakes >= 2 && t2.counters.snapshot.refusedHandshakes >= 2
            }
            // Several reconnects' worth of time: a connection wrongly let through delivers by then.
            try await Task.sleep(for: .milliseconds(300))
        }
        let result = (box1.count, box2.count, t1.counters.snapshot.refusedHandshakes, t2.counters.snapshot.refusedHandshakes)
        await t1.shutdown()
        await t2.shutdown()
        return result
    }

    @Test func replicasWithCertificatesFromTheClusterCAExchangeMessages() async throws {
        let m = try Self.material.get()
        let r = try await exchange(tls2: try credentials(m.node[2], ca: m.ca, node: 2), expectDelivery: true)
        #expect(r.toNode1 == 1 && r.toNode2 == 1)
        #expect(r.refusedAt1 == 0 && r.refusedAt2 == 0)
    }

    @Test func aPeerWithACertificateFromAnotherCAIsRefused() async throws {
        let m = try Self.material.get()
        // Node 2's certificate names node 2, but another CA signed it. Node 2 trusts both CAs, so
        // node 1 alone must refuse it: as a server (node 2 dials) and as a client (node 1 dials).
        let tls2 = try TLSCredentials(files: TLSFiles(certificate: m.strangerNode2.certificate, privateKey: m.strangerNode2.privateKey,
                                                      certificateAuthority: m.bothCAs), nodeID: 2)
        let r = try await exchange(tls2: tls2, expectDelivery: false)
        #expect(r.toNode1 == 0 && r.toNode2 == 0)
    }

    @Test func aPeerPresentingAnotherNodesCertificateIsRefused() async throws {
        let m = try Self.material.get()
        // Speaks as node 2 with node 3's (valid, same-CA) certificate. `nodeID: nil` skips the
        // local check that would stop an honest misconfiguration before it reaches the network.
        let r = try await exchange(tls2: try credentials(m.node[3], ca: m.ca, node: nil), expectDelivery: false)
        #expect(r.toNode1 == 0 && r.toNode2 == 0)
    }

    /// A client port with node 1's certificate that answers every append with slot 7.
    func startClientPort(requireClients: Bool) async throws -> (ClientServer, PeerAddress) {
        let m = try Self.material.get()
        var config = ClientServerConfiguration(nodeID: 1, clusterName: "tls", listenAddress: PeerAddress(host: "127.0.0.1", port: 0))
        config.tls = try credentials(m.node[1], ca: m.ca, node: 1, requireClients: requireClients)
        let server = ClientServer(configuration: config, group: testGroup, logger: quietLogger) { _ in .appended([7]) }
        return (server, PeerAddress(host: "127.0.0.1", port: try #require(try await server.start().port)))
    }

    @Test func aClientWithoutACertificateIsRefusedWhenOneIsRequired() async throws {
        let m = try Self.material.get()
        let (server, address) = try await startClientPort(requireClients: true)
        func client(_ tls: TLSCredentials?) -> PaxosClientConfiguration {
            var c = PaxosClientConfiguration(addresses: [address], clusterName: "tls")
            c.tls = tls
            c.handshakeTimeout = .seconds(5)
            return c
        }
        // With a certificate from the CA: served.
        let good = try await PaxosClient.connect(configuration: client(try credentials(m.client, ca: m.ca, node: nil)), group: testGroup, logger: quietLogger)
        #expect(try await good.append([[1]]) == [7])
        await good.close()
        // TLS but no certificate: refused.
        await #expect(throws: (any Error).self) {
            let c = try await PaxosClient.connect(configuration: client(try credentials(nil, ca: m.ca, node: nil)), group: testGroup, logger: quietLogger)
            _ = try await c.append([[1]])
        }
        // Plain TCP to a TLS port: refused.
        await #expect(throws: (any Error).self) {
            let c = try await PaxosClient.connect(configuration: client(nil), group: testGroup, logger: quietLogger)
            _ = try await c.append([[1]])
        }
        #expect(server.counters.snapshot.refusedHandshakes >= 1)
        await server.shutdown()
    }

    @Test func aClientWithoutACertificateIsServedWhenNoneIsRequired() async throws {
        let m = try Self.material.get()
        let (server, address) = try await startClientPort(requireClients: false)
        var c = PaxosClientConfiguration(addresses: [address], clusterName: "tls")
        c.tls = try credentials(nil, ca: m.ca, node: nil)
        let client = try await PaxosClient.connect(configuration: c, group: testGroup, logger: quietLogger)
        #expect(try await client.append([[1]]) == [7])
        await client.close()
        await server.shutdown()
    }

    @Test func badFilesAreNamedInTheError() throws {
        let m = try Self.material.get()
        func message(_ files: TLSFiles, node: NodeID?) -> String {
            do {
                _ = try TLSCredentials(files: files, nodeID: node)
                return "no error"
            } catch {
                return error.message
            }
        }
        let n1 = m.node[1]!, n2 = m.node[2]!
        let missing = message(TLSFiles(certificate: "/nonexistent/cert.pem", privateKey: n1.privateKey, certificateAuthority: m.ca.certificate), node: 1)
        #expect(missing.contains("/nonexistent/cert.pem"), "\(missing)")
        let mismatched = message(TLSFiles(certificate: n1.certificate, privateKey: n2.privateKey, certificateAuthority: m.ca.certificate), node: 1)
        #expect(mismatched.contains("does not match") && mismatched.contains(n2.privateKey), "\(mismatched)")
        let wrongNode = message(TLSFiles(certificate: n2.certificate, privateKey: n2.privateKey, certificateAuthority: m.ca.certificate), node: 1)
        #expect(wrongNode.contains("names node 2, but this is node 1"), "\(wrongNode)")
        let noKey = message(TLSFiles(certificate: n1.certificate, privateKey: "/nonexistent/key.pem", certificateAuthority: m.ca.certificate), node: 1)
        #expect(noKey.contains("/nonexistent/key.pem"), "\(noKey)")
        #expect(message(TLSFiles(certificate: n1.certificate, privateKey: n1.privateKey, certificateAuthority: m.ca.certificate), node: 1) == "no error")
    }

    @Test func reloadPicksUpANewCertificateAndKeepsTheOldOneOnFailure() throws {
        let m = try Self.material.get()
        let dir = m.ca.directory + "/reload-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let cert = dir + "/cert.pem", key = dir + "/key.pem"
        try FileManager.default.copyItem(atPath: m.node[1]!.certificate, toPath: cert)
        try FileManager.default.copyItem(atPath: m.node[1]!.privateKey, toPath: key)
        let tls = try TLSCredentials(files: TLSFiles(certificate: cert, privateKey: key, certificateAuthority: m.ca.certificate), nodeID: 1)
        let before = try tls.peerServerContext()
        try tls.reload()
        #expect(try tls.peerServerContext() !== before)
        // A broken key file: the reload fails and the previous contexts stay.
        let kept = try tls.peerServerContext()
        try Data("not a key".utf8).write(to: URL(fileURLWithPath: key))
        #expect(throws: TransportError.self) { try tls.reload() }
        #expect(try tls.peerServerContext() === kept)
    }
}
