#!/usr/bin/env bash
# Peers side by side: etcd 3.4 (1 and 3 members on 127.0.0.1) and RocksDB's db_bench with
# sync=1, at the same record size and concurrencies as `paxlog bench`. Run by hand, not in CI.
#
# Installs nothing. Needs the Debian packages etcd-server, etcd-client (3.4) and rocksdb-tools
#   apt-get install -y etcd-server etcd-client rocksdb-tools
# and skips a peer whose binary is missing. Writes Benchmarks/results/etcd-*.json and
# rocksdb.json (one JSON object per line, one per concurrency), then calls report.py to rebuild
# RESULTS.md and the charts from every results/*.json.
#
#   Benchmarks/peers.sh [--concurrency 1,16,256] [--size 256] [--duration 10] [--rounds 3] [--dir /tmp]
#
# Each peer runs --rounds times at every concurrency (report.py shows the median round).
#
# Every server runs under `timeout` and is killed by the EXIT trap: none outlives the script.
set -euo pipefail
cd "$(dirname "$0")"
CONCURRENCY=1,16,256; SIZE=256; DURATION=10; ROUNDS=3; BASE="${TMPDIR:-/tmp}"
while [ $# -gt 0 ]; do
  case "$1" in
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --dir) BASE="$2"; shift 2 ;;
    *) echo "usage: $0 [--concurrency LIST] [--size BYTES] [--duration SECONDS] [--rounds N] [--dir DIR]" >&2; exit 2 ;;
  esac
done
PY=/usr/bin/python3   # Debian's, which has python3-matplotlib
mkdir -p results
WORK=$(mktemp -d "$BASE/paxlog-peers-XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
IFS=, read -r -a LEVELS <<< "$CONCURRENCY"
RUNS=()  # every concurrency level, once per round
for _ in $(seq 1 "$ROUNDS"); do RUNS+=("${LEVELS[@]}"); done
SERVER_TIMEOUT=$(( ${#LEVELS[@]} * (DURATION + 30) + 60 ))

# --- etcd ---------------------------------------------------------------------------------
start_etcd() {  # start_etcd MEMBERS: starts a fresh cluster, sets ENDPOINTS and LEADER_ENDPOINT
  local members=$1 cluster="" i
  for i in $(seq 1 "$members"); do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((23800 + i))"; done
  PIDS=()
  for i in $(seq 1 "$members"); do
    timeout -s KILL "$SERVER_TIMEOUT" etcd --name "m$i" --data-dir "$WORK/etcd$members-m$i" \
      --listen-client-urls "http://127.0.0.1:$((23790 + i))" --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
      --listen-peer-urls "http://127.0.0.1:$((23800 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + i))" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "bench-$members-$$" \
      --logger zap --log-level warn > "$WORK/etcd$members-m$i.log" 2>&1 &
    PIDS+=($!)
  done
  ENDPOINTS=$(for i in $(seq 1 "$members"); do printf '127.0.0.1:%d,' $((23790 + i)); done); ENDPOINTS=${ENDPOINTS%,}
  for _ in $(seq 1 100); do
    if status=$(ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint status -w json 2>/dev/null); then
      LEADER_ENDPOINT=$($PY -c 'import json,sys
s=json.load(sys.stdin); l=[e["Endpoint"] for e in s if e["Status"]["leader"]==e["Status"]["header"]["member_id"]]
print(l[0] if l else "")' <<< "$status")
      [ -n "$LEADER_ENDPOINT" ] && return 0
    fi
    sleep 0.2
  done
  echo "etcd with $members members did not elect a leader; logs in $WORK" >&2; return 1
}
stop_etcd() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait "${PIDS[@]}" 2>/dev/null || true; PIDS=(); }

if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
  for members in 1 3; do
    out="results/etcd-$members.json"; : > "$out"
    for c in "${RUNS[@]}"; do
      rm -rf "$WORK"/etcd"$members"-*
      start_etcd "$members"
      echo "etcd $members member(s), concurrency $c, leader $LEADER_ENDPOINT: ${DURATION}s…" >&2
      # The load goes to the leader, as paxlog's does: no forwarding hop.
      $PY etcd_load.py --endpoints "$LEADER_ENDPOINT" --concurrency "$c" --size "$SIZE" --duration "$DURATION" \
        --scenario "etcd-$members" --members "$members" | tee -a "$out"
      stop_etcd
    done
  done
else
  echo "etcd/etcdctl not installed: skipping etcd (apt-get install -y etcd-server etcd-client)" >&2
fi

# --- RocksDB db_bench fillseq --sync=1 -----------------------------------------------------
if command -v db_bench >/dev/null; then
  out=results/rocksdb.json; : > "$out"
  for c in "${RUNS[@]}"; do
    rm -rf "$WORK/rocksdb"
    # About DURATION seconds at the rates seen here (3,500/s alone, 14,000/s at 16 threads).
    per_thread=$(( (DURATION * 4000 + c - 1) / c )); [ "$per_thread" -lt 100 ] && per_thread=100
    echo "db_bench fillseq --sync=1 --threads=$c --num=$per_thread…" >&2
    load0=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f '%U %S %M' -o "$WORK/time" db_bench --benchmarks=fillseq --sync=1 --value_size="$SIZE" \
      --threads="$c" --num="$per_thread" --histogram=1 --db="$WORK/rocksdb" --compression_type=none \
      > "$WORK/db_bench.out" 2>&1
    $PY - "$WORK/db_bench.out" "$WORK/time" "$c" "$SIZE" "$load0" <<'PYEOF' | tee -a "$out"
import json, re, sys
text = open(sys.argv[1]).read(); user, sys_, rss = open(sys.argv[2]).read().split()[-3:]
c, size, load0 = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
m = re.search(r"fillseq\s*:\s*([\d.]+) micros/op (\d+) ops/sec(?:\s+([\d.]+) seconds)?(?:\s+(\d+) operations)?", text)
pct = dict(re.findall(r"P(\d+(?:\.\d+)?): ([\d.]+)", text))
mx = re.search(r"Min: [\d.]+\s+Median: [\d.]+\s+Max: (\d+)", text)
def us(k): return int(float(pct.get(k, 0)))
# P90 is not among db_bench's percentiles: take the upper bound of the histogram bucket that crosses 90 %.
p90 = 0
for hi, cum in re.findall(r"\(\s*[\d,]+,\s*([\d,]+) \]\s+\d+\s+[\d.]+%\s+([\d.]+)%", text):
    if float(cum) >= 90.0:
        p90 = int(hi.replace(",", "")); break
ops = int(m.group(2)) if m else 0
print(json.dumps({
    "scenario": "rocksdb", "replicas": 1, "concurrency": c, "size": size, "sync": "always",
    "records_per_second": ops, "mb_per_second": ops * size / 1e6,
    "records": int(m.group(4)) if m and m.group(4) else None,
    "latency_us": {"p50": us("50"), "p90": p90, "p99": us("99"), "p999": us("99.9"),
                   "max": int(mx.group(1)) if mx else 0},
    "cpu_seconds": float(user) + float(sys_), "peak_rss_mb": int(rss) / 1024,
    "load_average_before": load0, "load_average_after": float(open("/proc/loadavg").read().split()[0]),
    "note": "Debian's db_bench (assertions enabled); p90 is the upper bound of its histogram bucket",
}, sort_keys=True))
PYEOF
  done
else
  echo "db_bench not installed: skipping RocksDB (apt-get install -y rocksdb-tools)" >&2
fi

$PY report.py
