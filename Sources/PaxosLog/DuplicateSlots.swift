import MultiPaxos
import Synchronization

/// Chosen slots whose value repeats a proposal identity chosen at an earlier slot: readers skip
/// them, as they skip no-ops, so every record is read once, at the first slot that holds it.
///
/// **Why a retried record can be chosen twice.** A leader proposes a retry only when its client
/// sessions and its open slots do not hold the identity (``ClientSessions``). Yet the first
/// attempt may sit, accepted in an older ballot, on a minority that the leader's Phase 1 did not
/// hear, at a slot this leader never gets chosen: a later leader whose Phase 1 hears that minority
/// re-proposes it there. Paxos cannot tell "accepted by a minority" from "will be chosen", so no
/// leader-side rule prevents this; like Raft's client sessions (dissertation §6.3), the log may
/// hold the record twice and its readers see it once.
///
/// **Deterministic.** Whether a slot is a duplicate is a function of the chosen log through it:
/// every replica applies the same slots in order to the same bounded table, so all replicas
/// skip the same slots and an acknowledgement names the same first slot everywhere. A replica
/// that starts from a snapshot starts from the table saved or received with it (see
/// ``ClientSessions``, "Snapshots" and "Gaps" for the cases without one).
///
/// Written by the replica's executor before the slot becomes readable; read by readers on any
/// thread. Duplicates are rare (a leader change while a retry is in flight), so a set is enough.
package final class DuplicateSlots: Sendable {
    private let slots = Mutex<Set<Slot>>([])

    package init() {}

    func insert(_ slot: Slot) {
        slots.withLock { _ = $0.insert(slot) }
    }

    /// The duplicates among `range`, for a reader about to return it.
    package func within(_ range: ClosedRange<Slot>) -> Set<Slot> {
        slots.withLock { s in s.isEmpty ? [] : s.filter(range.contains) }
    }

    /// Slots through `slot` were compacted: no reader can ask for them again.
    func forget(through slot: Slot) {
        slots.withLock { s in if !s.isEmpty { s = s.filter { $0 > slot } } }
    }
}
