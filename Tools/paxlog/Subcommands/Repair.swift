import ArgumentParser
import Foundation
import SegmentLog

/// `paxlog repair DIR`: cut a torn tail, or (only when asked) the log at its first damage.
struct Repair: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cut a torn tail, or with --truncate-after-corruption cut the log at its first damage.",
        discussion: """
            A torn tail (an incomplete last append) is cut: its bytes are copied to \
            <segment>.torn-<offset> and synced, then zeroed in place (zeros mark the end of the log). \
            Damage before the end of the log is refused unless --truncate-after-corruption is given; \
            then the plan first says exactly which slots will be lost and what acceptor state rolls \
            back, later segments are renamed to <segment>.discarded, and the damaged segment's tail \
            is cut as above. Nothing is deleted. The result is what tolerant recovery would keep.

            Refuses a directory a live replica holds (its LOCK is taken), and holds the lock itself \
            while it works. With --dry-run it only prints the plan and writes nothing.

            Exit status: 0 repaired, nothing to repair, or (--dry-run) the plan can be carried out; \
            1 refused (damage needs --truncate-after-corruption, or cannot be repaired by cutting); \
            2 usage or I/O error, or the directory is locked.
            """
    )

    @Argument(help: "The data directory.") var directory: String
    @Flag(help: "Print the plan; change nothing.") var dryRun = false
    @Flag(help: "Allow cutting the log at damage before its end, losing what follows (printed first).")
    var truncateAfterCorruption = false

    func run() throws {
        try runOffline {
            let repair = LogRepair(directory: directory)
            if dryRun, (try? LogInspector(directory: directory).isLocked()) == true {
                complain("note: \(directory) is held by a live replica; a real repair would refuse it")
            }
            let plan = try repair.run(truncateAfterCorruption: truncateAfterCorruption, dryRun: dryRun) { plan in
                describe(plan)
            }
            if let refusal = plan.refusal {
                complain(refusal)
                return OfflineExit.problem
            }
            if plan.actions.isEmpty {
                print("nothing to repair: the log is clean and has no torn tail")
                return OfflineExit.ok
            }
            if plan.cutsCorruption && !truncateAfterCorruption {
                complain("refusing to cut the log at damage before its end (\(plan.report.damage.count) problem\(plan.report.damage.count == 1 ? "" : "s")); "
                    + "rerun with --truncate-after-corruption to accept the loss above")
                return OfflineExit.problem
            }
            if dryRun {
                print("dry run: nothing changed")
                return OfflineExit.ok
            }
            let after = try LogVerifier(directory: directory).verify()
            if after.isClean && after.tornTail == nil {
                print("repaired: the log now verifies clean")
                return OfflineExit.ok
            }
            complain("repaired, but the log still does not verify clean: run `paxlog verify \(directory)`")
            return OfflineExit.problem
        }
    }

    private func describe(_ plan: RepairPlan) {
        guard !plan.actions.isEmpty else { return }
        print("repair plan for \(directory):")
        for d in plan.report.damage { print("  found \(damageLine(d))") }
        if let torn = plan.report.tornTail { print("  found \(tornTailLine(torn))") }
        for action in plan.actions {
            switch action {
            case .cutTail(let file, let offset, let bytes, let side):
                print("  cut \(bytes) bytes of \(file) at offset \(offset), saved to \(side)")
            case .setAside(let file, let to):
                print("  set aside \(file) as \(to)")
            }
        }
        if plan.cutsCorruption {
            let ranges = plan.lostSlots.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            print("  loses \(plan.lostSlotCount) slot\(plan.lostSlotCount == 1 ? "" : "s")"
                + (ranges.isEmpty ? "" : ": \(ranges.joined(separator: ", "))")
                + " (entries lost or rolled back to an older accept)")
            for range in plan.apparentLostSlots {
                print("  loses slots \(range.lowerBound)-\(range.upperBound) as well, by the look of a damaged record (unverified: its CRC failed)")
            }
            if plan.unreadableRegions > 0 {
                print("  plus whatever the \(plan.unreadableRegions) unreadable damaged region\(plan.unreadableRegions == 1 ? "" : "s") held")
            }
            for rollback in plan.stateRollback {
                print("  rolls back \(rollback)")
            }
            if !plan.stateRollback.isEmpty {
                print("  warning: an acceptor that forgets state may break Paxos safety; let this replica catch up before it votes")
            }
        } else {
            print("  loses nothing acknowledged (a torn tail was never acknowledged)")
        }
    }
}
