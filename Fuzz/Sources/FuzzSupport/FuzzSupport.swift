import CFuzzer

#if canImport(Glibc)
import Glibc
#endif

nonisolated(unsafe) private var fuzzBody: ((UnsafeRawBufferPointer) -> Void)?

/// Hands the process to libFuzzer, which calls `body` once per input on this thread.
///
/// A finding is whatever traps (a failed `precondition`, an overflow, an out-of-range index) or
/// what AddressSanitizer reports; `body` returns normally for every input the code handles.
public func runFuzzer(_ body: @escaping (UnsafeRawBufferPointer) -> Void) -> Never {
    fuzzBody = body
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    let status = LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        fuzzBody!(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }
    exit(status)
}

/// Fails the run: the property named by `message` does not hold for this input.
public func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                      file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}

/// `body`'s value, or nil when it throws an `E` (the typed refusal the API documents); any other
/// error is a finding.
public func refusedAs<E: Error, T>(_: E.Type, _ what: String, _ body: () throws -> T) -> T? {
    do {
        return try body()
    } catch is E {
        return nil
    } catch {
        fatalError("\(what) threw an untyped error: \(error)")
    }
}

/// A fresh directory for one target's files, in /dev/shm when it is writable (no disk I/O).
public func fuzzDirectory(_ name: String) -> String {
    let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    var template = Array("\(base)/paxlog-fuzz-\(name)-XXXXXX".utf8CString)
    guard mkdtemp(&template) != nil else { fatalError("mkdtemp: errno \(errno)") }
    return String(cString: template)
}
