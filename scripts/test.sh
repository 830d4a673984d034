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
# Formatting and lints are part of passing (whole runs only). Clippy checks every target with
# warnings as errors; it shares nothing with the build below (check metadata vs code).
if [[ $# -eq 0 ]]; then
  cargo fmt --all -- --check || { echo "test: run cargo fmt --all" >&2; exit 1; }
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  cargo clippy --workspace --all-targets -- -D warnings
fi
if [[ -x scripts/build-handlers.sh ]]; then scripts/build-handlers.sh; fi
# Bins and tests in one build: built alone, the bins get dependencies without the features the
# dev-dependencies add (tokio, hyper, wasmtime, ...), and `cargo test` rebuilt ~90 crates (~6 min
# of a cold CI run).
cargo build --workspace --bins --tests
# Four test threads on two cores: the e2e tests mostly wait on the network and on processes
# they start (I/O bound) and each builds its own namespaces, so they overlap safely; set
# EGRET_TEST_THREADS to change it.
# The suite-under-CPU-load test runs the e2e binary again itself, so it runs alone, after.
load_test=load::the_whole_suite_passes_while_every_core_is_busy
cargo test --workspace "$@" -- --test-threads="${EGRET_TEST_THREADS:-4}" --skip "$load_test"
if [[ $# -eq 0 ]]; then
  cargo test -p egret-e2e --test e2e -- --exact "$load_test" --nocapture
fi
# Every fuzz target for a bounded time (EGRET_FUZZ_SECS each, default 30; 0 skips): scripts/fuzz.sh.
# A smoke run from the seed corpora within CI's time budget; fuzz longer by hand
# (scripts/fuzz.sh 600).
if [[ "${EGRET_FUZZ_SECS:-30}" != 0 ]]; then scripts/fuzz.sh "${EGRET_FUZZ_SECS:-30}"; fi
