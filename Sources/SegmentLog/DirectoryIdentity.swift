// The identity file (`IDENTITY`): which cluster and node a data directory belongs to, and whether
// its acceptor state is whole. Byte layout in FORMAT.md ("Identity file").

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging

/// A cluster's id: 128 random bits made once, when the cluster is bootstrapped. Two clusters
/// bootstrapped with the same name and members still differ, so a directory left over from an
/// earlier cluster is never mistaken for a member of the new one.
///
/// Written as 32 hexadecimal digits in UUID form (`8-4-4-4-12`); parsing accepts any dashes.
public struct ClusterID: Hashable, Sendable, CustomStringConvertible {
    /// The first eight bytes of the text form, read as a big-endian number.
    public var high: UInt64
    /// The last eight bytes of the text form, read as a big-endian number.
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// All zeros: recorded by a tool that marked a directory but did not know its cluster (see
    /// ``DirectoryIdentity``). Never made by ``random()`` in practice (one chance in 2^128).
    public static let unknown = ClusterID(high: 0, low: 0)

    public var isUnknown: Bool { self == .unknown }

    /// A fresh id from the system's secure random source.
    public static func random() -> ClusterID {
        var rng = SystemRandomNumberGenerator()
        return ClusterID(high: rng.next(), low: rng.next())
    }

    /// Parses 32 hexadecimal digits; dashes are ignored (so `uuidgen` output works).
    public init?(parsing text: some StringProtocol) {
        let digits = String(text.filter { $0 != "-" })
        guard digits.count == 32, digits.allSatisfy(\.isHexDigit),
              let high = UInt64(digits.prefix(16), radix: 16), let low = UInt64(digits.suffix(16), radix: 16) else { return nil }
        self.init(high: high, low: low)
    }

    public var description: String {
        func hex(_ v: UInt64, _ width: Int) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: width - s.count) + s
        }
        let h = hex(high, 16), l = hex(low, 16)
        return "\(h.prefix(8))-\(h.dropFirst(8).prefix(4))-\(h.suffix(4))-\(l.prefix(4))-\(l.suffix(12))"
    }
}

/// Who a data directory belongs to: the cluster, this replica's node id, which incarnation of
/// that node it is, and whether its acceptor state is whole. Kept in the directory's `IDENTITY`
/// file, written before any segment.
///
/// A Paxos acceptor that forgets a promise or a vote can let two values be chosen for one slot.
/// The identity is how a replica tells "my directory, with everything I ever promised" from "an
/// empty or cut directory that only looks like mine".
public struct DirectoryIdentity: Hashable, Sendable, CustomStringConvertible {
    /// Why a directory's acceptor state is no longer whole, so it must not vote until it has
    /// rejoined (caught up from a majority of the others) as a learner.
    public enum LostState: UInt32, Hashable, Sendable, CustomStringConvertible {
        /// Tolerant recovery (`Options.recoveryMode = .tolerant`) cut records at damage.
        case tolerantRecovery = 1
        /// `paxlog repair --truncate-after-corruption` cut records at damage.
        case repair = 2

        public var description: String {
            switch self {
            case .tolerantRecovery: return "tolerant recovery cut records at damage"
            case .repair: return "repair --truncate-after-corruption cut records at damage"
            }
        }
    }

    /// The cluster; ``ClusterID/unknown`` if a tool marked the directory without knowing it.
    public var clusterID: ClusterID
    /// This replica's node id; 0 if a tool marked the directory without knowing it.
    public var nodeID: UInt32
    /// 1 for the directory's first life; one more each time its acceptor state was cut (and the
    /// future rejoin protocol will give a replacement directory a new one), so peers can tell a
    /// node's present life from an earlier one.
    public var incarnation: UInt64
    /// Set when the acceptor state was cut: the directory must not vote until it rejoins.
    public var lostState: LostState?

    public init(clusterID: ClusterID, nodeID: UInt32, incarnation: UInt64 = 1, lostState: LostState? = nil) {
        self.clusterID = clusterID
        self.nodeID = nodeID
        self.incarnation = incarnation
        self.lostState = lostState
    }

    /// The directory must rejoin as a learner before it votes again.
    public var needsRejoin: Bool { lostState != nil }

    public var description: String {
        "cluster \(clusterID), node \(nodeID == 0 ? "unknown" : String(nodeID)), incarnation \(incarnation)"
            + (lostState.map { ", needs rejoin (\($0))" } ?? "")
    }

    /// The identity's file name in a data directory.
    public static let fileName = Format.identityFileName

