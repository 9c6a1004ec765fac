// swift-tools-version: 6.1
// Microbenchmarks (ordo-one/benchmark) for PaxosLog's hot paths, with allocation counts.
// A separate package so the root package's build, tests and CI never pay for it:
//   cd Benchmarks && swift package benchmark            # run
//   cd Benchmarks && swift build -c release            # just build
import PackageDescription

let package = Package(
    name: "PaxosLogBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "PaxosLog", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
    ],
    targets: [
        // zlib and liblz4 directly (the root package's shims are not products).
        .systemLibrary(name: "CBenchZlib", path: "Sources/CBenchZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CBenchLZ4", path: "Sources/CBenchLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .executableTarget(
            name: "PaxosLogBenchmarks",
            dependencies: [
                "CBenchZlib", "CBenchLZ4",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SegmentLog", package: "PaxosLog"),
                .product(name: "MultiPaxos", package: "PaxosLog"),
                .product(name: "PaxosLogTesting", package: "PaxosLog"),
                .product(name: "PaxosTransport", package: "PaxosLog"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/PaxosLogBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
