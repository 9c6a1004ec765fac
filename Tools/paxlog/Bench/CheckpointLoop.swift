/// The checkpoint loop of the steady-state scenarios (`--checkpoint-mib`): until its task is
/// cancelled, each time `written()` has grown by `every` bytes since the last checkpoint, runs
/// `checkpoint` (snapshot and truncate the log's prefix, as an application's checkpoint would),
/// which says whether it took one.
/// - Returns: how many checkpoints were taken.
func checkpointLoop(every: Int, written: () -> Int, checkpoint: () async throws -> Bool) async rethrows -> Int {
    var count = 0
    var mark = written()
    while !Task.isCancelled {
        try? await Task.sleep(for: .milliseconds(20))
        let now = written()
        guard now - mark >= every, try await checkpoint() else { continue }
        mark = now
        count += 1
    }
    return count
}
