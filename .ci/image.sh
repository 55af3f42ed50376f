#!/usr/bin/env bash
# The container image: proves what can be proved here, without a registry.
#
# 1. The Dockerfile's dependency-caching stub step gives cargo every target Cargo.toml declares
#    (lib, bins, benches, examples, explicit [[test]]s): the stub RUN is replayed in a scratch
#    directory holding only Cargo.toml and Cargo.lock, then every target's source path must
#    exist there and cargo must accept the manifest. A missing stub fails here, not in
#    `docker build`.
# 2. With buildah (installed from Debian if missing; KEYGATE_CI_BUILDAH=0 skips it): the runtime stage is built FROM a
#    base made here (glibc + libgcc_s from this machine, like distroless/cc) with the binary
#    `cargo test` already built (debug; no second release build), then `keygate --version` and
#    `keygate check-config` on deploy/kubernetes's config run inside it, and its size is reported.
#    The builder stage (rust:1.95-bookworm, crates.io) is not built: no base image registry here.
#
# Env: KEYGATE_BIN (default target/debug/keygate), DOCKERFILE (default Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."

dockerfile="${DOCKERFILE:-Dockerfile}"
scratch="$(mktemp -d)"
cleanup() { rm -rf "$scratch"; }
trap cleanup EXIT

echo "== image: the stub step covers every declared target ($dockerfile)"
# The RUN instruction right after `COPY Cargo.toml Cargo.lock ./`, continuation lines joined.
stub_run="$(awk '
  /^COPY Cargo.toml Cargo.lock/ { after = 1; next }
  after && /^RUN / { grab = 1; sub(/^RUN /, "") }
  grab { line = $0; more = sub(/\\$/, "", line); printf "%s\n", line; if (!more) exit }
' "$dockerfile")"
if [[ -z "$stub_run" ]]; then
  echo "$dockerfile: no RUN after 'COPY Cargo.toml Cargo.lock ./' (the dependency-caching step)" >&2
  exit 1
fi
cp Cargo.toml Cargo.lock "$scratch/"
# Replay the stub commands, but stop before the build: everything up to the first `cargo`.
stub_files="$(printf '%s\n' "$stub_run" | awk '/cargo /{exit} {print}' | sed -e 's/&&[[:space:]]*$//' -e 's/^[[:space:]]*&&//')"
(cd "$scratch" && bash -euo pipefail -c "$stub_files")

missing=0
while IFS=$'\t' read -r kind name path; do
  rel="${path#"$PWD"/}"
  if [[ -f "$scratch/$rel" ]]; then
    printf '  ok       %-8s %-12s %s\n' "$kind" "$name" "$rel"
  else
    printf '  MISSING  %-8s %-12s %s  (add a stub for it to the RUN after COPY Cargo.toml)\n' "$kind" "$name" "$rel" >&2
    missing=1
  fi
done < <(cargo metadata --no-deps --format-version 1 --offline | python3 -c '
import json, sys, tomllib
declared_tests = {t.get("name") for t in tomllib.load(open("Cargo.toml", "rb")).get("test", [])}
for pkg in json.load(sys.stdin)["packages"]:
    for t in pkg["targets"]:
        kind = t["kind"][0]
        # tests/ is auto-discovered and not in the build context (.dockerignore): cargo only
        # needs the ones Cargo.toml names.
        if kind == "test" and t["name"] not in declared_tests:
            continue
        print(kind, t["name"], t["src_path"], sep="\t")
')
if [[ $missing -ne 0 ]]; then
  exit 1
fi
# And cargo itself accepts the stubbed manifest (a target cargo wants but Cargo.toml's target
# list above does not show would fail here).
(cd "$scratch" && cargo metadata --no-deps --format-version 1 --offline > /dev/null)
echo "  cargo accepts the stubbed manifest"

if [[ "${KEYGATE_CI_BUILDAH:-1}" == 0 ]]; then
  echo "== image build skipped (KEYGATE_CI_BUILDAH=0)"
  exit 0
fi
if ! command -v buildah > /dev/null 2>&1; then
  echo "== installing buildah (Debian package)"
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends buildah > /dev/null) \
    || { echo "buildah is not installed and could not be (set KEYGATE_CI_BUILDAH=0 to skip the build)" >&2; exit 1; }
fi
exec bash .ci/image-build.sh
