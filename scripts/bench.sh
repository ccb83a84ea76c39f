#!/usr/bin/env bash
# Benchmark harness: the same loadgen workloads against bootstorm and four peer TFTP servers
# (tftpd-hpa, dnsmasq, atftpd, tftpd-rs), all on 127.0.0.1, with the raw-UDP ceiling of the
# machine and its lockstep ceiling (`loadgen ceiling --pingpong`: 32 flows, one 4-byte ACK
# answered by one DATA) measured in the same run. See docs/benchmarks.md.
#
#   scripts/bench.sh [--quick] [--runs N] [--servers LIST] [--workloads LIST] [--out DIR]
#                    [--no-build] [--bootstorm-args "FLAGS"] [--bootstorm-bin PATH]
#
#   --quick            1 run, smaller counts and durations, no 10,000-client storm, memory test
#                      with 2,000 clients: under 5 minutes on a 2-CPU machine
#   --runs N           rounds (default: 3, quick: 1); each round runs every server once per
#                      workload, servers interleaved, so machine noise hits all of them alike
#   --servers LIST     comma-separated subset of: bootstorm,bootstorm-sp,tftpd-hpa,dnsmasq,atftpd,
#                      tftpd-rs (bootstorm-sp: bootstorm --single-port, every workload beside
#                      the default mode; in the memory test it runs whenever bootstorm does)
#   --workloads LIST   comma-separated subset of: small,small-1src,bulk-lockstep,
#                      bulk-lockstep-1src,bulk-windowed,bulk-windowed-gro,storm-1k,storm-1k-1src,
#                      storm-10k,storm-10k-reuse,loss-1,loss-5,rollover,memory. Each client has an
#                      address of its own (127.1.0.1 and up), except in the -1src ones: all
#                      clients on 127.0.0.1, as behind NAT. storm-10k-reuse: 10,000 clients on
#                      1,000 addresses, each sending every request from one port (the case where
#                      a late packet of a client's previous transfer could be taken for its next
#                      answer; the failures table counts wrong answers)
#   --out DIR          results directory (default: docs/bench/<date>-<host>, with -quick
#                      appended in quick mode; files there are replaced)
#   --no-build         use the release binaries as they are (default: cargo build --release;
#                      binaries in $CARGO_TARGET_DIR/release when it is set, else target/release)
#   --bootstorm-args "FLAGS"
#                      extra flags for every bootstorm instance (e.g. "--workers 1"), written
#                      into the results' README
#   --single-port-args "FLAGS"
#                      extra flags for bootstorm-sp only, after --single-port (e.g.
#                      "--blind-budget 24000"), written into the results' README
#   --bootstorm-bin PATH
#                      run this bootstorm binary instead of target/release/bootstorm (e.g. one
#                      built from an older commit in another worktree); only loadgen is built.
#                      The README names the path and the binary's SHA-256, not a commit
#
# Writes DIR/README.md (command, machine, tables), table.md, summary.csv (median, min, max per
# cell), raw.csv (one row per loadgen run), results.json (everything) and plot.svg. Logs and
# loadgen's raw output stay in target/bench-work/<timestamp>/.
#
# Needs root for the peers (scripts/peers.sh installs them into target/peers on first use) and
# for the cgroups used to account CPU and memory; without cgroups, CPU comes from loadgen's
# --server-pid and memory from /proc only. Every server is stopped by its PID.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ALL_SERVERS=(bootstorm bootstorm-sp tftpd-hpa dnsmasq atftpd tftpd-rs)
ALL_WORKLOADS=(small small-1src bulk-lockstep bulk-lockstep-1src bulk-windowed bulk-windowed-gro storm-1k storm-1k-1src storm-10k storm-10k-reuse loss-1 loss-5 rollover memory)
PEERS_DIR="$REPO/target/peers"
# The binaries where cargo builds them: $CARGO_TARGET_DIR (relative: to the repository) or target/.
BIN_DIR="${CARGO_TARGET_DIR:-target}/release"
[[ "$BIN_DIR" == /* ]] || BIN_DIR="$REPO/$BIN_DIR"
BS="$BIN_DIR/bootstorm"
LG="$BIN_DIR/loadgen"
PY="$REPO/scripts/bench_report.py"
# The command as typed: arguments quoted only where the shell needs it.
quote_args() {
    local a out=""
    for a in "$@"; do
        if [[ "$a" =~ ^[A-Za-z0-9_./:,=+-]+$ ]]; then out+=" $a"; else out+=" '${a//\'/\'\\\'\'}'"; fi
    done
    printf '%s' "$out"
}
COMMAND_LINE="scripts/bench.sh$(quote_args "$@")"

die() {
    echo "bench.sh: $*" >&2
    exit 1
}
T0=$SECONDS
say() { echo "bench.sh [$((SECONDS - T0)) s]: $*" >&2; }
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

MODE=full RUNS="" OUT="" BUILD=1 SERVERS_ARG="" WORKLOADS_ARG="" BS_ARGS="" SP_ARGS="" BS_BIN=""
while [ $# -gt 0 ]; do
    case $1 in
    --quick) MODE=quick ;;
    --runs)
        RUNS=${2:?--runs N}
        shift
        ;;
    --servers)
        SERVERS_ARG=${2:?--servers LIST}
        shift
        ;;
    --workloads)
        WORKLOADS_ARG=${2:?--workloads LIST}
        shift
        ;;
    --out)
        OUT=${2:?--out DIR}
        shift
        ;;
    --no-build) BUILD=0 ;;
    --bootstorm-args)
        BS_ARGS=${2?--bootstorm-args "FLAGS"}
        shift
        ;;
    --single-port-args)
        SP_ARGS=${2?--single-port-args "FLAGS"}
        shift
        ;;
    --bootstorm-bin)
        BS_BIN=${2:?--bootstorm-bin PATH}
        shift
        ;;
    -h | --help) usage ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ -z "$RUNS" || "$RUNS" =~ ^[1-9][0-9]?$ ]] || die "--runs must be 1..99"
if [ -n "$BS_BIN" ]; then
    [ -x "$BS_BIN" ] || die "--bootstorm-bin $BS_BIN: not an executable file"
    BS=$(cd "$(dirname "$BS_BIN")" && pwd)/$(basename "$BS_BIN")
fi

pick() { # LIST ALLOWED... -> the allowed ones named in LIST, in the order of ALLOWED
    local list=",$1," x
    shift
    for x in "$@"; do
        if [[ "$list" == *",$x,"* ]]; then echo "$x"; fi
    done
}
if [ -n "$SERVERS_ARG" ]; then
    for s in ${SERVERS_ARG//,/ }; do
        [[ " ${ALL_SERVERS[*]} " == *" $s "* ]] || die "unknown server '$s'"
    done
    mapfile -t SERVERS < <(pick "$SERVERS_ARG" "${ALL_SERVERS[@]}")
else
    SERVERS=("${ALL_SERVERS[@]}")
fi
if [ -n "$WORKLOADS_ARG" ]; then
    for w in ${WORKLOADS_ARG//,/ }; do
        [[ " ${ALL_WORKLOADS[*]} " == *" $w "* ]] || die "unknown workload '$w'"
    done
    mapfile -t WORKLOADS < <(pick "$WORKLOADS_ARG" "${ALL_WORKLOADS[@]}")
else
    WORKLOADS=("${ALL_WORKLOADS[@]}")
fi

# ---------------------------------------------------------------- parameters per mode

if [ "$MODE" = quick ]; then
    RUNS=${RUNS:-1}
    CEIL_S=1          # seconds per ceiling measurement (raw UDP, GSO, ping-pong)
    SMALL_S=2         # small-file rate: closed loop for this long
    BULK_N=32         # bulk: transfers in all (32 clients)
    STORM_IMG=vmlinuz-512k
    LOSS_CLIENTS=8 LOSS_FILE=loss-64k.bin
    MEM_CLIENTS=2000 MEM_RAMP=1 MEM_FILE=hold-1k.bin MEM_BLOCKS=3
    CELL_TIMEOUT=90   # seconds, any one loadgen run
    if [ -z "$WORKLOADS_ARG" ]; then
        mapfile -t WORKLOADS < <(printf '%s\n' "${WORKLOADS[@]}" | grep -vx 'storm-10k\|storm-10k-reuse')
    fi
else
    RUNS=${RUNS:-3}
    CEIL_S=2
    SMALL_S=5
    BULK_N=64
    STORM_IMG=vmlinuz-4m
    LOSS_CLIENTS=32 LOSS_FILE=loss-1m.bin
    MEM_CLIENTS=10000 MEM_RAMP=2 MEM_FILE=hold-4k.bin MEM_BLOCKS=9
    CELL_TIMEOUT=600
fi
MEM_HOLD_MS=1000
mapfile -t WORKLOADS < <(printf '%s\n' "${WORKLOADS[@]}" | sed '/^$/d')
[ ${#WORKLOADS[@]} -gt 0 ] || die "no workload left to run"

# Source addresses. Most workloads give every client an address of its own (--source-ips N:
# 127.1.0.1 and up), as the machines of a fleet on one segment have. The -1src workloads put ALL
# clients on 127.0.0.1 (--source-ips 1: loadgen binds no address, so the kernel picks
# 127.0.0.1 for a server on 127.0.0.1), as a rack behind NAT, a Kubernetes node or a benchmark
# host looks to the server. bootstorm's per-source limit (--rate-per-source 100/s, burst 500)
# once applied always and throttled such clients (and left some without any answer); since
# 5559a37 it applies only under pressure (--rate-limit-always makes it a hard cap), and these
# workloads check that one address gets the same service as many.
# Loss: the clients send no `timeout` option. bootstorm honours a negotiated timeout exactly
# (RFC 2349: no retransmission before T seconds), so `timeout 1` would slow its recovery to 1 s
# per loss, and real PXE firmware never sends the option; each server uses its own timers.
declare -A WL_ARGS=(
    [small]="--file small-64k.bin --clients 100 --duration $SMALL_S --source-ips 100"
    [small-1src]="--file small-64k.bin --clients 100 --duration $SMALL_S --source-ips 1"
    [bulk-lockstep]="--file bulk-8m.bin --clients 32 --transfers $BULK_N --blksize 1468 --source-ips 32"
    [bulk-lockstep-1src]="--file bulk-8m.bin --clients 32 --transfers $BULK_N --blksize 1468 --source-ips 1"
    [bulk-windowed]="--file bulk-8m.bin --clients 32 --transfers $BULK_N --blksize 1468 --windowsize 16 --source-ips 32"
    [bulk-windowed-gro]="--file bulk-8m.bin --clients 32 --transfers $BULK_N --blksize 1468 --windowsize 16 --source-ips 32 --gro"
    [storm-1k]="--storm 1000 --ramp 1 --profile pxelinux --misses 1 --file pxelinux.0 --file $STORM_IMG --source-ips 1000"
    [storm-1k-1src]="--storm 1000 --ramp 1 --profile pxelinux --misses 1 --file pxelinux.0 --file vmlinuz-1m --source-ips 1"
    [storm-10k]="--storm 10000 --ramp 1 --profile pxelinux --misses 1 --file pxelinux.0 --file vmlinuz-1m --source-ips 10000"
    [storm-10k-reuse]="--storm 10000 --ramp 1 --profile pxelinux --misses 1 --file pxelinux.0 --file vmlinuz-1m --source-ips 1000 --reuse-port"
    [loss-1]="--file $LOSS_FILE --clients $LOSS_CLIENTS --transfers $LOSS_CLIENTS --blksize 1468 --drop 0.01 --client-timeout 200 --retries 60 --source-ips $LOSS_CLIENTS"
    [loss-5]="--file $LOSS_FILE --clients $LOSS_CLIENTS --transfers $LOSS_CLIENTS --blksize 1468 --drop 0.05 --client-timeout 200 --retries 60 --source-ips $LOSS_CLIENTS"
    [rollover]="--file rollover-40m.bin"
    [memory]="--storm $MEM_CLIENTS --ramp $MEM_RAMP --file $MEM_FILE --blksize 512 --windowsize 1 --hold $MEM_HOLD_MS --client-timeout 5000 --source-ips $MEM_CLIENTS"
)
# The root: name -> size in bytes.
declare -A FILES=(
    [small-64k.bin]=65536
    [pxelinux.0]=65536
    [bulk-8m.bin]=$((8 << 20))
    [vmlinuz-4m]=$((4 << 20))
    [vmlinuz-1m]=$((1 << 20))
    [loss-1m.bin]=$((1 << 20))
    [vmlinuz-512k]=$((512 << 10))
    [loss-64k.bin]=$((64 << 10))
    [rollover-40m.bin]=$((40 << 20))
    [hold-1k.bin]=1024
    [hold-4k.bin]=4096
)

# ---------------------------------------------------------------- set-up

STARTED=$(date -Is)
HOST=$(hostname -s 2>/dev/null || hostname)
DATE=$(date +%F)
if [ -z "$OUT" ]; then
    OUT="docs/bench/$DATE-$HOST"
    [ "$MODE" = quick ] && OUT+="-quick"
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK="$REPO/target/bench-work/$(date +%Y%m%dT%H%M%S)-$$"
mkdir -p "$WORK/out" "$WORK/logs" "$WORK/negotiated"
: >"$WORK/runs.jsonl"
say "mode $MODE, $RUNS run(s), servers: ${SERVERS[*]}; workloads: ${WORKLOADS[*]}"
say "results: $OUT; work files: $WORK"

# Open files: 10,000 clients need 10,000 sockets in loadgen and as many in the server.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] || [ "$NOFILE" -ge 12000 ] ||
    say "warning: open files limit is $NOFILE; the 10,000-client cells will fail"

if [ "$BUILD" = 1 ]; then
    if [ -n "$BS_BIN" ]; then
        say "cargo build --release -p bootstorm-loadgen (bootstorm: $BS)"
        cargo build --release -p bootstorm-loadgen >&2 || die "build failed"
    else
        say "cargo build --release -p bootstorm -p bootstorm-loadgen"
        cargo build --release -p bootstorm -p bootstorm-loadgen >&2 || die "build failed"
    fi
fi
[ -x "$BS" ] && [ -x "$LG" ] || die "missing $BS or $LG (build them, or drop --no-build)"
# The source the binaries were built from (read now: the tree may change while the run goes on).
BUILT_FROM="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src loadgen 2>/dev/null || echo ' (with uncommitted changes in src/ or loadgen/)')"
[ "$BUILD" = 1 ] || BUILT_FROM+=" (--no-build: binaries as found)"
if [ -n "$BS_BIN" ]; then
    BUILT_FROM="not built here: --bootstorm-bin $BS (sha256 $(sha256sum "$BS" | cut -c1-16)); loadgen from $BUILT_FROM"
fi

# Peers (installs on first use; prints one version line per peer).
declare -A VERSIONS=([bootstorm]="$("$BS" --version 2>&1 | head -n1)" [loadgen]="$("$LG" --version 2>&1 | head -n1)")
NEED_PEERS=0
for s in "${SERVERS[@]}"; do [ "$s" = bootstorm ] || NEED_PEERS=1; done
if [ "$NEED_PEERS" = 1 ]; then
    if "$REPO/scripts/peers.sh" install "$PEERS_DIR" >"$WORK/peers-install.txt" 2>"$WORK/logs/peers-install.log"; then
        while read -r name rest; do
            [ -n "$name" ] && VERSIONS[$name]=$rest
        done <"$WORK/peers-install.txt"
    else
        say "warning: scripts/peers.sh install failed (see $WORK/logs/peers-install.log); peers that are missing will be recorded as 'start failed'"
    fi
fi

# The root: world-readable files in world-traversable directories (atftpd runs as nobody,
# dnsmasq serves only o+r files).
ROOT="$REPO/target/bench-root"
traversable() {
    local d=$1
    while [ "$d" != / ]; do
        [ -x "$d" ] && [ "$(($(stat -c %a "$d" 2>/dev/null || echo 0) % 2))" = 1 ] || return 1
        d=$(dirname "$d")
    done
}
mkdir -p "$REPO/target"
traversable "$REPO/target" || ROOT=/tmp/bootstorm-bench-root
mkdir -p "$ROOT/pxelinux.cfg"
for f in "${!FILES[@]}"; do
    if [ ! -f "$ROOT/$f" ] || [ "$(stat -c %s "$ROOT/$f")" != "${FILES[$f]}" ]; then
        head -c "${FILES[$f]}" /dev/urandom >"$ROOT/$f.tmp"
        mv "$ROOT/$f.tmp" "$ROOT/$f"
    fi
done
chmod 0755 "$ROOT" "$ROOT/pxelinux.cfg"
chmod 0644 "$ROOT"/*.bin "$ROOT"/pxelinux.0 "$ROOT"/vmlinuz-*

# ---------------------------------------------------------------- cgroups

# CPU and memory of each server instance are read from a cgroup of its own, created here,
# when this machine allows it: cgroup v2 (memory.current, cpu.stat) where the memory
# controller is on v2, else v1 memory (memory.usage_in_bytes) and, for CPU, v2 cpu.stat or
# v1 cpuacct.usage. Every process the server forks stays in it.
CG_NAME="bootstorm-bench.$$"
CG_DIRS=()         # parent directories created (one per hierarchy)
CG_MEM_PARENT="" CG_MEM_FILE="" CG_MEM_VERSION=""
CG_CPU_PARENT="" CG_CPU_FILE=""
cg_try_mkdir() { mkdir "$1/$CG_NAME" 2>/dev/null && CG_DIRS+=("$1/$CG_NAME"); }
setup_cgroups() {
    local v2="" d
    for d in /sys/fs/cgroup /sys/fs/cgroup/unified; do
        if [ -f "$d/cgroup.controllers" ]; then
            v2=$d
            break
        fi
    done
    if [ -n "$v2" ] && cg_try_mkdir "$v2"; then
        CG_CPU_PARENT="$v2/$CG_NAME" CG_CPU_FILE=cpu.stat
        if grep -qw memory "$v2/cgroup.controllers"; then
            echo +memory >"$v2/cgroup.subtree_control" 2>/dev/null || true
            echo +memory >"$v2/$CG_NAME/cgroup.subtree_control" 2>/dev/null || true
            mkdir "$v2/$CG_NAME/probe" 2>/dev/null || true
            if [ -f "$v2/$CG_NAME/probe/memory.current" ]; then
                CG_MEM_PARENT="$v2/$CG_NAME" CG_MEM_FILE=memory.current CG_MEM_VERSION=2
            fi
            rmdir "$v2/$CG_NAME/probe" 2>/dev/null || true
        fi
    fi
    if [ -z "$CG_MEM_PARENT" ] && [ -f /sys/fs/cgroup/memory/memory.usage_in_bytes ] &&
        cg_try_mkdir /sys/fs/cgroup/memory; then
        CG_MEM_PARENT="/sys/fs/cgroup/memory/$CG_NAME" CG_MEM_FILE=memory.usage_in_bytes CG_MEM_VERSION=1
    fi
    if [ -z "$CG_CPU_PARENT" ] && [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ] &&
        cg_try_mkdir /sys/fs/cgroup/cpuacct; then
        CG_CPU_PARENT="/sys/fs/cgroup/cpuacct/$CG_NAME" CG_CPU_FILE=cpuacct.usage
    fi
}
setup_cgroups
say "cgroup memory: ${CG_MEM_PARENT:-none} ${CG_MEM_FILE}; CPU: ${CG_CPU_PARENT:-none} ${CG_CPU_FILE}"

cg_parents() { # the parent directories in use, each once
    printf '%s\n' $CG_MEM_PARENT $CG_CPU_PARENT | awk '!seen[$0]++'
}
cg_create() { # NAME -> the cgroup.procs files to write a PID into
    local p
    for p in $(cg_parents); do
        if mkdir -p "$p/$1" 2>/dev/null; then echo "$p/$1/cgroup.procs"; fi
    done
}
cg_enter() { # run in the subshell about to exec the server
    local f
    for f in "$@"; do echo "$BASHPID" >"$f" 2>/dev/null || true; done
}
cg_cpu_s() { # NAME -> CPU seconds so far of that cgroup, or nothing
    [ -n "$CG_CPU_PARENT" ] || return 0
    local f="$CG_CPU_PARENT/$1/$CG_CPU_FILE"
    [ -r "$f" ] || return 0
    if [ "$CG_CPU_FILE" = cpu.stat ]; then
        awk '$1 == "usage_usec" { printf "%.6f\n", $2 / 1e6 }' "$f"
    else
        awk '{ printf "%.6f\n", $1 / 1e9 }' "$f"
    fi
}
cg_remove() {
    local p i
    for p in $(cg_parents); do
        [ -d "$p/$1" ] || continue
        for i in 1 2 3 4 5 6 7 8 9 10; do
            rmdir "$p/$1" 2>/dev/null && break
            sleep 0.2
        done
    done
}

# ---------------------------------------------------------------- servers

declare -A SRV_PID=() SRV_PORT=() SRV_CG=() SRV_PROCS=()
NEXT_PORT=17000

udp_port_bound() {
    local hex
    hex=$(printf ':%04X' "$1")
    cat /proc/net/udp /proc/net/udp6 2>/dev/null |
        awk -v p="$hex" 'NR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }'
}
next_port() {
    local i
    for ((i = 0; i < 1000; i++)); do
        NEXT_PORT=$((NEXT_PORT + 1))
        [ "$NEXT_PORT" -lt 30000 ] || NEXT_PORT=17001
        udp_port_bound "$NEXT_PORT" || {
            echo "$NEXT_PORT"
            return 0
        }
    done
    return 1
}
alive() { # running and not a zombie (no fork: this runs while loadgen measures)
    [ -n "${1:-}" ] || return 1
    local line state
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    state=${line##*) }
    state=${state%% *}
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
tftp_answers() { # any TFTP answer (even "file not found") counts
    local rc=0
    curl -s -o /dev/null --max-time 1 "tftp://127.0.0.1:$1/.bench-ready-probe" || rc=$?
    case $rc in 6 | 7 | 28 | 55 | 56) return 1 ;; *) return 0 ;; esac
}

# start_server KEY (bootstorm, bootstorm-sp or a peer): sets SRV_PID/PORT/CG/PROCS[KEY].
start_server() {
    local key=$1 port cg procs pid log deadline
    port=$(next_port) || return 1
    cg="$key-$port"
    mapfile -t procs < <(cg_create "$cg")
    log="$WORK/logs/$key-$port.log"
    case $key in
    bootstorm | bootstorm-sp)
        local -a extra=()
        read -r -a extra <<<"$BS_ARGS"
        if [ "$key" = bootstorm-sp ]; then
            local -a sp=()
            read -r -a sp <<<"$SP_ARGS"
            extra+=(--single-port "${sp[@]}")
        fi
        (
            cg_enter "${procs[@]}"
            exec "$BS" --root "$ROOT" -l "127.0.0.1:$port" --log-level warn "${extra[@]}"
        ) >>"$log" 2>&1 </dev/null &
        pid=$!
        deadline=$((SECONDS + 10))
        until udp_port_bound "$port" && tftp_answers "$port"; do
            if ! alive "$pid" || [ "$SECONDS" -ge "$deadline" ]; then
                kill -KILL "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
                say "$key did not start (log: $log)"
                tail -n 5 "$log" >&2 || true
                cg_remove "$cg"
                return 1
            fi
            sleep 0.05
        done
        ;;
    *)
        pid=$(
            cg_enter "${procs[@]}"
            exec "$REPO/scripts/peers.sh" start "$key" "$ROOT" "$port" "$PEERS_DIR" 2>>"$log"
        ) || {
            say "$key did not start (log: $log)"
            tail -n 5 "$log" >&2 || true
            cg_remove "$cg"
            return 1
        }
        ;;
    esac
    SRV_PID[$key]=$pid SRV_PORT[$key]=$port SRV_CG[$key]=$cg
    SRV_PROCS[$key]="${procs[*]}"
    say "started $key pid $pid on 127.0.0.1:$port"
}

stop_server() {
    local key=$1 pid=${SRV_PID[$1]:-} i
    [ -n "$pid" ] || return 0
    case $key in
    bootstorm | bootstorm-sp)
        # SIGTERM stops accepting; a second one ends the transfers still open.
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 5; i++)); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        ;;
    *)
        if alive "$pid"; then
            "$REPO/scripts/peers.sh" stop "$pid" 2>>"$WORK/logs/$key-${SRV_PORT[$key]}.log" ||
                say "warning: could not stop $key (pid $pid)"
        fi
        ;;
    esac
    cg_remove "${SRV_CG[$key]}"
    SRV_PID[$key]=""
}

SAMPLER_PID=""
cleanup() {
    local k
    [ -n "$SAMPLER_PID" ] && kill -TERM "$SAMPLER_PID" 2>/dev/null || true
    for k in "${!SRV_PID[@]}"; do
        [ -n "${SRV_PID[$k]}" ] && stop_server "$k"
    done
    for k in "${CG_DIRS[@]}"; do
        find "$k" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
        rmdir "$k" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- cells

# run_loadgen BASE SERVER_PID ARGS...: loadgen under `timeout`, stdout/stderr into BASE.json and
# BASE.err; if the server dies meanwhile, loadgen is stopped 2 s later instead of waiting for
# every client to time out. Sets LG_RC.
LG_RC=0
run_loadgen() {
    local base=$1 spid=$2 lp dead_at=""
    shift 2
    timeout -k 5 "$CELL_TIMEOUT" "$LG" "$@" >"$base.json" 2>"$base.err" &
    lp=$!
    while alive "$lp"; do
        if [ -z "$dead_at" ] && ! alive "$spid"; then
            dead_at=$SECONDS
        elif [ -n "$dead_at" ] && [ $((SECONDS - dead_at)) -ge 2 ]; then
            kill -TERM "$lp" 2>/dev/null || true
            break
        fi
        sleep 0.25
    done
    LG_RC=0
    wait "$lp" || LG_RC=$?
}

record() { # args for bench_report.py record; appends one line to runs.jsonl
    python3 "$PY" record "$@" >>"$WORK/runs.jsonl"
}

# One loadgen run of workload WL against server KEY in round R.
run_cell() {
    local r=$1 key=$2 wl=$3 pid port base rc=0 t0 cpu0 cpu1 crashed=0 cpu_args=()
    if ! alive "${SRV_PID[$key]:-}"; then
        SRV_PID[$key]=""
        if ! start_server "$key"; then
            record --round "$r" --server "$key" --workload "$wl" --args "${WL_ARGS[$wl]}" \
                --start-failed 1 --rc 1
            return 0
        fi
    fi
    pid=${SRV_PID[$key]} port=${SRV_PORT[$key]}
    base="$WORK/out/r$r-$key-$wl"
    cpu0=$(cg_cpu_s "${SRV_CG[$key]}")
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086 # WL_ARGS are word lists
    run_loadgen "$base" "$pid" --server "127.0.0.1:$port" ${WL_ARGS[$wl]} \
        --verify "$ROOT" --server-pid "$pid" --json
    rc=$LG_RC
    cpu1=$(cg_cpu_s "${SRV_CG[$key]}")
    local wall
    wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
    if ! alive "$pid"; then
        crashed=1
        say "$key died during $wl (log: $WORK/logs/$key-$port.log)"
        stop_server "$key"
    fi
    if [ -n "$cpu0" ] && [ -n "$cpu1" ]; then
        cpu_args=(--cpu-cg "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.6f", b - a }')")
    fi
    record --round "$r" --server "$key" --workload "$wl" --args "${WL_ARGS[$wl]}" --rc "$rc" \
        --wall "$wall" --timeout "$CELL_TIMEOUT" --stdout "$base.json" --stderr "$base.err" \
        --crashed "$crashed" "${cpu_args[@]}"
    local summary
    summary=$(python3 "$PY" brief "$base.json" 2>/dev/null || echo "no result")
    say "  r$r $wl $key: rc $rc, $summary (${wall} s)"
}

# The memory cell: a fresh server, warm-up, idle samples, then MEM_CLIENTS held transfers.
mem_cell() {
    local r=$1 key=$2 pid port base rc=0 crashed=0 t_idle t_load t_end samples procs_file=""
    local mem_file=""
    if ! start_server "$key"; then
        record --round "$r" --server "$key" --workload memory --args "${WL_ARGS[memory]}" \
            --start-failed 1 --rc 1
        return 0
    fi
    pid=${SRV_PID[$key]} port=${SRV_PORT[$key]}
    base="$WORK/out/r$r-$key-memory"
    samples="$base.samples.jsonl"
    : >"$samples"
    # shellcheck disable=SC2206
    local procs=(${SRV_PROCS[$key]})
    [ ${#procs[@]} -gt 0 ] && procs_file=${procs[0]}
    [ -n "$CG_MEM_PARENT" ] && mem_file="$CG_MEM_PARENT/${SRV_CG[$key]}/$CG_MEM_FILE"
    # Warm-up: the file opened and mapped, the first transfers' tables grown.
    timeout -k 5 60 "$LG" --server "127.0.0.1:$port" --file "$MEM_FILE" --clients 50 --source-ips 50 \
        --transfers 200 --blksize 512 --windowsize 1 --json >"$base.warmup.json" 2>&1 || true
    sleep 0.5
    python3 "$PY" sample --pid "$pid" ${procs_file:+--cgroup-procs "$procs_file"} \
        ${mem_file:+--cg-mem "$mem_file"} --interval 0.25 --out "$samples" &
    SAMPLER_PID=$!
    t_idle=$(date +%s.%N)
    sleep 1
    t_load=$(date +%s.%N)
    # shellcheck disable=SC2086
    run_loadgen "$base" "$pid" --server "127.0.0.1:$port" ${WL_ARGS[memory]} \
        --verify "$ROOT" --server-pid "$pid" --json
    rc=$LG_RC
    t_end=$(date +%s.%N)
    kill -TERM "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    alive "$pid" || {
        crashed=1
        say "$key died during the memory test (log: $WORK/logs/$key-$port.log)"
    }
    local wall hi
    wall=$(awk -v a="$t_load" -v b="$t_end" 'BEGIN { printf "%.3f", b - a }')
    # All clients hold a transfer open from the end of the ramp until the first ones finish.
    hi=$(awk -v b="$MEM_BLOCKS" -v h="$MEM_HOLD_MS" 'BEGIN { printf "%.2f", b * h / 1000 }')
    record --round "$r" --server "$key" --workload memory --args "${WL_ARGS[memory]}" \
        --rc "$rc" --wall "$wall" --timeout "$CELL_TIMEOUT" --stdout "$base.json" \
        --stderr "$base.err" --crashed "$crashed" --samples "$samples" --clients "$MEM_CLIENTS" \
        --idle-start "$t_idle" --load-start "$t_load" --load-end "$t_end" \
        --window-lo "$(awk -v r="$MEM_RAMP" 'BEGIN { print r + 0.5 }')" --window-hi "$hi"
    say "  r$r memory $key: $(tail -n1 "$WORK/runs.jsonl" | python3 "$PY" brief --memory -)"
    stop_server "$key"
}

# ---------------------------------------------------------------- rounds

has_wl() { [[ " ${WORKLOADS[*]} " == *" $1 "* ]]; }
rotate() { # N items... -> items rotated left by N
    local n=$1
    shift
    local -a a=("$@")
    local i len=${#a[@]}
    for ((i = 0; i < len; i++)); do echo "${a[$(((i + n) % len))]}"; done
}

for ((r = 1; r <= RUNS; r++)); do
    say "===== round $r/$RUNS"
    for size in 1472 516; do
        timeout 60 "$LG" ceiling --size "$size" --duration "$CEIL_S" --json \
            >>"$WORK/ceiling-$size.jsonl" 2>>"$WORK/logs/ceiling.log" ||
            say "warning: loadgen ceiling --size $size failed"
    done
    # The ceiling for windows sent as GSO sends to a GRO receiver (the bulk-windowed-gro row).
    if has_wl bulk-windowed-gro; then
        timeout 60 "$LG" ceiling --size 1472 --gso 16 --duration "$CEIL_S" --json \
            >>"$WORK/ceiling-gso1472.jsonl" 2>>"$WORK/logs/ceiling.log" ||
            say "warning: loadgen ceiling --gso failed"
    fi
    # The lockstep ceiling: 32 flows (as the bulk workloads' 32 clients), each a 4-byte ACK
    # answered by one DATA of a 1468-byte block (bulk, storms) or a 512-byte one (small files);
    # the lockstep rows are also shown as a fraction of it.
    for size in 1472 516; do
        timeout 60 "$LG" ceiling --pingpong --flows 32 --size "$size" --duration "$CEIL_S" --json \
            >>"$WORK/ceiling-pingpong$size.jsonl" 2>>"$WORK/logs/ceiling.log" ||
            say "warning: loadgen ceiling --pingpong --size $size failed"
    done
    say "raw-UDP ceiling: $(tail -n1 "$WORK/ceiling-1472.jsonl" 2>/dev/null | python3 -c 'import json, sys; print("%.0f MB/s at 1472 bytes" % json.load(sys.stdin)["mbps"])' 2>/dev/null || echo '?')"
    say "ping-pong ceiling: $(tail -n1 "$WORK/ceiling-pingpong1472.jsonl" 2>/dev/null | python3 -c 'import json, sys; d = json.load(sys.stdin); print("%.0f round trips/s, %.0f MB/s of 1468-byte blocks" % (d["round_trips_per_s"], d["mbps"]))' 2>/dev/null || echo '?')"
    mapfile -t ORDER < <(rotate $((r - 1)) "${SERVERS[@]}")
    THROUGHPUT=()
    for wl in "${WORKLOADS[@]}"; do [ "$wl" = memory ] || THROUGHPUT+=("$wl"); done
    if [ ${#THROUGHPUT[@]} -gt 0 ]; then
        for s in "${ORDER[@]}"; do
            start_server "$s" || true
            if [ "$r" = 1 ] && [ -n "${SRV_PID[$s]:-}" ]; then
                python3 "$PY" probe 127.0.0.1 "${SRV_PORT[$s]}" bulk-8m.bin \
                    >"$WORK/negotiated/$s.json" 2>/dev/null || true
            fi
        done
        for wl in "${THROUGHPUT[@]}"; do
            for s in "${ORDER[@]}"; do
                run_cell "$r" "$s" "$wl"
            done
        done
        for s in "${ORDER[@]}"; do stop_server "$s"; done
    fi
    if has_wl memory; then
        MEM_ORDER=()
        for s in "${ORDER[@]}"; do
            [[ " ${MEM_ORDER[*]} " == *" $s "* ]] || MEM_ORDER+=("$s")
            if [ "$s" = bootstorm ] && [[ " ${MEM_ORDER[*]} " != *" bootstorm-sp "* ]]; then
                MEM_ORDER+=(bootstorm-sp)
            fi
        done
        for s in "${MEM_ORDER[@]}"; do mem_cell "$r" "$s"; done
    fi
done

# ---------------------------------------------------------------- report

FINISHED=$(date -Is)
WALL=$((SECONDS - T0))
export META_DATE="$DATE" META_HOST="$HOST" META_MODE="$MODE" META_RUNS="$RUNS" \
    META_COMMAND="$COMMAND_LINE" META_STARTED="$STARTED" META_FINISHED="$FINISHED" META_BS_ARGS="$BS_ARGS" \
    META_SP_ARGS="$SP_ARGS" \
    META_WALL="$WALL" META_NOFILE="$NOFILE" META_ROOT="$ROOT" META_WORK="$WORK" \
    META_GIT="$BUILT_FROM" \
    META_SERVERS="${SERVERS[*]}" META_WORKLOADS="${WORKLOADS[*]}" \
    META_CG_MEM="${CG_MEM_PARENT:+$CG_MEM_PARENT/<server>/$CG_MEM_FILE}" META_CG_MEM_V="$CG_MEM_VERSION" \
    META_CG_CPU="${CG_CPU_PARENT:+$CG_CPU_PARENT/<server>/$CG_CPU_FILE}" \
    META_MEM_CLIENTS="$MEM_CLIENTS" META_MEM_HOLD="$MEM_HOLD_MS" META_MEM_FILE="$MEM_FILE" \
    META_CELL_TIMEOUT="$CELL_TIMEOUT"
{
    for k in "${!VERSIONS[@]}"; do printf '%s\t%s\n' "$k" "${VERSIONS[$k]}"; done
} >"$WORK/versions.tsv"
for wl in "${WORKLOADS[@]}"; do printf '%s\t%s\n' "$wl" "${WL_ARGS[$wl]}"; done >"$WORK/workloads.tsv"
python3 - "$WORK" <<'EOF'
import glob, json, os, platform, sys
work = sys.argv[1]
e = os.environ
cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
mem = "?"
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
except OSError:
    pass
def jl(path):
    out = []
    try:
        for line in open(path):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    except OSError:
        pass
    return out
ceil = {os.path.basename(p)[8:-6]: jl(p) for p in glob.glob(os.path.join(work, "ceiling-*.jsonl"))}
neg = {}
for p in glob.glob(os.path.join(work, "negotiated", "*.json")):
    try:
        neg[os.path.basename(p)[:-5]] = json.load(open(p))
    except ValueError:
        pass
versions = dict(l.rstrip("\n").split("\t", 1) for l in open(os.path.join(work, "versions.tsv")) if "\t" in l)
workloads = {}
for l in open(os.path.join(work, "workloads.tsv")):
    k, v = l.rstrip("\n").split("\t", 1)
    workloads[k] = {"args": v}
meta = {
    "date": e["META_DATE"], "host": e["META_HOST"], "mode": e["META_MODE"],
    "runs": int(e["META_RUNS"]), "command": e["META_COMMAND"], "started": e["META_STARTED"],
    "finished": e["META_FINISHED"], "wall_s": float(e["META_WALL"]), "git": e["META_GIT"],
    "bootstorm_args": e["META_BS_ARGS"],
    "single_port_args": e["META_SP_ARGS"],
    "root": e["META_ROOT"], "work": e["META_WORK"],
    "machine": {"nproc": os.cpu_count() and len(os.sched_getaffinity(0)), "cpu_model": cpu,
                "kernel": " ".join(platform.uname()[i] for i in (0, 2, 3)), "mem_total": mem,
                "nofile": e["META_NOFILE"]},
    "servers": e["META_SERVERS"].split(), "workloads": workloads, "versions": versions,
    "ceilings": ceil, "negotiated": neg,
    "cgroup": {"memory_file": e["META_CG_MEM"] or None,
               "memory_version": int(e["META_CG_MEM_V"]) if e["META_CG_MEM_V"] else None,
               "cpu_file": e["META_CG_CPU"] or None},
    "params": {"mem_clients": int(e["META_MEM_CLIENTS"]), "mem_hold_ms": int(e["META_MEM_HOLD"]),
               "mem_file": e["META_MEM_FILE"], "cell_timeout_s": int(e["META_CELL_TIMEOUT"])},
}
json.dump(meta, open(os.path.join(work, "meta.json"), "w"), indent=1)
EOF
python3 "$PY" report "$WORK" "$OUT"
say "done in ${WALL} s: $OUT/README.md"
cat "$OUT/table.md"
