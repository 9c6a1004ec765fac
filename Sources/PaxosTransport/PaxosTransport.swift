// The wire codec and SwiftNIO transport live in this module.
