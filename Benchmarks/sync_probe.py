#!/usr/bin/env python3
"""fdatasync latency of the machine itself, idle and beside a busy CPU (no PaxosLog code involved).

Appends BYTES (default 46,000: one sync of `bench local` at 256 streams) to a preallocated file
and fdatasyncs after each, for SECONDS, first alone and then while a busy-looping process at
nice 19 keeps one CPU busy. Prints the count, p50 and p99, and every sync slower than 3 ms with
when it started (ms into the run), so a periodic stall shows as a regular spacing.

`paxlog bench` measures the machine's fdatasync rate itself (its `limits`); this probe is apart
on purpose: it shows what the machine does to syncs under CPU load, with none of our code running.

    Benchmarks/sync_probe.py [--dir /tmp] [--bytes 46000] [--seconds 3]
"""
import argparse, os, subprocess, sys, time

FILE_BYTES = 1 << 30  # preallocated, so every sync lands in reserved blocks, as a segment's do
SLOW_SECONDS = 0.003


def probe(path, size, seconds):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, FILE_BYTES)
        buf = os.urandom(size)
        start = time.monotonic()
        offset, durations, slow = 0, [], []
        while time.monotonic() - start < seconds and offset + size <= FILE_BYTES:
            os.pwrite(fd, buf, offset)
            offset += size
            a = time.monotonic()
            os.fdatasync(fd)
            b = time.monotonic()
            durations.append(b - a)
            if b - a > SLOW_SECONDS:
                slow.append((round((a - start) * 1000), round((b - a) * 1000, 1)))
    finally:
        os.close(fd)
        os.unlink(path)
    durations.sort()
    n = len(durations)
    return n, durations[n // 2] * 1e6, durations[int(n * 0.99)] * 1e6, slow


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--bytes", type=int, default=46000)
    ap.add_argument("--seconds", type=float, default=3)
    args = ap.parse_args()
    path = os.path.join(args.dir, f"sync_probe.{os.getpid()}")
    for label, busy in (("idle", False), ("one busy CPU", True)):
        burner = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            time.sleep(0.2 if busy else 0)
            n, p50, p99, slow = probe(path, args.bytes, args.seconds)
        finally:
            if burner:
                burner.kill()
                burner.wait()
        print(f"{label}: {n / args.seconds:,.0f} syncs/s, p50 {p50:,.0f} us, p99 {p99:,.0f} us; "
              f"{len(slow)} over {SLOW_SECONDS * 1000:g} ms (start ms, ms): {slow[:20]}")


if __name__ == "__main__":
    main()
