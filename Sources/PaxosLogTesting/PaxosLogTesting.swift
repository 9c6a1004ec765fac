// Simulator, fault-injecting file system and invariant checkers live in this module.
