#!/usr/bin/env bash
# Builds the Debian package: the server in /usr/bin, dist/bootstorm.service and .socket in
# /usr/lib/systemd/system, /etc/bootstorm/bootstorm.toml (a conffile), the man page generated
# by `bootstorm manpage`, and dist/debian/'s maintainer scripts (the tftp user, /srv/tftp).
# Prints the path of the .deb on standard output; everything else goes to standard error.
#
#   scripts/deb.sh                       release build (what to ship; ~3 min from scratch)
#   scripts/deb.sh --profile dev         the debug build, packaged the same way (tests)
#   scripts/deb.sh --no-build            packages the binary already built for the profile
#
# Installs cargo-deb (pinned, ~2 min to build) when it is missing. The packaging itself is the
# `[package.metadata.deb]` section of Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "usage: $0 [--profile release|dev] [--no-build]" >&2; exit 2 ;;
    esac
done

cargo_deb_version=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb $cargo_deb_version" >&2
    cargo install cargo-deb --version "$cargo_deb_version" --locked --quiet >&2
fi

if [ "$build" = 1 ]; then
    cargo build --profile "$profile" --bin bootstorm >&2
fi

# Where cargo put the binary: CARGO_TARGET_DIR or a configured target-dir included.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
case "$profile" in
    dev) out="$target_dir/debug" ;;
    *) out="$target_dir/$profile" ;;
esac
bin="$out/bootstorm"
[ -x "$bin" ] || { echo "$bin is missing: build it first, or drop --no-build" >&2; exit 1; }

# The man page, from the command line's own definition. Cargo.toml names it as
# target/release/man/bootstorm.8.gz; cargo-deb maps that onto the profile's directory.
mkdir -p "$out/man"
"$bin" manpage >"$out/man/bootstorm.8"
gzip -9nf "$out/man/bootstorm.8"

# --strip: the release profile keeps line tables (debug = 1) for profiling, the package does
# not need them. cargo-deb warns that the dev profile is meant for tests only, which is its use.
deb=$(cargo deb --no-build --strip --profile "$profile" -p bootstorm | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb did not name a package: $deb" >&2; exit 1; }
echo "$deb"
