#!/usr/bin/env bash
# Benchmarks egret against direct access in the same run (A B A B), in throw-away namespaces.
#   sudo scripts/bench.sh                       # BENCH_ROUNDS=4 BENCH_REQUESTS=2000 by default
# Writes bench-results.json (BENCH_OUT to change). Numbers are medians over rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo scripts/bench.sh" >&2; exit 1; }
scripts/setup.sh >/dev/null
scripts/build-handlers.sh >/dev/null
cargo build --release --bins
exec "${CARGO_TARGET_DIR:-target}/release/egret-bench"
