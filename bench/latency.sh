#!/usr/bin/env bash
# Latency at a fixed offered rate (not at saturation), and a key-table reload under load.
#   bench/latency.sh                # rates 2000 and 5000 req/s, 10 s each, HTTP/1.1 and HTTP/2
#   RATES="1000 3000" DURATION=20 bench/latency.sh
#   RELOAD_KEYS=1000000 bench/latency.sh reload   # replace a 1M-key table 3 times under load
# keygate and an nginx upstream share CPU 0; oha (open-loop, --latency-correction) runs on
# CPU 1. Reports p50/p99/p99.9 and what keygate adds over the upstream alone.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-latency}
RATES=${RATES:-2000 5000}
RELOAD_KEYS=${RELOAD_KEYS:-1000000}
# KG=path/to/keygate measures that binary instead (an A/B of two builds).
source bench/lib.sh
oha_bench latency
cleanup() { stop_jobs "$dir"; rm -rf "$dir"; }
trap cleanup EXIT

body=$(bench_body)
nginx_upstream "$dir" 18181 "$body"

keys=$([ "$MODE" = reload ] && echo "$RELOAD_KEYS" || echo 10000)
bench_keys "$dir" "$keys"
key=$(head -n1 "$dir/keys.tsv" | cut -f1)
$KG keys --table "$dir/keys.jsonl" import --tsv "$dir/keys.tsv" --label latency >/dev/null
bench_config "$dir" 127.0.0.1:18185 127.0.0.1:18186 http://127.0.0.1:18181
taskset -c 0 "$KG" serve --config "$dir/config.yaml" 2>"$dir/kg.log" &
for _ in $(seq 600); do curl -fs -o /dev/null http://127.0.0.1:18186/readyz && break; sleep 0.1; done

# oha … → "p50 p99 p99.9 non2xx" in milliseconds
measure() {
  taskset -c 1 oha --no-tui --output-format json --latency-correction -z "${DURATION}s" "$@" \
    | python3 -c '
import json, sys
r = json.load(sys.stdin); p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
# Requests still in flight when the time is up are not failures.
errors = {k: v for k, v in r.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
bad = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(errors.values())
if bad:
    print("  not 2xx:", {k: v for k, v in codes.items() if not k.startswith("2")}, errors, file=sys.stderr)
print("%.3f %.3f %.3f %d" % (p["p50"] * 1e3, p["p99"] * 1e3, p["p99.9"] * 1e3, bad))'
}
auth=(-H "Authorization: Bearer $key")
up=http://127.0.0.1:18181/api/v1/interactions
kg=http://127.0.0.1:18185/api/v1/interactions

if [ "$MODE" = latency ]; then
  printf '%-6s %-5s %-9s %9s %9s %9s %7s   %s\n' rate proto target p50_ms p99_ms p99.9_ms non2xx "added p50/p99/p99.9 (ms)"
  for rate in $RATES; do
    read -r d50 d99 d999 dbad < <(measure -q "$rate" -c "$CONNS" "$up")
    printf '%-6s %-5s %-9s %9s %9s %9s %7s\n' "$rate" h1 direct "$d50" "$d99" "$d999" "$dbad"
    for proto in h1 h2; do
      extra=(); [ "$proto" = h2 ] && extra=(--http2)
      read -r k50 k99 k999 kbad < <(measure -q "$rate" -c "$CONNS" "${extra[@]}" "${auth[@]}" "$kg")
      added=$(awk -v a="$k50" -v b="$d50" -v c="$k99" -v d="$d99" -v e="$k999" -v f="$d999" 'BEGIN { printf "%+.3f / %+.3f / %+.3f", a-b, c-d, e-f }')
      printf '%-6s %-5s %-9s %9s %9s %9s %7s   %s\n' "$rate" "$proto" keygate "$k50" "$k99" "$k999" "$kbad" "$added"
    done
  done
  echo "(the direct upstream is measured over HTTP/1.1 only; keygate always speaks HTTP/1.1 to it)"
else
  rate=${RATES%% *}
  read -r s50 s99 s999 sbad < <(measure -q "$rate" -c "$CONNS" "${auth[@]}" "$kg")
  echo "steady, $keys keys, $rate req/s: p50 $s50 ms, p99 $s99 ms, p99.9 $s999 ms, non-2xx $sbad"
  cp "$dir/keys.jsonl" "$dir/keys.b"
  (
    for i in 1 2 3; do
      sleep $(( DURATION / 4 ))
      cp "$dir/keys.b" "$dir/keys.next" && mv "$dir/keys.next" "$dir/keys.jsonl"
    done
  ) &
  read -r r50 r99 r999 rbad < <(measure -q "$rate" -c "$CONNS" "${auth[@]}" "$kg")
  reloads=$(curl -s http://127.0.0.1:18186/metrics | awk '/^keygate_key_table_reloads_total\{result="ok"\}/ { print $2 - 1 }')
  echo "3 table swaps, $keys keys, $rate req/s: p50 $r50 ms, p99 $r99 ms, p99.9 $r999 ms, non-2xx $rbad (reloads seen: $reloads)"
  awk -v a="$r99" -v b="$s99" 'BEGIN { printf "p99 during swaps / steady p99 = %.2fx\n", a / b }'
fi
