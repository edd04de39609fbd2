#!/usr/bin/env bash
# kiln build benchmarks on the scenarios BuildKit was measured on (three
# stages cold / cached / after a change, a 20,000-file context, a no-op
# build), with hyperfine. When a Docker engine with BuildKit answers on
# /run/docker.sock (e.g. ../shared/peers/setup.sh), the same scenarios run
# with BuildKit in the same run, side by side.
#
#   benches/build.sh              # all scenarios, RUNS=5 each
#   RUNS=10 benches/build.sh a b  # some scenarios: a b c d d0 g
#
# Needs root (overlayfs, runc/libcontainer), busybox-static and hyperfine.
# Prints a markdown table of medians (seconds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root_dir=$(cd "$here/.." && pwd)
RUNS=${RUNS:-5}
W=${BENCH_DIR:-/var/tmp/kiln-bench}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(a b c d d0 g)

for tool in hyperfine busybox; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is needed (apt-get install hyperfine busybox-static)" >&2; exit 1; }
done
(cd "$root_dir" && cargo build -q --release -p kiln-cli)
kiln=$root_dir/target/release/kiln
export KILN_ROOT=$W/store
mkdir -p "$W/results"

# A busybox base image made offline, tagged as the scenarios expect.
if ! "$kiln" inspect busybox:bench >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
  cp "$(command -v busybox)" "$rootfs/bin/busybox"
  for a in $("$rootfs/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
  tar -C "$rootfs" -c . | "$kiln" import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["sh"]' - busybox:bench >/dev/null
  rm -rf "$rootfs"
fi

# Contexts (deterministic).
rm -rf "$W/three-stage" "$W/noop"
cp -r "$here/build/three-stage" "$here/build/noop" "$W/"
mkdir -p "$W/three-stage/input"
for i in $(seq -w 1 50); do printf 'input file %s\n%0200d\n' "$i" "$((10#$i))" > "$W/three-stage/input/f0$i.txt"; done
echo "conf=1" > "$W/three-stage/app.conf"
if [ ! -f "$W/many-files/.done" ]; then
  rm -rf "$W/many-files"; cp -r "$here/build/many-files" "$W/many-files"
  python3 - "$W/many-files/files" <<'PY'
import os, sys, random
root = sys.argv[1]; rnd = random.Random(42)
for d in range(200):
    dp = os.path.join(root, f"d{d:03d}"); os.makedirs(dp)
    for f in range(100):
        with open(os.path.join(dp, f"f{d * 100 + f:05d}.txt"), "wb") as fh:
            fh.write(rnd.randbytes(rnd.randint(64, 1000)))
PY
  touch "$W/many-files/.done"
fi

# BuildKit, when an engine answers.
bk=""
if [ -S /run/docker.sock ] && /usr/bin/docker info >/dev/null 2>&1; then
  bk="DOCKER_BUILDKIT=1 /usr/bin/docker build -q --network none"
  # The scenarios' base for BuildKit: the same offline busybox.
  "$kiln" save busybox:bench | /usr/bin/docker load -q >/dev/null
fi
# The same network mode as BuildKit here (its default network needs a bridge
# this dockerd lacks).
K="$kiln build -q --network none"
K_COLD="$kiln builder prune -a -f >/dev/null; $kiln rmi -f bench-a bench-d >/dev/null 2>&1 || true; sync"
BK_COLD="/usr/bin/docker builder prune -af >/dev/null; sync"

hf() { # name, then hyperfine args
  local name=$1; shift
  hyperfine --style none --export-json "$W/results/$name.json" "$@" >/dev/null
}

for s in "${scenarios[@]}"; do
  case $s in
    a) # cold: no build cache (the base image stays)
      hf a_cold_3stage --runs "$RUNS" --prepare "$K_COLD" -n kiln "$K -t bench-a $W/three-stage"
      [ -n "$bk" ] && hf a_cold_3stage_bk --runs "$RUNS" --prepare "$BK_COLD" -n buildkit "$bk -t bench-a $W/three-stage" ;;
    b) # fully cached rebuild
      hf b_cached_3stage --runs "$RUNS" --warmup 1 --prepare sync -n kiln "$K -t bench-a $W/three-stage"
      [ -n "$bk" ] && hf b_cached_3stage_bk --runs "$RUNS" --warmup 1 --prepare sync -n buildkit "$bk -t bench-a $W/three-stage" ;;
    c) # one COPY'd file changed: c1 in the last stage, c2 in the first
      hf c1_change_leaf --runs "$RUNS" --warmup 1 --prepare "date +%N > $W/three-stage/app.conf; sync" -n kiln "$K -t bench-a $W/three-stage"
      hf c2_change_first_stage --runs "$RUNS" --warmup 1 --prepare "date +%N > $W/three-stage/input/f001.txt; sync" -n kiln "$K -t bench-a $W/three-stage"
      if [ -n "$bk" ]; then
        hf c1_change_leaf_bk --runs "$RUNS" --warmup 1 --prepare "date +%N > $W/three-stage/app.conf; sync" -n buildkit "$bk -t bench-a $W/three-stage"
        hf c2_change_first_stage_bk --runs "$RUNS" --warmup 1 --prepare "date +%N > $W/three-stage/input/f001.txt; sync" -n buildkit "$bk -t bench-a $W/three-stage"
      fi ;;
    d) # 20,000-file context, fully cached
      hf d_cached_20k --runs "$RUNS" --warmup 1 --prepare sync -n kiln "$K -t bench-d $W/many-files"
      [ -n "$bk" ] && hf d_cached_20k_bk --runs "$RUNS" --warmup 1 --prepare sync -n buildkit "$bk -t bench-d $W/many-files" ;;
    d0) # 20,000-file context, cold
      hf d0_cold_20k --runs "$RUNS" --prepare "$K_COLD" -n kiln "$K -t bench-d $W/many-files"
      [ -n "$bk" ] && hf d0_cold_20k_bk --runs "$RUNS" --prepare "$BK_COLD" -n buildkit "$bk -t bench-d $W/many-files" ;;
    g) # no-op build
      hf g_noop --runs "$RUNS" --warmup 1 --prepare sync -n kiln "$K -t bench-g $W/noop"
      [ -n "$bk" ] && hf g_noop_bk --runs "$RUNS" --warmup 1 --prepare sync -n buildkit "$bk -t bench-g $W/noop" ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done

python3 - "$W/results" <<'PY'
import json, os, sys
d = sys.argv[1]
# BuildKit medians measured on this machine (../shared/peers/bench), for
# reference when no engine runs here.
ref = {"a_cold_3stage": 0.92, "b_cached_3stage": 0.16, "c1_change_leaf": 0.36,
       "c2_change_first_stage": 0.72, "d_cached_20k": 1.01, "g_noop": 0.11}
def median(name):
    p = os.path.join(d, name + ".json")
    return json.load(open(p))["results"][0]["median"] if os.path.exists(p) else None
print("| scenario | kiln (s) | BuildKit (s) | kiln / BuildKit |")
print("|---|---|---|---|")
for name in ["a_cold_3stage", "b_cached_3stage", "c1_change_leaf", "c2_change_first_stage", "d_cached_20k", "d0_cold_20k", "g_noop"]:
    k = median(name)
    if k is None:
        continue
    b = median(name + "_bk")
    src = ""
    if b is None and name in ref:
        b, src = ref[name], " (reference)"
    ratio = f"{k / b:.2f}" if b else ""
    print(f"| {name} | {k:.3f} | {f'{b:.3f}{src}' if b else ''} | {ratio} |")
PY
