//! Scale-out: three bootstorm instances behind one address (the VIP), each set-up put under a
//! boot storm of a thousand PXELINUX clients (a boot loader, one configuration file that is not
//! there, a kernel; every byte compared), on network namespaces (see `scale_out/lab.rs`):
//!
//! 1. **ECMP anycast**: the VIP on every instance, a router with a resilient multipath route to
//!    it. With L3 hashing (`fib_multipath_hash_policy=0`) both port modes boot every client;
//!    with L4 hashing (`=1`) only `--single-port` does: in the default mode the ACKs go to the
//!    transfer's new port, a flow the router hashes anew, mostly to an instance that has no
//!    such transfer, and the transfer times out. That failure is asserted.
//! 2. **A Kubernetes-style Service**: the router DNATs VIP:69 to the instances' own addresses
//!    with nftables: round robin (`numgen inc`), at random (`numgen random`, what kube-proxy's
//!    nftables mode writes) or by client address and port (`jhash`). Each picks an instance
//!    for a new conntrack entry only. `--single-port` boots every client; the default mode
//!    needs the TFTP conntrack helper attached to port 69 (which reverse-translates the replies
//!    from new ports); without it the replies leave with the instance's own address, which the
//!    clients do not take, and the storm fails. That failure is asserted.
//! 3. **Failover and drain**: an instance killed with SIGKILL mid-storm and withdrawn from the
//!    balancer as a health checker would; clients that restart a failed transfer from a new
//!    port (as PXE firmware does) all boot. An instance withdrawn and then sent SIGTERM
//!    finishes its transfers in flight and exits.
//!
//! The clients behave as PXE firmware does: each file from a new UDP port, every answer taken
//! only from the address asked (the client namespace drops and counts the others), and in the
//! failover set-ups a failed transfer started again from a new port.
//!
//! Every set-up prints one row of numbers (makespan, transfers ok and failed, transfers
//! restarted, transfers per instance, datagrams from an address other than the VIP) on
//! standard error: `cargo test --test scale_out -- --nocapture`.
//!
//! Needs root, `ip` and `nft`, and a kernel with network namespaces, nexthop groups, nftables
//! NAT, numgen, jhash and the TFTP conntrack helper. Traffic stays inside the namespaces.

mod common;
#[path = "scale_out/lab.rs"]
mod lab;
#[path = "scale_out/storm.rs"]
mod storm;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lab::{Balancer, INSTANCES, Lab, Pick, Ports};
use storm::{KERNEL, LOADER, Report, Storm};

/// The boot loader's size (pxelinux.0 is about this).
const LOADER_SIZE: usize = 42 * 1024;
/// The kernel's size: small, so that a debug build serves a thousand clients in seconds.
const KERNEL_SIZE: usize = 256 * 1024;

/// A root with the two files, or `None` (after saying why) where the test cannot run.
fn ready() -> Option<tempfile::TempDir> {
    // SAFETY: a plain query of the process's effective user.
    if unsafe { libc::geteuid() } != 0 {
        common::cannot_run("needs root (network namespaces, nftables)");
        return None;
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool).arg("-V").output().is_err() {
            common::cannot_run(&format!("needs {tool}"));
            return None;
        }
    }
    let Some(loadgen) = common::loadgen() else {
        common::cannot_run("the load generator is not built: cargo build -p bootstorm-loadgen");
        return None;
    };
    let help = Command::new(loadgen).args(["run", "--help"]).output().map(|o| o.stdout).unwrap_or_default();
    let help = String::from_utf8_lossy(&help);
    for flag in ["--source-base", "--session-retries", "--reuse-port"] {
        if !help.contains(flag) {
            common::cannot_run(&format!("the load generator has no {flag}"));
            return None;
        }
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join(LOADER), common::bytes(LOADER_SIZE, 11)).unwrap();
    std::fs::write(root.path().join(KERNEL), common::bytes(KERNEL_SIZE, 12)).unwrap();
    Some(root)
}

/// What one set-up measured.
struct Outcome {
    report: Report,
    /// Transfers each instance served, from its own records.
    spread: Vec<usize>,
    /// UDP datagrams that reached the clients from an address other than the VIP (dropped).
    wrong_source: u64,
}

/// Waits until the instances' records stop growing (their last transfers end a little after
/// the clients'; up to 3 s), then reads the spread and the client's counters, and prints the
/// row.
fn measure(lab: &Lab, ports: Ports, report: Report, label: &str) -> Outcome {
    let mut spread = lab.spread();
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        let now = lab.spread();
        if now == spread {
            break;
        }
        spread = now;
    }
    let (from_vip, wrong_source) = lab.client_counters();
    assert!(from_vip > 0 || report.ok() == 0, "no datagram from the VIP reached the clients: {}", report.raw);
    let name = format!("{}{label}", lab.balancer.name());
    eprintln!("{}", storm::row(&name, ports.name(), &report, &spread, wrong_source, &lab.outcomes()));
    Outcome { report, spread, wrong_source }
}

