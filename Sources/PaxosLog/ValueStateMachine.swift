import NIOConcurrencyHelpers

/// A ``ReplicatedStateMachine`` value as a ``StateMachine``, for ``LogApplier``: the value lives
/// in a lock, is mutated in place (never copied per entry), and a snapshot captures a
/// copy-on-write copy, so taking one costs one copy of the state at the next `apply`, and
/// writing it runs beside applying.
public final class ValueStateMachine<Machine: ReplicatedStateMachine>: StateMachine {
    private let box = NIOLockedValueBox<(machine: Machine, applied: PaxosLog.Position)>((Machine(), 0))

    public init() {}

    /// The state and the position it reflects (every entry through it applied).
    public var state: (machine: Machine, applied: PaxosLog.Position) {
        box.withLockedValue { ($0.machine, $0.applied) }
    }

    /// The position the state reflects.
    public var applied: PaxosLog.Position { box.withLockedValue { $0.applied } }

    /// Kept only in memory: 0, so the applier restores the log's latest snapshot.
    public func open() async throws -> PaxosLog.Position {
        box.withLockedValue { $0 = (Machine(), 0) }
        return 0
    }

    public func apply(_ entries: [PaxosLog.Entry]) async throws {
        guard let last = entries.last else { return }
        box.withLockedValue { s in
            for e in entries { s.machine.apply(e.bytes) }
            s.applied = last.position
        }
    }

    public func prepareSnapshot() async throws -> any StateSnapshot {
        let (machine, applied) = box.withLockedValue { ($0.machine, $0.applied) }
        return Captured(machine: machine, position: applied)
    }

    public func restore(from input: SnapshotInput) async throws {
        let machine = try await Machine(reading: input)
        box.withLockedValue { $0 = (machine, input.position) }
    }

    struct Captured: StateSnapshot {
        let machine: Machine
        let position: PaxosLog.Position
        func save(to output: SnapshotOutput) async throws { try await machine.writeSnapshot(to: output) }
    }
}

extension ReplicatedStateMachine {
    /// `snapshot()` in one array, written in 1 MiB pieces.
    public func writeSnapshot(to output: SnapshotOutput) async throws {
        let bytes = snapshot()
        var start = 0
        repeat {
            let end = Swift.min(start + (1 << 20), bytes.count)
            try await output.write(Array(bytes[start..<end]))
            start = end
        } while start < bytes.count
    }

    /// The whole snapshot read into one array for `init(snapshot:)`.
    public init(reading input: SnapshotInput) async throws {
        guard input.length <= UInt64(Int.max / 2) else {
            throw PaxosLogError(.invalidArgument, "snapshot \(input.position) of \(input.length) bytes does not fit in memory; implement init(reading:) to stream it")
        }
        let data = try await input.read(exactly: Int(input.length))
        guard try await input.read(maxCount: 1).isEmpty, data.count == Int(input.length) else {
            throw PaxosLogError(.storage, "snapshot \(input.position) is not \(input.length) bytes long")
        }
        try self.init(snapshot: data)
    }
}
