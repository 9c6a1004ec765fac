import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The listening socket both servers (``PeerTransport`` and ``ClientServer``) open the same way.
enum Listener {
    /// Binds `address` and hands each accepted connection to `initializeChild` on its event loop.
    ///
    /// `SO_REUSEADDR` lets a restarted replica rebind its port at once (old connections may
    /// linger in TIME_WAIT); `TCP_NODELAY` because every frame is a small, latency-bound message.
    /// - Parameters:
    ///   - adopt: called once the socket is bound; returns false if the owner was shut down while
    ///     binding, in which case the socket is closed again.
    /// - Returns: the address it listens on (useful when the port was 0).
    /// - Throws: ``TransportError`` `.bindFailed`, or `.shutDown` when `adopt` refused the socket.
    static func bind(
        _ address: PeerAddress, group: any EventLoopGroup,
        adopt: (any Channel) -> Bool,
        initializeChild: @escaping @Sendable (any Channel) throws -> Void
    ) async throws(TransportError) -> SocketAddress {
        let server: any Channel
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try initializeChild(channel) }
                }
                .bind(host: address.host, port: address.port)
                .get()
        } catch {
            throw TransportError(.bindFailed, "cannot listen on \(address): \(error)")
        }
        guard adopt(server) else {
            try? await server.close()
            throw TransportError(.shutDown, "shut down while starting")
        }
        guard let local = server.localAddress else {
            throw TransportError(.bindFailed, "the listening socket on \(address) has no local address")
        }
        return local
    }
}

/// The connections a server accepted, so that its shutdown can close them. Once ``closeAll()``
/// ran, a newly accepted connection is closed at once instead of tracked.
final class AcceptedChannels: Sendable {
    private let state = NIOLockedValueBox((closed: false, channels: [ObjectIdentifier: any Channel]()))

    /// Tracks `channel` until it closes.
    /// - Returns: false, having closed the channel, if ``closeAll()`` already ran.
    func admit(_ channel: any Channel) -> Bool {
        let admitted = state.withLockedValue { state -> Bool in
            guard !state.closed else { return false }
            state.channels[ObjectIdentifier(channel)] = channel
            return true
        }
        guard admitted else {
            channel.close(promise: nil)
            return false
        }
        channel.closeFuture.whenComplete { [state] _ in
            state.withLockedValue { _ = $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
        }
        return true
    }

    /// Refuses further channels and closes the tracked ones.
    func closeAll() async {
        let open = state.withLockedValue { state -> [any Channel] in
            state.closed = true
            return Array(state.channels.values)
        }
        for channel in open { try? await channel.close() }
    }
}
