#!/usr/bin/env bash
# Builds contexts with BuildKit and with kiln and compares the images with
# ../shared/peers/diffbuild.py (config fields and the flattened filesystem:
# paths, modes, owners, contents, link targets). Needs the peers running
# (../shared/peers/setup.sh: dockerd with BuildKit, the registry on
# 127.0.0.1:5000 with busybox and debian, BuildKit's Dockerfile frontend 1.5
# as the reference) and root.
#
#   scripts/diffbuild.sh                 # the peers' testdata + tests/diffbuild/*
#   scripts/diffbuild.sh DIR [DIR…]      # these contexts
#   KILN=/path/to/kiln scripts/diffbuild.sh …   # a prebuilt binary
#   JOBS=2 scripts/diffbuild.sh          # cases in parallel
#   scripts/diffbuild.sh --record DIR…   # and write DIR/expected.json when same
#
# --record keeps BuildKit's result of every case of tests/diffbuild that
# kiln builds the same, as the golden file scripts/diffbuild-golden.py
# checks kiln against without a Docker engine (tests/diffbuild/README.md).
#
# A case directory may hold `diffbuild.args`: extra diffbuild.py arguments,
# one per line (`--build-arg K=V`, `--target T`, `--network host`,
# `--ignore /var/cache,/var/log/apt` for files that differ between two
# BuildKit builds of the same input). Lines starting with # are comments.
#
# A case that needs what git cannot hold (setuid bits, hard links, empty
# directories, odd file names) has an executable `diffbuild.setup`: the
# context is copied to $OUT/<case>/context and the script runs there first.
# A case with a golden `expected.json` is built from such a copy too, without
# that file (it describes the image, so it must not be part of the context).
#
# Prints one line per context (same / differs / failed) and a total;
# details in $OUT/<case>/ (report.json, *.summary.json, logs).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
peers=$(cd "$here/../shared/peers" 2>/dev/null && pwd) || { echo "diffbuild.sh: ../shared/peers not found" >&2; exit 3; }
OUT=${OUT:-/var/tmp/kiln-diffbuild}
JOBS=${JOBS:-1}
export KILN_ROOT=${KILN_ROOT:-$OUT/store}
export DIFFBUILD_SYNTAX=${DIFFBUILD_SYNTAX:-127.0.0.1:5000/dockerfile:1.5}
if [ -z "${KILN:-}" ]; then
  (cd "$here" && cargo build -q --release -p kiln-cli) || exit 2
  KILN=$here/target/release/kiln
fi
RECORD=0
if [ "${1:-}" = --record ]; then RECORD=1; shift; fi
export KILN OUT peers here RECORD

cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  cases=("$peers/testdata/multistage" "$peers/testdata/whiteouts")
  for d in "$here"/tests/diffbuild/*/; do cases+=("${d%/}"); done
fi

one() {
  local ctx=$1 case_dir=$1 name extra=() network=none line
  name=$(basename "$ctx")
  mkdir -p "$OUT/$name"
  if [ -x "$ctx/diffbuild.setup" ] || [ -e "$ctx/expected.json" ]; then
    rm -rf "$OUT/$name/context"
    cp -a "$ctx" "$OUT/$name/context"
    rm -f "$OUT/$name/context/expected.json"
    if [ -x "$ctx/diffbuild.setup" ]; then
      (cd "$OUT/$name/context" && ./diffbuild.setup) >"$OUT/$name/setup.log" 2>&1 ||
        { echo "failed   $name  (setup, see $OUT/$name/setup.log)"; return; }
    fi
    ctx=$OUT/$name/context
  fi
  if [ -f "$ctx/diffbuild.args" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
      case $line in ''|'#'*) continue ;; esac
      # shellcheck disable=SC2206 # one flag and its value per line
      extra+=($line)
    done <"$ctx/diffbuild.args"
  fi
  # Several --ignore lines add up (diffbuild.py takes one comma list).
  local args=() ignore=""
  for ((i = 0; i < ${#extra[@]}; i++)); do
    case ${extra[$i]} in
      --network) network=${extra[$((i + 1))]} ;;
      --ignore) ignore=${ignore:+$ignore,}${extra[$((i + 1))]}; i=$((i + 1)); continue ;;
    esac
    args+=("${extra[$i]}")
  done
  [ -n "$ignore" ] && args+=(--ignore "$ignore")
  extra=("${args[@]}")
  python3 "$peers/diffbuild.py" "$ctx" --only buildkit,candidate -o "$OUT/$name" "${extra[@]}" \
    --candidate "$KILN build -q --network $network -o type=oci,dest={out} -f {dockerfile} {build_arg_flags} {target_flag} {secret_flags} {context}" \
    >"$OUT/$name/diff.txt" 2>&1
  case $? in
    0)
      if [ "$RECORD" = 1 ] && [ "$(cd "$case_dir/.." && pwd)" = "$here/tests/diffbuild" ]; then
        if python3 "$here/scripts/diffbuild-golden.py" --record "$OUT/$name/buildkit.summary.json" "$case_dir" \
          >"$OUT/$name/record.log" 2>&1; then
          echo "same     $name  (recorded)"
        else
          echo "failed   $name  (recording, see $OUT/$name/record.log)"
        fi
      else
        echo "same     $name"
      fi
      ;;
    1) echo "differs  $name  (see $OUT/$name/diff.txt)" ;;
    *) echo "failed   $name  (see $OUT/$name/diff.txt)" ;;
  esac
}
export -f one

mkdir -p "$OUT"
printf '%s\0' "${cases[@]}" | xargs -0 -n1 -P "$JOBS" bash -c 'one "$1"' _ | tee "$OUT/results.txt"
same=$(grep -c '^same' "$OUT/results.txt")
differ=$(grep -c '^differs' "$OUT/results.txt")
failed=$(grep -c '^failed' "$OUT/results.txt")
echo "diffbuild: $same same, $differ differ, $failed failed"
[ $((differ + failed)) -eq 0 ]
