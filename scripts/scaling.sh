#!/usr/bin/env bash
# How bootstorm's lockstep service grows with its workers. For each N of --workers, a fresh
# bootstorm with `--workers N`, confined to the first N CPUs of --server-cpus (its workers pin
# themselves to those), and the load generator confined to --loadgen-cpus, with two threads
# per worker (as many as it has CPUs at most: a load thread costs about what a worker does, so
# with one each the run would measure the client as much as the server):
#   small: 64·N clients × 64 KiB files, blksize 512, for --duration seconds: transfers/s
#   lockstep: 32·N clients × 8 MiB, blksize 1468, 2 files each: MB/s and server CPU s/GiB
# Every client has its own source address (127.1.0.0/16), so the kernel spreads them over the
# workers' SO_REUSEPORT sockets. The table gives each figure against N × the one-worker figure
# (the goal: ≥ 0.8). Needs at least 3·max(N) CPUs to mean anything: the load generator must
# never be the bottleneck; the script says so when it has fewer, and the table gives how busy
# the load generator's threads were (near 100%: it, not the server, set the pace).
#
#   scripts/scaling.sh [--workers "1 2 4 8"] [--server-cpus 0-7] [--loadgen-cpus 8-15]
#                      [--runs 3] [--duration 5] [--bin-dir DIR] [--out DIR]
#
# --bin-dir: where bootstorm and loadgen are (default: target/release, built if missing).
# --out: where results.csv and table.md go (default: a new temporary directory).
# Traffic goes only to 127.0.0.1 and from 127.1.0.0/16. Every run is bounded by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS="1 2 4 8" RUNS=3 DURATION=5 BIN_DIR="" OUT="" SERVER_CPUS="" LOADGEN_CPUS=""
while [ $# -gt 0 ]; do
    case $1 in
    --workers) WORKERS=${2:?}; shift ;;
    --server-cpus) SERVER_CPUS=${2:?}; shift ;;
    --loadgen-cpus) LOADGEN_CPUS=${2:?}; shift ;;
    --runs) RUNS=${2:?}; shift ;;
    --duration) DURATION=${2:?}; shift ;;
    --bin-dir) BIN_DIR=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done

# CPU lists as the kernel writes them ("0-3,8"), expanded to one number per line.
expand_cpus() {
    local part
    for part in ${1//,/ }; do
        if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
    done
}
ALL_CPUS=$(expand_cpus "$(taskset -pc $$ | sed 's/.*: //')")
NCPU=$(echo "$ALL_CPUS" | wc -l)
MAXN=$(echo "$WORKERS" | tr ' ' '\n' | sort -n | tail -1)
# Defaults: the first half of the CPUs for the server, the second for the load generator.
[ -n "$SERVER_CPUS" ] || SERVER_CPUS=$(echo "$ALL_CPUS" | head -n $(( (NCPU + 1) / 2 )) | paste -sd,)
[ -n "$LOADGEN_CPUS" ] || LOADGEN_CPUS=$(echo "$ALL_CPUS" | tail -n $(( NCPU / 2 )) | paste -sd,)
SERVER_LIST=$(expand_cpus "$SERVER_CPUS")
LOADGEN_N=$(expand_cpus "$LOADGEN_CPUS" | wc -l)
if [ "$(echo "$SERVER_LIST" | wc -l)" -lt "$MAXN" ] || [ "$LOADGEN_N" -lt $((2 * MAXN)) ]; then
    echo "scaling.sh: warning: $NCPU CPUs ($SERVER_CPUS for the server, $LOADGEN_CPUS for the load generator) cannot give $MAXN workers and twice as many load threads CPUs of their own; figures for N above that measure sharing, not scaling" >&2
fi

if [ -z "$BIN_DIR" ]; then
    BIN_DIR=target/release
    if [ ! -x "$BIN_DIR/bootstorm" ] || [ ! -x "$BIN_DIR/loadgen" ]; then
        cargo build --release --quiet -p bootstorm -p bootstorm-loadgen
    fi
fi
BS=$BIN_DIR/bootstorm LG=$BIN_DIR/loadgen
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/scaling.XXXXXX)
mkdir -p "$OUT"
ROOT=$(mktemp -d /tmp/scaling-root.XXXXXX)
head -c $((64 << 10)) /dev/urandom >"$ROOT/small-64k.bin"
head -c $((8 << 20)) /dev/urandom >"$ROOT/bulk-8m.bin"
chmod 0755 "$ROOT"
chmod 0644 "$ROOT"/*.bin
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SERVER_PID=""
cleanup() {
    [ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$ROOT"
}
trap cleanup EXIT

# A JSON number field of loadgen's report.
field() { grep -o "\"$1\": *[0-9.e+-]*" | head -1 | sed 's/.*: *//'; }