/// Builds a lab, runs `storm`, tears it down.
fn run(balancer: Balancer, ports: Ports, storm: Storm, root: &Path) -> Outcome {
    let lab = Lab::new(balancer, root, ports, 10);
    let report = storm.start(&lab.client, root).finish();
    let label = if storm.reuse_port { ", one port per client" } else { "" };
    measure(&lab, ports, report, label)
}

/// Asserts that every client booted: every transfer ok (every byte compared), every reply from
/// the VIP, and each instance served a fair share.
fn assert_booted(o: &Outcome, storm: Storm, what: &str) {
    let r = &o.report;
    let clients = u64::from(storm.clients);
    assert_eq!(r.failed(), 0, "{what}: transfers failed: {}", r.raw);
    assert_eq!(r.ok(), 2 * clients, "{what}: boot loader and kernel for every client: {}", r.raw);
    assert_eq!(r.count("misses"), clients, "{what}: one configuration miss per client: {}", r.raw);
    assert_eq!(r.count("bytes"), clients * (LOADER_SIZE + KERNEL_SIZE) as u64, "{what}: {}", r.raw);
    assert!(r.status.success(), "{what}: {}", r.raw);
    assert_eq!(o.wrong_source, 0, "{what}: answers from an address other than the VIP");
    for (k, &n) in o.spread.iter().enumerate() {
        assert!(n as u64 >= r.ok() / 6, "{what}: instance {k} served {n} of {} transfers: {:?}", r.ok(), o.spread);
    }
}

/// Prints the table's heading once per test.
fn heading(title: &str) {
    eprintln!("\n{title}\n{}", storm::HEADING);
}

#[test]
fn ecmp_anycast() {
    let Some(root) = ready() else { return };
    let _machine = storm::exclusive();
    heading("ECMP anycast: the VIP on every instance, a resilient nexthop group on the router");
    let storm = Storm::BASE;
    for policy in [0, 1] {
        for ports in [Ports::Single, Ports::PerTransfer] {
            let balancer = Balancer::Anycast { policy };
            let o = run(balancer, ports, storm, root.path());
            let what = format!("{}, {}", balancer.name(), ports.name());
            if policy == 1 && ports == Ports::PerTransfer {
                // The RRQ reaches one instance; the ACKs to its new port are another flow,
                // hashed anew: two times in three to an instance with no such transfer, which
                // answers with ICMP port unreachable (the client waits on) or, when a transfer
                // of its own has that port, ERROR 5. So nearly every session fails.
                let r = &o.report;
                assert!(
                    r.failed() >= u64::from(storm.clients) / 2,
                    "{what}: expected most sessions to fail: {}",
                    r.raw
                );
                let explained =
                    r.failures_with("timeout") + r.failures_with("server error 5") + r.failures_with("ERROR 5 first");
                assert_eq!(explained, r.failed(), "{what}: failures other than timeouts and ERROR 5: {}", r.raw);
                assert_eq!(o.wrong_source, 0, "{what}: every answer still from the VIP");
            } else {
                assert_booted(&o, storm, &what);
            }
        }
    }
    // Clients that send every request from one port (some firmware does): in single-port mode
    // every answer comes from VIP:69, so nothing but the server's care keeps a late packet of a
    // client's previous transfer from being taken for its next request's answer. The server
    // never answers a just-ended transfer's duplicates with ERROR 5 and never resends what a
    // waiting ACK or request has ended; a resend that crossed the final ACK is a block no
    // client takes for a first answer (counted as stale by the load generator). No wrong
    // answer, no restart needed.
    let storm = Storm { reuse_port: true, ..Storm::BASE };
    let o = run(Balancer::Anycast { policy: 0 }, Ports::Single, storm, root.path());
    assert_booted(&o, storm, "one port per client, single-port");
    assert_eq!(o.report.count("wrong_answers"), 0, "{}", o.report.raw);
}

#[test]
fn nftables_service() {
    let Some(root) = ready() else { return };
    let _machine = storm::exclusive();
    heading("A Kubernetes-style Service: the router DNATs VIP:69 to the instances (nftables)");
    let storm = Storm::BASE;
    for pick in [Pick::Numgen, Pick::Random, Pick::Jhash] {
        let o = run(Balancer::Service { pick, helper: false }, Ports::Single, storm, root.path());
        assert_booted(&o, storm, &format!("{pick:?}, single-port"));
        let o = run(Balancer::Service { pick, helper: true }, Ports::PerTransfer, storm, root.path());
        assert_booted(&o, storm, &format!("{pick:?} with the TFTP helper, port per transfer"));
    }
    // Without the helper, the first answer of every transfer comes from the instance's own
    // address and a new port: no conntrack entry maps it back to the VIP. The clients drop it
    // and time out. (The miss is answered from port 69, which is translated, so it passes.)
    let o = run(Balancer::Service { pick: Pick::Numgen, helper: false }, Ports::PerTransfer, storm, root.path());
    let r = &o.report;
    let clients = u64::from(storm.clients);
    assert!(r.failed() * 100 >= clients * 95, "without the helper nearly every session fails: {}", r.raw);
    assert_eq!(r.failures_with("timeout"), r.failed(), "by timeouts: {}", r.raw);
    assert!(
        o.wrong_source >= r.failed(),
        "every failed transfer was answered from the instance's own address: {} datagrams: {}",
        o.wrong_source,
        r.raw
    );
}

