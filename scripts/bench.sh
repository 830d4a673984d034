#!/usr/bin/env bash
# Benchmarks egret against direct access in the same run (A B A B), in throw-away namespaces.
#   sudo scripts/bench.sh            # end-to-end: latency, wrk/h2load throughput (nginx as the
#                                    # reference row), download, start-up, egret exec vs srt
#   scripts/bench.sh --micro         # divan micro-benchmarks of the hot paths (no root needed)
# Knobs (end-to-end): BENCH_ROUNDS=4 BENCH_REQUESTS=2000 BENCH_LOAD_SECS=5 BENCH_CONNS=64
# BENCH_STREAMS=100 BENCH_HANDSHAKE_CONNS=16 BENCH_DOWNLOAD_BYTES=1073741824.
# BENCH_ONLY=latency,load,download,swap,handlers,density,srt,startup5 runs some parts;
# BENCH_EGRET_ARGS adds egret flags. `srt`: `egret exec` beside Anthropic's sandbox-runtime (npm
# @anthropic-ai/sandbox-runtime, installed here with bubblewrap, socat and ripgrep; skipped with a
# message when that fails), both as the user egret-test; BENCH_SRT_REQUESTS=300 per client run.
# BENCH_BASELINE_EGRET=PATH adds an A/B of a head-only handler: that egret build vs this.
# BENCH_HOLD=1 keeps the namespaces and egret up (prints how to reach them) until stdin closes.
# Writes bench-results.json (BENCH_OUT to change). Numbers are medians over rounds.
# docs/bench-results.json is the run docs/benchmarks.md reports; a full run at the defaults on a
# quiet machine replaces it: sudo BENCH_OUT=docs/bench-results.json scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --micro ]]; then
    scripts/build-handlers.sh >/dev/null
    exec cargo bench -p egret-policy -p egret-tls -p egret-wasm -p egret-proxy --bench matching --bench tls --bench invoke --bench echo_guard
fi
[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo scripts/bench.sh (or scripts/bench.sh --micro)" >&2; exit 1; }
scripts/setup.sh >/dev/null
# The load generators and the reference proxy (nginx) are only needed here, not by the tests.
# policy-rc.d keeps the package from starting a system nginx: the bench runs its own.
if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null || ! command -v nginx >/dev/null; then
    rc=/usr/sbin/policy-rc.d own_rc=
    [[ -e $rc ]] || { printf '#!/bin/sh\nexit 101\n' >"$rc" && chmod +x "$rc" && own_rc=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk nghttp2-client nginx >/dev/null
    [[ -z $own_rc ]] || rm -f "$rc"
fi
# The srt row's peer: only the bench needs it. A failure here is not fatal: the bench says it
# skipped the row and why.
if ! command -v srt >/dev/null || ! command -v bwrap >/dev/null || ! command -v socat >/dev/null || ! command -v rg >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap socat ripgrep >/dev/null &&
        npm install -g --silent @anthropic-ai/sandbox-runtime >/dev/null ||
        echo "bench: could not install srt (npm @anthropic-ai/sandbox-runtime); its row is skipped" >&2
fi
scripts/build-handlers.sh >/dev/null
cargo build --release --bins
exec "${CARGO_TARGET_DIR:-target}/release/egret-bench"
