#!/usr/bin/env bash
# CI for deploy/monitoring: the alerting rules (promtool check + unit tests),
# the PrometheusRule kept identical to the plain rules file, the Grafana
# dashboard, and a real scrape of a running keygate by a real Prometheus
# (tests/prometheus_scrape.sh). Prints every step; exits non-zero on the first
# failure.
#
# Needs promtool and prometheus: installed from Debian's "prometheus" package
# when missing (as root, or through sudo). Idempotent: re-runs install nothing.
set -euo pipefail

cd "$(dirname "$0")/.."

MON=deploy/monitoring
started=$SECONDS
step_started=$SECONDS

step() {
  if [[ -n "${step_name:-}" ]]; then
    printf -- '--- %s: %ss\n' "$step_name" "$((SECONDS - step_started))"
  fi
  step_name="$*"
  step_started=$SECONDS
  printf '\n==> %s\n' "$*"
}

run() {
  printf '+ %s\n' "$*" >&2
  "$@"
}

tmp="$(mktemp -d "${TMPDIR:-/tmp}/keygate-monitoring.XXXXXX")"
policy_rc_created=""
cleanup() {
  if [[ -n "$policy_rc_created" ]]; then
    ${SUDO:-} rm -f /usr/sbin/policy-rc.d
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

step "tools: promtool, prometheus, curl, python3 (with yaml)"
missing=()
command -v promtool > /dev/null 2>&1 || missing+=(prometheus)
command -v prometheus > /dev/null 2>&1 || missing+=(prometheus)
command -v curl > /dev/null 2>&1 || missing+=(curl)
command -v python3 > /dev/null 2>&1 || missing+=(python3)
python3 -c 'import yaml' > /dev/null 2>&1 || missing+=(python3-yaml)
if [[ ${#missing[@]} -gt 0 ]]; then
  # One of each, in order.
  mapfile -t packages < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=""
  elif command -v sudo > /dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "missing ${packages[*]}: run as root, or install them (apt-get install ${packages[*]})" >&2
    exit 1
  fi
  # Debian starts a packaged daemon on install: Prometheus would take :9090.
  # policy-rc.d "101" (action forbidden) stops that, as in Docker images; an
  # existing policy-rc.d is left alone.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# keygate .ci/monitoring.sh: no service starts during this install\nexit 101\n' \
      | ${SUDO} tee /usr/sbin/policy-rc.d > /dev/null
    ${SUDO} chmod 755 /usr/sbin/policy-rc.d
    policy_rc_created=1
  fi
  run ${SUDO} env DEBIAN_FRONTEND=noninteractive apt-get update -q
  run ${SUDO} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
  if [[ -n "$policy_rc_created" ]]; then
    ${SUDO} rm -f /usr/sbin/policy-rc.d
    policy_rc_created=""
  fi
  # Keep the packaged service from starting at the next boot as well (this
  # only runs when this script installed the package).
  if [[ " ${packages[*]} " == *" prometheus "* ]] && command -v systemctl > /dev/null 2>&1; then
    if [[ -d /run/systemd/system ]]; then
      run ${SUDO} systemctl disable --now prometheus.service || true
    else
      ${SUDO} systemctl disable prometheus.service > /dev/null 2>&1 || true
    fi
  fi
fi
run promtool --version
run prometheus --version

step "promtool check rules: $MON/keygate-rules.yaml"
run promtool check rules "$MON/keygate-rules.yaml"

step "promtool check rules: the spec of $MON/prometheusrule.yaml"
run "$MON/sync-rules.sh" --spec > "$tmp/prometheusrule-spec.yaml"
run promtool check rules "$tmp/prometheusrule-spec.yaml"

step "PrometheusRule in sync with the plain rules file"
run "$MON/sync-rules.sh" --check

step "promtool test rules: $MON/keygate-rules.test.yaml"
run promtool test rules "$MON/keygate-rules.test.yaml"

step "every alert has a runbook_url that leads to a section of README.md"
run python3 .ci/check_runbooks.py "$MON/keygate-rules.yaml" README.md

step "Grafana dashboard: $MON/grafana-dashboard.json"
run python3 .ci/check_dashboard.py "$MON/grafana-dashboard.json"

step "metric names in deploy/monitoring are ones keygate defines (src/)"
defined="$(grep -rhoE '"keygate_[a-z0-9_]+"' src | tr -d '"' | sort -u)"
referenced="$(grep -ohE 'keygate_[a-z0-9_]+' "$MON/keygate-rules.yaml" "$MON/keygate-rules.test.yaml" \
  "$MON/grafana-dashboard.json" | sed -E 's/_(bucket|count|sum)$//' | sort -u)"
unknown="$(comm -23 <(printf '%s\n' "$referenced") <(printf '%s\n' "$defined"))"
if [[ -n "$unknown" ]]; then
  printf 'not defined anywhere in src/ (renamed? typo?):\n%s\n' "$unknown" >&2
  exit 1
fi
printf '%s metric families referenced, all defined in src/\n' "$(printf '%s\n' "$referenced" | wc -l)"

step "real scrape: keygate demo -> promtool check metrics -> prometheus"
run bash tests/prometheus_scrape.sh

step "done"
printf 'monitoring: all checks passed in %ss\n' "$((SECONDS - started))"
