#!/usr/bin/env bash
# Makes a debian:bookworm-slim base image offline from Docker Hub: debootstrap
# a minimal Debian bookworm from the apt mirror this machine already uses,
# trim it the way the official -slim image is trimmed, and `kiln import` it.
#
#   sudo examples/hello-c/make-base.sh            # into kiln's default store
#   sudo KILN_ROOT=/tmp/store examples/hello-c/make-base.sh
#
# Needs root and network access to a Debian mirror (installs debootstrap
# when missing). KILN is the kiln binary (default: target/debug/kiln, built
# when absent). Does nothing when the image is already in the store, unless
# --force is given.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -ne 0 ]; then
  echo "make-base.sh: run as root (debootstrap needs it)" >&2
  exit 1
fi
image=debian:bookworm-slim
kiln=${KILN:-target/debug/kiln}
[ -x "$kiln" ] || cargo build -q -p kiln-cli
if [ "${1:-}" != --force ] && "$kiln" inspect "$image" >/dev/null 2>&1; then
  echo "$image is already in the store"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi

# The first Debian mirror apt is configured with (deb822 or one-line form).
mirror=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
  | awk '{print $2}' | grep -v -e security -e updates | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(grep -hE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
echo "debootstrap bookworm from $mirror ..."
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  exit 1
}

# Trim: no package lists or caches, no docs, man pages or locales (and keep
# dpkg from installing them later), an empty resolv.conf, and apt settings
# for containers.
rm -rf "$root"/dev/* "$root"/proc/* "$root"/sys/* \
  "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log "$root"/var/log/apt/*
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/slim-no-languages"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
: >"$root/etc/resolv.conf"
echo localhost >"$root/etc/hostname"

tar --numeric-owner --sort=name -C "$root" -cf "$work/rootfs.tar" .
"$kiln" import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["bash"]' \
  -m "debootstrap --variant=minbase bookworm, trimmed" \
  "$work/rootfs.tar" "$image"
"$kiln" images debian
