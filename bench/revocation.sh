#!/usr/bin/env bash
# Revocation latency: `keygate keys revoke` → the proxy's first refusal, N times, against a
# running keygate (release build) in front of the demo's kind of upstream (any 200 will do).
# Usage: bench/revocation.sh [N]   (default 50). Prints p50/p90/p99/max in milliseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
source bench/lib.sh
keygate_bin
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT

for port in 18390 18391 18392; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is in use; stop what listens there" >&2; exit 1; fi
done
# A trivial upstream: python's http.server answers 200 to GET.
python3 -m http.server 18391 --bind 127.0.0.1 --directory "$dir" >/dev/null 2>&1 &
printf 'keys: []\n' > "$dir/keys.yaml"
cat > "$dir/config.yaml" <<CFG
environment: live
listen: 127.0.0.1:18390
admin_listen: 127.0.0.1:18392
upstream:
  url: http://127.0.0.1:18391
keys:
  file: $dir/keys.yaml
routes:
  - path: /
    resource: clinics
log:
  level: warn
CFG
$KG serve --config "$dir/config.yaml" 2>"$dir/kg.log" &
kg_pid=$!
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:18392/readyz && break; sleep 0.05; done
kill -0 $kg_pid 2>/dev/null || { echo "keygate did not start:" >&2; cat "$dir/kg.log" >&2; exit 1; }

now_ms() { date +%s%3N; }
status() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" http://127.0.0.1:18390/; }
lat=()
for i in $(seq "$N"); do
  out=$($KG keys --config "$dir/config.yaml" create --label "rev$i" --json)
  id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$out")
  key=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])' <<<"$out")
  for _ in $(seq 1000); do [ "$(status "$key")" = 200 ] && break; sleep 0.01; done
  [ "$(status "$key")" = 200 ] || { echo "created key never became valid" >&2; exit 1; }
  t0=$(now_ms)
  $KG keys --config "$dir/config.yaml" revoke "$id" >/dev/null
  for _ in $(seq 2000); do [ "$(status "$key")" = 401 ] && break; sleep 0.005; done
  lat+=($(( $(now_ms) - t0 )))
done
printf '%s\n' "${lat[@]}" | sort -n | awk -v n="$N" '{a[NR]=$1} END {
  i50 = int(n*0.50+0.5); i90 = int(n*0.90+0.5); i99 = int(n*0.99+0.5); if (i99 > n) i99 = n
  printf "revocation latency over %d revocations (ms): p50=%d p90=%d p99=%d max=%d\n", n, a[i50], a[i90], a[i99], a[n] }'
