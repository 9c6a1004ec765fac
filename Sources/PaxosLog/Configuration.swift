import Metrics
import Logging
import MultiPaxos
import NIOCore
import PaxosTransport
import SegmentLog

extension PaxosLog {
    /// One member of a cluster: where it listens for its peers and for clients.
    public struct Member: Hashable, Sendable, CustomStringConvertible {
        public var id: NodeID
        /// Address for replica-to-replica traffic.
        public var peerAddress: PeerAddress
        /// Address for clients (`paxlog append`, `read`); redirects name it.
        public var clientAddress: PeerAddress

        public init(id: NodeID, peerAddress: PeerAddress, clientAddress: PeerAddress) {
            self.id = id
            self.peerAddress = peerAddress
            self.clientAddress = clientAddress
        }

        /// Members 1, 2, … on 127.0.0.1, member `i` on `ports[2i]` (peers) and `ports[2i + 1]`
        /// (clients): for tests and benchmarks that run a cluster on one machine.
        public static func loopback(ports: [Int]) -> [Member] {
            stride(from: 0, to: ports.count - 1, by: 2).map { i in
                Member(id: NodeID(i / 2 + 1), peerAddress: PeerAddress(host: "127.0.0.1", port: ports[i]),
                       clientAddress: PeerAddress(host: "127.0.0.1", port: ports[i + 1]))
            }
        }

        /// Parses `ID=HOST:PORT[:CLIENTPORT]`; the client port defaults to `PORT + 1000`.
        public init?(parsing text: Substring) {
            let parts = text.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let id = NodeID(parts[0].trimmingSpaces), id > 0 else { return nil }
            let address = parts[1].trimmingSpaces
            let fields = address.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count == 2 || fields.count == 3, !fields[0].isEmpty,
                  let port = Int(fields[1]), (1...65535).contains(port) else { return nil }
            var clientPort = port + 1000
            if fields.count == 3 {
                guard let p = Int(fields[2]), (1...65535).contains(p) else { return nil }
                clientPort = p
            }
            guard clientPort <= 65535 else { return nil }
            self.init(
                id: id,
                peerAddress: PeerAddress(host: String(fields[0]), port: port),
                clientAddress: PeerAddress(host: String(fields[0]), port: clientPort)
            )
        }

        /// Parses a comma-separated list of members (`1=127.0.0.1:7101,2=…`).
        public static func parseList(_ text: String) throws(PaxosLogError) -> [Member] {
            var members: [Member] = []
            for item in text.split(separator: ",") {
                guard let m = Member(parsing: item) else {
                    throw PaxosLogError(.invalidConfiguration, "member '\(item)' is not ID=HOST:PORT[:CLIENTPORT]")
                }
                members.append(m)
            }
            return members
        }

        public var description: String { "\(id)=\(peerAddress.host):\(peerAddress.port):\(clientAddress.port)" }
    }

    /// What a non-leader does with an `append`.
    public enum NonLeaderAppends: String, Sendable, CaseIterable {
        /// Throw ``PaxosLogError/Code/notLeader`` naming the leader it knows.
        case redirect
        /// Hand the record to the leader and answer when it is chosen.
        case forward
    }

