#!/usr/bin/env bash
# End-to-end PXE test: real boot firmware fetches a Linux kernel and an initrd from bootstorm.
#
# Five emulated machines (qemu TCG) boot at once inside a private network namespace, one per
# boot chain:
#   ipxe       SeaBIOS + the NIC's iPXE ROM, which runs an iPXE script (kernel, initrd, boot)
#   pxelinux   SeaBIOS + iPXE ROM -> pxelinux.0 -> ldlinux.c32 -> pxelinux.cfg/default
#   grub-bios  SeaBIOS + iPXE ROM -> GRUB i386-pc core.0 -> modules, grub.cfg
#   grub-efi   OVMF (EDK2 UEFI PXE) -> GRUB x86_64-efi core.efi -> grub.cfg
#   edk2       OVMF's own UEFI PXE loads one unified kernel image (systemd-stub + kernel +
#              initrd + command line), so EDK2's TFTP client fetches every byte itself
# The initrd carries a few MiB of random bytes made for each run; its /init prints
# "BOOTSTORM-MARKER <chain> <sha256>" on the serial console and powers off. A chain passes
# when its marker shows the expected checksum within the time limit.
#
# The set runs four ways: (a) bridge address added without a broadcast address, (b) with
# `brd +`, (c) as (b) with 2 % of the TFTP frames dropped in each direction (nftables numgen in
# the bridge family, since this kernel has no netem), (d) "lost first ACK": as (b) with the
# first ACK 0 (the answer to the server's OACK) of one transfer in four dropped on its way to
# the server. (c) and (d) must each keep their slowest boot within 1.5x the slowest boot of (b), and
# (d) must have dropped at least one ACK 0 (its nft counter). GRUB never resends an ACK 0: it
# waits for DATA 1, so (d) fails when the server does not resend its first answer on a timer.
# During (b) tcpdump records every TFTP packet and the script summarises what each firmware
# asked for.
#
# Run as root: tests/pxe/run.sh. Knobs (environment):
#   PXE_RUNS="a b c d"     which runs, in order
#   PXE_ACK0_DROP_MOD=4    run (d) drops a transfer's first ACK 0 with probability 1/N
#   PXE_ACK0_DROPS=1       how many ACK 0s run (d) drops from a transfer it picks: 1 (its first),
#                          2 (its first two: GRUB then needs the server's second timed OACK
#                          resend), or "every" (each ACK 0 on its own with probability 1/N)
#   PXE_CHAINS="..."       which chains (default: all five)
#   PXE_BOOT_TIMEOUT=200   seconds a run may take before its guests are killed
#   PXE_PAYLOAD_MIB=4      random payload packed into the initrd
#   BOOTSTORM_BIN=path     server binary (default: cargo build, target/debug/bootstorm)
#   PXE_KEEP=1             keep the work directory (target/pxe/work-PID) after a pass
# Exit status 0 only when every check passed; the last line is "N passed, M failed".
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE="$REPO/target/pxe"
WORK="$CACHE/work-$$"
NS="bootstorm-pxe-$$"
BR=br0
SERVER=198.18.7.1
RUNS=${PXE_RUNS:-a b c d}
CHAINS=${PXE_CHAINS:-ipxe pxelinux grub-bios grub-efi edk2}
BOOT_TIMEOUT=${PXE_BOOT_TIMEOUT:-200}
PAYLOAD_MIB=${PXE_PAYLOAD_MIB:-4}
# A run in which not one TFTP transfer has finished after this long is over: the server is
# ignoring every request (or the network is broken), waiting for the full timeout tells nothing.
NO_TRANSFER_ABORT=60
# Kernel command line shared by every chain ("bootstorm.chain=<name>" is added per chain).
# no_timer_check: under TCG on loaded CPUs the guest's check that the timer interrupt reaches
# the IO-APIC can miss its window, and the kernel panics at 0.06 s after a good boot download
# ("apic_intr_mode_init" in the trace); virtual machines skip the check for that reason.
CMDLINE="console=ttyS0 quiet panic=-1 no_timer_check"
MAX_LOSS_RATIO=1.5
ACK0_DROP_MOD=${PXE_ACK0_DROP_MOD:-4}
ACK0_DROPS=${PXE_ACK0_DROPS:-1}
case $ACK0_DROPS in 1 | 2 | every) ;; *) echo "PXE_ACK0_DROPS: 1, 2 or every, not '$ACK0_DROPS'" >&2; exit 2 ;; esac
ACK0_DROPPED=""   # ACK 0 datagrams run (d) dropped, from its nft counter
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd

