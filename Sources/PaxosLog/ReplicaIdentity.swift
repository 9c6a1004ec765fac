import Crypto
import Logging
import MultiPaxos
import NIOPosix
import SegmentLog

extension PaxosLog {
    /// A cluster's 128-bit id (see `SegmentLog.ClusterID`).
    public typealias ClusterID = SegmentLog.ClusterID

    /// Formats an empty data directory as an initial member of a new cluster: writes its
    /// identity (cluster id, node id, incarnation 1), durably and before anything else, then an
    /// empty log.
    ///
    /// Run it once per initial member, with the same `clusterID` on every one (make it with
    /// `ClusterID.random()` and hand it to the others), before the member's first ``open(_:)``.
    /// Never run it for a replica that was already part of the cluster and lost its directory: it
    /// would come back as an acceptor that forgot every promise and vote. A one-member log needs
    /// no bootstrap (``open(_:)`` does it).
    /// - Returns: the identity written.
    /// - Throws: ``PaxosLogError``: `invalidConfiguration`; `invalidArgument` if the directory
    ///   already holds an identity or a log (nothing is changed); `storage` for I/O errors.
    @discardableResult
    public static func bootstrap(_ configuration: Configuration, clusterID: ClusterID) async throws -> DirectoryIdentity {
        try configuration.validate()
        if let id = configuration.clusterID, id != clusterID {
            throw PaxosLogError(.invalidConfiguration, "bootstrap cluster id \(clusterID) differs from the configuration's \(id)")
        }
        let directory = configuration.dataDirectory
        let existing: DirectoryIdentity?
        do { existing = try DirectoryIdentity.read(directory: directory) } catch {
            throw PaxosLogError(.storage, "\(error)")
        }
        if let existing {
            throw PaxosLogError(.invalidArgument, "\(directory) is already initialized (\(existing)); nothing was changed")
        }
        if let names = try? PosixFileSystem().listDirectory(directory), names.contains(where: { $0.hasSuffix(".seg") }) {
            throw PaxosLogError(.invalidArgument, "\(directory) already holds a log; nothing was changed")
        }
        let requirement = ReplicaIdentity.bootstrapRequirement(for: configuration, clusterID: clusterID)
        return try await NIOThreadPool.singleton.runIfActive {
            let store: SegmentStore
            do {
                store = try SegmentStore.open(directory: directory, options: configuration.storage, logger: configuration.logger, identity: requirement)
            } catch let error as SegmentLogError {
                throw ReplicaIdentity.translate(error, configuration)
            }
            let identity = store.identity!
            try store.close()
            return identity
        }
    }

    /// This replica's identity, as its data directory records it.
    public var identity: DirectoryIdentity {
        // `ReplicaIdentity.openStore` always opens with a requirement, which always yields one.
        driver.store.identity!
    }
}

