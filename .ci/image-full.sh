#!/usr/bin/env bash
# By hand, not in CI (a release build of every dependency: many minutes on two cores): the
# real Dockerfile, both stages, built by buildah from base images made here instead of pulled:
#   docker.io/library/rust:1.95-bookworm  -> Debian bookworm (mmdebstrap: gcc, libc6-dev,
#                                            ca-certificates) + this machine's Rust toolchain
#   gcr.io/distroless/cc-debian12:nonroot -> this machine's glibc, libm, libgcc_s + passwd
# Only the two FROM lines are rewritten; crates come from crates.io. Then keygate --version and
# check-config run inside the image, as in .ci/image-build.sh. Needs root, buildah, mmdebstrap.
#
# Env: RUST_TOOLCHAIN (default: rustup's active toolchain directory).
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain="${RUST_TOOLCHAIN:-$(rustc --print sysroot)}"
work="$(mktemp -d)"
store="$work/storage"
ba() { buildah --root "$store" --runroot "$work/run" --storage-driver vfs "$@"; }
cleanup() {
  ba rm --all > /dev/null 2>&1 || true
  chmod -R u+w "$work" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS
step() { printf '== [%4d s] %s\n' "$((SECONDS - started))" "$*"; }

step "builder base: mmdebstrap bookworm + $("$toolchain/bin/rustc" --version)"
# The Debian part is cached (a few minutes to make): delete the tarball to refresh it.
debian="${XDG_CACHE_HOME:-$HOME/.cache}/keygate-ci/bookworm-builder.tar"
if [[ ! -s "$debian" ]]; then
  mkdir -p "$(dirname "$debian")"
  mmdebstrap --quiet --format=tar --variant=minbase --include=gcc,libc6-dev,ca-certificates bookworm "$debian.tmp" \
    http://deb.debian.org/debian
  mv "$debian.tmp" "$debian"
fi
mkdir -p "$work/builder/usr/local/rust"
tar -C "$work/builder" -xf "$debian"
# This machine's trust store: its way to crates.io may pass a TLS-inspecting proxy whose CA
# only the host trusts (a pulled rust image would need the same).
cp /etc/ssl/certs/ca-certificates.crt "$work/builder/etc/ssl/certs/ca-certificates.crt"
cp -a "$toolchain/bin" "$toolchain/lib" "$toolchain/libexec" "$work/builder/usr/local/rust/"
ctr="$(ba from scratch)"
ba copy "$ctr" "$work/builder/" / > /dev/null
ba config --env PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env CARGO_HOME=/usr/local/cargo "$ctr"
ba commit --quiet "$ctr" localhost/rust:1.95-bookworm > /dev/null
rm -rf "$work/builder"

step "runtime base: distroless/cc stand-in"
rootfs="$work/cc"
mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/lib/x86_64-linux-gnu" "$rootfs/lib64"
chmod 1777 "$rootfs/tmp"
for lib in /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/libm.so.6 /lib/x86_64-linux-gnu/libgcc_s.so.1 \
  /lib64/ld-linux-x86-64.so.2; do
  cp -L "$lib" "$rootfs$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
ctr="$(ba from scratch)"
ba copy "$ctr" "$rootfs/" / > /dev/null
ba commit --quiet "$ctr" localhost/distroless-cc:nonroot > /dev/null

step "buildah bud: the Dockerfile with its two FROM lines pointed at the local bases"
sed -e 's|^FROM docker.io/library/rust:1.95-bookworm |FROM localhost/rust:1.95-bookworm |' \
    -e 's|^FROM gcr.io/distroless/cc-debian12:nonroot$|FROM localhost/distroless-cc:nonroot|' Dockerfile > "$work/Dockerfile"
[[ "$(grep -c '^FROM localhost/' "$work/Dockerfile")" == 2 ]] || { echo "Dockerfile: FROM lines not as expected" >&2; exit 1; }
if ! ba bud --isolation chroot --layers=false -f "$work/Dockerfile" -t localhost/keygate:full . > "$work/bud.log" 2>&1; then
  tail -40 "$work/bud.log" >&2
  exit 1
fi
grep -E '^(STEP|COMMIT)|Finished' "$work/bud.log"

step "keygate inside the image"
mkdir -p "$work/conf" "$work/keys"
python3 - "$work/conf" "$work/keys" << 'EOF'
import sys, yaml
conf, keys = sys.argv[1:3]
open(f"{conf}/config.yaml", "w").write(open("deploy/kubernetes/config.yaml").read())
open(f"{keys}/keys.yaml", "w").write(yaml.safe_load(open("deploy/kubernetes/secret.yaml"))["stringData"]["keys.yaml"])
EOF
chmod -R a+rX "$work/conf" "$work/keys"
ctr="$(ba from localhost/keygate:full)"
ba run --isolation chroot "$ctr" -- /usr/local/bin/keygate --version
ba run --isolation chroot -v "$work/conf:/etc/keygate/conf:ro" -v "$work/keys:/etc/keygate/keys:ro" "$ctr" -- \
  /usr/local/bin/keygate check-config /etc/keygate/conf/config.yaml
step "image localhost/keygate:full: $(ba images --format '{{.Size}}' localhost/keygate:full), user $(ba inspect --format '{{.OCIv1.Config.User}}' localhost/keygate:full)"
