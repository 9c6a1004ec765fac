// swift-tools-version: 6.1
// A replicated SQLite database: each replica applies the PaxosLog to its own SQLite file (the
// log's on-disk state-machine mode) and serves statements and queries over HTTP.
import PackageDescription

let package = Package(
    name: "ReplicatedSQLite",
    platforms: [.macOS(.v15)],
    dependencies: [
        // Named: a path dependency is otherwise known by its directory name, which differs per clone.
        .package(name: "PaxosLog", path: "../.."),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "ReplicatedSQLite",
            dependencies: [
                .product(name: "PaxosLog", package: "PaxosLog"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
    ]
)
