#!/usr/bin/env bash
# gRPC unary latency added by egret vs direct in the same run (A B A B), python grpcio both sides.
#   sudo scripts/bench-grpc.sh          # BENCH_ROUNDS=4 BENCH_GRPC_CALLS=2000 by default
# Writes bench-grpc-results.json (BENCH_GRPC_OUT to change). Numbers are medians over rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo scripts/bench-grpc.sh" >&2; exit 1; }
scripts/setup.sh >/dev/null
scripts/build-handlers.sh >/dev/null
cargo build --release --bin egret --bin egret-bench-grpc
exec "${CARGO_TARGET_DIR:-target}/release/egret-bench-grpc"
