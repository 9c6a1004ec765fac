import Foundation
import Logging
import PaxosLogTesting
@testable import SegmentLog

/// Shared helpers: temporary directories, deterministic payloads, a quiet logger.
enum TestSupport {
    static let logger: Logger = {
        var logger = Logger(label: "SegmentLogTests", factory: { _ in SwiftLogNoOpLogHandler() })
        logger.logLevel = .critical
        return logger
    }()

    static func temporaryDirectory(_ name: String = #function) -> String {
        let clean = name.filter { $0.isLetter || $0.isNumber }
        var template = Array((NSTemporaryDirectory() + "/segmentlog-\(clean.prefix(40))-XXXXXX").utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        return path
    }

    static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Deterministic bytes for `slot`: compressible (repeating text) or not (xorshift noise).
    static func payload(slot: UInt64, size: Int, compressible: Bool = false, salt: UInt64 = 0) -> [UInt8] {
        if compressible {
            let text = Array("slot \(slot) salt \(salt) the quick brown fox jumps over the lazy dog. ".utf8)
            return (0..<size).map { text[$0 % text.count] }
        }
        var x = slot &* 0x9E37_79B9_7F4A_7C15 &+ salt &+ 1
        var bytes = [UInt8](repeating: 0, count: size)
        for i in 0..<size {
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            bytes[i] = UInt8(truncatingIfNeeded: x)
        }
        return bytes
    }

    static func entry(_ slot: UInt64, size: Int = 32, round: UInt64 = 1, compressible: Bool = false, salt: UInt64 = 0) -> LogEntry {
        LogEntry(slot: slot, ballot: LogBallot(round: round, node: 1), isNoop: false,
                 payload: payload(slot: slot, size: size, compressible: compressible, salt: salt))
    }

    static func open(_ directory: String, _ options: SegmentStore.Options = .init(),
                     fileSystem: any FileSystem = PosixFileSystem()) throws -> SegmentStore {
        try SegmentStore.open(directory: directory, options: options, fileSystem: fileSystem, logger: logger)
    }

    /// The real disk without syncs: for tests that reopen logs many times and test detection,
    /// not durability.
    static let fastFileSystem = FaultInjectingFileSystem(skipSyncs: true)

    static func files(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    static func read(_ path: String) -> [UInt8] {
        (FileManager.default.contents(atPath: path)).map { [UInt8]($0) } ?? []
    }

    /// Plain open/write/close: no fsync, no atomic rename (tests rewrite logs thousands of times).
    static func write(_ path: String, _ bytes: [UInt8]) {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        precondition(fd >= 0, "cannot create \(path)")
        bytes.withUnsafeBytes { _ = Glibc.write(fd, $0.baseAddress, $0.count) }
        Glibc.close(fd)
    }
}

extension SegmentLogError.Code {
    var isCorruption: Bool { if case .corruption = self { return true } else { return false } }
    var corruptionFile: String? { if case .corruption(let file, _, _) = self { return file } else { return nil } }
}
