import Foundation
import Metrics
import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PaxosTransport
import SegmentLog

/// Publishes one replica's metrics through swift-metrics, each with its node id as the `node`
/// dimension, so one process can host several replicas and any swift-metrics backend (the
/// `paxlog serve --metrics` endpoint bootstraps Prometheus) tells them apart.
///
/// Events are recorded as they happen: appends and their latency (``PaxosLog/append(_:)``), and
/// each group commit's fsync time and size (``SegmentStore/observeCommits(_:)``). State is
/// sampled every ``PaxosLog/Configuration/metricsInterval`` and by ``refresh()``: role, ballot,
/// positions, storage and transport counters (published as the increase since the last sample).
///
/// The names (Prometheus conventions; a `Timer` is a histogram in seconds):
/// - `paxoslog_appended_records_total`, `paxoslog_append_failures_total`,
///   `paxoslog_append_duration_seconds` (histogram: call to chosen, per batch)
/// - `paxoslog_fsync_duration_seconds` (histogram, per group commit that synced),
///   `paxoslog_group_commit_appends` (histogram: storage appends acknowledged per commit)
/// - `paxoslog_chosen_slots_total`, `paxoslog_chosen_through`, `paxoslog_last_accepted`
/// - `paxoslog_is_leader`, `paxoslog_leader_id` (0: none known), `paxoslog_role{role}` (1 for
///   the current one of `leader`, `follower`, `electing`), `paxoslog_ballot_round`,
///   `paxoslog_ballot_node`, `paxoslog_leadership_changes_total` (changes seen between samples),
///   `paxoslog_leadership_transfers_total{outcome}` (transfers this replica was asked for, by
///   `completed`, `timeout`, or `refused`: not the leader, not a member, closed)
/// - `paxoslog_storage_written_bytes_total`, `paxoslog_storage_raw_payload_bytes_total`,
///   `paxoslog_storage_stored_payload_bytes_total`, `paxoslog_storage_fsyncs_total`,
///   `paxoslog_storage_group_commits_total`, `paxoslog_data_directory_bytes`,
///   `paxoslog_storage_failed` (1 once storage failed and the replica stopped)
/// - `paxoslog_snapshot_transfers_sending` (outgoing transfers in progress),
///   `paxoslog_snapshot_transfers_started_total`, `paxoslog_snapshot_transfers_finished_total`,
///   `paxoslog_snapshot_sent_bytes_total`, `paxoslog_snapshots_installed_total`
/// - `paxoslog_malformed_frames_total{port}`, `paxoslog_refused_handshakes_total{port}`,
///   `paxoslog_peer_connect_failures_total`, `paxoslog_peer_dropped_envelopes_total`
///   (`port` is `peer` or `client`)
/// - `paxoslog_follower_lag_slots{follower}`, `paxoslog_follower_inflight_accepts{follower}`,
///   `paxoslog_follower_inflight_bytes{follower}`: each follower as this replica sees it while it
///   leads (0 otherwise)
final class ReplicaMetrics: Sendable {
    private let driver: ReplicaDriver
    private let transport: PeerTransport?
    /// The client port's counters, once a ``PaxosLogServer`` listens.
    let clientCounters = NIOLockedValueBox<TransportCounters?>(nil)
    private let last = NIOLockedValueBox(Sample())
    private let sampler = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let node: String

