#!/usr/bin/env bash
# Issue 6 figures vs direct in the same run (A B A B): gRPC unary latency (grpcio both sides),
# 1 GiB upload and download over HTTPS through the injecting handler.
#   sudo scripts/bench-proto.sh          # BENCH_ROUNDS=4 BENCH_GRPC_CALLS=2000 BENCH_GIB_ROUNDS=3 by default
# Writes bench-proto-results.json (BENCH_PROTO_OUT to change). Numbers are medians over rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo scripts/bench-proto.sh" >&2; exit 1; }
scripts/setup.sh >/dev/null
scripts/build-handlers.sh >/dev/null
cargo build --release --bin egret --bin egret-testsrv --bin egret-bench-proto
exec "${CARGO_TARGET_DIR:-target}/release/egret-bench-proto"