/// The storm of the failover and drain set-ups: longer, so that the instance is busy when it
/// goes, with clients that restart a failed transfer from a new port.
const PATIENT: Storm = Storm {
    clients: 1000,
    ramp: 4.0,
    timeout_ms: 500,
    retries: 3,
    session_retries: 4,
    retry_pause_ms: 200,
    reuse_port: false,
};

/// When the instance goes, after the storm's start.
const MID_STORM: Duration = Duration::from_millis(1500);
/// How long a health checker takes to notice a dead instance.
const DETECTION: Duration = Duration::from_millis(300);

#[test]
fn failover_after_kill_9() {
    let Some(root) = ready() else { return };
    let _machine = storm::exclusive();
    heading(
        "Failover: an instance killed with SIGKILL mid-storm, withdrawn 0.3 s later; clients restart failed transfers",
    );
    for (balancer, ports) in [
        (Balancer::Service { pick: Pick::Numgen, helper: false }, Ports::Single),
        (Balancer::Anycast { policy: 1 }, Ports::Single),
        (Balancer::Anycast { policy: 0 }, Ports::PerTransfer),
    ] {
        let what = format!("{}, {}", balancer.name(), ports.name());
        let mut lab = Lab::new(balancer, root.path(), ports, 10);
        let running = PATIENT.start(&lab.client, root.path());
        std::thread::sleep(MID_STORM.saturating_sub(running.elapsed()));
        let dead = INSTANCES - 1;
        lab.instance(dead).kill();
        std::thread::sleep(DETECTION);
        lab.withdraw(dead);
        let report = running.finish();
        let o = measure(&lab, ports, report, ", instance killed");
        let r = &o.report;
        let clients = u64::from(PATIENT.clients);
        assert_eq!(r.failed(), 0, "{what}: every client boots: {}", r.raw);
        assert_eq!(r.ok(), 2 * clients, "{what}: {}", r.raw);
        assert_eq!(r.count("bytes"), clients * (LOADER_SIZE + KERNEL_SIZE) as u64, "{what}: {}", r.raw);
        assert!(r.retried() > 0, "{what}: the kill cut transfers short, which were restarted: {}", r.raw);
        assert_eq!(o.wrong_source, 0, "{what}: every answer from the VIP");
        assert!(o.spread[dead] > 0, "{what}: the killed instance served before it went: {:?}", o.spread);
    }
}

#[test]
fn drain_then_sigterm() {
    let Some(root) = ready() else { return };
    let _machine = storm::exclusive();
    heading("Drain: an instance withdrawn from the Service mid-storm, then sent SIGTERM");
    let balancer = Balancer::Service { pick: Pick::Numgen, helper: false };
    let ports = Ports::Single;
    let mut lab = Lab::new(balancer, root.path(), ports, 10);
    let running = PATIENT.start(&lab.client, root.path());
    std::thread::sleep(MID_STORM.saturating_sub(running.elapsed()));
    let drained = INSTANCES - 1;
    lab.withdraw(drained);
    lab.instance(drained).signal(libc::SIGTERM);
    let status = lab.instance(drained).wait(Duration::from_secs(15));
    let report = running.finish();
    let o = measure(&lab, ports, report, ", instance drained");
    let r = &o.report;
    assert!(status.is_some_and(|s| s.success()), "the drained instance exits 0 within its grace: {status:?}");
    assert_eq!(r.failed(), 0, "every client boots: {}", r.raw);
    assert_eq!(r.ok(), 2 * u64::from(PATIENT.clients), "{}", r.raw);
    // Its transfers in flight at SIGTERM ran to their end: every transfer it finished after
    // `stopping` ended ok. (A later request of a session it served, on the same client port and
    // so the same conntrack entry, is refused with ERROR 0 and restarted from a new port.)
    let records = lab.instance(drained).records();
    let stopping = records.iter().position(|r| r["msg"] == "stopping").expect("a stopping record");
    let after: Vec<_> = records[stopping..].iter().filter(|r| r["msg"] == "transfer finished").collect();
    assert!(!after.is_empty(), "transfers were in flight at SIGTERM: {:?}", records.last());
    for t in &after {
        assert_eq!(t["outcome"], "ok", "a transfer in flight at SIGTERM: {t:?}");
    }
    assert!(records.iter().any(|r| r["msg"] == "stopped"), "it stopped: {:?}", records.last());
    eprintln!("  drained instance: {} transfers finished after SIGTERM, all ok; exit {status:?}", after.len());
}