    let appended: Counter
    let appendFailures: Counter
    let appendDuration: Metrics.Timer
    private let transfers: [String: Counter]
    private let fsyncDuration: Metrics.Timer
    private let groupCommitSize: Recorder
    private let chosenSlots: Counter
    private let chosenThrough: Gauge
    private let lastAccepted: Gauge
    private let isLeader: Gauge
    private let leaderID: Gauge
    private let roles: [(name: String, gauge: Gauge)]
    private let ballotRound: Gauge
    private let ballotNode: Gauge
    private let leadershipChanges: Counter
    private let writtenBytes: Counter
    private let rawPayloadBytes: Counter
    private let storedPayloadBytes: Counter
    private let fsyncs: Counter
    private let groupCommits: Counter
    private let directoryBytes: Gauge
    private let storageFailed: Gauge
    private let snapshotsSending: Gauge
    private let snapshotSentBytes: Counter
    private let snapshotsInstalled: Counter
    private let snapshotTransfersStarted: Counter
    private let snapshotTransfersFinished: Counter
    private let malformedFrames: [String: Counter]
    private let refusedHandshakes: [String: Counter]
    private let connectFailures: Counter
    private let droppedEnvelopes: Counter
    /// Per follower, as this replica sees it while leading: lag in slots, Accepts and payload
    /// bytes in flight (zero while not leading).
    private let followerLag: [NodeID: (slots: Gauge, accepts: Gauge, bytes: Gauge)]

    /// What the previous sample saw, to publish counters as increases.
    private struct Sample {
        var chosenThrough: Slot = 0
        var leadership: Leadership?
        var storage: SegmentStore.Statistics?
        var snapshotSentBytes: UInt64 = 0
        var snapshotsInstalled = 0
        var transfersStarted = 0
        var transfersFinished = 0
        var transport: [String: TransportCounters.Snapshot] = [:]
    }

    init(driver: ReplicaDriver, transport: PeerTransport?) {
        self.driver = driver
        self.transport = transport
        node = "\(driver.replica.configuration.nodeID)"
        let d = [("node", node)]
        let f = driver.replica.configuration.metricsFactory ?? MetricsSystem.factory
        func counter(_ name: String, _ extra: [(String, String)] = []) -> Counter { Counter(label: name, dimensions: d + extra, factory: f) }
        func gauge(_ name: String, _ extra: [(String, String)] = []) -> Gauge { Gauge(label: name, dimensions: d + extra, factory: f) }
        func timer(_ name: String) -> Metrics.Timer { Metrics.Timer(label: name, dimensions: d, factory: f) }
        appended = counter("paxoslog_appended_records_total")
        appendFailures = counter("paxoslog_append_failures_total")
        appendDuration = timer("paxoslog_append_duration_seconds")
        transfers = Dictionary(uniqueKeysWithValues: ["completed", "timeout", "refused"].map { ($0, counter("paxoslog_leadership_transfers_total", [("outcome", $0)])) })
        fsyncDuration = timer("paxoslog_fsync_duration_seconds")
        groupCommitSize = Recorder(label: "paxoslog_group_commit_appends", dimensions: d, aggregate: true, factory: f)
        chosenSlots = counter("paxoslog_chosen_slots_total")
        chosenThrough = gauge("paxoslog_chosen_through")
        lastAccepted = gauge("paxoslog_last_accepted")
        isLeader = gauge("paxoslog_is_leader")
        leaderID = gauge("paxoslog_leader_id")
        roles = ["leader", "follower", "electing"].map { ($0, gauge("paxoslog_role", [("role", $0)])) }
        ballotRound = gauge("paxoslog_ballot_round")
        ballotNode = gauge("paxoslog_ballot_node")
        leadershipChanges = counter("paxoslog_leadership_changes_total")
        writtenBytes = counter("paxoslog_storage_written_bytes_total")
        rawPayloadBytes = counter("paxoslog_storage_raw_payload_bytes_total")
        storedPayloadBytes = counter("paxoslog_storage_stored_payload_bytes_total")
        fsyncs = counter("paxoslog_storage_fsyncs_total")
        groupCommits = counter("paxoslog_storage_group_commits_total")
        directoryBytes = gauge("paxoslog_data_directory_bytes")
        storageFailed = gauge("paxoslog_storage_failed")
        snapshotsSending = gauge("paxoslog_snapshot_transfers_sending")
        snapshotSentBytes = counter("paxoslog_snapshot_sent_bytes_total")
        snapshotsInstalled = counter("paxoslog_snapshots_installed_total")
        snapshotTransfersStarted = counter("paxoslog_snapshot_transfers_started_total")
        snapshotTransfersFinished = counter("paxoslog_snapshot_transfers_finished_total")
        var malformed: [String: Counter] = [:], refused: [String: Counter] = [:]
        for port in ["peer", "client"] {
            malformed[port] = counter("paxoslog_malformed_frames_total", [("port", port)])
            refused[port] = counter("paxoslog_refused_handshakes_total", [("port", port)])
        }
        malformedFrames = malformed
        refusedHandshakes = refused
        connectFailures = counter("paxoslog_peer_connect_failures_total")
        droppedEnvelopes = counter("paxoslog_peer_dropped_envelopes_total")
        let me = driver.replica.configuration.nodeID
        var lag: [NodeID: (slots: Gauge, accepts: Gauge, bytes: Gauge)] = [:]
        for m in driver.replica.configuration.members where m.id != me {
            let follower = [("follower", "\(m.id)")]
            lag[m.id] = (gauge("paxoslog_follower_lag_slots", follower), gauge("paxoslog_follower_inflight_accepts", follower),
                         gauge("paxoslog_follower_inflight_bytes", follower))
        }
        followerLag = lag

        let fsyncDuration = fsyncDuration, groupCommitSize = groupCommitSize
        driver.store.observeCommits { commit in
            if commit.syncs > 0 { fsyncDuration.recordNanoseconds(Int64(clamping: commit.syncNanoseconds)) }
            if commit.appends > 0 { groupCommitSize.record(commit.appends) }
        }
    }

