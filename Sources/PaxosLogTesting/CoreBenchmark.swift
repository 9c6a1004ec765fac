import MultiPaxos

/// The core alone, as fast as one thread can drive it: N replicas on the simulated network with
/// every fault off (zero-delay FIFO delivery, storage that is durable the moment it is asked),
/// so what is measured is the consensus state machines and nothing else.
public struct CoreBenchmark {
    public struct Result: Sendable {
        public var chosenSlots: Int
        public var messages: Int
        public var records: Int
        public var rounds: Int
    }

    var cores: [PaxosCore]
    var queue: [Envelope] = []
    let members: [NodeID]
    let values: [Value]
    let batch: Int
    public private(set) var chosen = 0
    var messages = 0
    var records = 0
    var rounds = 0

    /// - Parameters:
    ///   - replicas: cluster size.
    ///   - valueBytes: payload of each proposal.
    ///   - batch: proposals offered to the leader per round (and slots per Accept).
    public init(replicas: Int = 3, valueBytes: Int = 64, batch: Int = 256) {
        members = (1...replicas).map { NodeID($0) }
        self.batch = batch
        // A ring of pre-built values: the client's own allocations are not the core's.
        values = (0..<batch).map { i in .data((0..<valueBytes).map { UInt8(truncatingIfNeeded: $0 &+ i) }) }
        cores = members.map { id in
            var c = Configuration(id: id, members: (1...NodeID(replicas)).map { $0 }, randomSeed: UInt64(id))
            c.maxBatchCount = batch
            c.maxInflightBatches = 8
            c.maxQueuedProposals = batch * 16
            c.electionTimeoutTicks = 1_000_000...1_000_001
            return c
        }.map { PaxosCore(configuration: $0) }
        cores[0].campaign()
        while !cores[0].isLeader { round() }
    }

    /// Offers one batch to the leader and runs one delivery round.
    public mutating func step() {
        for i in 0..<batch {
            if case .overloaded = cores[0].propose(values[i]) { break }
        }
        round()
        // Snapshot stand-in: keep memory flat over millions of slots.
        if cores[0].chosenThrough & 0xFFFF == 0 || rounds & 255 == 0 {
            for i in cores.indices { cores[i].compact(through: cores[i].chosenThrough) }
        }
    }

    mutating func round() {
        rounds += 1
        for i in cores.indices { drain(i) }
        var head = 0
        while head < queue.count {
            let e = queue[head]
            head += 1
            cores[Int(e.to) - 1].step(e)
        }
        queue.removeAll(keepingCapacity: true)
        for i in cores.indices { drain(i) }
    }

    mutating func drain(_ i: Int) {
        let r = cores[i].takeReady()
        records += r.records.count
        if i == 0 { chosen += r.chosen.count }
        messages += r.messages.count + r.messagesAfterPersist.count
        queue.append(contentsOf: r.messages)
        if !r.records.isEmpty || !r.messagesAfterPersist.isEmpty {
            // Storage is instantly durable here, so votes may leave right away.
            cores[i].persisted(through: r.persistThrough)
            queue.append(contentsOf: r.messagesAfterPersist)
            let again = cores[i].takeReady()
            if i == 0 { chosen += again.chosen.count }
            records += again.records.count
            queue.append(contentsOf: again.messages)
            queue.append(contentsOf: again.messagesAfterPersist)
            if !again.records.isEmpty { cores[i].persisted(through: again.persistThrough) }
        }
    }

    public var result: Result { Result(chosenSlots: chosen, messages: messages, records: records, rounds: rounds) }
}
