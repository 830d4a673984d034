#!/usr/bin/env bash
# Run every cargo-fuzz target for N seconds (default 60) each: scripts/fuzz.sh [seconds] [target...]
#
# No root needed. scripts/test.sh (CI) calls this with EGRET_FUZZ_SECS (default 30; 0 skips);
# run it by hand for longer, e.g. `scripts/fuzz.sh 600 admin_request policy`.
#
# Toolchain: nightly when rustup has it, else the default (stable) toolchain with
# RUSTC_BOOTSTRAP=1, which is what cargo-fuzz's -Z flags need; a CI machine that cannot fetch
# toolchains still fuzzes. cargo-fuzz is installed (`cargo install --locked cargo-fuzz`) when
# missing. The build goes to fuzz/target, which shares nothing with the main workspace's
# target dir (different flags); egret-wasm is built without its wasmtime `runtime` feature.
#
# The seed corpora in fuzz/corpus/<target>/ are read, never written: new inputs libFuzzer finds
# go to fuzz/target/corpus/<target>/ (kept between runs, not committed). A crash fails the run
# and leaves its input in fuzz/artifacts/<target>/ (the path is printed); reproduce with
# `cd fuzz && cargo +nightly fuzz run <target> <file>`.
#
# FUZZ_SANITIZER=none|address (default address); FUZZ_PARALLEL=N targets at once (default: the
# number of CPUs, at most 4); FUZZ_JOBS=N libFuzzer jobs per target (default 1).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")

tc=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    tc=(+nightly)
else
    echo "fuzz: no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo "${tc[@]}" fuzz list)
fi
san="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"
par_targets="${FUZZ_PARALLEL:-$(nproc)}"
if [ "$par_targets" -gt 4 ]; then par_targets=4; fi
t0=$(date +%s)
cargo "${tc[@]}" fuzz build -s "$san"
echo "fuzz: built ${#targets[@]} targets in $(($(date +%s) - t0)) s"

# One target: run it, then print a one-line summary or the finding; the exit status says which.
run_one() {
    local t="$1" work="target/corpus/$1" log="target/fuzz-$1.log"
    mkdir -p "$work"
    local par=()
    # -jobs makes libFuzzer write fuzz-N.log files into the working directory
    if [ "$jobs" -gt 1 ]; then par=(-jobs="$jobs" -workers="$jobs"); fi
    if cargo "${tc[@]}" fuzz run -s "$san" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" "${par[@]}" -print_final_stats=1 >"$log" 2>&1; then
        echo "== $t: ${secs}s ok: $(grep -E 'stat::number_of_executed_units|stat::new_units_added' "$log" | tr -s ' \n' ' ')"
    else
        {
            echo "== $t: FAILED (log: fuzz/$log)"
            grep -E -A6 'panicked at' "$log" | head -14 || true
            grep -E -A2 '==[0-9]+==ERROR|^SUMMARY' "$log" | head -12 || true
            # libFuzzer names the input: "Test unit written to .../artifacts/<t>/crash-..."
            grep -E 'Test unit written to' "$log" | sed 's/^/   /' | head -5 || true
        }
        return 1
    fi
}

failed=()
pids=()
names=()
wait_one() {
    # Waits for the oldest running target; its output was written as it finished.
    if ! wait "${pids[0]}"; then failed+=("${names[0]}"); fi
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
}
for t in "${targets[@]}"; do
    while [ ${#pids[@]} -ge "$par_targets" ]; do wait_one; done
    run_one "$t" &
    pids+=($!)
    names+=("$t")
done
while [ ${#pids[@]} -gt 0 ]; do wait_one; done
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/)"
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${secs}s each without a finding ($(($(date +%s) - t0)) s in all)"
