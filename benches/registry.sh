#!/usr/bin/env bash
# Push and pull of a 500 MB single-layer image against a local
# docker-registry (Debian's CNCF distribution) on 127.0.0.1, kiln side by
# side with skopeo. Needs docker-registry and skopeo (scripts/test.sh
# installs both); builds kiln in release mode.
#
#   benches/registry.sh [MB]
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${1:-500}
cargo build -q --release -p kiln-cli
kiln=$PWD/target/release/kiln
work=$(mktemp -d)
reg_pid=
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
log:
  level: error
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
reg_pid=$!
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

# A rootfs with one incompressible file, imported (stored uncompressed),
# then pushed (gzip on the way is not done: layers are pushed as stored).
mkdir -p "$work/rootfs"
head -c "$((mb * 1000 * 1000))" /dev/urandom > "$work/rootfs/blob"
export KILN_ROOT=$work/store
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$kiln" import "$work/rootfs.tar" "127.0.0.1:$port/bench:kiln" >/dev/null
"$kiln" save -o "$work/image.tar" "127.0.0.1:$port/bench:kiln"

t() { local start end; start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N); echo "$end - $start" | bc; }

# Separate repositories, so neither tool finds the other's blobs.
skopeo_push=$(t skopeo copy --dest-tls-verify=false "docker-archive:$work/image.tar" "docker://127.0.0.1:$port/skopeo/bench:1")
skopeo_pull=$(t skopeo copy --src-tls-verify=false "docker://127.0.0.1:$port/skopeo/bench:1" "oci:$work/oci-out:bench")
kiln_push=$(t "$kiln" push "127.0.0.1:$port/bench:kiln")
export KILN_ROOT=$work/store2
kiln_pull=$(t "$kiln" pull "127.0.0.1:$port/bench:kiln")
kiln_repull=$(t "$kiln" pull "127.0.0.1:$port/bench:kiln")

printf '| %-40s | %8s |\n' "operation (${mb} MB layer)" "seconds"
printf '|%s|%s|\n' "------------------------------------------" "----------"
printf '| %-40s | %8.2f |\n' "kiln push" "$kiln_push" "skopeo copy docker-archive → registry" "$skopeo_push" \
  "kiln pull (empty store)" "$kiln_pull" "skopeo copy registry → oci dir" "$skopeo_pull" \
  "kiln pull (all layers present)" "$kiln_repull"