# Per chain: firmware, guest MAC, fixed address, DHCP boot file.
declare -A FW=([ipxe]=bios [pxelinux]=bios [grub-bios]=bios [grub-efi]=efi [edk2]=efi)
declare -A MAC=([ipxe]=52:54:00:b5:07:11 [pxelinux]=52:54:00:b5:07:12 [grub-bios]=52:54:00:b5:07:13
    [grub-efi]=52:54:00:b5:07:14 [edk2]=52:54:00:b5:07:15)
declare -A IP=([ipxe]=198.18.7.11 [pxelinux]=198.18.7.12 [grub-bios]=198.18.7.13
    [grub-efi]=198.18.7.14 [edk2]=198.18.7.15)
declare -A BOOTFILE=([ipxe]=ipxe/boot.ipxe [pxelinux]=pxelinux.0
    [grub-bios]=boot/grub/i386-pc/core.0 [grub-efi]=boot/grub/x86_64-efi/core.efi [edk2]=uki.efi)

PIDS=()          # every process this script started, stopped by PID on exit
PASSED=0
FAILED=0
declare -A BOOT_S=()   # "<run>:<chain>" -> boot time in seconds (passes only)
declare -A WORST=()    # run -> slowest passing boot

log() { printf '[pxe %s] %s\n' "$(date +%T)" "$*"; }
die() { log "FATAL: $*"; exit 2; }
in_ns() { ip netns exec "$NS" "$@"; }
# Starts a command in the namespace in the background, output to $1; its PID (ip netns exec
# execs the command, so the PID is the command's own) goes to SPAWNED and to PIDS. Never
# background a call of in_ns: that forks a subshell whose PID is not the command's.
spawn() {
    local out=$1
    shift
    ip netns exec "$NS" "$@" </dev/null >"$out" 2>&1 &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}

# Stops one process we started: SIGTERM, up to 5 s, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if ip netns list 2>/dev/null | grep -qw "$NS"; then
        local dev
        # Safety net: anything still inside our namespace was started by this script.
        for pid in $(ip netns pids "$NS" 2>/dev/null); do
            log "killing leftover PID $pid in $NS"
            kill -KILL "$pid" 2>/dev/null || true
        done
        for dev in $(ip -n "$NS" -o link show type tun 2>/dev/null | awk -F': ' '{print $2}'); do
            ip -n "$NS" link del "${dev%@*}" 2>/dev/null || true
        done
        ip netns del "$NS" 2>/dev/null || true
    fi
    if [ "$rc" = 0 ] && [ -z "${PXE_KEEP:-}" ]; then
        rm -rf "$WORK"
    elif [ -d "$WORK" ]; then
        log "logs kept in $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "run as root (network namespace, taps, nftables)"

# --- 1. Packages and cached artefacts ---------------------------------------------------------

# Host packages, installed only when something is missing. dnsmasq-base is the dnsmasq binary
# without the system service that the "dnsmasq" package would start on the host.
install_packages() {
    local missing=0 f
    for f in /usr/bin/qemu-system-x86_64 "$OVMF_CODE" "$OVMF_VARS" /usr/lib/ipxe/qemu/pxe-e1000.rom \
        /usr/lib/PXELINUX/pxelinux.0 /usr/lib/syslinux/modules/bios/ldlinux.c32 \
        /usr/lib/grub/i386-pc/pxeboot.img /usr/lib/grub/x86_64-efi/efinet.mod /usr/bin/grub-mknetdir \
        /bin/busybox /usr/bin/cpio /usr/sbin/dnsmasq /usr/sbin/nft /usr/bin/tcpdump \
        /usr/sbin/ethtool /usr/bin/objcopy; do
        [ -e "$f" ] || { log "missing $f"; missing=1; }
    done
    # The busybox in the initrd must be the static one (no libraries in the guest).
    if [ -e /bin/busybox ] && ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then
        missing=1
    fi
    [ "$missing" = 0 ] && return 0
    log "installing packages with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq qemu-system-x86 ovmf ipxe-qemu pxelinux syslinux-common grub-pc-bin \
        grub-efi-amd64-bin busybox-static cpio dnsmasq-base nftables tcpdump ethtool binutils \
        file >/dev/null
}

