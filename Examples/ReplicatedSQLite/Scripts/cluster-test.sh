#!/usr/bin/env bash
# End-to-end test of the example, run by the repository's CI (Tools/run test-example):
# three replicas as processes, statements written through one follower, the leader SIGKILLed
# halfway, and every acknowledged write read back from each survivor (linearizably from the new
# leader, locally from each survivor once it applied the last acknowledged position).
# Exit 0 when every acknowledged write is on every survivor; 1 otherwise, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${REPLICATED_SQLITE_BIN:-$(swift build --show-bin-path)/ReplicatedSQLite}"
rows="${ROWS:-120}"
work="$(mktemp -d /tmp/replicated-sqlite-test.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "cluster-test: FAIL: $*" >&2; for n in 1 2 3; do echo "--- node $n log tail" >&2; tail -5 "$work/node-$n.log" >&2 || true; done; exit 1; }

. Scripts/start-cluster.sh
start_cluster --snapshot-every 25 --snapshot-retain 10

status() { curl -sf --max-time 2 "http://127.0.0.1:${http[$1]}/status"; }
field() { python3 -c "
import json,sys
try: v=json.load(sys.stdin).get('$1')
except Exception: v=None
print('' if v is None else v)"; }
alive() { for n in 1 2 3; do kill -0 "${pids[$n]}" 2>/dev/null || fail "node $n exited"; done; }
leader=""
for _ in $(seq 1 300); do
  alive
  for n in 1 2 3; do
    l="$(status "$n" 2>/dev/null | field leader || true)"
    [ -n "$l" ] && leader="$l" && break 2
  done
  sleep 0.1
done
[ -n "$leader" ] || fail "no leader elected"
writer=$(( leader % 3 + 1 ))   # a follower: its writes are forwarded, and it survives the kill
echo "cluster-test: node $leader leads; writing $rows rows through node $writer"

execute() { curl -s --max-time 15 -X POST --data-binary "$2" "http://127.0.0.1:${http[$1]}/execute"; }
query() { curl -s --max-time 15 -X POST --data-binary "$3" "http://127.0.0.1:${http[$1]}/query$2"; }

out="$(execute "$writer" 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)')"
[ "$(echo "$out" | field error)" = "" ] || fail "create table: $out"
acked=()
last=0
start=$(date +%s.%N)
for i in $(seq 1 "$rows"); do
  if [ "$i" -eq $(( rows / 2 )) ]; then
    kill -9 "${pids[$leader]}"; echo "cluster-test: SIGKILLed the leader, node $leader"
  fi
  out="$(execute "$writer" "INSERT INTO t (id, v) VALUES ($i, 'value-$i')" || true)"
  pos="$(echo "$out" | field position 2>/dev/null || true)"
  if [ -n "$pos" ] && [ "$(echo "$out" | field error)" = "" ]; then
    acked+=("$i"); last="$pos"
  fi
done
elapsed=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")
echo "cluster-test: ${#acked[@]} of $rows writes acknowledged in ${elapsed}s (through position $last)"
[ "${#acked[@]}" -ge $(( rows / 2 )) ] || fail "fewer than half the writes were acknowledged"

expected="$(printf '%s\n' "${acked[@]}" | sort -n | tr '\n' ',' )"
check() {  # node, query suffix
  local got
  got="$(query "$1" "$2" 'SELECT id FROM t ORDER BY id' | python3 -c '
import json,sys
d=json.load(sys.stdin)
if "rows" not in d: sys.exit("no rows: %s" % d)
print(",".join(str(r[0]) for r in d["rows"]) + ",")')" || return 1
  # Every acknowledged id must be there; unacknowledged writes (unknown outcome) may be too.
  python3 - "$expected" "$got" <<'PY' || return 1
import sys
want = {x for x in sys.argv[1].split(",") if x}
have = {x for x in sys.argv[2].split(",") if x}
missing = sorted(want - have, key=int)
if missing: sys.exit("missing acknowledged ids: %s" % missing[:20])
PY
}
survivors=()
for n in 1 2 3; do [ "$n" -ne "$leader" ] && survivors+=("$n"); done
ok=0
for _ in $(seq 1 100); do   # a new leader answers the read barrier
  for n in "${survivors[@]}"; do
    if check "$n" "" 2>"$work/check.err"; then ok=1; echo "cluster-test: linearizable read on node $n has every acknowledged write"; break 2; fi
  done
  sleep 0.2
done
[ "$ok" = 1 ] || fail "no survivor answered a linearizable read with every acknowledged write: $(tail -3 "$work/check.err")"
for n in "${survivors[@]}"; do
  for _ in $(seq 1 100); do
    a="$(status "$n" | field applied)"; [ "${a:-0}" -ge "$last" ] && break; sleep 0.1
  done
  check "$n" "?local=1" || fail "node $n's local state lacks acknowledged writes"
  echo "cluster-test: node $n (local read) has every acknowledged write"
done
echo "cluster-test: ok"
