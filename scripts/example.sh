#!/usr/bin/env bash
# kiln's main job on a fresh Debian machine with Rust, no network needed:
# build the multi-stage example in examples/multistage with `kiln build`.
#
# Needs root (overlayfs and runc). Installs runc and busybox-static when
# missing, makes a busybox base image offline from /bin/busybox and imports
# it into kiln's store as busybox:1.36, then builds and shows the result.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "example.sh: run as root (kiln build uses overlayfs and runc)" >&2
  exit 1
fi
missing=()
for p in runc busybox-static slirp4netns; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo build -q -p kiln-cli
kiln=target/debug/kiln
export KILN_ROOT=${KILN_ROOT:-/var/lib/kiln}

if ! $kiln inspect busybox:1.36 >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
  tar -C "$rootfs" -c . | $kiln import -c 'ENV PATH=/bin' -c 'CMD ["sh"]' - busybox:1.36
fi

$kiln build --progress plain -t hello:latest examples/multistage
$kiln build --progress plain --target tests examples/multistage
$kiln images hello
$kiln history hello:latest
