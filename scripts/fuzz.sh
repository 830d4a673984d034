#!/usr/bin/env bash
# Run every cargo-fuzz target for N seconds (default 60) each: scripts/fuzz.sh [seconds] [target...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); no root. The seed
# corpora in fuzz/corpus/<target>/ are read, never written: new inputs libFuzzer finds go to
# fuzz/target/corpus/<target>/ (kept between runs, not committed). A crash leaves its input in
# fuzz/artifacts/<target>/; reproduce with `cd fuzz && cargo +nightly fuzz run <target> <file>`.
# FUZZ_SANITIZER=none|address (default address) and FUZZ_JOBS=N (parallel jobs per target).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
san="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"
cargo +nightly fuzz build -s "$san"
failed=()
for t in "${targets[@]}"; do
    work="target/corpus/$t"
    log="target/fuzz-$t.log"
    mkdir -p "$work"
    echo "== $t: ${secs}s (log: fuzz/$log)"
    par=()
    # -jobs makes libFuzzer write fuzz-N.log files into the working directory
    if [ "$jobs" -gt 1 ]; then par=(-jobs="$jobs" -workers="$jobs"); fi
    if cargo +nightly fuzz run -s "$san" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" "${par[@]}" -print_final_stats=1 >"$log" 2>&1; then
        grep -E 'stat::number_of_executed_units|stat::new_units_added' "$log" | tr '\n' ' '
        echo
    else
        failed+=("$t")
        grep -E -A15 'panicked|==[0-9]+==ERROR|SUMMARY|deadly signal|Test unit written' "$log" | head -40
    fi
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/)"
    exit 1
fi
echo "all ${#targets[@]} targets ran ${secs}s each without a finding"
