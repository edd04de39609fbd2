#!/usr/bin/env bash
# Runs kiln against the public conformance corpora in ../shared/conformance
# (BuildKit parser and shell tables, moby patternmatcher, distribution
# reference, ...) and prints one line per corpus: `NAME: N passed, M failed`.
#
#   scripts/conformance.sh            # summary
#   scripts/conformance.sh -v         # also every failing case
#   scripts/conformance.sh --only buildkit-shell
#   KILN_MOBY_ONLY=TestBuildOnBuild scripts/conformance.sh --only moby -v
#
# moby-build needs root, runc and /bin/busybox (it is reported as skipped
# without them); it takes about a minute.
#
# Exits non-zero when a case fails. Skips (exit 0) when the corpora are absent:
# a user's clone has no ../shared, and kiln's own tests carry their own data.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=${KILN_CONFORMANCE_DIR:-$here/../shared/conformance}
if [ ! -d "$corpus" ]; then
  echo "conformance: skipped, no corpus at $corpus (set KILN_CONFORMANCE_DIR)"
  exit 0
fi
cd "$here"
# moby-build drives the real kiln binary (KILN_BIN) on a temporary store.
cargo build -q -p kiln-cli
cargo build -q -p kiln-conformance
target=${CARGO_TARGET_DIR:-$here/target}
export KILN_BIN=${KILN_BIN:-$target/debug/kiln}
exec "$target/debug/kiln-conformance" "$@" "$corpus"
