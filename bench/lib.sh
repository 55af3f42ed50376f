# Shared by the bench scripts (sourced after they cd to the repository root).

# Sets KG: the binary given as KG=path (an A/B of two builds), else a release build of this
# checkout.
keygate_bin() {
  if [ -z "${KG:-}" ]; then
    cargo build --release --locked --quiet
    KG=${CARGO_TARGET_DIR:-$PWD/target}/release/keygate
  fi
}

# nginx_upstream DIR PORT BODY: an nginx upstream with one worker on CPU 0 answering every
# request 200 with the JSON BODY, in the background; its pid file is DIR/nginx.pid.
nginx_upstream() {
  command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
  cat >"$1/nginx.conf" <<CFG
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$2 backlog=4096; location / { default_type application/json; return 200 '$3'; } }
}
CFG
  taskset -c 0 nginx -c "$1/nginx.conf" -p "$1" &
}

# stop_jobs DIR: stops this script's background jobs and the nginx_upstream started in DIR
# (quietly: nginx deletes its pid file as it exits, which may be now).
stop_jobs() {
  kill $(jobs -p) 2>/dev/null || true
  kill "$(cat "$1/nginx.pid" 2>/dev/null)" 2>/dev/null || true
}

# bench_config DIR LISTEN ADMIN UPSTREAM_URL: the benchmarks' keygate config, written to
# DIR/config.yaml, serving DIR/keys.jsonl with full policy on: route and scope check with the
# clinic taken from the query (as the shipped clinic API routes do), clinic header injection,
# a rate limit on every request (a tier high enough never to refuse), metrics, and the audit
# line (LOG_FORMAT, json by default: one JSON line per request, as in production).
bench_config() {
  cat >"$1/config.yaml" <<CFG
environment: live
listen: $2
admin_listen: $3
upstream:
  url: $4
keys:
  file: $1/keys.jsonl
  # The harness issues keys without keygate's checksum (dpl_live_ + 32 base62).
  checksum: false
limits:
  max_connections: 4096
# The harness's request path and its header-echo check path, both needing interactions:read.
routes:
  - path: /api/v1/interactions
    resource: interactions
    clinic: {query_param: clinic_id}
  - path: /__echo_headers
    resource: interactions
rate_limits:
  tiers:
    default: {rate: 10000000/s, burst: 10000000}
log:
  format: ${LOG_FORMAT:-json}
  level: info
CFG
}

# bench_keys DIR N: DIR/keys.tsv with N keys in the peer harness's shape (key, clinics, scopes).
bench_keys() {
  python3 - "$1" "$2" <<'PY'
import random, string, sys
d, n = sys.argv[1], int(sys.argv[2])
A = string.ascii_letters + string.digits
with open(f"{d}/keys.tsv", "w") as f:
    for _ in range(n):
        k = "dpl_live_" + "".join(random.choices(A, k=32))
        f.write(f"{k}\tclinic_{random.randrange(100000):05d},clinic_00042\tinteractions:read metrics:read\n")
PY
}

# A ~1 KB JSON answer, as the peer harness's upstream gives.
bench_body() {
  python3 -c 'import json; print(json.dumps({"success": True, "data": [{"id": i, "pad": "x" * 40} for i in range(18)]}))'
}

# oha_bench NAME: the start of an open-loop oha benchmark: DURATION (seconds a rate) and CONNS
# defaulted, oha installed, KG set (keygate_bin) and a fresh work directory in $dir.
oha_bench() {
  DURATION=${DURATION:-10}
  CONNS=${CONNS:-32}
  command -v oha >/dev/null || cargo install oha --locked --quiet
  keygate_bin
  dir=$(mktemp -d "/tmp/keygate-$1.XXXXXX")
}
