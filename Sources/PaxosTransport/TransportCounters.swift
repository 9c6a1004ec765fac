import Atomics

/// Counters a transport's owner can read at any time (for metrics, status, tests).
///
/// Relaxed atomics: each counter is exact, but a snapshot of several is not a consistent cut.
public final class TransportCounters: Sendable {
    /// A point-in-time copy of the counters.
    public struct Snapshot: Hashable, Sendable {
        /// Connections closed because a frame did not decode (length, CRC, type, truncation).
        public var malformedFrames: Int
        /// Handshakes refused, by either side (wrong cluster, stranger, bad version, bad secret).
        public var refusedHandshakes: Int
        /// Outbound envelopes dropped: queue full (oldest dropped) or unknown destination.
        public var droppedEnvelopes: Int
        /// Envelopes written to peer connections.
        public var sentEnvelopes: Int
        /// Envelopes received from peers and delivered.
        public var receivedEnvelopes: Int
        /// Handshakes completed, inbound and outbound.
        public var connectionsEstablished: Int
        /// Outbound connection attempts that failed or connections that were lost.
        public var connectFailures: Int
    }

    let malformedFrames = ManagedAtomic(0)
    let refusedHandshakes = ManagedAtomic(0)
    let droppedEnvelopes = ManagedAtomic(0)
    let sentEnvelopes = ManagedAtomic(0)
    let receivedEnvelopes = ManagedAtomic(0)
    let connectionsEstablished = ManagedAtomic(0)
    let connectFailures = ManagedAtomic(0)

    public init() {}

    /// The current values.
    public var snapshot: Snapshot {
        Snapshot(
            malformedFrames: malformedFrames.load(ordering: .relaxed),
            refusedHandshakes: refusedHandshakes.load(ordering: .relaxed),
            droppedEnvelopes: droppedEnvelopes.load(ordering: .relaxed),
            sentEnvelopes: sentEnvelopes.load(ordering: .relaxed),
            receivedEnvelopes: receivedEnvelopes.load(ordering: .relaxed),
            connectionsEstablished: connectionsEstablished.load(ordering: .relaxed),
            connectFailures: connectFailures.load(ordering: .relaxed))
    }

    static func bump(_ counter: ManagedAtomic<Int>, by amount: Int = 1) {
        counter.wrappingIncrement(by: amount, ordering: .relaxed)
    }
}