    /// Starts sampling every `interval` until ``stop()``.
    func start(interval: Duration?) {
        guard let interval else { return }
        let task = Task { [self] in
            while !Task.isCancelled {
                await refresh()
                try? await Task.sleep(for: interval)
            }
        }
        sampler.withLockedValue { $0 = task }
    }

    /// Stops sampling and the commit observer; takes one last sample first.
    func stop() async {
        sampler.withLockedValue { $0 }?.cancel()
        await refresh()
        driver.store.observeCommits(nil)
    }

    /// Records the outcome of one append call of `count` records that started at `start`.
    func recordAppend(count: Int, since start: NIODeadline, succeeded: Bool) {
        if succeeded {
            appended.increment(by: count)
            appendDuration.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
        } else {
            appendFailures.increment(by: count)
        }
    }

    /// Counts a leadership transfer this replica was asked for, by how it ended.
    func recordTransfer(_ error: (any Error)?) {
        let outcome = error == nil ? "completed" : (error as? PaxosLogError)?.code == .timeout ? "timeout" : "refused"
        transfers[outcome]?.increment()
    }

    /// Samples the replica's state now (on its event loop) and publishes it.
    func refresh() async {
        let directory = driver.replica.configuration.dataDirectory
        if let size = try? await NIOThreadPool.singleton.runIfActive({ dataDirectoryBytes(directory) }) {
            directoryBytes.record(Double(size))
        }
        try? await driver.loop.submit { self.publish() }.get()
    }

