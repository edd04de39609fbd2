#!/usr/bin/env bash
# Fault injection at scale: the CLI's fault test (crates/cli/tests/faults.rs) with
# many kills per operation (KILLS, default 100) under each runtime. Prints
# the seed of each run; KILN_FAULT_SEED=<seed> replays one.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${KILLS:-100}
for runtime in embedded runc; do
  echo "== $runtime: $kills kills per operation"
  KILN_TEST_RUNTIME=$runtime KILN_FAULT_KILLS=$kills \
    cargo test --release --locked -p kiln-cli --test faults -- --nocapture --test-threads 1
done
