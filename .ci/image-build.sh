#!/usr/bin/env bash
# Build the Dockerfile's runtime stage with buildah from a base made here, then run keygate
# inside the image: `--version`, and `check-config` on deploy/kubernetes's ConfigMap and key
# Secret mounted where the Deployment mounts them. Reports the image size.
#
# What it stands in for (no registry here): gcr.io/distroless/cc-debian12:nonroot becomes a
# scratch image holding this machine's (Debian 12) glibc, libm and libgcc_s plus the nonroot
# passwd entry; the builder stage's release binary becomes KEYGATE_BIN (the debug binary
# `cargo test` built). Everything else in the runtime stage (USER, ENV, ENTRYPOINT, CMD,
# labels) is the Dockerfile's own text.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${KEYGATE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/keygate}"
dockerfile="${DOCKERFILE:-Dockerfile}"
[[ -x "$bin" ]] || { echo "no keygate binary at $bin (run cargo build or cargo test first)" >&2; exit 1; }

work="$(mktemp -d)"
store="$work/storage"
ba() { buildah --root "$store" --runroot "$work/run" --storage-driver vfs "$@"; }
ctrs=()
cleanup() {
  for c in "${ctrs[@]}"; do ba rm "$c" > /dev/null 2>&1 || true; done
  # vfs layers are plain directories; buildah made some of them read-only.
  chmod -R u+w "$work" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS

echo "== image: base (distroless/cc stand-in) from this machine's libraries"
rootfs="$work/rootfs"
mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/lib64" "$rootfs/lib/x86_64-linux-gnu"
chmod 1777 "$rootfs/tmp"
# The loader and every library the binary links, at the paths ldd resolves them to.
while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done < <(ldd "$bin" | awk '/=> \//{print $3} /^\t\/lib/{print $1}')
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
base="$(ba from scratch)"
ctrs+=("$base")
ba copy "$base" "$rootfs/" / > /dev/null
ba commit --quiet "$base" localhost/keygate-ci-base:cc > /dev/null

echo "== image: the Dockerfile's runtime stage, FROM the local base"
ctx="$work/context"
mkdir -p "$ctx"
cp "$bin" "$ctx/keygate"
# From the last FROM on; the base and the builder's COPY are the only lines replaced.
awk '/^FROM /{n=NR} {l[NR]=$0} END{for(i=n;i<=NR;i++) print l[i]}' "$dockerfile" \
  | sed -e 's|^FROM .*|FROM localhost/keygate-ci-base:cc|' \
        -e 's|^COPY --from=builder /app/target/release/keygate |COPY keygate |' > "$ctx/Containerfile"
grep -q '^COPY keygate /usr/local/bin/keygate' "$ctx/Containerfile" \
  || { echo "$dockerfile: the runtime stage no longer copies the builder's binary to /usr/local/bin/keygate" >&2; exit 1; }
ba bud --quiet --isolation chroot --layers=false -f "$ctx/Containerfile" -t localhost/keygate:ci "$ctx" > /dev/null

echo "== image: keygate runs inside it"
conf="$work/conf"
keys="$work/keys"
mkdir -p "$conf" "$keys"
python3 - "$conf" "$keys" << 'EOF'
import sys, yaml
conf, keys = sys.argv[1:3]
sec = yaml.safe_load(open("deploy/kubernetes/secret.yaml"))
open(f"{conf}/config.yaml", "w").write(open("deploy/kubernetes/config.yaml").read())
open(f"{keys}/keys.yaml", "w").write(sec["stringData"]["keys.yaml"])
EOF
chmod -R a+rX "$conf" "$keys"
ctr="$(ba from localhost/keygate:ci)"
ctrs+=("$ctr")
user="$(ba inspect --format '{{.OCIv1.Config.User}}' localhost/keygate:ci)"
[[ "$user" == 65532:65532 ]] || { echo "image user is '$user', want 65532:65532 (non-root)" >&2; exit 1; }
run_in() { ba run --isolation chroot -v "$conf:/etc/keygate/conf:ro" -v "$keys:/etc/keygate/keys:ro" "$ctr" -- "$@"; }
printf '+ keygate --version\n'
run_in /usr/local/bin/keygate --version
printf '+ keygate check-config /etc/keygate/conf/config.yaml\n'
run_in /usr/local/bin/keygate check-config /etc/keygate/conf/config.yaml

size="$(ba images --format '{{.Size}}' localhost/keygate:ci)"
base_size="$(ba images --format '{{.Size}}' localhost/keygate-ci-base:cc)"
echo "image localhost/keygate:ci: $size (base $base_size, binary $(du -h "$bin" | cut -f1), user $user), built and run in $((SECONDS - started)) s"
