// The facade a database links lives in this module.