echo "workers,run,workload,transfers_ok,transfers_failed,transfers_per_s,goodput_mbps,server_cpu_s_per_gib,loadgen_busy" >"$OUT/results.csv"
for n in $WORKERS; do
    cpus=$(echo "$SERVER_LIST" | head -n "$n" | paste -sd,)
    threads=$(( 2 * n < LOADGEN_N ? 2 * n : LOADGEN_N ))
    for run in $(seq "$RUNS"); do
        taskset -c "$cpus" "$BS" --root "$ROOT" -l 127.0.0.1:0 --workers "$n" --log-level warn \
            --max-transfers 65536 >"$OUT/server.out" 2>"$OUT/server-$n-$run.log" &
        SERVER_PID=$!
        for _ in $(seq 100); do grep -q "listening on" "$OUT/server.out" 2>/dev/null && break; sleep 0.05; done
        addr=$(sed -n 's/^listening on //p' "$OUT/server.out" | head -1)
        [ -n "$addr" ] || { echo "scaling.sh: bootstorm did not start: $(cat "$OUT/server-$n-$run.log")" >&2; exit 1; }
        small_c=$((64 * n)) bulk_c=$((32 * n))
        for wl in small lockstep; do
            case $wl in
            small) args="--file small-64k.bin --clients $small_c --duration $DURATION --source-ips $small_c" ;;
            lockstep) args="--file bulk-8m.bin --clients $bulk_c --transfers $((2 * bulk_c)) --blksize 1468 --source-ips $bulk_c" ;;
            esac
            # shellcheck disable=SC2086 # the arguments are words
            json=$(timeout 300 taskset -c "$LOADGEN_CPUS" "$LG" --server "$addr" $args --threads "$threads" \
                --verify "$ROOT" --server-pid "$SERVER_PID" --json 2>"$OUT/loadgen-$n-$run-$wl.log" || true)
            printf '%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$n" "$run" "$wl" \
                "$(echo "$json" | field transfers_ok)" "$(echo "$json" | field transfers_failed)" \
                "$(echo "$json" | field transfers_per_s)" "$(echo "$json" | field goodput_mbps)" \
                "$(echo "$json" | field server_cpu_s_per_gib)" "$(echo "$json" | field loadgen_busy)" >>"$OUT/results.csv"
            echo "scaling.sh: workers $n run $run $wl: $(tail -1 "$OUT/results.csv")" >&2
        done
        kill "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    done
done

# Medians per cell, and each against N × the one-worker median.
awk -F, -v cmd="scripts/scaling.sh --workers \"$WORKERS\" --server-cpus $SERVER_CPUS --loadgen-cpus $LOADGEN_CPUS --runs $RUNS --duration $DURATION" '
    NR == 1 { next }
    {
        key = $1 "," $3
        v = ($3 == "small") ? $6 : $7
        vals[key] = vals[key] " " v
        busy[key] = busy[key] " " ($9 == "" ? 0 : $9)
        cpu[key] = cpu[key] " " ($8 == "" ? 0 : $8)
        fails[key] += $5
        if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
    }
    function median(s,    a, k, i, j, t) {
        k = split(s, a, " ")
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    END {
        print "Command: `" cmd "`\n"
        print "| workers | small files, transfers/s | vs N × 1 worker | lockstep, MB/s | vs N × 1 worker | server CPU-s/GiB, lockstep | load generator busy (small / lockstep) | failed |"
        print "|---|---|---|---|---|---|---|---|"
        base_s = median(vals[order[1] ",small"]) / order[1]
        base_l = median(vals[order[1] ",lockstep"]) / order[1]
        for (i = 1; i <= n; i++) {
            w = order[i]
            s = median(vals[w ",small"]); l = median(vals[w ",lockstep"])
            printf "| %d | %.0f | %.2f | %.1f | %.2f | %.2f | %.0f%% / %.0f%% | %d |\n", w, s, (base_s > 0 ? s / (w * base_s) : 0), l, (base_l > 0 ? l / (w * base_l) : 0), median(cpu[w ",lockstep"]), 100 * median(busy[w ",small"]), 100 * median(busy[w ",lockstep"]), fails[w ",small"] + fails[w ",lockstep"]
        }
    }' "$OUT/results.csv" >"$OUT/table.md"
cat "$OUT/table.md"
echo "scaling.sh: results in $OUT" >&2
