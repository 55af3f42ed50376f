#!/usr/bin/env bash
# sync: cache throughput: requests per second through keygate when every request is a cache
# miss (cold: each request a key not seen before, so one PostgreSQL query each) and when every
# request is a hit (warm: the same keys again), with sync: replica over the same table as the
# reference. Against the database at KEYGATE_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test), in a schema of its own, dropped at the end.
#
# Usage: bench/pg_cache.sh [KEYS] [SECONDS]   (default 100000 keys, 5 s per run)
#   CONNS=32 POOL=4 KG=path/to/keygate bench/pg_cache.sh
# keygate and an nginx upstream share CPU 0, wrk (one thread, closed loop, CONNS connections)
# runs on CPU 1, PostgreSQL wherever the scheduler puts it. Each run walks the key list in
# order from the start, so the warm run asks for exactly the keys the cold run loaded (as long
# as it does not get further than the cold run did: the script checks the miss count).
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-100000}
SECS=${2:-5}
CONNS=${CONNS:-32}
POOL=${POOL:-4}
DB=${KEYGATE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
source bench/lib.sh
keygate_bin
SCHEMA="kg_bench_cache_$$"
dir=$(mktemp -d /tmp/keygate-pgcache.XXXXXX)
cleanup() {
  stop_jobs "$dir"
  psql -q "$DB" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
for port in 18281 18285 18286 18287 18288; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is in use; stop what listens there" >&2; exit 1; fi
done

nginx_upstream "$dir" 18281 '{"success":true,"data":[]}'

config() { # listen admin sync [extra key_store lines]
  cat <<CFG
environment: live
listen: 127.0.0.1:$1
admin_listen: 127.0.0.1:$2
upstream:
  url: http://127.0.0.1:18281
keys:
  checksum: false
key_store:
  kind: postgres
  url: $DB
  schema: $SCHEMA
  sync: $3
$4
routes:
  - path: /api/v1/clinics
    resource: clinics
rate_limits:
  enabled: false
anomaly:
  enabled: false
log:
  level: info
CFG
}
config 18285 18286 cache "  cache:
    max_entries: $((KEYS * 2))
    pool_size: $POOL" >"$dir/cache.yaml"
config 18287 18288 replica "" >"$dir/replica.yaml"
$KG migrate --config "$dir/cache.yaml" >/dev/null

python3 - "$dir" "$KEYS" <<'PY'
import random, string, sys
d, n = sys.argv[1], int(sys.argv[2])
A = string.ascii_letters + string.digits
keys = ["dpl_live_" + "".join(random.choices(A, k=32)) for _ in range(n)]
with open(f"{d}/keys.tsv", "w") as f:
    f.writelines(f"{k}\t\tclinics:read\n" for k in keys)
with open(f"{d}/keys.txt", "w") as f:
    f.writelines(f"{k}\n" for k in keys)
PY
t0=$(date +%s%3N)
$KG keys --config "$dir/cache.yaml" import --tsv "$dir/keys.tsv" --label bench >/dev/null
echo "imported $KEYS keys through the CLI (one transaction): $(( $(date +%s%3N) - t0 )) ms"

# Each request takes the next key of the list: wrk's one thread walks it in order.
cat >"$dir/walk.lua" <<LUA
local keys = {}
for line in io.lines("$dir/keys.txt") do keys[#keys + 1] = line end
local i = 0
request = function()
  i = i % #keys + 1
  return wrk.format("GET", "/api/v1/clinics", { ["Authorization"] = "Bearer " .. keys[i] })
end
LUA

start() { # config admin-port log
  taskset -c 0 "$KG" serve --config "$1" 2>"$3" &
  for _ in $(seq 1200); do curl -fs -o /dev/null "http://127.0.0.1:$2/readyz" && return 0; sleep 0.05; done
  echo "keygate did not become ready:" >&2; cat "$3" >&2; exit 1
}
metric() { # admin-port series
  curl -s "http://127.0.0.1:$1/metrics" | awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }'
}
run() { # label listen-port admin-port
  local out rps non2xx
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$dir/walk.lua" "http://127.0.0.1:$2/api/v1/clinics")
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  non2xx=$(awk '/Non-2xx/ { print $5 }' <<<"$out")
  local lat; lat=$(awk '/^    Latency/ { print $2 " avg, " $4 " max" }' <<<"$out")
  printf '%-34s %10s req/s   latency %s   non-2xx %s\n' "$1" "$rps" "$lat" "${non2xx:-0}"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
start "$dir/cache.yaml" 18286 "$dir/cache.log"
run "cache, cold (every request a miss)" 18285 18286
misses=$(metric 18286 'keygate_key_store_cache_lookups_total{result="miss"}')
queries=$(metric 18286 'keygate_key_store_queries_total{query="by_hash",result="found"}')
hits=$(metric 18286 'keygate_key_store_cache_lookups_total{result="hit"}')
echo "    cold run: $misses misses, $hits hits, $queries queries ($(( ${queries%.*} / SECS )) queries/s)"
if [ "${hits%.*}" != 0 ]; then echo "    (the cold run got through all $KEYS keys and started again: give more KEYS for a pure cold figure)"; fi
# The warm run must stay within the keys the cold run loaded.
python3 - "$dir" "$misses" <<'PY'
import sys
d, n = sys.argv[1], int(float(sys.argv[2]))
keys = open(f"{d}/keys.txt").read().splitlines()[:n]
open(f"{d}/keys.txt", "w").writelines(k + "\n" for k in keys)
PY
run "cache, warm (every request a hit)" 18285 18286
echo "    warm run: $(metric 18286 'keygate_key_store_cache_lookups_total{result="miss"}') misses in all," \
  "$(metric 18286 'keygate_key_store_cache_lookups_total{result="hit"}') hits in all," \
  "entries $(metric 18286 'keygate_key_store_cache_entries{cache="by_hash"}')"
rss=$(ps -o rss= -p "$(jobs -p | tail -1)" 2>/dev/null || echo '?')
echo "    cache-mode RSS with $misses cached keys: ${rss} KiB"
kill "$(jobs -p | tail -1)"

start "$dir/replica.yaml" 18288 "$dir/replica.log"
run "replica, same keys (reference)" 18287 18288
rss=$(ps -o rss= -p "$(jobs -p | tail -1)" 2>/dev/null || echo '?')
echo "    replica RSS with the whole table ($KEYS keys): ${rss} KiB"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
