#!/usr/bin/env bash
# Write and read throughput of the example: three replicas as processes on this machine, then
# closed-loop HTTP clients (python3, one keep-alive connection per client) against the leader:
#   writes    INSERT of one ~100-byte row per /execute, CLIENTS clients, for SECONDS
#   reads     SELECT of one row by primary key per /query (linearizable: a read barrier each),
#             then the same with ?local=1 (the replica's own state, no barrier)
# Prints one line per phase: requests/s and latency percentiles. Build first:
#   swift build -c release    (in Examples/ReplicatedSQLite; or set REPLICATED_SQLITE_BIN)
# Settings (environment): CLIENTS (default 16), SECONDS_PER_PHASE (default 10). The replicas
# run with the example's defaults (SQLite synchronous = FULL, the log's sync policy `always`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${REPLICATED_SQLITE_BIN:-$(swift build -c release --show-bin-path)/ReplicatedSQLite}"
clients="${CLIENTS:-16}"
seconds="${SECONDS_PER_PHASE:-10}"
work="$(mktemp -d /tmp/replicated-sqlite-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

. Scripts/start-cluster.sh
start_cluster

leader=""
for _ in $(seq 1 300); do
  for n in 1 2 3; do
    l="$(curl -sf --max-time 2 "http://127.0.0.1:${http[$n]}/status" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader") or "")' 2>/dev/null || true)"
    [ -n "$l" ] && leader="$l" && break 2
  done
  sleep 0.1
done
[ -n "$leader" ] || { echo "throughput: no leader elected" >&2; exit 1; }
echo "throughput: node $leader leads; $clients clients, ${seconds} s per phase; bin $bin"

python3 - "${http[$leader]}" "$clients" "$seconds" <<'PY'
import http.client, json, sys, threading, time
port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

def post(conn, path, body):
    conn.request("POST", path, body=body.encode())
    r = conn.getresponse()
    data = r.read()
    return r.status, json.loads(data) if data else None

conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
status, out = post(conn, "/execute", "CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER, v TEXT NOT NULL)")
assert status == 200 and not out.get("error"), (status, out)

def phase(name, request):
    lat, errors, lock = [], [0], threading.Lock()
    stop = time.monotonic() + seconds
    def worker(c):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad, i = [], 0, 0
        while time.monotonic() < stop:
            t0 = time.monotonic()
            try:
                ok = request(conn, c, i)
            except Exception:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if ok: mine.append(time.monotonic() - t0)
            else: bad += 1
            i += 1
        with lock:
            lat.extend(mine); errors[0] += bad
    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()
    elapsed = time.monotonic() - started
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")
    print(f"{name:<18} {len(lat)/elapsed:8.0f} req/s  ok {len(lat):7d}  failed {errors[0]:5d}  "
          f"p50 {pct(0.5):6.1f} ms  p99 {pct(0.99):6.1f} ms  max {lat[-1]*1e3 if lat else float('nan'):6.1f} ms", flush=True)
    return len(lat)

filler = "x" * 80
def write(conn, c, i):
    s, out = post(conn, "/execute", f"INSERT INTO t (id, client, v) VALUES ({c * 10_000_000 + i}, {c}, '{filler}-{i}')")
    return s == 200 and not out.get("error")
written = phase("write (INSERT)", write)

ids = [r[0] for r in post(conn, "/query?local=1", "SELECT id FROM t")[1]["rows"]]
def read(suffix):
    def f(conn, c, i):
        s, out = post(conn, "/query" + suffix, f"SELECT v FROM t WHERE id = {ids[(c * 7919 + i) % len(ids)]}")
        return s == 200 and len(out.get("rows", [])) == 1
    return f
phase("read (barrier)", read(""))
phase("read (?local=1)", read("?local=1"))
PY