    /// Everything ``PaxosLog/open(_:)`` needs.
    public struct Configuration: Sendable {
        /// This replica's id; must be one of ``members``.
        public var nodeID: NodeID
        /// Every replica of the cluster. A single member makes a plain local WAL (no network).
        public var members: [Member]
        /// Directory holding this replica's segments, snapshots and `LOCK`.
        public var dataDirectory: String
        /// Peers and clients of another cluster are refused.
        public var clusterName: String = "paxoslog"
        /// The id of the cluster this replica belongs to, as its data directory records it since
        /// the cluster was bootstrapped (``PaxosLog/bootstrap(_:clusterID:)``, `paxlog init`).
        /// When set, opening a directory of another cluster fails with
        /// ``PaxosLogError/Code/wrongIdentity``; nil accepts the cluster the directory records
        /// (its node id is always checked). A one-member log bootstraps an empty directory
        /// itself, with this id if set. Default: nil.
        public var clusterID: ClusterID? = nil
        /// When set, every peer and client must prove it knows this secret (HMAC challenge).
        public var secret: [UInt8]? = nil
        /// Where the library logs (at `info` and below); the caller owns it.
        public var logger: Logger = Logger(label: "paxoslog", factory: { _ in SwiftLogNoOpLogHandler() })
        /// Storage engine options (segment size, sync policy, compression threshold).
        public var storage: SegmentStore.Options = .init()
        /// One consensus tick; election timeouts and heartbeats are counted in ticks.
        public var tickInterval: TimeAmount = .milliseconds(10)
        /// Heartbeat every this many ticks. Default: the core's (`MultiPaxos.Configuration.defaults`), 2.
        public var heartbeatTicks = MultiPaxos.Configuration.defaults.heartbeatTicks
        /// Randomized election timeout, in ticks. Default: the core's, 15...30.
        public var electionTimeoutTicks = MultiPaxos.Configuration.defaults.electionTimeoutTicks
        /// Values per Accept message, and in-flight Accepts per follower. Default: the core's, 512 and 8.
        public var maxBatchCount = MultiPaxos.Configuration.defaults.maxBatchCount
        public var maxInflightBatches = MultiPaxos.Configuration.defaults.maxInflightBatches
        /// Caps on in-flight and uncommitted bytes and queued proposals (beyond: `overloaded`).
        /// Default: the core's, 16 MiB, 64 MiB and 65,536.
        public var maxInflightBytes = MultiPaxos.Configuration.defaults.maxInflightBytes
        public var maxUncommittedBytes = MultiPaxos.Configuration.defaults.maxUncommittedBytes
        public var maxQueuedProposals = MultiPaxos.Configuration.defaults.maxQueuedProposals
        /// The election guards (Sources/MultiPaxos/ELECTIONS.md; safety depends on none of them):
        /// a would-be candidate first asks a majority whether they would promise (pre-vote); a
        /// replica that hears its leader ignores other candidates (stickiness); a replica refuses
        /// its pre-vote to a candidate more than `maxCandidateLag` slots behind it. Defaults: on,
        /// on, 1,024. Every member should use the same values.
        public var preVote = MultiPaxos.Configuration.defaults.preVote
        public var leaderStickiness = MultiPaxos.Configuration.defaults.leaderStickiness
        public var maxCandidateLag = MultiPaxos.Configuration.defaults.maxCandidateLag
        /// An `append` that is not chosen within this time fails with ``PaxosLogError/Code/timeout``
        /// (its outcome is then unknown: it may still be chosen later).
        public var appendTimeout: TimeAmount = .seconds(10)
        /// How long a leader holds appends made off its event loop, right after it answered
        /// appends, for as many callers as it answered to append again: so those appends share one
        /// round (one Accept, one sync per replica) instead of trickling out in several. Callers
        /// on Swift's global executor come back a few at a time, and each would otherwise start a
        /// round of its own. Zero: propose at once. Appends made on the replica's event loop (see
        /// ``PaxosLog/taskExecutor``) are never held. The cost, at most this long, falls on
        /// appends that follow a burst whose callers do not return. Gathering callers into one
        /// round also keeps them in one: with hundreds of streams on the global executor a
        /// one-member log pipelines two half-rounds better (Benchmarks/README.md has both sides),
        /// so a log that wants throughput there more than its tail latency can set zero.
        public var appendHold: TimeAmount = .milliseconds(1)
        /// What a non-leader does with an `append`.
        public var nonLeaderAppends: NonLeaderAppends = .redirect
        /// Largest record `append` takes; larger ones fail with ``PaxosLogError/Code/invalidArgument``
        /// before anything is proposed. Must fit a storage record and a transport frame.
        public var maxRecordSize = 4 << 20
        /// Caps how fast ``PaxosLog/compact(through:snapshot:)`` writes the snapshot, so its
        /// writeback leaves the disk to the log's syncs. Default 64 MiB/s (a 100 MB snapshot
        /// then takes about 1.5 s; measured: append p99 during back-to-back compactions stays
        /// under twice the p99 without, where no cap gave 3–10×); nil: no cap. Snapshots
        /// received from a peer are never capped.
        public var snapshotWriteBytesPerSecond: Int? = 64 << 20
        /// How often the replica samples its state (role, ballot, positions, storage and transport
        /// counters) into swift-metrics, with its node id as the `node` dimension; nil: never (the
        /// event metrics, such as append latency, are recorded either way). Default 1 s.
        public var metricsInterval: Duration? = .seconds(1)
        /// Where this replica's metrics go; nil: the process-wide `MetricsSystem` (bootstrap it
        /// before opening the log). Default nil.
        public var metricsFactory: (any MetricsFactory)? = nil
        /// Mutual TLS 1.3 on the peer port, and TLS on the client port (with client certificates
        /// when the files say so); each replica's certificate must name its node id
        /// (``PaxosTransport/TLSCredentials``). Call its `reload()` to rotate certificates: new
        /// connections use them. nil: plain TCP. Independent of ``secret``. Default nil.
        public var tls: TLSCredentials? = nil
        /// Bytes of chosen values a replica keeps in memory to answer followers a little behind;
        /// older ones are forgotten and served from storage. Bounded in bytes, not slots, so one
        /// replica's memory stays the same whatever the record size. Default 16 MiB (about 50,000
        /// records of 256 B, the 65,536 slots kept before it was a byte bound).
        public var retainedChosenBytes = 16 << 20
        /// How much of the replicated client sessions each replica keeps: the identities of the
        /// last 524,288 appends made with an identity and the floors of the 65,536 most recently
        /// active clients (about 30 MiB at most). A retry older than that answers `sessionExpired`.
        /// Every replica of a cluster must use the same limits: the table is replicated state.
        package var sessionLimits = ClientSessions.Limits()
        /// Bytes in one chunk of a snapshot sent to a lagging peer: 2 MiB (well below the 16 MiB
        /// frame limit) halves the per-message work of 1 MiB chunks. Default 2 MiB.
        public var snapshotChunkSize = 2 << 20
        /// Snapshot bytes sent and not yet acknowledged: 64 MiB keeps loopback and LAN links busy
        /// while the receiver syncs (16 MiB left the sender idle during every sync). Default 64 MiB.
        public var snapshotWindowBytes: UInt64 = 64 << 20
        /// A snapshot received from a peer starts the writeback of every this many bytes without
        /// waiting for it, so the disk writes while the transfer goes on and the final sync has
        /// little left. Default 4 MiB.
        public var receivedSnapshotSyncInterval = 4 << 20

