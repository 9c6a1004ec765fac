import MultiPaxos

/// What a chosen slot means for the append that was proposed there.
enum AppendOutcome: Hashable, Sendable {
    /// The chosen value is the one this append proposed: acknowledge it.
    case appended
    /// Another value was chosen at the slot: this record was not appended (a value keeps its slot
    /// when re-proposed, so it cannot be chosen anywhere else).
    case superseded
    /// The chosen value has this append's bytes but not its ballot: it may be this record,
    /// re-proposed by a later leader, or another client's identical record that a new leader put
    /// there. Acknowledging it could acknowledge two appends for one record.
    case unknown

    /// Decides the fate of an append of `bytes`, proposed under `ballot`, whose slot is now `chosen`.
    ///
    /// A leader proposes at most one value per slot in one ballot, so the ballot, not the bytes,
    /// identifies the proposal; the bytes only rule it out.
    static func of(proposed bytes: [UInt8], under ballot: Ballot, chosen: ChosenEntry) -> AppendOutcome {
        guard case .data(let chosenBytes) = chosen.value, chosenBytes == bytes else { return .superseded }
        return chosen.ballot == ballot ? .appended : .unknown
    }
}
