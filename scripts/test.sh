#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the real TFTP clients the integration tests
# drive (tftp-hpa, atftp, curl, busybox), then checks formatting and lints and runs every test:
# codec, state machines, lossy-link simulation, engine, and the real binary on both I/O backends.
# Run as root (the MTU test makes a network namespace); CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=0
for c in tftp atftp curl busybox; do
    command -v "$c" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq tftp-hpa atftp curl busybox >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

# Fuzz the decoder and the transfer state machines for a bounded time (installs cargo-fuzz).
scripts/fuzz.sh 20
