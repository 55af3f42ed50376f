#!/usr/bin/env bash
# keygate as nginx's authorizer (auth_request, the shipped deploy/authz/nginx config) against
# keygate inline, at fixed offered rates (not at saturation):
#   bench/authz.sh                     # 5000 req/s, 10 s per target
#   RATES="2000 5000" DURATION=20 bench/authz.sh
#   POLICY_DIR=/tmp/peers-bench.XXXX bench/authz.sh   # also nginx-policy, from a temp dir that
#     ../shared/bench/peers.sh kept: TARGETS="direct nginx-policy" CHECK_ONLY=1 KEEP_TMP=1 peers.sh
#   RT_PRIO=50 bench/authz.sh          # every process here SCHED_FIFO 50: on a machine shared
#     with builds, the p99s are otherwise the scheduler's (root; the kernel's RT throttling
#     still leaves others 5% of each CPU)
# The upstream nginx, the front nginx and keygate share CPU 0; oha (open loop,
# --latency-correction) runs on CPU 1. Targets: the upstream alone, nginx proxying to it with
# no auth (nginx-plain), nginx + auth_request -> keygate (nginx-authz), keygate inline, and the
# check alone (oha straight at /check/nginx, what nginx's subrequest costs keygate), and with
# POLICY_DIR the peer harness's nginx-policy (nginx's own key map, per-key limit_req, request id
# and JSON audit line: the most of keygate's policy nginx alone can do) in front of the same upstream.
# Reports p50/p99 (ms), what each adds over its floor, and CPU time per request of keygate and
# of the front nginx (from /proc, user+system).
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES:-5000}
source bench/lib.sh
oha_bench authz
cleanup() {
  stop_jobs "$dir"
  for p in front plain policy; do kill "$(cat "$dir/$p/nginx.pid" 2>/dev/null)" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

body=$(bench_body)
nginx_upstream "$dir" 18181 "$body"
bench_keys "$dir" 10000
key=$(head -n1 "$dir/keys.tsv" | cut -f1)
$KG keys --table "$dir/keys.jsonl" import --tsv "$dir/keys.tsv" --label authz >/dev/null
secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$secret" > "$dir/authz-secret"
bench_config "$dir" 127.0.0.1:18185 127.0.0.1:18186 http://127.0.0.1:18181
printf 'authz:\n  listen: 127.0.0.1:18187\n  shared_secret_file: %s\n' "$dir/authz-secret" >> "$dir/config.yaml"
taskset -c 0 "$KG" serve --config "$dir/config.yaml" 2>"$dir/kg.log" &
kg_pid=$!

# front_nginx NAME PORT SITE: nginx (one process, CPU 0) serving SITE (an http{}-level file).
front_nginx() {
  mkdir -p "$dir/$1"
  cat >"$dir/$1/nginx.conf" <<CFG
daemon off;
master_process off;
worker_processes 1;
pid $dir/$1/nginx.pid;
error_log $dir/$1/nginx.err;
events { worker_connections 4096; }
http { access_log off; include $3; }
CFG
  taskset -c 0 nginx -c "$dir/$1/nginx.conf" -p "$dir/$1" &
}
sed -e "s|server 127.0.0.1:9191;|server 127.0.0.1:18187;|" -e "s|server 127.0.0.1:3000;|server 127.0.0.1:18181;|" \
  -e "s|listen 127.0.0.1:8080;|listen 127.0.0.1:18188 backlog=4096;|" \
  -e "s|include keygate-authz-secret.conf;|include $dir/front/secret.conf;|" \
  deploy/authz/nginx/keygate-authz.conf > "$dir/front-site.conf"
mkdir -p "$dir/front"
printf 'proxy_set_header X-Keygate-Authz-Secret "%s";\n' "$secret" > "$dir/front/secret.conf"
front_nginx front 18188 "$dir/front-site.conf"
cat > "$dir/plain-site.conf" <<CFG
upstream app { server 127.0.0.1:18181; keepalive 32; }
server {
  listen 127.0.0.1:18189 backlog=4096;
  location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
}
CFG
front_nginx plain 18189 "$dir/plain-site.conf"
if [ -n "${POLICY_DIR:-}" ]; then
  # The peer's own config, one process like the others here, in front of this script's upstream.
  mkdir -p "$dir/policy"
  sed -e "s|server 127.0.0.1:18081;|server 127.0.0.1:18181;|" -e "s|^pid .*|pid $dir/policy/nginx.pid;|" \
    -e "s|master_process on;|master_process off;|" "$POLICY_DIR/nginx-policy.conf" > "$dir/policy/nginx.conf"
  taskset -c 0 nginx -p "$POLICY_DIR" -e "$dir/policy/nginx.err" -c "$dir/policy/nginx.conf" &
  policy_key=$(head -n1 "$POLICY_DIR/keys.tsv" | cut -f1)
fi
for _ in $(seq 600); do curl -fs -o /dev/null http://127.0.0.1:18186/readyz && break; sleep 0.1; done
for port in 18188 18189 ${POLICY_DIR:+18093}; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rt=()
if [ -n "${RT_PRIO:-}" ]; then
  rt=(chrt -f "$RT_PRIO")
  for p in $(cat "$dir/nginx.pid" "$dir"/*/nginx.pid 2>/dev/null) "$kg_pid"; do
    for q in "$p" $(pgrep -P "$p"); do chrt -a -f -p "$RT_PRIO" "$q" >/dev/null; done
  done
fi
front_pid=$(cat "$dir/front/nginx.pid")
plain_pid=$(cat "$dir/plain/nginx.pid")
policy_pid=$(cat "$dir/policy/nginx.pid" 2>/dev/null || true)
up_pid=$(pgrep -P "$(cat "$dir/nginx.pid")" | head -n1)  # the upstream's worker
hz=$(getconf CLK_TCK)

# measure PIDS -- oha args → "p50_ms p99_ms non2xx requests cpu_us_per_request..." (one CPU
# figure per pid, in the order given).
measure() {
  local pids=() before=() after=() out
  while [ "$1" != -- ]; do pids+=("$1"); shift; done
  shift
  for p in "${pids[@]}"; do before+=("$(cpu_ticks "$p")"); done
  out=$("${rt[@]}" taskset -c 1 oha --no-tui --output-format json --latency-correction -z "${DURATION}s" "$@")
  for p in "${pids[@]}"; do after+=("$(cpu_ticks "$p")"); done
  python3 - "$hz" "${before[*]:-}" "${after[*]:-}" <<'PY' "$out"
import json, sys
hz = int(sys.argv[1]); before = [int(x) for x in sys.argv[2].split()]; after = [int(x) for x in sys.argv[3].split()]
r = json.loads(sys.argv[4]); p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
n = sum(codes.values())
bad = sum(v for k, v in codes.items() if not k.startswith("2"))
cpu = ["%.1f" % ((a - b) / hz * 1e6 / max(n, 1)) for b, a in zip(before, after)]
print("%.3f %.3f %d %d %s" % (p["p50"] * 1e3, p["p99"] * 1e3, bad, n, " ".join(cpu)))
PY
}

# engine FROM: keygate's own time for the decisions in its log after line FROM (the audit line's
# duration_ms: from the handler's start to the answer, without sockets, parsing or waiting for
# the CPU) -> "p50 p99 p99.9" in microseconds.
engine() {
  tail -n +"$(($1 + 1))" "$dir/kg.log" | python3 -c '
import json, sys
d = sorted(json.loads(l)["duration_ms"] * 1e3 for l in sys.stdin if "\"message\":\"decision\"" in l)
q = lambda f: d[min(len(d) - 1, int(f * len(d)))] if d else float("nan")
print("%.1f %.1f %.1f" % (q(0.5), q(0.99), q(0.999)))'
}
logged() { wc -l <"$dir/kg.log"; }

auth=(-H "Authorization: Bearer $key")
path=/api/v1/interactions?clinic_id=clinic_00042
check_headers=(-H "X-Original-Method: GET" -H "X-Original-URI: $path" -H "X-Forwarded-For: 127.0.0.1"
  -H "X-Keygate-Authz-Secret: $secret")
printf '%-6s %-12s %8s %8s %6s %9s   %s\n' rate target p50_ms p99_ms non2xx requests "cpu us/request"
for rate in $RATES; do
  read -r d50 d99 dbad dn dcpu < <(measure "$up_pid" -- -q "$rate" -c "$CONNS" "http://127.0.0.1:18181$path")
  printf '%-6s %-12s %8s %8s %6s %9s   nginx %s\n' "$rate" direct "$d50" "$d99" "$dbad" "$dn" "$dcpu"
  read -r p50 p99 pbad pn pcpu < <(measure "$plain_pid" -- -q "$rate" -c "$CONNS" "http://127.0.0.1:18189$path")
  printf '%-6s %-12s %8s %8s %6s %9s   nginx %s\n' "$rate" nginx-plain "$p50" "$p99" "$pbad" "$pn" "$pcpu"
  from=$(logged)
  read -r a50 a99 abad an acpu kcpu < <(measure "$front_pid" "$kg_pid" -- -q "$rate" -c "$CONNS" "${auth[@]}" "http://127.0.0.1:18188$path")
  printf '%-6s %-12s %8s %8s %6s %9s   nginx %s + keygate %s\n' "$rate" nginx-authz "$a50" "$a99" "$abad" "$an" "$acpu" "$kcpu"
  read -r ea50 ea99 ea999 < <(engine "$from")
  from=$(logged)
  read -r i50 i99 ibad in icpu < <(measure "$kg_pid" -- -q "$rate" -c "$CONNS" "${auth[@]}" "http://127.0.0.1:18185$path")
  printf '%-6s %-12s %8s %8s %6s %9s   keygate %s\n' "$rate" inline "$i50" "$i99" "$ibad" "$in" "$icpu"
  read -r ei50 ei99 ei999 < <(engine "$from")
  from=$(logged)
  read -r c50 c99 cbad cn ccpu < <(measure "$kg_pid" -- -q "$rate" -c "$CONNS" "${auth[@]}" "${check_headers[@]}" "http://127.0.0.1:18187/check/nginx")
  printf '%-6s %-12s %8s %8s %6s %9s   keygate %s\n' "$rate" check-alone "$c50" "$c99" "$cbad" "$cn" "$ccpu"
  read -r ec50 ec99 ec999 < <(engine "$from")
  if [ -n "$policy_pid" ]; then
    read -r n50 n99 nbad nn ncpu < <(measure "$policy_pid" -- -q "$rate" -c "$CONNS" -H "Authorization: Bearer $policy_key" "http://127.0.0.1:18093$path")
    printf '%-6s %-12s %8s %8s %6s %9s   nginx %s\n' "$rate" nginx-policy "$n50" "$n99" "$nbad" "$nn" "$ncpu"
    awk -v n50="$n50" -v n99="$n99" -v p50="$p50" -v p99="$p99" 'BEGIN {
      printf "  nginx-policy adds over nginx-plain: p50 %+.3f ms, p99 %+.3f ms\n", n50 - p50, n99 - p99 }'
  fi
  awk -v a50="$a50" -v a99="$a99" -v p50="$p50" -v p99="$p99" -v c50="$c50" -v c99="$c99" -v d50="$d50" -v d99="$d99" \
    -v i50="$i50" -v i99="$i99" 'BEGIN {
      printf "  auth_request adds over nginx-plain: p50 %+.3f ms, p99 %+.3f ms\n", a50 - p50, a99 - p99
      printf "  the check alone over the bare upstream answer: p50 %+.3f ms, p99 %+.3f ms\n", c50 - d50, c99 - d99
      printf "  keygate inline over the upstream alone: p50 %+.3f ms, p99 %+.3f ms\n", i50 - d50, i99 - d99 }'
  echo "  keygate's own time a decision (audit duration_ms, us: p50 / p99 / p99.9):"
  echo "    checks from nginx $ea50 / $ea99 / $ea999; checks alone $ec50 / $ec99 / $ec999; inline (with the upstream's answer) $ei50 / $ei99 / $ei999"
done