# Downloads a Debian package into $CACHE/debs without installing it; prints the .deb path.
download_deb() {
    local pkg=$1 deb
    mkdir -p "$CACHE/debs"
    deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
    if [ -z "$deb" ]; then
        (cd "$CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2)
        deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
    fi
    [ -n "$deb" ] || die "could not download $pkg"
    echo "$deb"
}

# The guest kernel: the versioned package linux-image-amd64 depends on, fetched with
# `apt-get download` and unpacked (only ./boot/vmlinuz-*) into the cache; never installed.
fetch_kernel() {
    local pkg deb
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -qq
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    fi
    [ -n "$pkg" ] || die "cannot resolve linux-image-amd64"
    if [ ! -s "$CACHE/kernel/$pkg/vmlinuz" ]; then
        log "fetching $pkg"
        deb=$(download_deb "$pkg")
        rm -rf "$CACHE/kernel/$pkg" && mkdir -p "$CACHE/kernel/$pkg/x"
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$CACHE/kernel/$pkg/x" --wildcards './boot/vmlinuz-*'
        mv "$CACHE/kernel/$pkg"/x/boot/vmlinuz-* "$CACHE/kernel/$pkg/vmlinuz"
        rm -rf "$CACHE/kernel/$pkg/x" "$deb"
    fi
    KERNEL="$CACHE/kernel/$pkg/vmlinuz"
    KERNEL_PKG=$pkg
}

# systemd-stub (linuxx64.efi.stub from systemd-boot-efi), unpacked with dpkg -x into the cache:
# the EFI program that a unified kernel image starts with.
fetch_stub() {
    STUB="$CACHE/systemd-boot-efi/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    if [ ! -s "$STUB" ]; then
        log "fetching systemd-boot-efi (for linuxx64.efi.stub)"
        local deb
        deb=$(download_deb systemd-boot-efi)
        rm -rf "$CACHE/systemd-boot-efi"
        dpkg -x "$deb" "$CACHE/systemd-boot-efi"
    fi
    [ -s "$STUB" ] || die "no $STUB"
}

# The server binary.
find_server() {
    if [ -n "${BOOTSTORM_BIN:-}" ]; then
        BIN=$BOOTSTORM_BIN
    else
        log "cargo build --bin bootstorm"
        (cd "$REPO" && cargo build --quiet --bin bootstorm)
        BIN="$REPO/target/debug/bootstorm"
    fi
    [ -x "$BIN" ] || die "no server binary at $BIN"
}

# --- 2. TFTP root and guest payload -----------------------------------------------------------

# Replaces @NAME@ placeholders of a template.
render() {
    sed -e "s|@SERVER@|$SERVER|g" -e "s|@CMDLINE@|$CMDLINE|g" -e "s|@BRIDGE@|$BR|g" \
        -e "s|@WORK@|$WORK|g" "$1"
}

# Everything but the per-run initrd and unified image.
build_root() {
    ROOT="$WORK/root"
    mkdir -p "$ROOT/ipxe" "$ROOT/pxelinux.cfg"
    cp "$KERNEL" "$ROOT/vmlinuz"
    render "$HERE/boot.ipxe" >"$ROOT/ipxe/boot.ipxe"
    cp /usr/lib/PXELINUX/pxelinux.0 /usr/lib/syslinux/modules/bios/ldlinux.c32 "$ROOT/"
    render "$HERE/pxelinux.cfg" >"$ROOT/pxelinux.cfg/default"
    grub-mknetdir --net-directory="$ROOT" --subdir=boot/grub -d /usr/lib/grub/i386-pc >/dev/null 2>&1
    grub-mknetdir --net-directory="$ROOT" --subdir=boot/grub -d /usr/lib/grub/x86_64-efi >/dev/null 2>&1
    if [ ! -s "$ROOT/boot/grub/i386-pc/core.0" ] || [ ! -s "$ROOT/boot/grub/x86_64-efi/core.efi" ]; then
        die "grub-mknetdir made no core.0/core.efi"
    fi
    render "$HERE/grub.cfg" >"$ROOT/boot/grub/grub.cfg"
}

# initrd.img (cpio newc, gzip): static busybox, /init and a fresh random payload; and uki.efi,
# the unified kernel image for the edk2 chain. Sets EXPECT to the payload's sha256.
build_payload() {
    local run=$1 stage="$WORK/initrd-$1"
    rm -rf "$stage" && mkdir -p "$stage"/{bin,dev,proc,sys}
    cp /bin/busybox "$stage/bin/busybox"
    install -m 0755 "$HERE/init" "$stage/init"
    head -c $((PAYLOAD_MIB * 1024 * 1024)) /dev/urandom >"$stage/payload.bin"
    EXPECT=$(sha256sum "$stage/payload.bin" | cut -d ' ' -f 1)
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$ROOT/initrd.img"
    rm -rf "$stage"
    build_uki
}

# Unified kernel image: systemd-stub with .cmdline, .linux and .initrd sections appended
# (page-aligned, after the stub's own sections), the layout systemd's ukify produces.
build_uki() {
    local end=0 size vma next cmdline="$WORK/uki-cmdline"
    printf '%s bootstorm.chain=edk2' "$CMDLINE" >"$cmdline"
    while read -r size vma; do
        next=$((0x$vma + 0x$size))
        [ "$next" -gt "$end" ] && end=$next
    done < <(objdump -h "$STUB" | awk '$1 ~ /^[0-9]+$/ {print $3, $4}')
    local args=() sec file
    for sec in cmdline linux initrd; do
        case $sec in
            cmdline) file=$cmdline ;;
            linux) file=$ROOT/vmlinuz ;;
            initrd) file=$ROOT/initrd.img ;;
        esac
        end=$(((end + 0xfff) & ~0xfff))
        args+=(--add-section ".$sec=$file" --change-section-vma ".$sec=$(printf 0x%x "$end")")
        end=$((end + $(stat -c %s "$file")))
    done
    objcopy "${args[@]}" "$STUB" "$ROOT/uki.efi"
}

