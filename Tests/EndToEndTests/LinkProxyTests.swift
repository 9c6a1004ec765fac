import Foundation
import NIOCore
import NIOPosix
import PaxosLogTesting
import Testing

/// The proxy alone, between a loopback client and a server that records what arrives.
struct LinkProxyTests {
    /// Collects every byte a server connection reads.
    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let received: LockedBox<[UInt8]>
        init(_ received: LockedBox<[UInt8]>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(buffer: unwrapInboundIn(data))
            received.update { $0 += bytes }
        }
    }

    func send(_ channel: any Channel, _ text: String) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(string: text)).get()
    }

    /// A server recording what it reads, a proxy in front of it, and a client connected through.
    func proxiedLink() async throws -> (received: LockedBox<[UInt8]>, server: any Channel, proxy: LinkProxy, client: any Channel) {
        let received = LockedBox<[UInt8]>([])
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { $0.pipeline.addHandler(Collector(received)) }
            .bind(host: "127.0.0.1", port: 0).get()
        let proxy = try await LinkProxy.start(from: 1, to: 2, targetPort: server.localAddress!.port!, seed: 7)
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: proxy.port).get()
        return (received, server, proxy, client)
    }

    /// A black hole holds bytes and the heal delivers them intact and in order (TCP never leaves
    /// a gap in a stream); a cut closes the connection and refuses the next one.
    @Test func blackHoleHoldsBytesAndCutCloses() async throws {
        let (received, server, proxy, client) = try await proxiedLink()
        func text() -> String { String(decoding: received.get(), as: UTF8.self) }

        try await send(client, "abc")
        try await eventually("bytes through a healthy link") { text() == "abc" }
        proxy.set(.blackHole)
        try await Task.sleep(nanoseconds: 100_000_000)  // the pause of reads takes effect on the loop
        try await send(client, "def")
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(text() == "abc", "bytes crossed a black hole")
        proxy.set(.none)
        try await eventually("held bytes after the heal") { text() == "abcdef" }

        proxy.set(.cut)
        try await eventually("the connection closed by the cut") { !client.isActive }
        let refused = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: proxy.port).get()
        if let refused { try await eventually("a new connection closed under the cut") { !refused.isActive } }
        await proxy.shutdown()
        try await server.close()
    }

    /// A delay keeps the order of chunks even when a later one draws a shorter delay.
    @Test func delayKeepsOrder() async throws {
        let (received, server, proxy, client) = try await proxiedLink()
        try await send(client, "0")
        try await eventually("the first byte") { received.get().count == 1 }
        proxy.set(.delay(min: 0, max: 0.05))
        let expected = (1...50).map { "\($0 % 10)" }.joined()
        for i in 1...50 { try await send(client, "\(i % 10)") }
        try await eventually("every delayed chunk") { received.get().count == 51 }
        #expect(String(decoding: received.get(), as: UTF8.self) == "0" + expected)
        try await client.close()
        await proxy.shutdown()
        try await server.close()
    }
}
