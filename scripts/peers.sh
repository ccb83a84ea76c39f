#!/usr/bin/env bash
# Peer TFTP servers for benchmarks: installs four other TFTP servers side by side in one
# directory (nothing is installed system-wide except shared libraries they need) and
# starts/stops each on a loopback port serving a given root, so a benchmark can run the
# same workload against bootstorm and each peer.
#
#   scripts/peers.sh install [DIR]              install all peers into DIR (default:
#                                               target/peers under the repo root), print versions
#   scripts/peers.sh start NAME ROOT PORT [DIR] start peer NAME serving ROOT read-only on
#                                               127.0.0.1:PORT; prints only its PID on stdout
#                                               and returns once it answers TFTP (fails after
#                                               ~10 s); log in DIR/logs/NAME-PORT.log
#   scripts/peers.sh stop PID                   SIGTERM (plus its direct children), SIGKILL
#                                               after 5 s
#   scripts/peers.sh list                       print the peer names
#
# Peers (Debian 12 packages are fetched with `apt-get download` and unpacked with `dpkg -x`,
# because tftpd-hpa and atftpd conflict and their maintainer scripts would start services):
#   tftpd-hpa  in.tftpd -L (foreground, no fork for the listener; forks one child per
#              transfer), chroot into ROOT, runs as root with -p so file modes don't matter,
#              and a remap file that refuses every write request (read-only).
#              Options: blksize, blksize2, tsize, timeout, utimeout, rollover. No windowsize.
#   dnsmasq    TFTP only (-p 0: no DNS, no DHCP), --tftp-max 10000. dnsmasq has no option
#              for the TFTP port (69 is compiled in), so for PORT != 69 it runs with a small
#              LD_PRELOAD shim (DIR/lib/bindport.so, built here with cc) that rewrites
#              bind(port 69) to PORT. Read-only by design; serves only world-readable (o+r)
#              files, even as root. Logs one line per transfer. Options: blksize, tsize,
#              timeout. No windowsize.
#   atftpd     --daemon --no-fork, --maxthread 10000, --prevent-sas. atftpd has no
#              read-only switch and accepts uploads wherever its user may write, so it runs
#              as nobody:nogroup: ROOT must be world-readable (o+rx dirs, o+r files).
#              Logs warnings and errors only (--verbose=4).
#              Options: blksize, tsize, timeout, windowsize, multicast.
#   tftpd-rs   the Rust `tftpd` crate 1.x (cargo install into DIR/tftpd-rs), -r read-only.
#              Options: blksize, tsize, timeout, windowsize.
# All four roll the block number over to 0 after 65535, so files > 32 MiB work at blksize 512.
#
# Needs root (apt-get, chroot, binding the peers as another user), apt, cargo and cc.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_DIR="$REPO/target/peers"
PEERS=(tftpd-hpa dnsmasq atftpd tftpd-rs)
# Debian package per unpacked peer, and the binary inside it.
declare -A DEB=([tftpd-hpa]=tftpd-hpa [dnsmasq]=dnsmasq-base [atftpd]=atftpd)
declare -A BIN=(
    [tftpd-hpa]=tftpd-hpa/usr/sbin/in.tftpd
    [dnsmasq]=dnsmasq/usr/sbin/dnsmasq
    [atftpd]=atftpd/usr/sbin/atftpd
    [tftpd-rs]=tftpd-rs/bin/tftpd
)
READY_TIMEOUT=10 # seconds
STOP_GRACE=5     # seconds before SIGKILL

die() {
    echo "peers.sh: $*" >&2
    exit 1
}
say() { echo "peers.sh: $*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

abs_dir() { # create if needed, print absolute path
    mkdir -p "$1"
    (cd "$1" && pwd)
}

sudo_cmd() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        command -v cargo
    elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/cargo"
    else
        return 1
    fi
}

# ---------------------------------------------------------------- install

apt_ready=0
apt_update_once() {
    if [ "$apt_ready" = 0 ]; then
        say "apt-get update"
        sudo_cmd apt-get update -qq
        apt_ready=1
    fi
}