# --- 3. Private network namespace -------------------------------------------------------------

setup_netns() {
    local c
    ip netns add "$NS"
    in_ns ip link set lo up
    in_ns ip link add "$BR" type bridge
    # Frames leave the bridge one datagram at a time (bootstorm's UDP GSO sends are cut by
    # the kernel at the bridge instead of at the tap), so the loss rules of run (c) see, and
    # drop, single TFTP packets rather than whole windows.
    in_ns ethtool -K "$BR" tx-udp-segmentation off >/dev/null
    for c in $CHAINS; do
        in_ns ip tuntap add dev "tap-$c" mode tap
        in_ns ip link set "tap-$c" master "$BR" up
    done
    in_ns ip link set "$BR" up
}

# Run (d)'s nftables table. An ACK 0 from a guest to the server: UDP length 12 (8-byte header +
# 4-byte TFTP packet), payload 00 04 00 00 (opcode 4 = ACK, block 0): the answer to an OACK.
# PXE_ACK0_DROPS=1: the first ACK 0 of each transfer (client address and port, remembered in a
# set) is dropped with probability 1/ACK0_DROP_MOD; every later ACK 0 of that transfer (the answer
# to a resent OACK, or the client's own repeat) passes. 2: a transfer so picked loses its second
# ACK 0 too (remembered in a second set), so GRUB, which never repeats one, needs the server's
# second timed resend of the OACK. every: each ACK 0 is dropped with probability 1/ACK0_DROP_MOD,
# whatever the transfer lost before (see docs/pxe-firmware.md for what that share means).
# Counted before the drop; "ack0-dropped" counts the transfers' first drops.
ack0_rules() {
    local ack0="ip daddr $SERVER udp length 12 @th,64,32 0x00040000" tid="ip saddr . udp sport"
    local sets="" rules
    case $ACK0_DROPS in
        1) rules="$ack0 $tid @answered counter accept comment \"ack0-later\"
        $ack0 add @answered { $tid } numgen random mod $ACK0_DROP_MOD == 0 counter drop comment \"ack0-dropped\"" ;;
        2) rules="$ack0 $tid @answered counter accept comment \"ack0-later\"
        $ack0 $tid @hit add @answered { $tid } counter drop comment \"ack0-dropped-again\"
        $ack0 numgen random mod $ACK0_DROP_MOD == 0 add @hit { $tid } counter drop comment \"ack0-dropped\"
        $ack0 add @answered { $tid } counter accept comment \"ack0-first-passed\""
            sets="set hit { type ipv4_addr . inet_service; flags dynamic, timeout; timeout 60s; }" ;;
        every) rules="$ack0 numgen random mod $ACK0_DROP_MOD == 0 counter drop comment \"ack0-dropped\"" ;;
    esac
    cat <<EOF
table bridge pxeack0 {
    set answered { type ipv4_addr . inet_service; flags dynamic, timeout; timeout 60s; }
    $sets
    chain to_server {
        type filter hook input priority 0; policy accept;
        $ack0 counter comment "ack0-all"
        $rules
    }
}
EOF
}

