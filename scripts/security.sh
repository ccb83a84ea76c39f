#!/usr/bin/env bash
# Measures, for bootstorm and the peer servers side by side on loopback:
#  - reflection: bytes sent to a source that never answers, per request byte (on the wire), with
#    and without options, and for how long the server keeps sending;
#  - floods: the share of requests answered (served, or refused "busy") and left silent, at 500
#    and 5,000 requests per second, from 1,000 source addresses and from one.
# Usage: scripts/security.sh [--quick] [--servers bootstorm,bootstorm-sp,tftpd-hpa,dnsmasq,atftpd,tftpd-rs]
# (bootstorm-sp: bootstorm --single-port)
# Writes docs/security/<date>-<host>/{results.jsonl,table.md} and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
servers="bootstorm,bootstorm-sp,tftpd-hpa,dnsmasq,atftpd,tftpd-rs"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --servers) servers="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
window=25; flood_secs=5; reqs=100
if [ "$quick" = 1 ]; then window=20; flood_secs=3; reqs=50; fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --quiet -p bootstorm -p bootstorm-loadgen
loadgen=target/release/loadgen
root=target/security-root
mkdir -p "$root"
[ -f "$root/boot.img" ] || head -c 1M /dev/urandom >"$root/boot.img"
chmod 755 "$root"; chmod 644 "$root/boot.img"
IFS=, read -r -a list <<<"$servers"
if [ "${#list[@]}" -gt 1 ] || [ "${list[0]}" != bootstorm ]; then scripts/peers.sh install >/dev/null; fi

out="docs/security/$(date +%Y-%m-%d)-$(hostname)"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

start_server() { # name port -> pid
    if [ "$1" = bootstorm ] || [ "$1" = bootstorm-sp ]; then
        local extra=()
        [ "$1" = bootstorm-sp ] && extra=(--single-port)
        target/release/bootstorm --root "$root" -l "127.0.0.1:$2" --log-level error "${extra[@]}" >/dev/null 2>&1 &
        echo $!
        sleep 0.3
    else
        scripts/peers.sh start "$1" "$root" "$2"
    fi
}
stop_server() { # name pid
    if [ "$1" = bootstorm ] || [ "$1" = bootstorm-sp ]; then kill "$2" 2>/dev/null || true; wait "$2" 2>/dev/null || true
    else scripts/peers.sh stop "$2" >/dev/null; fi
}
record() { # server test json
    printf '{"server":"%s","test":"%s","result":%s}\n' "$1" "$2" "$3" >>"$results"
}

# Reflection: all servers at once, each on its own port (counts do not depend on timing).
port=17100
declare -A pids
for s in "${list[@]}"; do pids[$s]=$(start_server "$s" $port); port=$((port + 1)); done
port=17100
tmp=$(mktemp -d)
for s in "${list[@]}"; do
    timeout $((window + 30)) $loadgen reflect --server 127.0.0.1:$port --file boot.img --requests $reqs --window $window --json >"$tmp/$s-plain" &
    timeout $((window + 30)) $loadgen reflect --server 127.0.0.1:$port --file boot.img --requests $reqs --window $window \
        --option tsize=0 --option blksize=1468 --json >"$tmp/$s-options" &
    port=$((port + 1))
done
wait
for s in "${list[@]}"; do
    record "$s" reflect-plain "$(cat "$tmp/$s-plain")"
    record "$s" reflect-options "$(cat "$tmp/$s-options")"
    stop_server "$s" "${pids[$s]}"
done

# Floods: one server at a time, a fresh instance for each (transfers left open by one flood
# must not meet the next).
fport=17200
for s in "${list[@]}"; do
    for rate in 500 5000; do
        for sources in 1000 1; do
            fport=$((fport + 1))
            pid=$(start_server "$s" $fport)
            r=$(timeout $((flood_secs + 30)) $loadgen flood --server 127.0.0.1:$fport --file boot.img --rate $rate \
                --duration $flood_secs --sources $sources --wait 2 --option blksize=1468 --json || echo null)
            record "$s" "flood-$rate-$sources" "$r"
            stop_server "$s" "$pid"
            sleep 1
        done
    done
done
rm -rf "$tmp"

python3 - "$results" "$out/table.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["server"], {})[r["test"]] = r["result"]
lines = ["| server | amplification, no options | with options | datagrams per request | last datagram after | "
         "flood 500/s, 1000 sources | 5000/s, 1000 sources | 500/s, one source | 5000/s, one source |",
         "|---|---|---|---|---|---|---|---|---|"]
def fl(x):
    if not x: return "failed"
    return f"{x['answered_share']*100:.0f}% answered ({x['served']} served, {x['refused_busy']} busy, {x['silent']} silent)"
for s, t in by.items():
    p, o = t.get("reflect-plain") or {}, t.get("reflect-options") or {}
    lines.append(f"| {s} | {p.get('amplification',0):.1f}x | {o.get('amplification',0):.1f}x | "
                 f"{p.get('packets_per_request',0):.2f} / {o.get('packets_per_request',0):.2f} | "
                 f"{max(p.get('last_packet_after_s',0), o.get('last_packet_after_s',0)):.1f} s | "
                 + " | ".join(fl(t.get(k)) for k in ["flood-500-1000", "flood-5000-1000", "flood-500-1", "flood-5000-1"]) + " |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "results in $out" >&2