apt_install() { # packages (libraries and tools only)
    [ $# -gt 0 ] || return 0
    apt_update_once
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# Download (once) the .deb of a package into DIR/debs and print its path.
fetch_deb() {
    local pkg=$1 debs=$2 deb
    deb=$(ls "$debs/${pkg}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        # A fresh machine may have no package lists yet: update once, then retry.
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then apt_update_once; fi
        (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2) ||
            { apt_update_once && (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2); } ||
            die "apt-get download $pkg failed"
        deb=$(ls "$debs/${pkg}"_*.deb | head -n1)
    fi
    echo "$deb"
}

# The lib* packages a .deb depends on (first alternative of each), e.g. libwrap0.
deb_lib_deps() {
    dpkg-deb -f "$1" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/:any//; s/[[:space:]]//g' |
        grep '^lib' || true
}

install_deb_peer() {
    local name=$1 dir=$2 pkg=${DEB[$1]} deb missing=() l
    local bin="$dir/${BIN[$name]}"
    deb=$(fetch_deb "$pkg" "$dir/debs")
    if [ ! -x "$bin" ]; then
        say "unpacking $(basename "$deb") into $dir/$name"
        rm -rf "$dir/$name.tmp"
        dpkg -x "$deb" "$dir/$name.tmp"
        dpkg-deb -f "$deb" Version >"$dir/$name.tmp/.deb-version"
        rm -rf "${dir:?}/$name"
        mv "$dir/$name.tmp" "$dir/$name"
    fi
    for l in $(deb_lib_deps "$deb"); do
        is_installed "$l" || missing+=("$l")
    done
    apt_install "${missing[@]}"
    if ldd "$bin" | grep -q 'not found'; then
        ldd "$bin" | grep 'not found' >&2
        die "$name: shared libraries missing after installing its lib* dependencies"
    fi
}

# LD_PRELOAD shim for dnsmasq: bind() to port 69 goes to $PEERS_TFTP_PORT instead.
install_bindport_shim() {
    local dir=$1 src so
    src="$dir/lib/bindport.c"
    so="$dir/lib/bindport.so"
    mkdir -p "$dir/lib"
    local code
    code=$(
        cat <<'EOF'
/* LD_PRELOAD shim (scripts/peers.sh): bind() to UDP/TCP port 69 binds $PEERS_TFTP_PORT. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static unsigned short new_port; /* network order, 0 = off */

__attribute__((constructor)) static void init(void) {
    const char *p = getenv("PEERS_TFTP_PORT");
    real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (p && atoi(p) > 0 && atoi(p) < 65536) new_port = htons((unsigned short)atoi(p));
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    if (new_port && addr) {
        if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in) &&
            ((const struct sockaddr_in *)addr)->sin_port == htons(69)) {
            struct sockaddr_in a;
            memcpy(&a, addr, sizeof a);
            a.sin_port = new_port;
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
        if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6) &&
            ((const struct sockaddr_in6 *)addr)->sin6_port == htons(69)) {
            struct sockaddr_in6 a;
            memcpy(&a, addr, sizeof a);
            a.sin6_port = new_port;
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real_bind(fd, addr, len);
}
EOF
    )
    if [ -f "$so" ] && [ -f "$src" ] && [ "$(cat "$src")" = "$code" ]; then
        return 0
    fi
    command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
    printf '%s\n' "$code" >"$src"
    say "building $so"
    cc -O2 -shared -fPIC -o "$so.tmp" "$src" -ldl
    mv "$so.tmp" "$so"
}

install_tftpd_rs() {
    local dir=$1 cargo
    if [ -x "$dir/${BIN[tftpd-rs]}" ]; then return 0; fi
    cargo=$(find_cargo) || die "cargo not found (install Rust first)"
    command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
    say "cargo install tftpd --version '^1' --root $dir/tftpd-rs"
    "$cargo" install --locked tftpd --version '^1' --root "$dir/tftpd-rs" >&2 ||
        "$cargo" install tftpd --version '^1' --root "$dir/tftpd-rs" >&2
}

peer_version() {
    local name=$1 dir=$2 bin="$2/${BIN[$1]}"
    [ -x "$bin" ] || {
        echo "not installed"
        return
    }
    case $name in
    tftpd-hpa) echo "$("$bin" -V | head -n1) (deb $(cat "$dir/$name/.deb-version"))" ;;
    dnsmasq) echo "$("$bin" --version | head -n1) (deb $(cat "$dir/$name/.deb-version"))" ;;
    atftpd) echo "$("$bin" -V 2>&1 | head -n1) (deb $(cat "$dir/$name/.deb-version"))" ;;
    tftpd-rs) echo "$("$bin" -V | head -n1) (crate tftpd)" ;;
    esac
}