    /// Samples and publishes. On the driver's event loop: that reads the replica's state where
    /// it lives, and serializes samples, so that two at once (a scrape during a periodic sample)
    /// cannot publish the same increase twice.
    private func publish() {
        driver.loop.preconditionInEventLoop()
        let replica = driver.replica
        let state = (leadership: replica.leadership, chosenThrough: replica.readableThrough, lastAccepted: replica.core.lastAcceptedSlot,
                     failed: replica.failure != nil, sending: replica.snapshots.outgoing.count,
                     started: replica.snapshots.started, finished: replica.snapshots.finished,
                     sentBytes: replica.snapshots.sentBytes, installed: replica.snapshots.installed)
        let storage = driver.store.statistics
        let progress = Dictionary(uniqueKeysWithValues: replica.core.followerProgress.map { ($0.node, $0) })
        for (id, gauges) in followerLag {
            let p = progress[id]
            gauges.slots.record(Double(p?.lagSlots ?? 0))
            gauges.accepts.record(Double(p?.inflightAccepts ?? 0))
            gauges.bytes.record(Double(p?.inflightBytes ?? 0))
        }
        var transportCounters: [String: TransportCounters.Snapshot] = [:]
        if let transport { transportCounters["peer"] = transport.counters.snapshot }
        if let client = clientCounters.withLockedValue({ $0 }) { transportCounters["client"] = client.snapshot }

        let previous = last.withLockedValue { previous in
            defer {
                previous = Sample(chosenThrough: state.chosenThrough, leadership: state.leadership, storage: storage,
                                  snapshotSentBytes: state.sentBytes, snapshotsInstalled: state.installed,
                                  transfersStarted: state.started, transfersFinished: state.finished, transport: transportCounters)
            }
            return previous
        }
        func grow(_ counter: Counter, _ now: Int, _ before: Int) { if now > before { counter.increment(by: now - before) } }
        grow(chosenSlots, Int(clamping: state.chosenThrough), Int(clamping: previous.chosenThrough))
        chosenThrough.record(Double(state.chosenThrough))
        lastAccepted.record(Double(state.lastAccepted))
        let l = state.leadership
        isLeader.record(l.isLeader ? 1 : 0)
        leaderID.record(Double(l.leader ?? 0))
        let role = l.isLeader ? "leader" : (l.leader == nil ? "electing" : "follower")
        for r in roles { r.gauge.record(r.name == role ? 1 : 0) }
        ballotRound.record(Double(l.ballot.round))
        ballotNode.record(Double(l.ballot.node))
        if let before = previous.leadership, before.leader != l.leader || before.ballot != l.ballot { leadershipChanges.increment() }
        grow(writtenBytes, storage.bytesWritten, previous.storage?.bytesWritten ?? 0)
        grow(rawPayloadBytes, storage.rawPayloadBytes, previous.storage?.rawPayloadBytes ?? 0)
        grow(storedPayloadBytes, storage.storedPayloadBytes, previous.storage?.storedPayloadBytes ?? 0)
        grow(fsyncs, storage.dataSyncs, previous.storage?.dataSyncs ?? 0)
        grow(groupCommits, storage.groupCommits, previous.storage?.groupCommits ?? 0)
        storageFailed.record(state.failed ? 1 : 0)
        snapshotsSending.record(Double(state.sending))
        grow(snapshotSentBytes, Int(clamping: state.sentBytes), Int(clamping: previous.snapshotSentBytes))
        grow(snapshotsInstalled, state.installed, previous.snapshotsInstalled)
        grow(snapshotTransfersStarted, state.started, previous.transfersStarted)
        grow(snapshotTransfersFinished, state.finished, previous.transfersFinished)
        for (port, now) in transportCounters {
            let before = previous.transport[port]
            grow(malformedFrames[port]!, now.malformedFrames, before?.malformedFrames ?? 0)
            grow(refusedHandshakes[port]!, now.refusedHandshakes, before?.refusedHandshakes ?? 0)
            if port == "peer" {
                grow(connectFailures, now.connectFailures, before?.connectFailures ?? 0)
                grow(droppedEnvelopes, now.droppedEnvelopes, before?.droppedEnvelopes ?? 0)
            }
        }
    }
}

/// Bytes of the regular files directly in `directory` (segments, snapshots, the lock file):
/// what the log holds on disk. 0 when it cannot be listed.
func dataDirectoryBytes(_ directory: String) -> Int {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return 0 }
    var total = 0
    for name in names {
        var st = stat()
        if stat(directory + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { total += Int(st.st_size) }
    }
    return total
}