        /// Where the store's files live; tests pass a fault-injecting one.
        package var fileSystem: any FileSystem = PosixFileSystem()

        public init(nodeID: NodeID, members: [Member], dataDirectory: String) {
            self.nodeID = nodeID
            self.members = members
            self.dataDirectory = dataDirectory
        }

        /// A one-member configuration: a local WAL with the same API.
        public static func local(dataDirectory: String) -> Configuration {
            let loopback = PeerAddress(host: "127.0.0.1", port: 0)
            return Configuration(
                nodeID: 1,
                members: [Member(id: 1, peerAddress: loopback, clientAddress: loopback)],
                dataDirectory: dataDirectory
            )
        }

        func validate() throws(PaxosLogError) {
            guard !members.isEmpty else { throw PaxosLogError(.invalidConfiguration, "no members") }
            guard members.count <= 64 else { throw PaxosLogError(.invalidConfiguration, "at most 64 members, got \(members.count)") }
            guard Set(members.map(\.id)).count == members.count else {
                throw PaxosLogError(.invalidConfiguration, "duplicate member id in \(members)")
            }
            guard members.contains(where: { $0.id == nodeID }) else {
                throw PaxosLogError(.invalidConfiguration, "node id \(nodeID) is not a member (\(members.map(\.id)))")
            }
            guard !dataDirectory.isEmpty else { throw PaxosLogError(.invalidConfiguration, "empty data directory") }
            guard tickInterval > .zero, heartbeatTicks > 0, electionTimeoutTicks.lowerBound > heartbeatTicks else {
                throw PaxosLogError(.invalidConfiguration, "election timeout must exceed the heartbeat interval")
            }
            guard maxRecordSize > 0, maxRecordSize <= storage.maxRecordBytes / 2, maxRecordSize <= 8 << 20 else {
                throw PaxosLogError(.invalidConfiguration, "max record size \(maxRecordSize) must be 1 B…min(8 MiB, half the storage record limit \(storage.maxRecordBytes))")
            }
            guard appendHold >= .zero else { throw PaxosLogError(.invalidConfiguration, "append hold must not be negative") }
            guard retainedChosenBytes >= 0, snapshotChunkSize > 0, snapshotChunkSize <= 8 << 20, snapshotWindowBytes >= UInt64(snapshotChunkSize),
                  receivedSnapshotSyncInterval > 0 else {
                throw PaxosLogError(.invalidConfiguration, "retained bytes must not be negative; snapshot chunks 1 B…8 MiB, within the window; sync interval positive")
            }
            guard maxBatchCount > 0, maxInflightBatches > 0, maxQueuedProposals > 0 else {
                throw PaxosLogError(.invalidConfiguration, "batch, window and queue sizes must be positive")
            }
        }

        var coreConfiguration: MultiPaxos.Configuration {
            var c = MultiPaxos.Configuration(
                id: nodeID,
                members: members.map(\.id).sorted(),
                randomSeed: UInt64(nodeID) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds)
            )
            c.heartbeatTicks = heartbeatTicks
            c.electionTimeoutTicks = electionTimeoutTicks
            c.maxBatchCount = maxBatchCount
            c.maxInflightBatches = maxInflightBatches
            c.maxInflightBytes = maxInflightBytes
            c.maxUncommittedBytes = maxUncommittedBytes
            c.maxQueuedProposals = maxQueuedProposals
            c.maxFollowerHeldBytes = 2 * maxUncommittedBytes + retainedChosenBytes
            c.preVote = preVote
            c.leaderStickiness = leaderStickiness
            c.maxCandidateLag = maxCandidateLag
            return c
        }
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}