    /// Reads a directory's identity.
    /// - Returns: nil if the directory has no `IDENTITY` file (a new directory, or one written
    ///   before identities existed).
    /// - Throws: `SegmentLogError` `.corruption` if the file is damaged (it is never replaced
    ///   silently), `.io` if it cannot be read.
    public static func read(directory: String, fileSystem: any FileSystem = PosixFileSystem()) throws -> DirectoryIdentity? {
        let path = directory + "/" + fileName
        let fd: Int32
        do { fd = try fileSystem.open(path, mode: .readOnly) } catch let error as FileSystemError where error.errno == ENOENT {
            return nil
        } catch {
            throw SegmentLogError.io(error, "open", path)
        }
        defer { try? fileSystem.close(fd) }
        // One byte more than the layout: a longer file is not one this build wrote.
        var bytes = [UInt8](repeating: 0, count: Format.identitySize + 1)
        let n: Int
        do { n = try bytes.withUnsafeMutableBytes { try fileSystem.readFully(fd, into: $0, at: 0) } } catch {
            throw SegmentLogError.io(error, "read", path)
        }
        return try decode(bytes[0..<n], path: path)
    }

    /// Writes the identity durably (temporary file, `fdatasync`, rename, directory `fsync`), replacing
    /// any earlier one. The directory must exist; the caller holds its lock (or owns it otherwise).
    /// - Throws: `SegmentLogError` `.io`, `.syncFailed`.
    public func write(directory: String, fileSystem: any FileSystem = PosixFileSystem()) throws {
        let path = directory + "/" + Self.fileName
        let bytes = encoded()
        let fd = try fileSystem.installDurably(from: path + Format.temporarySuffix, to: path, mode: .readWriteCreate,
                                               directory: directory, purpose: "writing identity") { fd, step in
            step = "ftruncate"
            try fileSystem.truncate(fd, to: 0)
            step = "pwrite"
            try bytes.withUnsafeBytes { try fileSystem.writeAll(fd, $0, at: 0) }
        }
        try? fileSystem.close(fd)
    }

    /// The 64 bytes of the identity file (FORMAT.md, "Identity file").
    func encoded() -> [UInt8] {
        Format.encodeFixed(size: Format.identitySize, magic: Format.identityMagic, version: Format.identityVersion) { out in
            out.putLE(lostState == nil ? 0 : Format.identityFlagNeedsRejoin, at: 12)
            // Big-endian: the bytes in the order the text form prints them, as a UUID's are.
            out.storeBytes(of: clusterID.high.bigEndian, toByteOffset: 16, as: UInt64.self)
            out.storeBytes(of: clusterID.low.bigEndian, toByteOffset: 24, as: UInt64.self)
            out.putLE(nodeID, at: 32)
            out.putLE(lostState?.rawValue ?? 0, at: 36)
            out.putLE(incarnation, at: 40)
        }
    }

    /// Decodes and checks an identity file's bytes; every problem is corruption, with its offset.
    static func decode(_ bytes: ArraySlice<UInt8>, path: String) throws -> DirectoryIdentity {
        try bytes.withUnsafeBytes { b in
            func damaged(_ offset: Int, _ reason: String) -> SegmentLogError {
                SegmentLogError.corruption(path, offset, reason + "; the directory's identity is unknown: restore the file from a backup, "
                    + "or treat this replica as having lost its state")
            }
            guard b.count == Format.identitySize else {
                throw damaged(min(b.count, Format.identitySize), "identity file is \(b.count > Format.identitySize ? "longer" : "shorter") than \(Format.identitySize) bytes")
            }
            guard b.le(0, as: UInt64.self) == Format.identityMagic else { throw damaged(0, "bad identity magic") }
            let stored = b.le(60, as: UInt32.self)
            let actual = Format.crc(0, UnsafeRawBufferPointer(rebasing: b[0..<60]))
            guard stored == actual else {
                throw damaged(60, "identity CRC mismatch: stored \(hex(stored)), computed \(hex(actual))")
            }
            let version = b.le(8, as: UInt16.self)
            guard version == Format.identityVersion, b.le(10, as: UInt16.self) == UInt16(Format.identitySize) else {
                throw damaged(8, "identity version \(version) (size \(b.le(10, as: UInt16.self))) is not one this build reads (\(Format.identityVersion))")
            }
            let flags = b.le(12, as: UInt32.self)
            guard flags & ~Format.identityFlagNeedsRejoin == 0 else { throw damaged(12, "unknown identity flags \(hex(flags))") }
            let reason = b.le(36, as: UInt32.self)
            let lostState = LostState(rawValue: reason)
            // The flag and the reason are written together; one without the other is not our writing.
            guard (flags & Format.identityFlagNeedsRejoin != 0) == (lostState != nil), reason == 0 || lostState != nil else {
                throw damaged(36, "needs-rejoin flag and reason \(reason) disagree")
            }
            let incarnation = b.le(40, as: UInt64.self)
            guard incarnation >= 1 else { throw damaged(40, "incarnation 0") }
            return DirectoryIdentity(
                clusterID: ClusterID(high: UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
                                     low: UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 24, as: UInt64.self))),
                nodeID: b.le(32), incarnation: incarnation, lostState: lostState)
        }
    }

    /// Records durably that the directory's acceptor state was cut, before the cut is made: a
    /// crash between the two then leaves a directory that is marked and whole, never one that is
    /// cut and unmarked. A directory without an identity gets one with an unknown cluster and node.
    /// - Returns: the identity now on disk.
    @discardableResult
    package static func markLostState(_ reason: LostState, directory: String, fileSystem: any FileSystem, logger: Logger?) throws -> DirectoryIdentity {
        let current = try read(directory: directory, fileSystem: fileSystem)
        if let current, current.lostState != nil { return current }  // already marked: one incarnation per loss
        var marked = current ?? DirectoryIdentity(clusterID: .unknown, nodeID: 0, incarnation: 0)
        marked.incarnation += 1
        marked.lostState = reason
        try marked.write(directory: directory, fileSystem: fileSystem)
        logger?.warning("marked the directory as needing rejoin before cutting records: it must not vote until it has caught up", metadata: [
            "directory": "\(directory)", "reason": "\(reason)", "incarnation": "\(marked.incarnation)",
        ])
        return marked
    }
}