cmd_install() {
    local dir
    dir=$(abs_dir "${1:-$DEFAULT_DIR}")
    mkdir -p "$dir/debs" "$dir/logs"
    command -v apt-get >/dev/null 2>&1 || die "needs apt-get (Debian)"
    local name
    for name in tftpd-hpa dnsmasq atftpd; do
        install_deb_peer "$name" "$dir"
    done
    install_bindport_shim "$dir"
    # tftpd-hpa: refuse every write request (read-only), used with -m.
    echo 'Pa .*' >"$dir/tftpd-hpa/readonly.map"
    install_tftpd_rs "$dir"
    for name in "${PEERS[@]}"; do
        printf '%-10s %s\n' "$name" "$(peer_version "$name" "$dir")"
    done
}

# ---------------------------------------------------------------- start / stop

# Is some UDP socket bound to local port $1 (any address)?
udp_port_bound() {
    local hex
    hex=$(printf ':%04X' "$1")
    cat /proc/net/udp /proc/net/udp6 2>/dev/null |
        awk -v p="$hex" 'NR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }'
}

# Does a TFTP server answer on 127.0.0.1:$1? Any TFTP reply (data or an error such as
# "file not found") counts; a timeout or ICMP port unreachable does not.
tftp_answers() {
    local rc=0
    curl -s -o /dev/null --max-time 1 "tftp://127.0.0.1:$1/.peers-ready-probe" || rc=$?
    case $rc in
    6 | 7 | 28 | 55 | 56) return 1 ;;
    *) return 0 ;;
    esac
}

