import MultiPaxos
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
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
        func send(_ records: [[UInt8]]) async throws(PaxosClientError) -> [Slot] {
            await gate.wait()
            if records.contains([0xFF]) { throw PaxosClientError(.rejected, "refused") }
            return state.withLockedValue { s in
                s.requests.append(records.count)
                s.records += records
                defer { s.next += Slot(records.count) }
                return (0..<records.count).map { s.next + Slot($0) }
            }
        }

        /// `send` as an ``AppendCoalescer/Send``: answered from a task, as a network would answer
        /// from another thread.
        func callback(_ records: [[UInt8]], _ deadline: NIODeadline?, _ completion: @escaping @Sendable (Result<[Slot], PaxosClientError>) -> Void) {
            Task {
                do throws(PaxosClientError) { completion(.success(try await send(records))) } catch { completion(.failure(error)) }
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
        let results = await withTaskGroup(of: ([[UInt8]], Result<[Slot], PaxosClientError>).self) { group in
            for c in 0..<callers {
                let records = (0..<(c % 3 + 1)).map { [UInt8(c), UInt8($0)] }
                group.addTask {
                    let result: Result<[Slot], PaxosClientError>
                    do throws(PaxosClientError) { result = .success(try await coalescer.append(records, send: log.callback)) }
                    catch { result = .failure(error) }
                    return (records, result)
                }
            }
            // Let the callers queue up behind the first request, then let the log answer.
            while coalescer.waitingCount < callers - 1 { await Task.yield() }
            log.gate.open()
            var all: [([[UInt8]], Result<[Slot], PaxosClientError>)] = []
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
        await #expect(throws: PaxosClientError.self) { try await coalescer.append([[0xFF]], send: log.callback) }
        #expect(try await coalescer.append([[1], [2]], send: log.callback) == [1, 2])
    }

    /// An append that waited for a place keeps the deadline it was made with: a merged request
    /// goes out with the earliest of its callers' deadlines, so no caller's call outlives its own.
    @Test("a merged request carries the earliest deadline of its callers", .timeLimit(.minutes(1)))
    func mergedRequestKeepsTheEarliestDeadline() async throws {
        let log = Log()
        let deadlines = NIOLockedValueBox<[NIODeadline?]>([])
        let send: AppendCoalescer.Send = { records, deadline, completion in
            deadlines.withLockedValue { $0.append(deadline) }
            log.callback(records, deadline, completion)
        }
        let coalescer = AppendCoalescer(maxInFlight: 1)
        let base = NIODeadline.uptimeNanoseconds(1_000_000_000)
        async let first = coalescer.append([[1]], deadline: base + .seconds(30), send: send)
        while deadlines.withLockedValue({ $0.count }) < 1 { await Task.yield() }
        async let later = coalescer.append([[2]], deadline: base + .seconds(20), send: send)
        async let earlier = coalescer.append([[3]], deadline: base + .seconds(10), send: send)
        while coalescer.waitingCount < 2 { await Task.yield() }
        log.gate.open()
        _ = try await (first, later, earlier)
        #expect(deadlines.withLockedValue { $0 } == [base + .seconds(30), base + .seconds(10)])
    }

    @Test("a send answered at once, inside the call, still serves every caller and frees its place", .timeLimit(.minutes(1)))
    func answeredAtOnce() async throws {
        let next = NIOLockedValueBox<Slot>(1)
        let sizes = NIOLockedValueBox<[Int]>([])
        let send: AppendCoalescer.Send = { records, _, completion in
            sizes.withLockedValue { $0.append(records.count) }
            completion(.success(next.withLockedValue { n in
                defer { n += Slot(records.count) }
                return (0..<records.count).map { n + Slot($0) }
            }))
        }
        let coalescer = AppendCoalescer(maxInFlight: 2)
        let slots = try await withThrowingTaskGroup(of: [Slot].self) { group in
            for c in 0..<500 {
                group.addTask { try await coalescer.append([[UInt8(c & 0xFF)], [UInt8(c >> 8)]], send: send) }
            }
            var all: [Slot] = []
            for try await s in group {
                #expect(s.count == 2 && s[1] == s[0] + 1, "a caller's records stay contiguous")
                all += s
            }
            return all
        }
        #expect(Set(slots) == Set(1...1000))
        #expect(sizes.withLockedValue { $0.reduce(0, +) } == 1000)
        // Both places were given back: two more requests can be in flight at once.
        #expect(try await coalescer.append([[1]], send: send) == [1001])
    }

    /// Callers that run on the loop answering their requests (as a database's tasks preferring the
    /// client's executor do) append again right after being answered; the next request must wait
    /// for them, not go out with only what waited. 16 callers, 20 appends each, answered 1 ms late.
    @Test("on an event loop, the callers just answered join the next request", .timeLimit(.minutes(1)))
    func answeredCallersJoinTheNextRequest() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let executor = EventLoopTaskExecutor(loop)
        let next = NIOLockedValueBox<Slot>(1)
        let sizes = NIOLockedValueBox<[Int]>([])
        let send: AppendCoalescer.Send = { records, _, completion in
            sizes.withLockedValue { $0.append(records.count) }
            loop.scheduleTask(in: .milliseconds(1)) {
                completion(.success(next.withLockedValue { n in
                    defer { n += Slot(records.count) }
                    return (0..<records.count).map { n + Slot($0) }
                }))
            }
        }
        let coalescer = AppendCoalescer(maxInFlight: 1)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for c in 0..<16 {
                tasks.addTask(executorPreference: executor) {
                    for i in 0..<20 { _ = try await coalescer.append([[UInt8(c), UInt8(i)]], send: send) }
                }
            }
            try await tasks.waitForAll()
        }
        let requests = sizes.withLockedValue { $0 }
        #expect(requests.reduce(0, +) == 320)
        // About 20 requests of 16; taking the next request before the answered callers ran gave
        // about 40, alternating 15 and 1.
        #expect(requests.count <= 25, "\(requests)")
        try await group.shutdownGracefully()
    }
}