/// What ``SegmentStore/open(directory:options:fileSystem:logger:identity:)`` requires of a data
/// directory's identity. Without one the store ignores identities (except that a cut by
/// tolerant recovery still marks the directory).
public struct IdentityRequirement: Hashable, Sendable {
    /// The node id the directory must record.
    public var nodeID: UInt32
    /// The cluster the directory must belong to; nil accepts the one it records.
    public var clusterID: ClusterID?
    /// For a directory with neither an identity nor segments: bootstrap it as a member of this
    /// cluster (the identity is written before anything else), or nil to refuse it with
    /// `.uninitialized`.
    public var bootstrap: ClusterID?
    /// For a directory with segments but no identity (written before identities existed): the
    /// cluster to record when adopting it. Its segments prove it kept its acceptor state.
    public var adoptAs: ClusterID

    public init(nodeID: UInt32, clusterID: ClusterID? = nil, bootstrap: ClusterID? = nil, adoptAs: ClusterID) {
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.bootstrap = bootstrap
        self.adoptAs = adoptAs
    }

    /// Checks the directory's identity against the requirement, bootstrapping or adopting it when
    /// it has none. Runs under the directory's lock, before recovery writes anything.
    /// - Throws: `SegmentLogError` `.wrongIdentity`, `.uninitialized`, `.corruption` (a damaged
    ///   identity file), `.io`, `.syncFailed`.
    package func establish(directory: String, fileSystem: any FileSystem, logger: Logger) throws -> DirectoryIdentity {
        let names: [String]
        do { names = try fileSystem.listDirectory(directory) } catch { throw SegmentLogError.io(error, "readdir", directory) }
        let hasLog = names.contains { Format.segmentSequence(fileName: $0) != nil || Format.snapshotSlot(fileName: $0) != nil }
        if let recorded = try DirectoryIdentity.read(directory: directory, fileSystem: fileSystem) {
            let wrongNode = recorded.nodeID != 0 && recorded.nodeID != nodeID
            let wrongCluster = !recorded.clusterID.isUnknown && clusterID.map { $0 != recorded.clusterID } == true
            if wrongNode || wrongCluster {
                throw SegmentLogError(.wrongIdentity(directory: directory, recorded: recorded, expectedNode: nodeID, expectedCluster: clusterID), "")
            }
            // Bootstrapping creates the first segment right after the identity, so an identity
            // alone means the log was deleted (or a bootstrap crashed half-way). A replica that
            // may bootstrap anyway (a one-member log) loses nothing by starting again.
            if !hasLog && bootstrap == nil { throw SegmentLogError(.logMissing(directory: directory, identity: recorded), "") }
            return recorded
        }
        if hasLog {
            let adopted = DirectoryIdentity(clusterID: clusterID ?? adoptAs, nodeID: nodeID)
            try adopted.write(directory: directory, fileSystem: fileSystem)
            logger.notice("adopted a data directory written before identities: recorded its identity", metadata: [
                "directory": "\(directory)", "identity": "\(adopted)",
            ])
            return adopted
        }
        guard let bootstrap else { throw SegmentLogError(.uninitialized(directory: directory), "") }
        if let clusterID, clusterID != bootstrap {
            throw SegmentLogError(.invalidArgument, "bootstrap cluster \(bootstrap) differs from the required cluster \(clusterID)")
        }
        let created = DirectoryIdentity(clusterID: bootstrap, nodeID: nodeID)
        try created.write(directory: directory, fileSystem: fileSystem)
        logger.info("bootstrapped a new data directory", metadata: ["directory": "\(directory)", "identity": "\(created)"])
        return created
    }
}