alive() { # running and not a zombie
    [ -r "/proc/$1/stat" ] || return 1
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

cmd_start() {
    [ $# -ge 3 ] || usage
    local name=$1 root=$2 port=$3 dir=${4:-$DEFAULT_DIR}
    [ -d "$dir" ] || die "no peers directory $dir (run: scripts/peers.sh install $dir)"
    dir=$(cd "$dir" && pwd)
    case " ${PEERS[*]} " in *" $name "*) ;; *) die "unknown peer '$name' (one of: ${PEERS[*]})" ;; esac
    [ -d "$root" ] || die "root '$root' is not a directory"
    root=$(cd "$root" && pwd -P)
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "bad port '$port'"
    local bin="$dir/${BIN[$name]}"
    [ -x "$bin" ] || die "$name is not installed in $dir (run: scripts/peers.sh install $dir)"
    udp_port_bound "$port" && die "UDP port $port is already in use"
    mkdir -p "$dir/logs" "$dir/run"
    local log="$dir/logs/$name-$port.log"

    case $name in dnsmasq | atftpd)
        local bad
        bad=$(find "$root" -type f ! -perm -o=r -print -quit 2>/dev/null || true)
        [ -z "$bad" ] || say "warning: $name serves only world-readable files; $bad is not (chmod o+r)"
        ;;
    esac

    local -a cmd env=()
    case $name in
    tftpd-hpa)
        cmd=("$bin" -L -a "127.0.0.1:$port" -s -u root -p -m "$dir/tftpd-hpa/readonly.map" "$root")
        ;;
    dnsmasq)
        if [ "$port" != 69 ]; then
            [ -f "$dir/lib/bindport.so" ] || die "missing $dir/lib/bindport.so (run install)"
            env=(LD_PRELOAD="$dir/lib/bindport.so" PEERS_TFTP_PORT="$port")
        fi
        cmd=("$bin" --keep-in-foreground --conf-file=/dev/null --port=0
            --listen-address=127.0.0.1 --bind-interfaces
            --enable-tftp --tftp-root="$root" --tftp-max=10000 --quiet-tftp
            --user=root --group=root --pid-file="$dir/run/dnsmasq-$port.pid" --log-facility=-)
        ;;
    atftpd)
        local perm
        perm=$(stat -c %A "$root")
        [ "${perm:7:1}" = r ] && [ "${perm:9:1}" = x ] ||
            say "warning: atftpd runs as nobody and $root is $perm (it needs o+rx dirs, o+r files)"
        cmd=("$bin" --daemon --no-fork --bind-address 127.0.0.1 --port "$port"
            --maxthread 10000 --prevent-sas --user nobody --group nogroup
            --verbose=4 --logfile - "$root")
        ;;
    tftpd-rs)
        cmd=("$bin" -i 127.0.0.1 -p "$port" -d "$root" -r)
        ;;
    esac

    {
        echo "# $(date -Is) ${env[*]} ${cmd[*]}"
    } >"$log"
    # Started directly (no wrapper), so $! is the server's own PID.
    if [ ${#env[@]} -gt 0 ]; then
        env "${env[@]}" "${cmd[@]}" >>"$log" 2>&1 </dev/null &
    else
        "${cmd[@]}" >>"$log" 2>&1 </dev/null &
    fi
    local pid=$!

    local deadline=$((SECONDS + READY_TIMEOUT)) have_curl=0
    command -v curl >/dev/null 2>&1 && have_curl=1
    while :; do
        if ! alive "$pid"; then
            tail -n 20 "$log" >&2 || true
            die "$name exited during startup (log: $log)"
        fi
        if udp_port_bound "$port" && { [ "$have_curl" = 0 ] || tftp_answers "$port"; }; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            tail -n 20 "$log" >&2 || true
            die "$name did not answer on 127.0.0.1:$port within ${READY_TIMEOUT}s (log: $log)"
        fi
        sleep 0.1
    done
    echo "$pid"
}

children_of() {
    local f
    for f in /proc/[0-9]*/stat; do
        # field 4 (after the parenthesised name) is the parent PID
        sed -n "s/^\([0-9]*\) (.*) [A-Za-z] $1 .*/\1/p" "$f" 2>/dev/null || true
    done
}

cmd_stop() {
    [ $# -eq 1 ] || usage
    local pid=$1 comm kids p i left
    [[ "$pid" =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || die "bad pid '$pid'"
    if ! alive "$pid"; then
        say "process $pid is not running"
        return 0
    fi
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    case $comm in
    in.tftpd | dnsmasq | atftpd | tftpd) ;;
    *) die "pid $pid is '$comm', not a peer TFTP server; not stopping it" ;;
    esac
    kids=$(children_of "$pid")
    kill -TERM "$pid" $kids 2>/dev/null || true
    for ((i = 0; i < STOP_GRACE * 10; i++)); do
        left=0
        for p in "$pid" $kids; do alive "$p" && left=1; done
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
    for p in "$pid" $kids; do
        if alive "$p"; then
            say "process $p still running after ${STOP_GRACE}s: SIGKILL"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    for ((i = 0; i < 20; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    die "process $pid did not exit"
}

case "${1:-}" in
install)
    shift
    cmd_install "$@"
    ;;
start)
    shift
    cmd_start "$@"
    ;;
stop)
    shift
    cmd_stop "$@"
    ;;
list) printf '%s\n' "${PEERS[@]}" ;;
-h | --help | help) usage ;;
*) usage ;;
esac
