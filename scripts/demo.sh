#!/usr/bin/env bash
# Builds bootstorm and serves a sample PXE root on 127.0.0.1:6969 and [::1]:6969 until Ctrl-C.
# Extra arguments go to bootstorm (for example: --io epoll, --single-port, --workers 1).
set -euo pipefail
cd "$(dirname "$0")/.."

root=target/sample-root
mkdir -p "$root/pxelinux.cfg" "$root/boot/grub"
[ -f "$root/vmlinuz" ] || head -c 8M /dev/urandom >"$root/vmlinuz"
[ -f "$root/initrd.img" ] || head -c 32M /dev/urandom >"$root/initrd.img"
[ -f "$root/pxelinux.0" ] || head -c 42K /dev/urandom >"$root/pxelinux.0"
printf 'DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n  APPEND initrd=initrd.img\n' >"$root/pxelinux.cfg/default"
printf 'set timeout=1\nmenuentry linux { linux /vmlinuz; initrd /initrd.img }\n' >"$root/boot/grub/grub.cfg"

cargo build --release --quiet
echo "serving $root; try: curl -o /tmp/vmlinuz tftp://127.0.0.1:6969/vmlinuz" >&2
exec target/release/bootstorm --root "$root" -l 127.0.0.1:6969 -l '[::1]:6969' "$@"
