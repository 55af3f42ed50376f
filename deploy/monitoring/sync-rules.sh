#!/usr/bin/env bash
# Generates prometheusrule.yaml (prometheus-operator PrometheusRule) from
# keygate-rules.yaml (plain Prometheus rules file), so that the two never say
# different things. Edit keygate-rules.yaml, then run this.
#
#   deploy/monitoring/sync-rules.sh           rewrite prometheusrule.yaml
#   deploy/monitoring/sync-rules.sh --check   exit 1 (with a diff) if it is out of date
#   deploy/monitoring/sync-rules.sh --spec    print the PrometheusRule's spec as a
#                                             plain rules file (for promtool check rules)
#
# The spec is the rules file from its first line that is not a comment or
# blank (the "groups:" line), indented by two spaces; blank lines stay empty.
set -euo pipefail

dir="$(cd "$(dirname "$0")" && pwd)"
src="$dir/keygate-rules.yaml"
dst="$dir/prometheusrule.yaml"

generate() {
  cat << 'EOF'
# GENERATED from keygate-rules.yaml by sync-rules.sh: do not edit by hand
# (CI fails if this file and keygate-rules.yaml disagree).
#
# keygate's alerting rules for the prometheus-operator. A CRD, so it is not
# part of deploy/kubernetes (whose manifests are validated offline). Apply
# with kubectl apply -n <namespace of the API> -f prometheusrule.yaml, and
# make sure the Prometheus resource's ruleSelector / ruleNamespaceSelector
# select it (kube-prometheus-stack, for example, wants a "release: <name>"
# label unless ruleSelectorNilUsesHelmValues is false).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: keygate
  labels:
    app.kubernetes.io/name: keygate
    app.kubernetes.io/component: alerting-rules
spec:
EOF
  awk '
    !started && ($0 ~ /^[[:space:]]*#/ || $0 ~ /^[[:space:]]*$/) { next }
    { started = 1 }
    /^[[:space:]]*$/ { print ""; next }
    { print "  " $0 }
  ' "$src"
}

# The spec of a PrometheusRule file, de-indented: a plain rules file.
spec_of() {
  awk '
    in_spec && /^[^ #]/ { exit }
    in_spec && /^[[:space:]]*$/ { print ""; next }
    in_spec { sub(/^  /, ""); print; next }
    /^spec:[[:space:]]*$/ { in_spec = 1 }
  ' "$1"
}

case "${1:-}" in
  "")
    generate > "$dst.tmp"
    mv "$dst.tmp" "$dst"
    echo "wrote $dst"
    ;;
  --check)
    if ! diff -u "$dst" <(generate); then
      echo "$dst is out of date: run deploy/monitoring/sync-rules.sh" >&2
      exit 1
    fi
    # Belt and braces: the spec must read back as exactly the source's rules.
    if ! diff -u <(spec_of "$dst") \
      <(awk '!s && ($0 ~ /^[[:space:]]*#/ || $0 ~ /^[[:space:]]*$/) { next } { s = 1; print }' "$src"); then
      echo "the spec of $dst does not read back as keygate-rules.yaml" >&2
      exit 1
    fi
    echo "prometheusrule.yaml is in sync with keygate-rules.yaml"
    ;;
  --spec)
    spec_of "$dst"
    ;;
  *)
    echo "usage: $0 [--check|--spec]" >&2
    exit 2
    ;;
esac
