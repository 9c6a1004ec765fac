// swift-tools-version: 6.1
// Coverage-guided fuzz targets (libFuzzer) for PaxosLog's decoders. A separate package so the
// root package's build, tests and CI never compile it. Build and run one target with
//   Tools/run fuzz RecordCodecFuzz 60
// which builds in release with `-sanitize=fuzzer,address` and `-enable-testing` (the targets
// reach internal codecs through `@testable import`), links with lld (see toolset.json), and
// runs the binary on its seed corpus under Corpus/<target>/.
import PackageDescription

let package = Package(
    name: "PaxosLogFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "PaxosLog", path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
    ],
    targets: [
        // Declares libFuzzer's `LLVMFuzzerRunDriver`: SwiftPM links executables with
        // `--defsym main=<module>_main`, so each target has a Swift main that starts libFuzzer.
        .target(name: "CFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzer"]),
        .target(name: "WireFuzzSupport", dependencies: [
            "FuzzSupport", .product(name: "PaxosTransport", package: "PaxosLog"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .executableTarget(name: "RecordCodecFuzz", dependencies: [
            "FuzzSupport", .product(name: "SegmentLog", package: "PaxosLog"),
        ]),
        .executableTarget(name: "SegmentRecoveryFuzz", dependencies: [
            "FuzzSupport", .product(name: "SegmentLog", package: "PaxosLog"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "SnapshotReaderFuzz", dependencies: [
            "FuzzSupport", .product(name: "SegmentLog", package: "PaxosLog"),
        ]),
        .executableTarget(name: "PeerFrameFuzz", dependencies: [
            "FuzzSupport", "WireFuzzSupport", .product(name: "PaxosTransport", package: "PaxosLog"),
            .product(name: "MultiPaxos", package: "PaxosLog"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .executableTarget(name: "ClientProtocolFuzz", dependencies: [
            "FuzzSupport", "WireFuzzSupport", .product(name: "PaxosTransport", package: "PaxosLog"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
    ]
)
