// The storage engine lives in this module (see issue: storage engine).
