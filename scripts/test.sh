#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian packages, as
# root), then runs every crate's tests and, when ../shared is present, the
# conformance corpora and the golden tests of tests/diffbuild (kiln against
# BuildKit's recorded results, no Docker engine). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the integration tests use. Installed only when missing.
packages=(skopeo umoci podman runc busybox-static docker-registry slirp4netns python3 debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "test.sh: missing packages ${missing[*]} (run as root to install them)" >&2
  fi
fi

# Formatting, lints and docs first: they fail fastest.
if command -v rustup >/dev/null; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked -q
cargo test --workspace --locked "$@"
# The CLI's container, build, network and fault-injection tests again with
# runc instead of the default embedded runtime (fewer kills per operation
# there; kiln-runtime's own tests run both runtimes every time).
KILN_TEST_RUNTIME=runc KILN_FAULT_KILLS=4 cargo test --locked -p kiln-cli --test containers --test build --test network --test faults "$@"
scripts/conformance.sh
# tests/diffbuild cases with a recorded expected.json, built with kiln alone
# (root; skipped without it or without ../shared/peers/diffbuild.py).
cargo build -q --locked -p kiln-cli
KILN=${KILN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/kiln} scripts/diffbuild-golden.py
