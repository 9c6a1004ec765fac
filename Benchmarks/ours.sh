#!/usr/bin/env bash
# Our side of the comparison: `paxlog bench local|cluster|processes` at the given concurrencies,
# 256 B records, sync=always, into Benchmarks/results/ours-*.json, then report.py. `local` runs
# twice: a fresh log, and a steady-state one that checkpoints every 32 MiB (recycled segments);
# `cluster` three times: streams on the leader's event loop, on Swift's global executor, and on
# the global executor with every replica checkpointing every 16 MiB.
# Every scenario runs --rounds times, the rounds one after another (so a slow spell of the
# machine hits one round of each, not every round of one); report.py shows the median round.
#
#   Benchmarks/ours.sh [--concurrency 1,16,256] [--size 256] [--duration 10] [--rounds 3] [extra paxlog bench options…]
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=1,16,256; SIZE=256; DURATION=10; ROUNDS=3; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
Tools/install-deps
swift build -c release --product paxlog >&2
PAXLOG="$(swift build -c release --show-bin-path)/paxlog"
mkdir -p Benchmarks/results
NAMES="local cluster processes local-checkpointed cluster-global cluster-checkpointed-global"
for name in $NAMES; do : > "Benchmarks/results/ours-$name.json"; done
for round in $(seq 1 "$ROUNDS"); do
  for name in $NAMES; do
    case "$name" in
      local-checkpointed) scenario=local; options=(--checkpoint-mib 32) ;;
      cluster-global) scenario=cluster; options=(--streams global) ;;
      cluster-checkpointed-global) scenario=cluster; options=(--streams global --checkpoint-mib 16) ;;
      *) scenario=$name; options=() ;;
    esac
    echo "round $round/$ROUNDS: paxlog bench $scenario ${options[*]:-} --concurrency $CONCURRENCY --size $SIZE --duration $DURATION --sync always --json ${EXTRA[*]:-}" >&2
    "$PAXLOG" bench "$scenario" "${options[@]}" --concurrency "$CONCURRENCY" --size "$SIZE" --duration "$DURATION" --sync always --json "${EXTRA[@]}" \
      >> "Benchmarks/results/ours-$name.json"
  done
done
/usr/bin/python3 Benchmarks/report.py
