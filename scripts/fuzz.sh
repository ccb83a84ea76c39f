#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds (default 30) from its seed corpus (fuzz/seeds/, real
# packets, transfer sequences and map files) plus what earlier runs found (fuzz/corpus/, not
# committed).
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain build them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
for t in decode read_transfer write_transfer client remap_parse remap_rewrite; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzzing $t for ${secs}s" >&2
    # An input that runs 20 s is a failure (libFuzzer's default waits 20 minutes), as is one that
    # needs 2 GiB. Only the summary lines are shown; the status is cargo-fuzz's (a build failure, a crash or
    # a leak is non-zero).
    status=0
    cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
        { grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|==|INFO: -max_total_time|.*ERROR|.*panicked|error)" || true; } ||
        status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $t failed (cargo fuzz exit status $status)" >&2
        exit 1
    fi
    # A crash also leaves an artifact.
    if ls fuzz/artifacts/"$t"/crash-* >/dev/null 2>&1; then
        echo "fuzz target $t found a crash: fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
