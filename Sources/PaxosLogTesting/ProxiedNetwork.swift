import MultiPaxos
import NIOCore
import NIOPosix

/// A ``LinkProxy`` on every directed peer link of a ``LocalCluster``, and the partitions a
/// nemesis makes of them.
///
/// ``start(for:seed:)`` rewrites the cluster's ``LocalCluster/peerPorts`` so that every replica
/// dials every other through its own proxy; call it before the replicas start. Client ports are
/// not proxied: clients reach every replica directly, as an application beside each node would.
public final class ProxiedNetwork: Sendable {
    /// A directed link: what `from` sends to `to`.
    public struct Link: Hashable, Sendable, CustomStringConvertible {
        public var from: NodeID
        public var to: NodeID
        public init(_ from: NodeID, _ to: NodeID) {
            self.from = from
            self.to = to
        }
        public var description: String { "\(from)→\(to)" }
    }

    public let nodes: [NodeID]
    public let proxies: [Link: LinkProxy]

    private init(nodes: [NodeID], proxies: [Link: LinkProxy]) {
        self.nodes = nodes
        self.proxies = proxies
    }

    /// Starts one proxy per directed link and points the cluster's replicas at them.
    /// - Parameter seed: each proxy draws its delays and resets from its own stream of it.
    public static func start(for cluster: LocalCluster, seed: UInt64) async throws -> ProxiedNetwork {
        var proxies: [Link: LinkProxy] = [:]
        do {
            for a in cluster.nodes {
                for b in cluster.nodes where a.id != b.id {
                    let linkSeed = seed &* 0x9E37_79B9 &+ UInt64(a.id) << 32 &+ UInt64(b.id)
                    proxies[Link(a.id, b.id)] = try await LinkProxy.start(from: a.id, to: b.id, targetPort: b.peerPort, seed: linkSeed)
                }
            }
        } catch {
            for p in proxies.values { await p.shutdown() }
            throw error
        }
        var view: [NodeID: [NodeID: Int]] = [:]
        for (link, proxy) in proxies { view[link.from, default: [:]][link.to] = proxy.port }
        cluster.peerPorts = view
        return ProxiedNetwork(nodes: cluster.nodes.map(\.id), proxies: proxies)
    }

    /// Sets the fault of one directed link.
    public func set(_ fault: LinkFault, _ from: NodeID, _ to: NodeID) {
        proxies[Link(from, to)]?.set(fault)
    }

    /// Sets the fault of both directions between `a` and `b`.
    public func set(_ fault: LinkFault, between a: NodeID, _ b: NodeID) {
        set(fault, a, b)
        set(fault, b, a)
    }

    /// Applies `fault` to every link into and out of `node`.
    public func isolate(_ node: NodeID, with fault: LinkFault = .cut) {
        for other in nodes where other != node { set(fault, between: node, other) }
    }

    /// Cuts every link between different groups; links inside a group are left as they are.
    /// Nodes in no group are cut off from all groups (and from each other).
    public func partition(_ groups: [[NodeID]]) {
        func group(of n: NodeID) -> Int? { groups.firstIndex { $0.contains(n) } }
        for a in nodes {
            for b in nodes where a != b {
                let ga = group(of: a), gb = group(of: b)
                if ga == nil || gb == nil || ga != gb { set(.cut, a, b) }
            }
        }
    }

    /// Heals every link.
    public func healAll() {
        for p in proxies.values { p.set(.none) }
    }

    /// The links with a fault in force, e.g. `1→2 cut, 2→1 cut`; "all healthy" if none.
    public var faultsInForce: String {
        let faulty = proxies.filter { $0.value.fault != .none }.sorted { ($0.key.from, $0.key.to) < ($1.key.from, $1.key.to) }
        return faulty.isEmpty ? "all healthy" : faulty.map { "\($0.key) \($0.value.fault)" }.joined(separator: ", ")
    }

    /// Chunks forwarded and dropped, and connections reset, over all links.
    public var totals: (forwarded: Int, dropped: Int, resets: Int) {
        proxies.values.reduce((0, 0, 0)) { t, p in
            let c = p.counts
            return (t.0 + c.forwarded, t.1 + c.dropped, t.2 + c.resets)
        }
    }

    /// Stops every proxy.
    public func shutdown() async {
        for p in proxies.values { await p.shutdown() }
    }
}
