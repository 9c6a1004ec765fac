import MultiPaxos
import NIOCore
import NIOPosix

/// What a ``LinkProxy`` does to the bytes that cross its link.
///
/// Faults act on TCP chunks as the proxy reads them, not on Paxos messages: a frame may be split
/// across chunks, so a reset can cut one in half (the receiver must treat the torn frame as a
/// closed connection, never as a message).
public enum LinkFault: Sendable, Hashable, CustomStringConvertible {
    /// Forward everything at once (a healed link).
    case none
    /// Close every open connection and close new ones as soon as they are accepted: the sender
    /// sees connection refused/reset and reconnects with backoff.
    case cut
    /// Keep connections open (and accept new ones) but stop reading them in either direction:
    /// bytes wait in the kernel's buffers and then in the sender's queue, as they do while TCP
    /// retransmits into a real black hole, and flow again, intact, after the heal. Only missing
    /// answers and handshake timeouts tell. (Dropping bytes of an open connection instead would
    /// leave a gap in the stream, which TCP never does: the receiver would read a frame header
    /// out of the middle of a frame.)
    case blackHole
    /// Hold each chunk for a delay drawn uniformly from `min...max` seconds, keeping the order.
    case delay(min: Double, max: Double)
    /// Reset the connection, instead of forwarding a chunk, with this probability per chunk.
    case lossy(resetProbability: Double)

    public var description: String {
        switch self {
        case .none: "healthy"
        case .cut: "cut"
        case .blackHole: "black hole"
        case .delay(let lo, let hi): "delay \(lo)-\(hi) s"
        case .lossy(let p): "lossy (reset p=\(p))"
        }
    }
}

/// A user-space TCP proxy on 127.0.0.1 for one directed peer link `from → to`.
///
/// The replicas' transport sends each direction of a pair over the connection its sender opened,
/// so the proxy for `from → to` carries everything `from` says to `to` (and `to`'s handshake
/// answers on that connection); `to → from` is another proxy. Node `from` is started with this
/// proxy's ``port`` as `to`'s peer address; the handshake names node ids, not ports, so nothing
/// else changes. Faults are set with ``set(_:)`` and apply at once to open connections too.
public final class LinkProxy: Sendable {
    public let from: NodeID
    public let to: NodeID
    /// Where `from` dials `to`.
    public let port: Int
    /// `to`'s real peer port.
    public let targetPort: Int

    private let server: any Channel
    private let state: LockedValue<State>

    struct State {
        var fault: LinkFault = .none
        var rng: SplitMix64
        /// Open connections (the accepted side, and the side dialled to `to` once connected), so a
        /// cut can close them. Bounded by the connections the sender opens; closed ones leave.
        var connections: [ObjectIdentifier: (accepted: any Channel, dialled: (any Channel)?)] = [:]
        var closed = false
        /// Chunks forwarded, dropped and connections reset, for the report.
        var forwarded = 0, dropped = 0, resets = 0
    }

    /// Why an accepted connection is closed at once (a cut, a shutdown, a dial that failed).
    struct Refused: Error {}

    /// What to do with one chunk.
    enum Verdict { case forward(delay: Double), drop, reset }

