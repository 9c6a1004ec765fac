#!/usr/bin/env bash
# Our side of the comparison: `paxlog bench local|cluster|processes` at the given concurrencies,
# 256 B records, sync=always, into Benchmarks/results/ours-*.json, then report.py. `local` runs
# twice: a fresh log, and a steady-state one that checkpoints every 32 MiB (recycled segments).
#
#   Benchmarks/ours.sh [--concurrency 1,16,256] [--size 256] [--duration 10] [extra paxlog bench options…]
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=1,16,256; SIZE=256; DURATION=10; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
Tools/install-deps
swift build -c release --product paxlog >&2
PAXLOG="$(swift build -c release --show-bin-path)/paxlog"
mkdir -p Benchmarks/results
for scenario in local cluster processes; do
  echo "paxlog bench $scenario --concurrency $CONCURRENCY --size $SIZE --duration $DURATION --sync always --json ${EXTRA[*]:-}" >&2
  "$PAXLOG" bench "$scenario" --concurrency "$CONCURRENCY" --size "$SIZE" --duration "$DURATION" --sync always --json "${EXTRA[@]}" \
    > "Benchmarks/results/ours-$scenario.json"
done
echo "paxlog bench local --checkpoint-mib 32 --concurrency $CONCURRENCY --size $SIZE --duration $DURATION --sync always --json ${EXTRA[*]:-}" >&2
"$PAXLOG" bench local --checkpoint-mib 32 --concurrency "$CONCURRENCY" --size "$SIZE" --duration "$DURATION" --sync always --json "${EXTRA[@]}" \
  > "Benchmarks/results/ours-local-checkpointed.json"
/usr/bin/python3 Benchmarks/report.py
