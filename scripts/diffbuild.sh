#!/usr/bin/env bash
# Builds contexts with BuildKit and with kiln and compares the images with
# ../shared/peers/diffbuild.py (config fields and the flattened filesystem:
# paths, modes, owners, contents, link targets). Needs the peers running
# (../shared/peers/setup.sh: dockerd with BuildKit, the registry on
# 127.0.0.1:5000 with busybox and debian) and root.
#
#   scripts/diffbuild.sh                 # the peers' testdata + our cases
#   scripts/diffbuild.sh DIR [DIR…]      # these contexts
#
# Prints one line per context (same / differs / failed) and a total;
# details in $OUT/<case>/ (report.json, *.summary.json, logs).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
peers=$(cd "$here/../shared/peers" 2>/dev/null && pwd) || { echo "diffbuild.sh: ../shared/peers not found" >&2; exit 3; }
OUT=${OUT:-/var/tmp/kiln-diffbuild}
export KILN_ROOT=${KILN_ROOT:-$OUT/store}
(cd "$here" && cargo build -q --release -p kiln-cli) || exit 2
kiln=$here/target/release/kiln

cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  cases=("$peers/testdata/multistage" "$peers/testdata/whiteouts")
  for d in "$here"/tests/diffbuild/*/; do cases+=("${d%/}"); done
fi

same=0 differ=0 failed=0
for ctx in "${cases[@]}"; do
  name=$(basename "$ctx")
  mkdir -p "$OUT/$name"
  python3 "$peers/diffbuild.py" "$ctx" --only buildkit,candidate -o "$OUT/$name" \
    --candidate "$kiln build -q --network none -o type=oci,dest={out} -f {dockerfile} {build_arg_flags} {target_flag} {context}" \
    >"$OUT/$name/diff.txt" 2>&1
  case $? in
    0) same=$((same + 1)); echo "same     $name" ;;
    1) differ=$((differ + 1)); echo "differs  $name  (see $OUT/$name/diff.txt)" ;;
    *) failed=$((failed + 1)); echo "failed   $name  (see $OUT/$name/diff.txt)" ;;
  esac
done
echo "diffbuild: $same same, $differ differ, $failed failed"
[ $((differ + failed)) -eq 0 ]
