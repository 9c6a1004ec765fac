// swift-tools-version: 6.1
// PaxosLog: a replicated write-ahead log. Module dependencies run one way:
//   SegmentLog, MultiPaxos  ->  PaxosTransport (MultiPaxos only)  ->  PaxosLog  ->  paxlog
import PackageDescription

let package = Package(
    name: "PaxosLog",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PaxosLog", targets: ["PaxosLog"]),
        .library(name: "SegmentLog", targets: ["SegmentLog"]),
        .library(name: "MultiPaxos", targets: ["MultiPaxos"]),
        .library(name: "PaxosTransport", targets: ["PaxosTransport"]),
        .library(name: "PaxosLogTesting", targets: ["PaxosLogTesting"]),
        .executable(name: "paxlog", targets: ["paxlog"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // System libraries: apt packages liblz4-dev and zlib1g-dev (Tools/install-deps installs them).
        .systemLibrary(name: "CLZ4", path: "Sources/CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // The storage engine: segments, records, CRC, LZ4, recovery, group commit. Knows nothing of Paxos messages.
        .target(
            name: "SegmentLog",
            dependencies: [
                "CLZ4", "CZlib",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            exclude: ["FORMAT.md"]
        ),
        // The consensus core: deterministic, no I/O, no clocks, no threads.
        .target(
            name: "MultiPaxos",
            dependencies: [.product(name: "DequeModule", package: "swift-collections")],
            exclude: ["ELECTIONS.md"]  // the election rules' safety argument, beside the code
        ),
        // Wire codec and SwiftNIO TCP transport between replicas and for clients.
        .target(
            name: "PaxosTransport",
            dependencies: [
                "MultiPaxos", "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            exclude: ["WIRE.md"]  // the wire-format spec, beside the code it describes
        ),
        // The facade a database links: core + storage + transport + snapshots, async API.
        .target(
            name: "PaxosLog",
            dependencies: [
                "SegmentLog", "MultiPaxos", "PaxosTransport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // Simulator, fault-injecting file system, invariant checkers: shared by tests, benchmarks, fuzzers.
        .target(
            name: "PaxosLogTesting",
            dependencies: [
                "MultiPaxos", "SegmentLog", "PaxosTransport", "PaxosLog",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The CLI: the only target that imports ArgumentParser.
        .executableTarget(
            name: "paxlog",
            dependencies: [
                "PaxosLog", "SegmentLog", "MultiPaxos", "PaxosLogTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Tools/paxlog"
        ),

        .testTarget(name: "SegmentLogTests", dependencies: ["SegmentLog", "MultiPaxos", "PaxosLogTesting"], resources: [.copy("Golden")]),
        .testTarget(name: "MultiPaxosTests", dependencies: ["MultiPaxos", "PaxosLogTesting", "PaxosLog"], resources: [.copy("Transcripts")]),
        .testTarget(
            name: "PaxosTransportTests",
            dependencies: [
                "PaxosTransport", "MultiPaxos", "PaxosLogTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "PaxosLogTests",
            dependencies: [
                "PaxosLog", "PaxosLogTesting", "PaxosTransport", "MultiPaxos", "SegmentLog",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        // Real `paxlog` processes on loopback; depends on the executable so `swift test` builds it first.
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "paxlog", "PaxosLog", "SegmentLog", "MultiPaxos", "PaxosTransport", "PaxosLogTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)
