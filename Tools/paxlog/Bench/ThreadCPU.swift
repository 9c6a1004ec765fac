import Foundation

/// CPU time of this process's threads, grouped by thread name, read from
/// `/proc/self/task/<tid>/{comm,stat}`: which part of a one-process scenario used the cores.
/// Storage threads are `paxlog-writer`, `paxlog-sync` and `paxlog-ack`; SwiftNIO's event loops are
/// `NIO-*` (`NIO-SGLTN-*` for the singleton group); everything else (Swift concurrency's pool,
/// which runs the load generator, NIO's thread pool, Dispatch) is "other". A thread that exits
/// between two samples takes its time with it, so the groups can add up to less than `getrusage`.
struct ThreadCPU {
    /// Per thread id: its group and CPU seconds so far.
    private var threads: [String: (group: String, seconds: Double)] = [:]

    static let groups = ["storage", "event_loops", "other"]

    static func sample() -> ThreadCPU {
        var result = ThreadCPU()
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? [] {
            let base = "/proc/self/task/\(tid)/"
            guard let name = try? String(contentsOfFile: base + "comm", encoding: .utf8),
                  let stat = try? String(contentsOfFile: base + "stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // After "pid (comm)": state is field 3, utime and stime are fields 14 and 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            result.threads[tid] = (group(name.trimmingCharacters(in: .whitespacesAndNewlines)), (user + system) / ticks)
        }
        return result
    }

    static func group(_ name: String) -> String {
        if name.hasPrefix("paxlog-") { return "storage" }
        if name.hasPrefix("NIO-") { return "event_loops" }
        return "other"
    }

    /// CPU seconds per group since `earlier` (threads started since count from zero).
    func since(_ earlier: ThreadCPU) -> [String: Double] {
        var totals = Dictionary(uniqueKeysWithValues: Self.groups.map { ($0, 0.0) })
        for (tid, now) in threads {
            totals[now.group, default: 0] += now.seconds - (earlier.threads[tid]?.seconds ?? 0)
        }
        return totals
    }
}
