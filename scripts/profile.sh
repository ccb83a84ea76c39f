#!/usr/bin/env bash
# Where a server's CPU goes under one load-generator workload: perf stat (CPU time, context
# switches) and perf record (share of samples in the kernel and in user space, top symbols),
# for bootstorm and the peers side by side on loopback, with the load generator's own CPU time
# (near 100% busy: it, not the server, set the pace). Needs perf (Debian: linux-perf) and root.
#
#   scripts/profile.sh [SERVER[=FLAGS]]...   default: bootstorm "bootstorm=--workers 1" dnsmasq
#   PROFILE_LOAD="loadgen args" scripts/profile.sh ...   another workload (default: bulk
#                                                         lockstep, 32 clients × 8 MiB, blksize 1468)
#
# Uses the benchmark root (target/bench-root, made by scripts/bench.sh) and the release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=target/bench-root
[ -f "$ROOT/bulk-8m.bin" ] || { echo "profile.sh: run scripts/bench.sh --quick once to make $ROOT" >&2; exit 2; }
command -v perf >/dev/null || { echo "profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 2; }
cargo build --release --quiet -p bootstorm -p bootstorm-loadgen
LOAD=${PROFILE_LOAD:---file bulk-8m.bin --clients 32 --transfers 64 --blksize 1468 --source-ips 32}
[ $# -gt 0 ] || set -- bootstorm "bootstorm=--workers 1" dnsmasq
out=$(mktemp -d)
port=17900
for spec in "$@"; do
    name=${spec%%=*}
    flags=""
    [[ "$spec" == *=* ]] && flags=${spec#*=}
    port=$((port + 1))
    if [ "$name" = bootstorm ]; then
        # shellcheck disable=SC2086 # the flags are words
        target/release/bootstorm --root "$ROOT" -l "127.0.0.1:$port" --log-level warn $flags >/dev/null 2>&1 &
        pid=$!
        sleep 0.5
    else
        pid=$(scripts/peers.sh start "$name" "$ROOT" "$port")
    fi
    perf stat -e task-clock,context-switches -p "$pid" -o "$out/stat" &
    stat_pid=$!
    perf record -q -F 999 -p "$pid" -o "$out/data" >/dev/null 2>&1 &
    rec_pid=$!
    sleep 0.3
    # shellcheck disable=SC2086
    result=$(timeout 120 target/release/loadgen --server "127.0.0.1:$port" $LOAD --verify "$ROOT" --json 2>/dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("%d ok, %d failed, %.1f MB/s, %.3f GiB; load generator %.0f%% busy, %.2f CPU-s/GiB" % (d["transfers_ok"], d["transfers_failed"], d["goodput_mbps"], d["bytes"]/2**30, 100 * (d.get("loadgen_busy") or 0), d.get("loadgen_cpu_s_per_gib") or 0))')
    kill -INT "$stat_pid" "$rec_pid"
    wait "$stat_pid" "$rec_pid" 2>/dev/null || true
    if [ "$name" = bootstorm ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; else scripts/peers.sh stop "$pid" >/dev/null; fi
    echo "== $spec: $result"
    grep -E "task-clock|context-switches" "$out/stat" | awk '{$1=$1; print "   " $0}'
    # Samples in the kernel ([k]) and in user space ([.]).
    perf report -i "$out/data" --stdio --sort sym 2>/dev/null | awk '
        /^ +[0-9.]+%/ { p = $1; sub("%", "", p); if ($2 == "[k]") k += p; else u += p; if (n++ < 8) top = top "\n     " $0 }
        END { printf "   samples: kernel %.1f%%, user %.1f%%; top symbols:%s\n", k, u, top }'
done
rm -rf "$out"
