import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import PaxosTransport

/// A minimal HTTP/1.1 server for Prometheus to scrape: `GET /metrics` answers with what
/// `render` returns (the text exposition format), anything else 404 or 405. One request per
/// connection is enough for a scraper; keep-alive is honoured by NIO's codec.
final class MetricsEndpoint: Sendable {
    private let channel: any Channel
    /// The bound address (useful with port 0).
    let address: SocketAddress

    private init(channel: any Channel) {
        self.channel = channel
        self.address = channel.localAddress!
    }

    /// Listens on `host:port`; `render` runs for every scrape.
    /// - Throws: when the address cannot be resolved or bound.
    static func start(host: String, port: Int, logger: Logger, render: @escaping @Sendable () async -> [UInt8]) async throws -> MetricsEndpoint {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 16)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(render: render))
                }
            }
            .bind(host: host, port: port).get()
        logger.info("metrics endpoint listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        return MetricsEndpoint(channel: channel)
    }

    func shutdown() async {
        try? await channel.close()
    }
}

private final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let render: @Sendable () async -> [UInt8]
    init(render: @escaping @Sendable () async -> [UInt8]) { self.render = render }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let keepAlive = head.isKeepAlive
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let respond: @Sendable (HTTPResponseStatus, String, [UInt8]) -> Void = { status, type, body in
            let context = loopBound.value
            var headers = HTTPHeaders([("Content-Type", type), ("Content-Length", "\(body.count)")])
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
            }
            let done = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
            if !keepAlive { done.whenComplete { _ in loopBound.value.close(promise: nil) } }
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard path == "/metrics" else { return respond(.notFound, "text/plain", Array("not found: try /metrics\n".utf8)) }
        guard head.method == .GET || head.method == .HEAD else { return respond(.methodNotAllowed, "text/plain", Array("GET only\n".utf8)) }
        let render = self.render
        let loop = context.eventLoop
        Task {
            let body = await render()
            loop.execute { respond(.ok, "text/plain; version=0.0.4; charset=utf-8", body) }
        }
    }
}