# The bridge's address for a run: (a) plain (no broadcast address), (b) and (c) with `brd +`;
# (c) also loads the loss rules.
configure_run() {
    local run=$1
    in_ns ip addr flush dev "$BR"
    in_ns nft delete table bridge pxeloss 2>/dev/null || true
    in_ns nft delete table bridge pxeack0 2>/dev/null || true
    case $run in
        a) in_ns ip addr add "$SERVER/24" dev "$BR" ;;
        b) in_ns ip addr add "$SERVER/24" brd + dev "$BR" ;;
        c)
            in_ns ip addr add "$SERVER/24" brd + dev "$BR"
            # 2 % of the UDP frames to and from the server, DHCP excepted, in each direction.
            # Counted before the drop, so the log shows the loss actually applied.
            in_ns nft -f - <<EOF
table bridge pxeloss {
    chain to_server {
        type filter hook input priority 0; policy accept;
        ip daddr $SERVER udp dport != { 67, 68 } counter
        ip daddr $SERVER udp dport != { 67, 68 } numgen random mod 50 == 0 counter drop
    }
    chain from_server {
        type filter hook output priority 0; policy accept;
        ip saddr $SERVER udp sport != { 67, 68 } counter
        ip saddr $SERVER udp sport != { 67, 68 } numgen random mod 50 == 0 counter drop
    }
}
EOF
            ;;
        d)
            in_ns ip addr add "$SERVER/24" brd + dev "$BR"
            in_ns nft -f - <<<"$(ack0_rules)"
            ;;
        *) die "unknown run $run" ;;
    esac
    in_ns ip -4 -o addr show dev "$BR" |
        awk '{print "  address: " $4 ($5 == "brd" ? " brd " $6 : " (no broadcast address)")}'
}

# --- 4. Services and guests -------------------------------------------------------------------

start_services() {
    local run=$1 c hosts=()
    # dnsmasq.conf is the example of docs/pxe.md as it stands (tests/docs.rs checks that the two
    # are the same bytes); it names this network's bridge and server address. Each guest is
    # "known" by its own dhcp-host line, and its tag picks its chain's boot file; the file's
    # boot-file choice by client architecture applies only to machines not known.
    grep -qx "interface=$BR" "$HERE/dnsmasq.conf" && grep -q ",,$SERVER\$" "$HERE/dnsmasq.conf" ||
        die "tests/pxe/dnsmasq.conf does not name interface $BR and server $SERVER"
    for c in $CHAINS; do
        hosts+=("--dhcp-host=${MAC[$c]},set:chain-$c,${IP[$c]}")
        hosts+=("--dhcp-boot=tag:chain-$c,${BOOTFILE[$c]},,$SERVER")
    done
    : >"$WORK/dnsmasq.leases"
    spawn "$WORK/dnsmasq-$run.out" dnsmasq --keep-in-foreground --conf-file="$HERE/dnsmasq.conf" \
        --except-interface=lo --dhcp-leasefile="$WORK/dnsmasq.leases" --pid-file="$WORK/dnsmasq.pid" \
        --user=root --group=root --log-facility="$WORK/dnsmasq-$run.log" "${hosts[@]}"
    DNSMASQ_PID=$SPAWNED

    spawn "$WORK/bootstorm-$run.log" "$BIN" --root "$ROOT" --listen "0.0.0.0:69" --log-level info --grace 2
    SERVER_PID=$SPAWNED
    local i
    for ((i = 0; i < 100; i++)); do
        grep -q '^listening on' "$WORK/bootstorm-$run.log" && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^listening on' "$WORK/bootstorm-$run.log" || {
        cat "$WORK/bootstorm-$run.log"
        die "bootstorm did not start"
    }
    kill -0 "$DNSMASQ_PID" 2>/dev/null || { cat "$WORK/dnsmasq-$run.out"; die "dnsmasq did not start"; }

    TCPDUMP_PID=""
    if [ "$run" = b ]; then
        spawn "$WORK/tcpdump-$run.out" tcpdump -i "$BR" -n -s 128 -U -w "$WORK/tftp-$run.pcap" \
            'udp and not port 67 and not port 68'
        TCPDUMP_PID=$SPAWNED
        for ((i = 0; i < 50; i++)); do
            grep -qs 'listening on' "$WORK/tcpdump-$run.out" && break
            sleep 0.1
        done
    fi
}

