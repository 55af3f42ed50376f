#!/usr/bin/env bash
# Instructions a request must not creep up: callgrind counts the debug binary `cargo test` just
# built (no second, release build in CI's time budget) over a fixed 300 requests, one at a time
# (bench/callgrind.sh REQUESTS=300: the same work each request; three runs agreed within 0.6%).
# Fails when the count is more than 3% over bench/callgrind-baseline.txt. The baseline moves only
# in a commit that says why. README's Performance numbers are from release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
KG=${KEYGATE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/keygate}
baseline=$(awk '/^per_request/ { print $2 }' bench/callgrind-baseline.txt)
out=$(KG="$KG" REQUESTS=300 NKEYS=1000 bash bench/callgrind.sh 2>&1 | tail -1)
echo "$out"
now=$(sed -n 's/.*per_request=\([0-9]*\).*/\1/p' <<<"$out")
[ -n "$now" ] || { echo "callgrind guard: no count measured" >&2; exit 1; }
limit=$(( baseline * 103 / 100 ))
echo "instructions a request (debug build): $now, baseline $baseline, limit $limit (+3%)"
if [ "$now" -gt "$limit" ]; then
  echo "callgrind guard: $now instructions a request is more than 3% over the baseline $baseline." >&2
  echo "Find where (KEEP=1 bench/callgrind.sh, then callgrind_annotate), or move the baseline in a commit that says why." >&2
  exit 1
fi
