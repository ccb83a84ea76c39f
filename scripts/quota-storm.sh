#!/usr/bin/env bash
# A storm of PXELINUX clients that each keep one port (a config-file miss, then pxelinux.0)
# against bootstorm held to a share of one CPU by a CFS quota, as a pod with a CPU limit is:
# requests wait in the listening socket's queue, clients repeat them, and a repeat read after
# its answer left must start nothing (docs/benchmarks.md, "Copies of answered requests").
# Prints the load generator's counts per run and keeps its JSON reports.
#
#   scripts/quota-storm.sh [--bin BOOTSTORM] [--quota PERCENT] [--clients N] [--runs N]
#                          [--out DIR] [-- EXTRA BOOTSTORM FLAGS]
#
# --bin: the server (default: target/release/bootstorm); the load generator is taken from the
# same directory. --quota: percent of one CPU (default 10). --clients: default 8000 (one
# address per 10 clients, 127.1.0.0/16). Needs root: a cgroup (v2 `cpu.max`, or v1
# `cpu.cfs_quota_us`) is made for the server and removed at the end. Traffic goes only to
# 127.0.0.1; every run is bounded by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/bootstorm QUOTA=10 CLIENTS=8000 RUNS=1 OUT=""
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=${2:?}; shift ;;
    --quota) QUOTA=${2:?}; shift ;;
    --clients) CLIENTS=${2:?}; shift ;;
    --runs) RUNS=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    --) shift; break ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done
LOADGEN=$(dirname "$BIN")/loadgen
[ -x "$BIN" ] && [ -x "$LOADGEN" ] || { echo "need $BIN and $LOADGEN (cargo build --release --workspace)" >&2; exit 1; }
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
ROOT=$(mktemp -d)
head -c 65536 /dev/urandom >"$ROOT/pxelinux.0"

# The cgroup: v2 where the cpu controller is there, else v1's cpu hierarchy.
if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    CG=/sys/fs/cgroup/bootstorm-quota-$$
    mkdir "$CG"
    echo "$((QUOTA * 1000)) 100000" >"$CG/cpu.max"
else
    CG=/sys/fs/cgroup/cpu/bootstorm-quota-$$
    mkdir "$CG"
    echo 100000 >"$CG/cpu.cfs_period_us"
    echo "$((QUOTA * 1000))" >"$CG/cpu.cfs_quota_us"
fi
SPID=""
cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
    rmdir "$CG" 2>/dev/null || true
    rm -rf "$ROOT"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

for run in $(seq "$RUNS"); do
    "$BIN" --root "$ROOT" -l 127.0.0.1:0 --log-level warn "$@" >"$OUT/server-$run.out" 2>"$OUT/server-$run.err" &
    SPID=$!
    for _ in $(seq 100); do grep -q "127.0.0.1:" "$OUT/server-$run.out" && break; sleep 0.1; done
    PORT=$(grep -o "127.0.0.1:[0-9]*" "$OUT/server-$run.out" | head -1 | cut -d: -f2)
    echo "$SPID" >"$CG/cgroup.procs"
    timeout 300 "$LOADGEN" run --server "127.0.0.1:$PORT" --verify "$ROOT" --json --storm "$CLIENTS" --ramp 1 \
        --profile pxelinux --misses 1 --file pxelinux.0 --source-ips $((CLIENTS / 10)) --reuse-port \
        >"$OUT/run-$run.json" 2>"$OUT/loadgen-$run.err" || true
    kill "$SPID"
    wait "$SPID" 2>/dev/null || true
    SPID=""
    python3 - "$OUT/run-$run.json" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"run {sys.argv[2]}: {r['sessions']} sessions, {r['transfers_ok']} ok, {r['transfers_failed']} failed "
      f"{r['failures']}, wrong answers {r['wrong_answers']}, client repeats {r['retransmits']}, "
      f"first answers p50 {r['first_block_ms']['p50']:.0f} ms, makespan {r['makespan_s']:.1f} s")
PY
done
echo "reports in $OUT"