stop_services() {
    local run=$1
    [ -n "$TCPDUMP_PID" ] && stop_pid "$TCPDUMP_PID"
    stop_pid "$DNSMASQ_PID"
    stop_pid "$SERVER_PID"
    if [ "$run" = c ]; then
        log "run c: loss rules (packets counted, then dropped):"
        in_ns nft list table bridge pxeloss | grep -E 'counter' | sed 's/^[[:space:]]*/    /'
    fi
    if [ "$run" = d ]; then
        local rules
        rules=$(in_ns nft list table bridge pxeack0)
        log "run d: ACK 0 rule (ACK 0s counted, then dropped):"
        grep -E 'counter' <<<"$rules" | sed 's/^[[:space:]]*/    /'
        ACK0_DROPPED=$(awk '/"ack0-dropped"/ {for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}' <<<"$rules")
        ACK0_SEEN=$(awk '/"ack0-all"/ {for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}' <<<"$rules")
    fi
}

start_guest() {
    local run=$1 c=$2 args
    # 256 MiB is plenty for SeaBIOS guests; GRUB 2.06 on OVMF fails "out of memory" loading
    # the kernel with 256 MiB, so the EFI guests get 512 MiB.
    local mem=256M
    [ "${FW[$c]}" = efi ] && mem=512M
    args=(-accel tcg -nographic -monitor none -m "$mem" -smp 1 -no-reboot
        -serial "file:$WORK/serial-$run-$c.log"
        -netdev "tap,id=n0,ifname=tap-$c,script=no,downscript=no")
    if [ "${FW[$c]}" = bios ]; then
        # SeaBIOS; the e1000's option ROM from ipxe-qemu provides PXE.
        args+=(-device "e1000,netdev=n0,mac=${MAC[$c]},bootindex=0")
    else
        # OVMF with its own virtio-net driver and UEFI PXE (romfile= keeps iPXE's EFI ROM out).
        cp "$OVMF_VARS" "$WORK/vars-$run-$c.fd"
        args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
            -drive "if=pflash,format=raw,unit=1,file=$WORK/vars-$run-$c.fd"
            -device "virtio-net-pci,netdev=n0,mac=${MAC[$c]},romfile=,bootindex=0")
    fi
    spawn "$WORK/qemu-$run-$c.out" qemu-system-x86_64 "${args[@]}"
    GUEST_PID[$c]=$SPAWNED
}

