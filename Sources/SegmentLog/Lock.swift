#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A pthread mutex with a condition variable on the monotonic clock. The writer thread blocks in
/// `wait` between group commits; a dedicated thread (not a Swift task) is used because it spends
/// its life in blocking `pwrite`/`fdatasync` calls, which must not occupy the cooperative pool.
final class PosixLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        #if os(Linux)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        #endif
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits for `signal`; the caller holds the lock.
    func wait() { pthread_cond_wait(condition, mutex) }

    /// Waits for `signal` or until the monotonic clock reaches `deadline` (nanoseconds).
    func wait(untilNanoseconds deadline: UInt64) {
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        pthread_cond_timedwait(condition, mutex, &ts)
    }

    func signal() { pthread_cond_signal(condition) }
    func broadcast() { pthread_cond_broadcast(condition) }
}

/// Nanoseconds on the monotonic clock.
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Sets the calling thread's nice value (on Linux a per-thread attribute).
/// - Returns: `errno` if refused (typically `EACCES` without `CAP_SYS_NICE`), nil on success.
func setCurrentThreadNice(_ nice: Int32) -> Int32? {
    #if os(Linux)
    // `who` 0 is the calling thread, not the whole process, on Linux.
    return setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) == 0 ? nil : errno
    #else
    return nil
    #endif
}

/// A joinable pthread running `body`.
final class OSThread: @unchecked Sendable {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private var handle: pthread_t

    private init(handle: pthread_t) { self.handle = handle }

    /// - Parameter name: shown by `top -H`, `ps -L` and debuggers (at most 15 bytes are kept).
    static func start(name: String, _ body: @escaping @Sendable () -> Void) throws -> OSThread {
        let named: () -> Void = {
            #if os(Linux)
            // pthread_setname_np is not in Swift's Glibc module; this is what it does.
            let fd = open("/proc/thread-self/comm", O_WRONLY)
            if fd >= 0 {
                _ = Array(name.utf8.prefix(15)).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
            }
            #endif
            body()
        }
        let box = Unmanaged.passRetained(Box(named)).toOpaque()
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { argument in
            let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        guard result == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SegmentLogError(.io(errno: result, path: "pthread_create"), "cannot start thread \(name)")
        }
        return OSThread(handle: handle)
    }

    func join() {
        pthread_join(handle, nil)
    }
}
