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