# Boots every chain at once and waits (bounded) for each marker.
boot_all() {
    local run=$1 c t0 now elapsed line sum pending i
    declare -gA GUEST_PID=()
    declare -A RESULT=() T=()
    t0=$EPOCHREALTIME
    for c in $CHAINS; do start_guest "$run" "$c"; done
    pending=$CHAINS
    # One pass per half second, at most BOOT_TIMEOUT*2+1 passes.
    for ((i = 0; i <= BOOT_TIMEOUT * 2 && ${#pending} > 0; i++)); do
        sleep 0.5
        now=$EPOCHREALTIME
        elapsed=$(awk -v a="$t0" -v b="$now" 'BEGIN {printf "%.1f", b - a}')
        local still=""
        for c in $pending; do
            # The whole checksum: the serial log may hold half of the line when it is read.
            line=$(grep -a -o -E "BOOTSTORM-MARKER $c [0-9a-f]{64}" "$WORK/serial-$run-$c.log" 2>/dev/null | head -n 1 || true)
            if [ -n "$line" ]; then
                sum=${line##* }
                T[$c]=$elapsed
                if [ "$sum" = "$EXPECT" ]; then RESULT[$c]=ok; else RESULT[$c]="bad checksum $sum"; fi
                log "run $run: $c printed its marker at ${elapsed}s"
            elif ! kill -0 "${GUEST_PID[$c]}" 2>/dev/null; then
                T[$c]=$elapsed
                line=$(grep -a -o "BOOTSTORM-MARKER $c [0-9a-f]*" "$WORK/serial-$run-$c.log" 2>/dev/null | head -n 1 || true)
                if [ -n "$line" ]; then RESULT[$c]="bad checksum ${line##* }"; else RESULT[$c]="guest exited without marker"; fi
            else
                still+="$c "
            fi
        done
        pending=$still
        if [ -n "$pending" ] && [ "${elapsed%.*}" -ge "$NO_TRANSFER_ABORT" ] &&
            ! grep -q 'transfer finished' "$WORK/bootstorm-$run.log"; then
            log "run $run: no TFTP transfer finished in ${NO_TRANSFER_ABORT}s; giving up on: $pending"
            break
        fi
    done
    for c in $pending; do RESULT[$c]="no marker (timeout at ${elapsed}s)"; done
    # Guests that printed their marker power off; give them a moment, then stop the rest.
    for c in $CHAINS; do
        for ((i = 0; i < 20; i++)); do kill -0 "${GUEST_PID[$c]}" 2>/dev/null || break; sleep 0.2; done
        stop_pid "${GUEST_PID[$c]}"
    done

    for c in $CHAINS; do
        if [ "${RESULT[$c]}" = ok ]; then
            PASSED=$((PASSED + 1))
            BOOT_S[$run:$c]=${T[$c]}
            if [ -z "${WORST[$run]:-}" ] || awk -v a="${T[$c]}" -v b="${WORST[$run]}" 'BEGIN {exit !(a > b)}'; then
                WORST[$run]=${T[$c]}
            fi
            printf 'RESULT run=%s chain=%-9s PASS  boot=%6ss  sha256 ok\n' "$run" "$c" "${T[$c]}"
        else
            FAILED=$((FAILED + 1))
            printf 'RESULT run=%s chain=%-9s FAIL  %s\n' "$run" "$c" "${RESULT[$c]}"
            WORST[$run]=fail
            # What the failing guest and the server last said.
            tail -n 5 "$WORK/serial-$run-$c.log" 2>/dev/null | tr -d '\r' |
                sed 's/\x1b\[[0-9;=]*[A-Za-z]//g' | awk '{print "    serial| " $0}' || true
        fi
    done
}

# Server-side view of a run: finished transfers per client and outcome, and the exit counters.
server_summary() {
    local run=$1
    log "run $run: bootstorm transfers per client (outcome: count)"
    awk '/transfer finished/ {
            for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
            sub(/:[0-9]+$/, "", f["client"]); n[f["client"] " " f["outcome"]]++
            if (f["retransmits"] > 0) r[f["client"]] += f["retransmits"]
         }
         END { for (k in n) { split(k, p, " "); printf "    %s %s: %d%s\n", p[1], p[2], n[k], (p[2] == "ok" && r[p[1]] ? "  (retransmits " r[p[1]] ")" : "") } }' \
        "$WORK/bootstorm-$run.log" | sort
    grep -E 'counters|percentile|p50|ignored' "$WORK/bootstorm-$run.log" | sed 's/^/    server| /' | head -n 12 || true
}

# --- 6. What each firmware sent ---------------------------------------------------------------

# From the capture of run (b): each chain's read requests (file and options, in the order
# sent), the ERRORs the firmware sent, and its DATA/ACK counts.
rrq_summary() {
    local pcap=$1 c
    [ -s "$pcap" ] || { log "no capture"; return 0; }
    tcpdump -r "$pcap" -n -T tftp 2>/dev/null >"$WORK/tftp-decoded.txt" || true
    for c in $CHAINS; do
        echo "  chain $c (${IP[$c]}):"
        awk -v ip="${IP[$c]}" -v srv="$SERVER" '
            {
                # "<time> IP <src>.<port> > <dst>.<port>: TFTP, length N, <op> ..."
                src = $3; dst = $5; sub(/\.[0-9]+$/, "", src); sub(/\.[0-9]+:$/, "", dst)
                op = $0; sub(/^.*TFTP, length [0-9]+, /, "", op)
            }
            src == ip && op ~ /^RRQ/ {
                # Files and their options, collapsed: one line per distinct option list.
                split(op, w, " "); file = w[2]; opts = ""
                for (i = 3; i <= length(w); i++) opts = opts " " w[i]
                if (!(opts in first)) { first[opts] = file; order[++n] = opts }
                files[opts] = files[opts] (files[opts] == "" ? "" : ", ") file; cnt[opts]++; rrq++
            }
            # tcpdump names code 8 (RFC 2347) "tftp-err-#8" and prints a stray quote after it.
            src == ip && op ~ /^ERROR/ { gsub(/tftp-err-#/, "", op); gsub(/" "/, "\"", op); errs[op]++ }
            dst == ip && op ~ /^ERROR/ { serrs[op]++ }
            src == ip && op ~ /^ACK/ { acks++ }
            dst == ip && op ~ /^DATA/ { data++ }
            dst == ip && op ~ /^OACK/ { gsub(/tsize [0-9]+/, "tsize <size>", op); oack[op]++ }
            END {
                printf "    %d RRQ, %d DATA received, %d ACK sent\n", rrq, data, acks
                for (k = 1; k <= n; k++) printf "    RRQ%s x%d: %s\n", order[k], cnt[order[k]], files[order[k]]
                for (e in oack) printf "    server answered %s x%d\n", e, oack[e]
                for (e in serrs) printf "    server answered %s x%d\n", e, serrs[e]
                for (e in errs) printf "    client sent %s x%d\n", e, errs[e]
            }' "$WORK/tftp-decoded.txt"
    done
}

# --- main -------------------------------------------------------------------------------------

mkdir -p "$CACHE"
# Work directories of earlier invocations that are no longer running.
for d in "$CACHE"/work-*; do
    [ -d "$d" ] || continue
    kill -0 "${d##*-}" 2>/dev/null || rm -rf "$d"
done
mkdir -p "$WORK"

install_packages
fetch_kernel
fetch_stub
find_server
build_root
if [ -n "${BOOTSTORM_BIN:-}" ]; then
    built="given by BOOTSTORM_BIN"
else
    built="built from $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo '?')"
fi
log "kernel $KERNEL_PKG, server $BIN ($built), chains: $CHAINS"
setup_netns

for run in $RUNS; do
    case $run in
        a) what="bridge address without broadcast (ip addr add $SERVER/24)" ;;
        b) what="bridge address with brd + (lossless; TFTP captured)" ;;
        c) what="brd +, 2% of TFTP frames dropped each way" ;;
        d)
            case $ACK0_DROPS in
                1) what="brd +, lost first ACK: 1 in $ACK0_DROP_MOD transfers loses its first ACK 0" ;;
                2) what="brd +, lost first ACKs: 1 in $ACK0_DROP_MOD transfers loses its first two ACK 0s" ;;
                every) what="brd +, lost ACKs: every ACK 0 dropped with probability 1/$ACK0_DROP_MOD" ;;
            esac
            ;;
        *) die "unknown run $run" ;;
    esac
    log "=== run $run: $what"
    configure_run "$run"
    build_payload "$run"
    log "run $run: payload ${PAYLOAD_MIB} MiB, sha256 $EXPECT; initrd $(stat -c %s "$ROOT/initrd.img") B, uki.efi $(stat -c %s "$ROOT/uki.efi") B"
    start_services "$run"
    boot_all "$run"
    stop_services "$run"
    for pid in $(ip netns pids "$NS" 2>/dev/null); do
        log "BUG: PID $pid still in $NS after run $run; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    done
    server_summary "$run"
    if [ "$run" = b ]; then
        log "run b: what each firmware sent (tcpdump on $BR)"
        rrq_summary "$WORK/tftp-b.pcap" | tee "$WORK/rrq-summary.txt"
    fi
