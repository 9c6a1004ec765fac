import Logging
import NIOConcurrencyHelpers
import MultiPaxos
import NIOCore
import NIOPosix
import Testing
@testable import PaxosTransport

/// A client of this build against a server of the build before client version 4: it connects
/// in version 3, its old requests work, and the new ones fail with a reason instead of being
/// sent (an old server would close the connection on an unknown request kind).
@Suite struct ClientVersionTests {
    /// Speaks client version 3 only, as a version-3 server does: refuses any other `hello`,
    /// answers `status`, and closes the connection on a request kind it does not know.
    final class Version3Server: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = InboundFrame
        typealias OutboundOut = OutboundFrame
        let hellos = NIOLockedValueBox<[UInt16]>([])

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            var payload = frame.payload
            switch frame.type {
            case .hello:
                guard case .hello(let hello) = try? HandshakeMessage.decode(type: .hello, body: &payload) else { return context.close(promise: nil) }
                hellos.withLockedValue { $0.append(hello.version) }
                guard hello.version == 3 else {
                    let refusal = HandshakeMessage.refuse(.badVersion, "version \(hello.version) is not supported; this node speaks version 4 to peers and 3 to clients")
                    context.writeAndFlush(wrapOutboundOut(.handshake(refusal))).whenComplete { _ in context.close(promise: nil) }
                    return
                }
                let welcome = HandshakeMessage.Welcome(version: 3, cluster: hello.cluster, nodeID: 9, nonce: [1], authRequired: false, proof: [])
                context.writeAndFlush(wrapOutboundOut(.handshake(.welcome(welcome))), promise: nil)
            case .request:
                guard let request = try? ClientRequestFrame.decode(&payload), request.request.clientVersion <= 3 else {
                    return context.close(promise: nil)
                }
                let status = ClientStatus(nodeID: 9, leaderID: 9, ballot: Ballot(round: 1, node: 9), chosenThrough: 0, lastAccepted: 0)
                context.writeAndFlush(wrapOutboundOut(.response(ClientResponseFrame(id: request.id, response: .status(status)))), promise: nil)
            default:
                context.close(promise: nil)
            }
        }
    }

    @Test func aVersion3ServerServesOldRequestsAndRefusesNewOnesWithAReason() async throws {
        let server = Version3Server()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: 1 << 20)))
                    try channel.pipeline.syncOperations.addHandler(server)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(channel.localAddress?.port)
        let client = try await PaxosClient.connect(configuration: PaxosClientConfiguration(addresses: [PeerAddress(host: "127.0.0.1", port: port)], clusterName: "test"),
                                                   group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "test"))
        #expect(server.hellos.withLockedValue { $0 } == [WireVersion.client, 3])
        #expect(try await client.status().nodeID == 9)
        do {
            _ = try await client.members()
            Issue.record("a version-3 server was sent a members request")
        } catch {
            #expect(error.code == .refused, "\(error)")
            #expect(error.message.contains("speaks client protocol version 3, which has no members request"), "\(error)")
        }
        do {
            _ = try await client.transferLeadership(to: 2)
            Issue.record("a version-3 server was sent a transfer request")
        } catch {
            #expect(error.code == .refused && error.message.contains("upgrade it"), "\(error)")
        }
        do {
            _ = try await client.send(.members)
            Issue.record("a version-3 server was sent a members request")
        } catch {
            #expect(error.code == .refused && error.refusal == .badVersion, "\(error)")
        }
        #expect(try await client.status().nodeID == 9, "the connection is still usable")
        await client.close()
        try await channel.close()
    }
}
