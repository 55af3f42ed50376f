#!/usr/bin/env bash
# PostgreSQL key store: revocation latency across two replicas, and the load time of a
# 1M-key table. Against the database at KEYGATE_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test), in a schema of its own, dropped at the end.
#
# Usage: bench/pg_revocation.sh [N] [KEYS]   (default 100 revocations, 1000000 keys)
# Revocation latency: from the start of `keygate keys revoke` to the moment BOTH replicas
# answer 401 (so it includes the CLI's own connect + transaction). Prints p50/p90/p99/max.
# Load time: a fresh replica's first full load of KEYS rows, from its log.
# KG=path/to/keygate skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
KEYS=${2:-1000000}
DB=${KEYGATE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
source bench/lib.sh
keygate_bin
SCHEMA="kg_bench_$$"
dir=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  psql -q "$DB" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

for port in 18490 18491 18492 18493 18494 18495 18496; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is in use; stop what listens there" >&2; exit 1; fi
done
python3 -m http.server 18491 --bind 127.0.0.1 --directory "$dir" >/dev/null 2>&1 &

config() { # listen admin
  cat <<CFG
environment: live
listen: 127.0.0.1:$1
admin_listen: 127.0.0.1:$2
upstream:
  url: http://127.0.0.1:18491
keys: {}
key_store:
  kind: postgres
  url: $DB
  schema: $SCHEMA
  poll_interval: 1s
routes:
  - path: /
    resource: clinics
log:
  level: info
CFG
}
config 18490 18492 > "$dir/a.yaml"
config 18493 18494 > "$dir/b.yaml"
config 18495 18496 > "$dir/c.yaml"
$KG migrate --config "$dir/a.yaml"

start() { # config log admin-port
  $KG serve --config "$1" 2>"$2" &
  for _ in $(seq 600); do curl -fs -o /dev/null "http://127.0.0.1:$3/readyz" && return 0; sleep 0.05; done
  echo "keygate did not become ready:" >&2; cat "$2" >&2; exit 1
}
start "$dir/a.yaml" "$dir/a.log" 18492
start "$dir/b.yaml" "$dir/b.log" 18494

now_ms() { date +%s%3N; }
status() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "http://127.0.0.1:$1/"; }
both() { [ "$(status 18490 "$2")" = "$1" ] && [ "$(status 18493 "$2")" = "$1" ]; }
lat=()
for i in $(seq "$N"); do
  out=$($KG keys --config "$dir/a.yaml" create --label "rev$i" --json)
  id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$out")
  key=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])' <<<"$out")
  for _ in $(seq 1000); do both 200 "$key" && break; sleep 0.01; done
  both 200 "$key" || { echo "created key never became valid at both" >&2; exit 1; }
  t0=$(now_ms)
  $KG keys --config "$dir/a.yaml" revoke "$id" >/dev/null
  for _ in $(seq 2000); do both 401 "$key" && break; sleep 0.005; done
  lat+=($(( $(now_ms) - t0 )))
done
printf '%s\n' "${lat[@]}" | sort -n | awk -v n="$N" '{a[NR]=$1} END {
  i50 = int(n*0.50+0.5); i90 = int(n*0.90+0.5); i99 = int(n*0.99+0.5); if (i99 > n) i99 = n
  printf "revocation latency, both replicas, over %d revocations (ms): p50=%d p90=%d p99=%d max=%d\n", n, a[i50], a[i90], a[i99], a[n] }'

# A large table, written straight into the schema (hashes of made-up keys, versioned once).
psql -q "$DB" <<SQL
INSERT INTO $SCHEMA.keys (id, hash, label, environment, scopes, clinics, created_at, version)
SELECT 'key_bench_' || g, encode(sha256(('bench-' || g)::bytea), 'hex'), 'bench', 'live',
       ARRAY['interactions:read', 'clinics:read'], ARRAY['clinic_' || (g % 500)], now(),
       nextval('$SCHEMA.key_version')
FROM generate_series(1, $KEYS) AS g;
SQL
t0=$(now_ms)
start "$dir/c.yaml" "$dir/c.log" 18496
ready_ms=$(( $(now_ms) - t0 ))
took=$(grep -o '"took_ms":[0-9]*' "$dir/c.log" | head -1 | cut -d: -f2)
echo "full load of $(( KEYS + 2 * N )) keys from PostgreSQL: ready after ${ready_ms} ms (table build ${took:-?} ms after the fetch)"
rss=$(ps -o rss= -p "$(jobs -p | tail -1)" 2>/dev/null || echo '?')
echo "replica RSS after the load: ${rss} KiB"
