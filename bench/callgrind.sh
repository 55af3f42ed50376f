#!/usr/bin/env bash
# Instructions a request, user space, counted by callgrind: repeatable on a busy machine (it
# counts, it does not time), so an A/B of two builds shows a change of a few hundred
# instructions that the timed harness cannot. keygate runs with the peer bench's config (full
# policy, JSON audit line) in front of an nginx upstream; wrk rotates 1,000 of the keys.
#   bench/callgrind.sh                  # this checkout's release build, 10,000 keys
#   KG=other/keygate bench/callgrind.sh # another build (A/B)
#   FLOOR=1 bench/callgrind.sh          # examples/floor_proxy: hyper doing only nginx-keyauth's work
#   NKEYS=1000000 DURATION=20 bench/callgrind.sh
#   REQUESTS=400 bench/callgrind.sh     # a fixed count, one at a time on one connection: the same
#                                       # work each request, repeatable to the instruction (CI's guard)
# Prints requests, non-2xx and instructions a request; KEEP=1 keeps the callgrind output
# (callgrind_annotate --inclusive=yes FILE shows where they go).
set -euo pipefail
cd "$(dirname "$0")/.."
NKEYS=${NKEYS:-10000}
DURATION=${DURATION:-10}
HARNESS_DIR=${HARNESS_DIR:-$PWD/../shared/bench}
for tool in valgrind wrk curl; do
  command -v $tool >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind wrk curl >/dev/null; break; }
done
source bench/lib.sh
if [ "${FLOOR:-0}" = 1 ]; then
  cargo build --release --locked --quiet --example floor_proxy
else
  keygate_bin
fi
dir=$(mktemp -d /tmp/keygate-callgrind.XXXXXX)
cleanup() {
  stop_jobs "$dir"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT

nginx_upstream "$dir" 18281 "$(bench_body)"
bench_keys "$dir" "$NKEYS"
head -n 1000 "$dir/keys.tsv" | cut -f1 >"$dir/sample"
key=$(head -n1 "$dir/sample")
# Pinned to one CPU as in the harness: keygate then runs tokio's current-thread scheduler.
cg=(taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out")
if [ "${FLOOR:-0}" = 1 ]; then
  "${cg[@]}" "${CARGO_TARGET_DIR:-$PWD/target}/release/examples/floor_proxy" "$dir/keys.tsv" \
    127.0.0.1:18285 127.0.0.1:18281 2>"$dir/proxy.log" &
else
  "$KG" keys --table "$dir/keys.jsonl" import --tsv "$dir/keys.tsv" --label callgrind >/dev/null
  bench_config "$dir" 127.0.0.1:18285 127.0.0.1:18286 http://127.0.0.1:18281
  "${cg[@]}" "$KG" serve --config "$dir/config.yaml" 2>"$dir/proxy.log" &
fi
pid=$!
url=http://127.0.0.1:18285/api/v1/interactions
for _ in $(seq 600); do
  curl -fs -o /dev/null -H "Authorization: Bearer $key" "$url" && break
  sleep 0.2
done
curl -fs -o /dev/null -H "Authorization: Bearer $key" "$url" || { echo "proxy did not start:" >&2; tail "$dir/proxy.log" >&2; exit 1; }
if [ -n "${REQUESTS:-}" ]; then
  load() { taskset -c 1 python3 bench/seq_client.py 127.0.0.1 18285 /api/v1/interactions "$dir/sample" "$1"; }
  load 50 >/dev/null   # warm: connections, pools, caches
  DURATION=$REQUESTS
else
  load() { taskset -c 1 wrk -t1 -c8 -d"$1"s -s "$HARNESS_DIR/rotate.lua" "$url" -- "$dir/sample" | grep KG_RESULT; }
  load 3 >/dev/null   # warm: connections, pools, caches
fi
callgrind_control -i on "$pid" >/dev/null
result=$(load "$DURATION")
callgrind_control -i off "$pid" >/dev/null
callgrind_control -d "$pid" >/dev/null
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$result")
non2xx=$(sed -n 's/.*non2xx=\([0-9]*\).*/\1/p' <<<"$result")
# The dump taken after the load is the measured window (callgrind.out, written at exit, is empty).
file="$dir/callgrind.out.1"
total=$(awk '/^totals:/ { print $2; exit }' "$file")
echo "requests=$requests non2xx=$non2xx instructions=$total per_request=$(( total / requests ))"
[ "${KEEP:-0}" = 1 ] && echo "callgrind output: $file"
[ "$non2xx" = 0 ] || { echo "non-2xx answers: the count is not of the request path" >&2; exit 1; }