done

# The loss checks: every chain booted under loss, and the slowest of them within 1.5x of the
# slowest lossless boot, for (c) random loss and (d) lost ACK 0s.
for lossy in c d; do
    [[ " $RUNS " == *" b "* && " $RUNS " == *" $lossy "* ]] || continue
    if [ "${WORST[b]:-fail}" = fail ] || [ "${WORST[$lossy]:-fail}" = fail ]; then
        log "loss ratio run $lossy: FAIL not computed (a boot failed in run b or $lossy)"
        FAILED=$((FAILED + 1))
    else
        ratio=$(awk -v c="${WORST[$lossy]}" -v b="${WORST[b]}" 'BEGIN {printf "%.2f", c / b}')
        verdict=FAIL
        awk -v r="$ratio" -v m="$MAX_LOSS_RATIO" 'BEGIN {exit !(r <= m)}' && verdict=PASS
        log "loss ratio run $lossy: $verdict slowest boot ${WORST[$lossy]}s / slowest lossless ${WORST[b]}s = $ratio (max $MAX_LOSS_RATIO)"
        if [ "$verdict" = PASS ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
    fi
done
# Run (d) proves nothing unless it dropped ACK 0s.
if [[ " $RUNS " == *" d "* ]]; then
    if [ "${ACK0_DROPPED:-0}" -gt 0 ] 2>/dev/null; then
        log "run d ACK 0 drops: PASS dropped $ACK0_DROPPED of ${ACK0_SEEN:-?} ACK 0 datagrams"
        PASSED=$((PASSED + 1))
    else
        log "run d ACK 0 drops: FAIL dropped ${ACK0_DROPPED:-none} of ${ACK0_SEEN:-?} ACK 0 datagrams (the check would pass vacuously)"
        FAILED=$((FAILED + 1))
    fi
fi

log "boot times (s):"
printf '  %-10s' chain
for run in $RUNS; do printf ' %8s' "run $run"; done
echo
for c in $CHAINS; do
    printf '  %-10s' "$c"
    for run in $RUNS; do printf ' %8s' "${BOOT_S[$run:$c]:-FAIL}"; done
    echo
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