    /// Starts listening on an ephemeral 127.0.0.1 port (the kernel picks it, so two proxies never
    /// race for one port).
    /// - Parameters:
    ///   - targetPort: `to`'s real peer port.
    ///   - seed: for the random draws of delays and resets.
    public static func start(from: NodeID, to: NodeID, targetPort: Int, seed: UInt64,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> LinkProxy {
        let state = LockedValue(State(rng: SplitMix64(seed: seed)))
        let box = LockedValue<LinkProxy?>(nil)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { accepted in
                // A failed future makes the bootstrap close the accepted connection.
                guard let proxy = box.withLock({ $0 }) else { return accepted.eventLoop.makeFailedFuture(Refused()) }
                return proxy.adopt(accepted)
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let proxy = LinkProxy(from: from, to: to, port: server.localAddress!.port!, targetPort: targetPort, server: server, state: state)
        box.withLock { $0 = proxy }
        return proxy
    }

    private init(from: NodeID, to: NodeID, port: Int, targetPort: Int, server: any Channel, state: LockedValue<State>) {
        self.from = from
        self.to = to
        self.port = port
        self.targetPort = targetPort
        self.server = server
        self.state = state
    }

    /// The fault now in force.
    public var fault: LinkFault { state.withLock { $0.fault } }

    /// Chunks forwarded and dropped, and connections reset, so far.
    public var counts: (forwarded: Int, dropped: Int, resets: Int) {
        state.withLock { ($0.forwarded, $0.dropped, $0.resets) }
    }

    /// Puts `fault` in force. A cut closes the open connections now, a black hole stops reading
    /// them now (its heal resumes them); the others act on the next chunk each connection carries.
    public func set(_ fault: LinkFault) {
        let (toClose, toPause, toResume): ([any Channel], [any Channel], [any Channel]) = state.withLock { s in
            let was = s.fault
            s.fault = fault
            if fault == .cut {
                defer { s.connections = [:] }
                return (Self.joined(s.connections), [], [])
            }
            if fault == .blackHole && was != .blackHole { return ([], Self.joined(s.connections), []) }
            if fault != .blackHole && was == .blackHole { return ([], [], Self.joined(s.connections)) }
            return ([], [], [])
        }
        for c in toClose { c.close(promise: nil) }
        for c in toPause { c.setOption(.autoRead, value: false).whenComplete { _ in } }
        for c in toResume { c.setOption(.autoRead, value: true).whenComplete { _ in } }
    }

    /// Both halves of every joined connection. One still dialling is left alone (it is not yet
    /// registered, so it cannot be closed); it finds its entry gone once dialled, and is refused.
    private static func joined(_ connections: [ObjectIdentifier: (accepted: any Channel, dialled: (any Channel)?)]) -> [any Channel] {
        connections.values.flatMap { c in c.dialled.map { [c.accepted, $0] } ?? [] }
    }

    /// Stops listening and closes every connection.
    public func shutdown() async {
        let open: [any Channel] = state.withLock { s in
            s.closed = true
            defer { s.connections = [:] }
            return Self.joined(s.connections)
        }
        for c in open { c.close(promise: nil) }
        try? await server.close()
    }

    /// Takes a connection `from` opened: refuses it under a cut, otherwise dials `to` on the same
    /// event loop (so both halves' handlers run on one thread) and starts reading once joined.
    private func adopt(_ accepted: any Channel) -> EventLoopFuture<Void> {
        let refuse = state.withLock { $0.fault == .cut || $0.closed }
        if refuse { return accepted.eventLoop.makeFailedFuture(Refused()) }
        let inbound = ProxyPipe(proxy: self, partner: nil)
        let key = ObjectIdentifier(accepted)
        state.withLock { $0.connections[key] = (accepted, nil) }
        accepted.closeFuture.whenComplete { _ in self.state.withLock { _ = $0.connections.removeValue(forKey: key) } }
        let target = targetPort
        return accepted.pipeline.addHandler(inbound).flatMap {
            ClientBootstrap(group: accepted.eventLoop)
                .connectTimeout(.seconds(1))
                .channelInitializer { dialled in dialled.pipeline.addHandler(ProxyPipe(proxy: self, partner: accepted)) }
                .connect(host: "127.0.0.1", port: target)
        }.flatMap { dialled -> EventLoopFuture<Void> in
            inbound.partner = dialled
            let (stillOpen, reading) = self.state.withLock { s -> (Bool, Bool) in
                guard s.connections[key] != nil else { return (false, false) }
                s.connections[key] = (accepted, dialled)
                return (true, s.fault != .blackHole)
            }
            guard stillOpen else {
                dialled.close(promise: nil)
                return accepted.eventLoop.makeFailedFuture(Refused())
            }
            // Into a black hole: joined, but neither half is read until the heal.
            return dialled.setOption(.autoRead, value: reading).flatMap { accepted.setOption(.autoRead, value: reading) }
        }
        // A failure (`to` is down: killed, or not yet restarted) closes the accepted connection,
        // so the sender sees it close as it would without the proxy.
    }

    /// Draws the fate of one chunk under the fault in force.
    func verdict() -> Verdict {
        state.withLock { s in
            let v: Verdict
            switch s.fault {
            case .none: v = .forward(delay: 0)
            // A black hole reads nothing, so only chunks read before it began get here: they
            // were on their way already.
            case .blackHole: v = .forward(delay: 0)
            case .cut: v = .drop
            case .delay(let lo, let hi): v = .forward(delay: lo + (hi - lo) * s.rng.nextUnit())
            case .lossy(let p): v = s.rng.nextUnit() < p ? .reset : .forward(delay: 0)
            }
            switch v {
            case .forward: s.forwarded += 1
            case .drop: s.dropped += 1
            case .reset: s.resets += 1
            }
            return v
        }
    }
}

/// One half of a proxied connection: forwards what its channel reads to the partner channel.
///
/// `@unchecked Sendable`: both halves of a pair live on one event loop and the handler is touched
/// only there (``partner`` is set from a future callback on that loop).
final class ProxyPipe: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    let proxy: LinkProxy
    var partner: (any Channel)?
    /// When the last delayed chunk is due: a later chunk never overtakes it (TCP keeps order).
    private var lastDue = NIODeadline.uptimeNanoseconds(0)

    init(proxy: LinkProxy, partner: (any Channel)?) {
        self.proxy = proxy
        self.partner = partner
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let chunk = unwrapInboundIn(data)
        guard let partner else { return }
        switch proxy.verdict() {
        case .drop:
            return
        case .reset:
            context.close(promise: nil)
            partner.close(promise: nil)
        case .forward(let delay):
            let now = NIODeadline.now()
            if delay <= 0 && lastDue <= now {
                partner.writeAndFlush(chunk, promise: nil)
                return
            }
            let due = max(lastDue, now + .nanoseconds(Int64(delay * 1e9)))
            lastDue = due
            context.eventLoop.scheduleTask(deadline: due) { partner.writeAndFlush(chunk, promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension SplitMix64 {
    /// Uniform in [0, 1).
    mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}
