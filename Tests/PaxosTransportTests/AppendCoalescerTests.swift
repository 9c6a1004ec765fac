import MultiPaxos
import NIOConcurrencyHelpers
import Testing
@testable import PaxosTransport

/// Concurrent appends on one client share requests, and each caller gets exactly its own slots.
@Suite("Append coalescer")
struct AppendCoalescerTests {
    /// A stand-in log: assigns consecutive slots to each request's records, remembers request sizes,
    /// and holds every request until `release` is called, so appends pile up behind it.
    final class Log: Sendable {
        let state = NIOLockedValueBox<(next: Slot, requests: [Int], records: [[UInt8]])>((1, [], []))
        let gate = AsyncGate()
        func send(_ records: [[UInt8]]) async throws(TransportError) -> [Slot] {
            await gate.wait()
            if records.contains([0xFF]) { throw TransportError(.serverError, "refused") }
            return state.withLockedValue { s in
                s.requests.append(records.count)
                s.records += records
                defer { s.next += Slot(records.count) }
                return (0..<records.count).map { s.next + Slot($0) }
            }
        }
    }

    /// Opens once and stays open.
    final class AsyncGate: Sendable {
        let state = NIOLockedValueBox<(open: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))
        func wait() async {
            await withCheckedContinuation { c in
                let open = state.withLockedValue { s in
                    if !s.open { s.waiting.append(c) }
                    return s.open
                }
                if open { c.resume() }
            }
        }
        func open() {
            for c in state.withLockedValue({ s in s.open = true; defer { s.waiting = [] }; return s.waiting }) { c.resume() }
        }
    }

    @Test("appends queued behind a request in flight go out together, each caller with its own slots")
    func merges() async throws {
        let log = Log()
        let coalescer = AppendCoalescer(maxInFlight: 1)
        let callers = 50
        let results = await withTaskGroup(of: ([[UInt8]], Result<[Slot], TransportError>).self) { group in
            for c in 0..<callers {
                let records = (0..<(c % 3 + 1)).map { [UInt8(c), UInt8($0)] }
                group.addTask {
                    let result: Result<[Slot], TransportError>
                    do throws(TransportError) { result = .success(try await coalescer.append(records, send: log.send)) }
                    catch { result = .failure(error) }
                    return (records, result)
                }
            }
            // Let the callers queue up behind the first request, then let the log answer.
            while coalescer.waitingCount < callers - 1 { await Task.yield() }
            log.gate.open()
            var all: [([[UInt8]], Result<[Slot], TransportError>)] = []
            for await r in group { all.append(r) }
            return all
        }
        let (requests, stored) = log.state.withLockedValue { ($0.requests, $0.records) }
        #expect(requests.count == 2, "one request for the first caller, one for everyone who waited: \(requests)")
        for (records, result) in results {
            let slots = try result.get()
            #expect(slots.count == records.count)
            #expect(slots.map { stored[Int($0) - 1] } == records, "each caller's slots hold exactly its records")
        }
    }

    @Test("a failed merged request fails every append in it, and later appends still work")
    func failure() async throws {
        let log = Log()
        log.gate.open()
        let coalescer = AppendCoalescer(maxInFlight: 1)
        await #expect(throws: TransportError.self) { try await coalescer.append([[0xFF]], send: log.send) }
        #expect(try await coalescer.append([[1], [2]], send: log.send) == [1, 2])
    }
}
