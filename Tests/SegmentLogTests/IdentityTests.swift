import Foundation
import Testing
@testable import SegmentLog

/// The identity file (FORMAT.md, "Identity file") and what `SegmentStore.open` does with it.
@Suite struct IdentityTests {
    static let cluster = ClusterID(parsing: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")!
    static let other = ClusterID(parsing: "ffffffffffffffff0000000000000001")!

    static func requirement(node: UInt32 = 2, cluster: ClusterID? = nil, bootstrap: ClusterID? = nil) -> IdentityRequirement {
        IdentityRequirement(nodeID: node, clusterID: cluster, bootstrap: bootstrap, adoptAs: Self.other)
    }

    static func open(_ dir: String, _ requirement: IdentityRequirement, _ options: SegmentStore.Options = .init()) throws -> SegmentStore {
        try SegmentStore.open(directory: dir, options: options, fileSystem: TestSupport.fastFileSystem, logger: TestSupport.logger, identity: requirement)
    }

    static func segments(_ dir: String) -> [String] { TestSupport.files(dir).filter { $0.hasSuffix(".seg") } }

    @Test("the encoding is FORMAT.md's worked example, byte for byte, and reads back")
    func workedExample() throws {
        let identity = DirectoryIdentity(clusterID: Self.cluster, nodeID: 2, incarnation: 1)
        let hex = identity.encoded().map { String(format: "%02x", $0) }.joined()
        #expect(hex == "50584c4f4749444e01004000000000000f1e2d3c4b5a69788796a5b4c3d2e1f0"
            + "0200000000000000010000000000000000000000000000000000000071854ebb")
        let marked = DirectoryIdentity(clusterID: Self.cluster, nodeID: 2, incarnation: 2, lostState: .repair)
        #expect(marked.encoded().map { String(format: "%02x", $0) }.joined()
            == "50584c4f4749444e01004000010000000f1e2d3c4b5a69788796a5b4c3d2e1f0"
            + "0200000002000000020000000000000000000000000000000000000068e86df0")
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        #expect(try DirectoryIdentity.read(directory: dir) == nil)
        try marked.write(directory: dir)
        #expect(try DirectoryIdentity.read(directory: dir) == marked)
        #expect(TestSupport.files(dir) == ["IDENTITY"])  // the temporary file was renamed away
        #expect("\(Self.cluster)" == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        #expect(ClusterID(parsing: "0F1E2D3C4B5A69788796A5B4C3D2E1F0") == Self.cluster)
        #expect(ClusterID(parsing: "0f1e2d3c") == nil)
        #expect(ClusterID.random() != ClusterID.random())
    }

    @Test("every single-byte change and every truncation of the identity file is corruption, never a silent replacement")
    func damagedIdentity() throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try Self.open(dir, Self.requirement(cluster: Self.cluster, bootstrap: Self.cluster))
        try store.close()
        let path = dir + "/IDENTITY"
        let good = TestSupport.read(path)
        #expect(good.count == 64)
        var damaged: [[UInt8]] = (0..<good.count).map { i in
            var b = good
            b[i] ^= 0x01
            return b
        }
        damaged += (0..<good.count).map { Array(good.prefix($0)) } + [good + [0]]
        for bytes in damaged {
            TestSupport.write(path, bytes)
            #expect(throws: SegmentLogError.self) { _ = try DirectoryIdentity.read(directory: dir) }
            do {
                _ = try Self.open(dir, Self.requirement(cluster: Self.cluster, bootstrap: Self.cluster)).close()
                Issue.record("a damaged identity opened")
            } catch let error as SegmentLogError {
                #expect(error.code.corruptionFile == path, "\(error)")
            }
            #expect(TestSupport.read(path) == bytes)  // left as found
        }
    }

    @Test("an empty directory is refused unless bootstrapping, and nothing is written to it")
    func emptyDirectoryRefused() throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        do {
            _ = try Self.open(dir, Self.requirement()).close()
            Issue.record("an empty directory opened without bootstrap")
        } catch let error as SegmentLogError {
            guard case .uninitialized(let d) = error.code else { Issue.record("\(error)"); return }
            #expect(d == dir)
        }
        #expect(TestSupport.files(dir).filter { $0 != "LOCK" }.isEmpty)
    }

    @Test("bootstrap writes the identity, then restarts open it; another node or cluster is refused, naming both")
    func bootstrapThenRestart() throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try Self.open(dir, Self.requirement(bootstrap: Self.cluster))
        #expect(store.identity == DirectoryIdentity(clusterID: Self.cluster, nodeID: 2, incarnation: 1))
        try store.close()
        #expect(Self.segments(dir).count == 1)
        for requirement in [Self.requirement(), Self.requirement(cluster: Self.cluster), Self.requirement(bootstrap: Self.other)] {
            let again = try Self.open(dir, requirement)
            #expect(again.identity?.clusterID == Self.cluster)
            try again.close()
        }
        for (requirement, wanted) in [(Self.requirement(node: 3), "node 3"), (Self.requirement(cluster: Self.other), "\(Self.other)")] {
            do {
                _ = try Self.open(dir, requirement).close()
                Issue.record("opened as \(wanted)")
            } catch let error as SegmentLogError {
                guard case .wrongIdentity = error.code else { Issue.record("\(error)"); continue }
                #expect("\(error)".contains(wanted) && "\(error)".contains("node 2") && "\(error)".contains("\(Self.cluster)"), "\(error)")
            }
        }
    }

    @Test("a wiped directory is refused; one whose log alone was deleted is refused as having lost its state")
    func wipedDirectoryRefused() async throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try Self.open(dir, Self.requirement(bootstrap: Self.cluster))
        try await store.append([.promise(LogBallot(round: 3, node: 1))])
        try store.close()
        for name in Self.segments(dir) { try FileManager.default.removeItem(atPath: dir + "/" + name) }
        #expect {
            try Self.open(dir, Self.requirement()).close()
        } throws: { error in
            guard let e = error as? SegmentLogError, case .logMissing = e.code else { return false }
            return true
        }
        TestSupport.remove(dir)
        #expect {
            try Self.open(dir, Self.requirement()).close()
        } throws: { error in
            guard let e = error as? SegmentLogError, case .uninitialized = e.code else { return false }
            return true
        }
        #expect(Self.segments(dir).isEmpty)
    }

    @Test("a directory written before identities is adopted: its identity is recorded on first open")
    func legacyDirectoryAdopted() throws {
        let dir = TestSupport.temporaryDirectory()
        defer { TestSupport.remove(dir) }
        try TestSupport.open(dir).close()
        #expect(!TestSupport.files(dir).contains("IDENTITY"))
        let store = try Self.open(dir, Self.requirement())
        #expect(store.identity == DirectoryIdentity(clusterID: Self.other, nodeID: 2, incarnation: 1))
        try store.close()
        #expect(try DirectoryIdentity.read(directory: dir) == DirectoryIdentity(clusterID: Self.other, nodeID: 2, incarnation: 1))
    }

    @Test("tolerant recovery that cuts records marks the directory, before the cut, with a new incarnation")
    func tolerantRecoveryMarks() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        try DirectoryIdentity(clusterID: Self.cluster, nodeID: 2).write(directory: copy)
        let name = String(fixture.segments[1].split(separator: "/").last!)
        OfflineFixture.flip(copy + "/" + name, at: try fixture.records(1)[1].offset + 30)
        // A torn tail is not a cut: a clean strict open leaves the mark off (checked on the fixture).
        try Self.open(fixture.directory, Self.requirement(node: 2, bootstrap: nil), OfflineFixture.options).close()
        #expect(try DirectoryIdentity.read(directory: fixture.directory)?.needsRejoin == false)

        let store = try Self.open(copy, Self.requirement(), { var o = OfflineFixture.options; o.recoveryMode = .tolerant; return o }())
        #expect(store.identity == DirectoryIdentity(clusterID: Self.cluster, nodeID: 2, incarnation: 2, lostState: .tolerantRecovery))
        try store.close()
        #expect(try DirectoryIdentity.read(directory: copy)?.lostState == .tolerantRecovery)
        // The mark stays (one incarnation per loss) after the log reads clean again.
        let again = try Self.open(copy, Self.requirement(), OfflineFixture.options)
        #expect(again.identity?.incarnation == 2 && again.identity?.needsRejoin == true)
        try again.close()
    }

    @Test("repair --truncate-after-corruption marks the directory; a torn-tail repair and a refused one do not")
    func repairMarks() async throws {
        let fixture = try await OfflineFixture.make()
        let copy = fixture.copy()
        defer { TestSupport.remove(fixture.directory); TestSupport.remove(copy) }
        let name = String(fixture.segments[1].split(separator: "/").last!)
        OfflineFixture.flip(copy + "/" + name, at: try fixture.records(1)[1].offset + 30)
        _ = try LogRepair(directory: copy).run(truncateAfterCorruption: false, dryRun: false)
        #expect(try DirectoryIdentity.read(directory: copy) == nil)
        _ = try LogRepair(directory: copy).run(truncateAfterCorruption: true, dryRun: false)
        // No identity before (an older directory): marked with the cluster and node unknown.
        let marked = try #require(try DirectoryIdentity.read(directory: copy))
        #expect(marked == DirectoryIdentity(clusterID: .unknown, nodeID: 0, incarnation: 1, lostState: .repair))
        #expect(try LogInspector(directory: copy).inspect().identity == marked)
    }
}
