#!/usr/bin/env bash
# Runs the tests of the unsafe code that works on memory alone under Miri, which reports
# undefined behaviour (use after free, out-of-bounds or misaligned access, reads of
# uninitialised memory, aliasing violations) that the tests themselves cannot see:
#   sys::pages           the zeroed page-mapped arrays and the pages they give back
#   server::engine::table the transfer slots (a transfer in a MaybeUninit, taken out once)
#   server::engine::record what a transfer keeps of its request (a packed allocation with the
#                        file version's Rc as a raw pointer)
#   server::engine::peer the client address (an IPv6 address boxed behind a tagged word)
#   server::engine::tids the recent clients' ports (a page-mapped table)
#   net, sys::cmsg       socket addresses and control messages built and read as bytes
# Code whose unsafe blocks are system calls (sockets, io_uring, epoll, file mappings) cannot run
# under Miri and is covered by the integration tests instead. Three tests of safe code with
# thousands of entries are skipped: under Miri each would take many minutes.
#
# Needs the nightly toolchain with the miri and rust-src components (installed here if missing,
# which needs the network). Not part of scripts/test.sh: the toolchain and Miri's own standard
# library take longer to fetch and build than the test command can spare.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal --component miri,rust-src
fi
# peer.rs and record.rs keep a pointer in an integer word (exposed provenance): checked, not
# warned about.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-permissive-provenance}"
cargo +nightly miri test --lib -- \
    sys::pages server::engine::table server::engine::record server::engine::peer \
    server::engine::tids net:: sys::cmsg::tests::pktinfo sys::cmsg::tests::messages \
    --skip the_peer_index_finds_every_slot --skip a_storm_of_clients_keeps_its_entries \
    --skip the_table_doubles_for_recent_clients
