#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the real TFTP clients the integration tests
# drive (tftp-hpa, atftp, curl, busybox) and what the PXE boot test needs (qemu, OVMF, iPXE ROMs,
# PXELINUX, GRUB, dnsmasq, nftables, tcpdump), promtool (prometheus), kea-dhcp4 (the PXE guide's
# Kea configuration is checked with it), lintian and cargo-deb (the Debian package is built and
# checked), kubernetes-validate (the Kubernetes manifests), setcap (libcap2-bin), libwrap0 (the real tftpd-hpa, unpacked from its package for the remap differential
# test, links it), then checks formatting and lints and runs every test: codec, state machines, lossy-link simulation, engine, the real binary on both I/O
# backends, and real boot firmware booting Linux from the server (tests/pxe/run.sh).
# Run as root (network namespaces); CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=0
for c in tftp atftp curl busybox qemu-system-x86_64 grub-mknetdir cpio dnsmasq nft tcpdump ethtool objcopy promtool kea-dhcp4 lintian setcap; do
    command -v "$c" >/dev/null 2>&1 || missing=1
done
for f in /usr/share/OVMF/OVMF_CODE_4M.fd /usr/lib/ipxe/qemu/pxe-e1000.rom /usr/lib/PXELINUX/pxelinux.0 \
    /usr/lib/syslinux/modules/bios/ldlinux.c32 /usr/lib/grub/i386-pc/pxeboot.img /usr/lib/grub/x86_64-efi/efinet.mod; do
    [ -e "$f" ] || missing=1
done
# The PXE test packs busybox into its guest's initrd: it must be the static build.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing=1
dpkg-query -W -f='${Status}' libwrap0 2>/dev/null | grep -q 'ok installed' || missing=1
if [ "$missing" = 1 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    # busybox-static, not busybox (the two conflict; the tests only need the busybox command).
    # dnsmasq-base is the dnsmasq binary without the system DNS service the dnsmasq package starts.
    $sudo apt-get install -y -qq tftp-hpa atftp curl busybox-static qemu-system-x86 ovmf ipxe-qemu \
        pxelinux syslinux-common grub-pc-bin grub-efi-amd64-bin cpio dnsmasq-base nftables tcpdump \
        ethtool binutils file prometheus kea-dhcp4-server lintian libwrap0 libcap2-bin python3-pip >/dev/null
    # Installing Kea enables its DHCP service where systemd runs: the tests only need its binary.
    if [ -d /run/systemd/system ]; then $sudo systemctl disable --now kea-dhcp4-server >/dev/null 2>&1 || true; fi
fi
# tests/package.rs builds the Debian package with cargo-deb (about 2 minutes to build, once).
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --version 3.8.0 --locked --quiet
# tests/deploy.rs checks the Kubernetes manifests against the Kubernetes schemas, offline, with
# kubernetes-validate (it carries the schemas). Debian's python3 is externally managed: the
# package goes beside the system's own.
python3 -c 'import kubernetes_validate' 2>/dev/null ||
    python3 -m pip install --quiet --root-user-action=ignore --break-system-packages kubernetes-validate==1.37.0

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

# Real firmware (iPXE, PXELINUX, GRUB BIOS and EFI, OVMF's UEFI PXE) boots Linux from the server
# in a private network namespace, three ways (no broadcast address, brd +, 2 % loss); ~6 min.
tests/pxe/run.sh

# Fuzz the decoder and the transfer state machines for a bounded time (installs cargo-fuzz).
scripts/fuzz.sh 20
