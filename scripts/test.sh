#!/usr/bin/env bash
# The test command (README, CI): install what is needed, build, run every test.
#   sudo scripts/test.sh            # everything
#   sudo scripts/test.sh -p egret-policy   # extra args go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/test.sh must run as root: the end-to-end tests create network namespaces" >&2
  exit 1
fi
scripts/setup.sh
# Formatting is part of passing (instant). Clippy is not run here: its check build of the whole
# workspace would add minutes to CI; run `cargo clippy --workspace --all-targets -- -D warnings`.
if [[ $# -eq 0 ]]; then
  cargo fmt --all -- --check || { echo "test: run cargo fmt --all" >&2; exit 1; }
fi
if [[ -x scripts/build-handlers.sh ]]; then scripts/build-handlers.sh; fi
# Bins and tests in one build: built alone, the bins get dependencies without the features the
# dev-dependencies add (tokio, hyper, wasmtime, ...), and `cargo test` rebuilt ~90 crates (~6 min
# of a cold CI run).
cargo build --workspace --bins --tests
# Four test threads on two cores: the e2e tests mostly wait on the network and on processes
# they start (I/O bound) and each builds its own namespaces, so they overlap safely; set
# EGRET_TEST_THREADS to change it.
cargo test --workspace "$@" -- --test-threads="${EGRET_TEST_THREADS:-4}"
# Every fuzz target for a bounded time (EGRET_FUZZ_SECS each, default 60; 0 skips): scripts/fuzz.sh.
if [[ "${EGRET_FUZZ_SECS:-60}" != 0 ]]; then scripts/fuzz.sh "${EGRET_FUZZ_SECS:-60}"; fi