/// How a replica's data directory identity is checked when it opens: the policy half of
/// `SegmentLog`'s `IdentityRequirement`, kept apart from `PaxosLog.open` so the rules live in
/// one place.
///
/// - A multi-member replica never bootstraps on open: an empty directory is refused
///   (``PaxosLogError/Code/notBootstrapped``), because an empty acceptor that votes may break a
///   promise it made before it lost its disk.
/// - A one-member log bootstraps an empty directory itself: no other acceptor can hold a value it
///   forgot.
/// - A directory written before identities is adopted (its segments prove it kept its state),
///   recording ``Configuration/clusterID`` or, when that is nil, an id derived from the cluster
///   name, so all members of an older cluster adopt the same one.
/// - A directory marked as needing rejoin (its state was cut) or whose log is gone is refused as
///   a voter (``PaxosLogError/Code/needsRejoin``); a one-member log opens it with a warning.
package enum ReplicaIdentity {
    static func requirement(for configuration: PaxosLog.Configuration) -> IdentityRequirement {
        IdentityRequirement(
            nodeID: configuration.nodeID,
            clusterID: configuration.clusterID,
            bootstrap: configuration.members.count == 1 ? (configuration.clusterID ?? .random()) : nil,
            adoptAs: configuration.clusterID ?? legacyClusterID(name: configuration.clusterName)
        )
    }

    /// Opens the replica's store with its identity checked. Blocks (run it off the event loops).
    /// - Throws: ``PaxosLogError`` `wrongIdentity`, `notBootstrapped`, `needsRejoin`; other
    ///   storage errors as `SegmentLogError`, as before identities.
    static func openStore(_ configuration: PaxosLog.Configuration) throws -> SegmentStore {
        let store: SegmentStore
        do {
            store = try SegmentStore.open(directory: configuration.dataDirectory, options: configuration.storage,
                                          fileSystem: configuration.fileSystem, logger: configuration.logger,
                                          identity: requirement(for: configuration))
        } catch let error as SegmentLogError {
            throw translate(error, configuration)
        }
        guard let identity = store.identity else { return store }
        do { try refuseLostState(identity, configuration) } catch {
            try? store.close()
            throw error
        }
        return store
    }

    /// The requirement `bootstrap` formats a directory with: this node of the cluster `clusterID`.
    package static func bootstrapRequirement(for configuration: PaxosLog.Configuration, clusterID: ClusterID) -> IdentityRequirement {
        IdentityRequirement(nodeID: configuration.nodeID, clusterID: clusterID, bootstrap: clusterID, adoptAs: clusterID)
    }

    /// Checks a directory's identity as ``openStore(_:)`` does, with the same requirement, errors
    /// and rule for a directory that lost state, but opens no store: for a replica whose storage is
    /// not a `SegmentStore` (the simulator's, whose directory is modelled by `fileSystem`). Call it
    /// before recovering that storage, as `openStore` checks before recovery.
    /// - Returns: the identity the directory records (written now for a one-member bootstrap).
    /// - Throws: ``PaxosLogError`` `wrongIdentity`, `notBootstrapped`, `needsRejoin`; other
    ///   errors as `SegmentLogError`.
    @discardableResult
    package static func admit(_ configuration: PaxosLog.Configuration, fileSystem: any FileSystem) throws -> DirectoryIdentity {
        let identity: DirectoryIdentity
        do {
            identity = try requirement(for: configuration).establish(directory: configuration.dataDirectory, fileSystem: fileSystem,
                                                                     logger: configuration.logger)
        } catch let error as SegmentLogError {
            throw translate(error, configuration)
        }
        try refuseLostState(identity, configuration)
        return identity
    }

    /// A directory whose acceptor state was cut may not vote: refused for a multi-member replica,
    /// opened with a warning for a one-member log (no other acceptor can hold what it forgot).
    static func refuseLostState(_ identity: DirectoryIdentity, _ configuration: PaxosLog.Configuration) throws {
        guard let lost = identity.lostState else { return }
        if configuration.members.count == 1 {
            configuration.logger.warning("opening a one-member log whose records were cut: what was cut is lost", metadata: [
                "directory": "\(configuration.dataDirectory)", "reason": "\(lost)",
            ])
            return
        }
        throw PaxosLogError(.needsRejoin, "\(configuration.dataDirectory): \(lost), so node \(configuration.nodeID) may have forgotten "
            + "promises and votes and must not vote. \(rejoinAdvice)")
    }

    /// What an operator can do with a replica that lost state, until learner rejoin exists.
    static let rejoinAdvice = "Rejoining as a non-voting learner is not yet available. Keep this replica stopped: "
        + "the others stay available while a majority of them is up. Do not run `paxlog init` on it again."

    static func translate(_ error: SegmentLogError, _ configuration: PaxosLog.Configuration) -> any Error {
        switch error.code {
        case .wrongIdentity:
            return PaxosLogError(.wrongIdentity, "\(error); check --id, --data and --cluster-id")
        case .uninitialized(let directory):
            return PaxosLogError(.notBootstrapped, "\(directory) holds no log: node \(configuration.nodeID) of \(configuration.members.count) "
                + "starts only on a bootstrapped directory. For a new cluster, run `paxlog init` (PaxosLog.bootstrap) once on each initial "
                + "member with one shared --cluster-id. If this replica was a member and lost its directory, it must not vote with an "
                + "empty log. \(rejoinAdvice)")
        case .logMissing:
            return PaxosLogError(.needsRejoin, "\(error); node \(configuration.nodeID) must not vote with an empty log. \(rejoinAdvice)")
        default:
            return error
        }
    }

    /// The cluster id recorded when adopting a directory written before identities, with no
    /// ``PaxosLog/Configuration/clusterID`` set: the first 128 bits of SHA-256 over the cluster
    /// name, the one thing every member of such a cluster already shares.
    static func legacyClusterID(name: String) -> ClusterID {
        let digest = Array(SHA256.hash(data: Array("paxoslog legacy cluster\0\(name)".utf8)))
        func word(_ at: Int) -> UInt64 { digest[at..<at + 8].reduce(0) { $0 << 8 | UInt64($1) } }
        return ClusterID(high: word(0), low: word(8))
    }
}
