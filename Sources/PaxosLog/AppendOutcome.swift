import MultiPaxos

/// What a chosen slot means for the append that was proposed there.
enum AppendOutcome: Hashable, Sendable {
    /// The chosen value carries this append's identity: acknowledge it.
    case appended
    /// Another value was chosen at the slot: this attempt was not appended there (its value
    /// keeps its slot when a later leader re-proposes it, so it is not chosen anywhere else).
    case superseded

    /// Decides the fate of the append with identity `id` whose slot is now `chosen`.
    ///
    /// By identity, never by bytes: after a leader change another client's identical record may
    /// be chosen at our slot, and our own record, re-proposed by the new leader, carries our
    /// identity whatever the ballot.
    static func of(proposed id: ProposalID, chosen: ChosenEntry) -> AppendOutcome {
        chosen.value.proposalID == id ? .appended : .superseded
    }
}
