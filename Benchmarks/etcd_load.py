#!/usr/bin/env python3
"""Closed-loop put load against etcd's gRPC JSON gateway (POST /v3/kv/put), for Benchmarks/peers.sh.

`--concurrency` HTTP/1.1 keep-alive connections, each with one request in flight, spread over
`--endpoints`; unique keys, values of `--size` random bytes. Prints one JSON object in the same
shape as `paxlog bench --json` (records_per_second, latency_us p50…max), plus the load
generator's own CPU so a reader can tell whether the generator was the bottleneck.
Hand-written HTTP over asyncio streams: a full client library costs several times the CPU.
"""
import argparse, asyncio, base64, json, os, resource, sys, time


def percentile(sorted_values, p):
    if not sorted_values:
        return 0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


async def stream(i, host, port, size, deadline, latencies, errors):
    reader, writer = await asyncio.open_connection(host, port)
    value = base64.b64encode(os.urandom(size)).decode()
    n = 0
    try:
        while time.monotonic() < deadline:
            key = base64.b64encode(f"bench/{i}/{n}".encode()).decode()
            body = ('{"key":"%s","value":"%s"}' % (key, value)).encode()
            req = (b"POST /v3/kv/put HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % (host.encode(), port, len(body))) + body
            t0 = time.perf_counter_ns()
            writer.write(req)
            status = await reader.readline()
            length = 0
            chunked = False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, v = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(v)
                elif name == b"transfer-encoding" and b"chunked" in v.lower():
                    chunked = True
            if chunked:
                while True:
                    size_line = await reader.readline()
                    chunk = int(size_line.strip() or b"0", 16)
                    await reader.readexactly(chunk + 2)
                    if chunk == 0:
                        break
            elif length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter_ns() - t0) // 1000)
            if not status.startswith(b"HTTP/1.1 200"):
                errors.append(status.decode(errors="replace").strip())
            n += 1
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", required=True, help="host:port,… (client URLs of the members)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--scenario", default="etcd")
    ap.add_argument("--members", type=int, default=1)
    args = ap.parse_args()
    endpoints = [(e.rsplit(":", 1)[0], int(e.rsplit(":", 1)[1])) for e in args.endpoints.split(",")]
    latencies, errors = [], []
    with open("/proc/loadavg") as f:
        load_before = float(f.read().split()[0])
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + args.duration
    await asyncio.gather(*[
        stream(i, *endpoints[i % len(endpoints)], args.size, deadline, latencies, errors)
        for i in range(args.concurrency)
    ])
    seconds = time.monotonic() - start
    cpu = time.process_time() - cpu0
    lat = sorted(latencies)
    with open("/proc/loadavg") as f:
        load_after = float(f.read().split()[0])
    ok = len(lat) - len(errors)
    print(json.dumps({
        "scenario": args.scenario, "replicas": args.members, "concurrency": args.concurrency, "size": args.size,
        "sync": "always", "records": ok, "failed": len(errors), "seconds": seconds,
        "records_per_second": ok / seconds, "mb_per_second": ok * args.size / seconds / 1e6,
        "latency_us": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                       "p999": percentile(lat, 99.9), "max": lat[-1] if lat else 0},
        "latency_mean_us": sum(lat) / len(lat) if lat else 0,
        "load_cpu_seconds": cpu, "load_cpu_share_of_one_core": cpu / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average_before": load_before, "load_average_after": load_after, "cores": os.cpu_count(),
        "errors": sorted(set(errors))[:3],
    }, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
