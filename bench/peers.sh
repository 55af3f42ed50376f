#!/usr/bin/env bash
# keygate beside nginx and HAProxy doing the same key check (../shared/bench/peers.sh).
# Builds keygate in release mode; inside the harness's candidate command, turns the harness's
# TSV into a keygate key table with keygate's own CLI (`keys import`), then serves it with full
# policy on: route and scope check, clinic header injection, metrics and the JSON audit log.
#   bench/peers.sh                       # 10,000 keys, 5 rounds x 10 s
#   NKEYS=1000000 ROUNDS=3 bench/peers.sh
# Every knob of the harness (NKEYS, ROUNDS, DURATION, INVALID_FRAC, ...) passes through.
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=${HARNESS:-$PWD/../shared/bench/peers.sh}
[ -x "$HARNESS" ] || [ -f "$HARNESS" ] || { echo "harness not found: $HARNESS" >&2; exit 1; }
source bench/lib.sh
keygate_bin
dir=${KG_BENCH_DIR:-/tmp/keygate-bench}
mkdir -p "$dir"
bench_config "$dir" 127.0.0.1:18085 127.0.0.1:18086 http://127.0.0.1:18081
# The audit log (one JSON line per request) goes to the harness's log file, as in production.
# As the Dockerfile does: mimalloc may use 2 MiB pages (see README, Performance).
CANDIDATE_CMD="export MIMALLOC_ALLOW_LARGE_OS_PAGES=1 && rm -f $dir/keys.jsonl && $KG keys --table $dir/keys.jsonl import --tsv $dir/keys.tsv --label bench >/dev/null && rm -f $dir/keys.tsv && exec $KG serve --config $dir/config.yaml"
export CANDIDATE_NAME=keygate CANDIDATE_KEYS="$dir/keys.tsv" CANDIDATE_CMD
exec bash "$HARNESS"
