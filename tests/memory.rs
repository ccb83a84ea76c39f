//! Memory per held transfer, with the real binary and the load generator: 10,000 clients each
//! hold a read open (one ACK a second, blksize 512, windowsize 1, a 4 KiB file), every one
//! served, none refused, and the server's resident memory (PSS, from `/proc/PID/smaps_rollup`)
//! grows by at most [`BUDGET`] bytes per held transfer over its idle level after a warm-up. Both
//! port modes: a socket per transfer (the default) and `--single-port` ([`BUDGET_SINGLE_PORT`]).
//!
//! The load generator is found beside this test's binary, as `cargo test --workspace` builds
//! it. Traffic goes only to 127.0.0.1 and the 127.1.0.0/16 source addresses of the load
//! generator. `BOOTSTORM_BIN` runs the test against another build (an older one, to see it fail).

mod common;

use std::time::Duration;

/// Bytes of resident memory one held transfer may cost with a socket per transfer (the
/// default), everything the server keeps for it counted: its slot in the table (104, which
/// keeps the socket's descriptor), its share of the one copy of the request that all transfers
/// of the same request hold for their records, the index by client address, the backend's byte
/// of state for the socket, the table of recent transfer IDs (which grows as the transfers end,
/// while the pages of the slots they leave are given back), and the share of 10,000 in what a
/// storm reaches once whatever its size (send slots in flight at once: up to 800 KB, which is
/// most of why one run differs from the next by up to 20 bytes). The goal itself. Measured
/// (debug build, two workers): 108–112; 133–136 with the io_uring backend's 16-byte socket
/// entry and a table of sources kept under pressure (here, with a descriptor per transfer, the
/// open-files limit makes 10,000 half the table); with a 144-byte slot, 12-byte buckets per
/// source, 8-byte entries in the unconfirmed queue and free lists in vectors (555538d), 218.
/// Finer comparisons are `scripts/bench.sh --workloads memory`, side by side.
const BUDGET: u64 = 128;

/// The same in single-port mode (no transfer sockets): the goal itself. Measured: 96–103;
/// 94–104 with a table of sources kept under pressure; 114–123 with it always kept; 555538d,
/// 184.
const BUDGET_SINGLE_PORT: u64 = 128;

/// Transfers held at once.
const HELD: u64 = 10_000;

/// The size of the file each client reads: nine blocks of 512 bytes, one a second.
const FILE_SIZE: usize = 4096;

#[test]
fn a_held_transfer_costs_at_most_the_budget_with_a_socket_per_transfer() {
    held_transfers(&[], BUDGET);
}

#[test]
fn a_held_transfer_costs_at_most_the_budget_in_single_port_mode() {
    held_transfers(&["--single-port"], BUDGET_SINGLE_PORT);
}

/// The process's proportional set size, bytes.
fn pss(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let line = text.lines().find(|l| l.starts_with("Pss:")).expect("Pss in smaps_rollup");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Runs the load generator to its end against the server on `port` with `args` (each client
/// reading the 4 KiB file in blocks of 512, lockstep), checking every byte against `root`.
fn run_loadgen(
    lg: &std::path::Path,
    port: u16,
    root: &std::path::Path,
    args: &[&str],
    tick: impl FnMut(),
) -> serde_json::Value {
    let mut all = vec!["--file", "hold-4k.bin", "--blksize", "512", "--windowsize", "1"];
    all.extend_from_slice(args);
    common::loadgen_report(lg, port, root, &all, tick)
}

/// One storm at a time: two would share the CPUs and the open-files limit.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn held_transfers(extra: &[&str], budget: u64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lg) = common::loadgen() else {
        common::cannot_run("the load generator is not built: cargo build -p bootstorm-loadgen");
        return;
    };
    // The server's transfer sockets and the load generator's client sockets, and some room.
    let nofile = common::raise_nofile();
    if nofile < HELD + 1000 {
        common::cannot_run(&format!("the open-files limit is {nofile}: {} needed", HELD + 1000));
        return;
    }
    let root = common::scratch();
    std::fs::write(root.path().join("hold-4k.bin"), common::bytes(FILE_SIZE, 3)).unwrap();
    let mut args = vec!["--workers", "2"];
    args.extend_from_slice(extra);
    let s = common::Quiet::start(root.path(), &args);
    let pid = s.child.id();

    // Warm-up: the file opened and mapped, the first transfers' tables grown.
    let warm = ["--clients", "50", "--source-ips", "50", "--transfers", "200"];
    let r = run_loadgen(&lg, s.port, root.path(), &warm, || {});
    assert_eq!(r["transfers_failed"].as_u64(), Some(0), "warm-up: {r}");
    std::thread::sleep(Duration::from_millis(500));
    let idle = pss(pid);

    let held = HELD.to_string();
    let storm = ["--storm", &held, "--ramp", "2", "--hold", "1000", "--client-timeout", "5000", "--source-ips", &held];
    let mut peak = idle;
    let r = run_loadgen(&lg, s.port, root.path(), &storm, || peak = peak.max(pss(pid)));
    assert_eq!(r["transfers_ok"].as_u64(), Some(HELD), "every client served, none refused: {r}");
    assert_eq!(r["transfers_failed"].as_u64(), Some(0), "{r}");
    assert_eq!(r["bytes"].as_u64(), Some(HELD * FILE_SIZE as u64), "every byte verified: {r}");
    assert_eq!(r["wrong_answers"].as_u64(), Some(0), "{r}");

    let per = (peak - idle) / HELD;
    println!("{extra:?}: idle {idle} B, peak {peak} B: {per} B per held transfer (budget {budget})");
    assert!(per <= budget, "{per} bytes per held transfer (idle {idle}, peak {peak}): over the budget of {budget}");
}
