//! What the real `bootstorm` binary does at start and with its transfer ports, from outside:
//!
//! - operator mistakes refused with a clear message and a non-zero exit: `--root /` without
//!   `--serve-whole-filesystem`, an unknown `--log-level`, `--single-port` with `--port-range`,
//!   `--allow-write-from` outside `--allow`, a `--listen` address given twice;
//! - a listening address and port that anyone else already holds refused, whether that socket
//!   has `SO_REUSEPORT` or not, whether it or bootstorm is on the wildcard address, and a second
//!   bootstorm on the same port refused while the first keeps serving;
//! - transfer ports drawn at random from `--port-range`, so one transfer of an attacker's own
//!   does not tell the next one's port;
//! - the per-source limit counting an IPv6 /64 as one source, in a network namespace with many
//!   addresses of one /64 (2001:db8::/64, inside the namespace only; needs root, which the test
//!   command has).
//!
//! Traffic goes only to 127.0.0.1, ::1 and the namespace this file creates.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bootstorm::proto::wire::{self, Packet};
use common::netns::Netns;
use common::*;
use socket2::{Domain, Protocol, Socket, Type};

both_backends!(transfer_ports_are_random_within_the_range, ipv6_sources_are_counted_per_64);

/// How long a refused start may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// What became of one start of the binary.
#[derive(Debug)]
enum Start {
    /// It exited with this code and standard error.
    Exited(Option<i32>, String),
    /// It printed a "listening on" line (and was then killed).
    Served(String),
}

/// Runs bootstorm with `args` (and `--root` a fresh sample root unless `args` has one); returns
/// whether it exited or started serving.
fn start(args: &[&str]) -> Start {
    let root = Root::new();
    let mut cmd = Command::new(bin());
    if !args.contains(&"--root") {
        cmd.args(["--root", root.path().to_str().unwrap()]);
    }
    cmd.args(["--io", "epoll", "--workers", "1", "--no-pin"]).args(args);
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn bootstorm");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + EXIT_WAIT;
    loop {
        if let Ok(line) = rx.try_recv() {
            if line.starts_with("listening on") {
                // SAFETY: signals our own child, by its PID.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
                return Start::Served(line);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            return Start::Exited(st.code(), err.join().unwrap_or_default());
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bootstorm {args:?} neither served nor exited within {EXIT_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that bootstorm with `args` exits non-zero, with every one of `needles` in its
/// standard error; returns that.
fn refused(args: &[&str], needles: &[&str]) -> String {
    match start(args) {
        Start::Served(line) => panic!("bootstorm {args:?} started ({line}) instead of refusing"),
        Start::Exited(code, err) => {
            assert!(code.is_some_and(|c| c != 0), "bootstorm {args:?} exited with {code:?}: {err}");
            for n in needles {
                assert!(err.contains(n), "bootstorm {args:?}: the refusal does not say {n:?}: {err}");
            }
            err
        }
    }
}

/// Asserts that bootstorm with `args` starts serving.
fn serves(args: &[&str]) {
    match start(args) {
        Start::Served(_) => {}
        Start::Exited(code, err) => panic!("bootstorm {args:?} refused to start ({code:?}): {err}"),
    }
}

#[test]
fn filesystem_root_needs_its_own_flag() {
    for root in ["/", "//", "/.", "/tmp/..", "/./usr/../"] {
        let err = refused(&["--root", root, "-l", "127.0.0.1:0"], &["--serve-whole-filesystem"]);
        assert!(err.contains("whole file system"), "{err}");
    }
    serves(&["--root", "/", "--serve-whole-filesystem", "-l", "127.0.0.1:0"]);
    let help = Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--serve-whole-filesystem"), "--help names the flag: {help}");
    assert!(help.contains("--root /"), "--help says --root / is refused: {help}");
}

#[test]
fn unknown_log_levels_are_refused() {
    for bad in ["warning", "bogus", "", "info,bootstorm=trace"] {
        refused(&["--log-level", bad, "-l", "127.0.0.1:0"], &["--log-level", "error, warn, info, debug, trace"]);
    }
    for good in ["error", "warn", "info", "debug", "trace", "WARN", "Debug"] {
        serves(&["--log-level", good, "-l", "127.0.0.1:0"]);
    }
}

#[test]
fn single_port_with_port_range_is_refused() {
    for args in [
        &["--single-port", "--port-range", "30000:30010", "-l", "127.0.0.1:0"][..],
        &["--port-range", "30000:30010", "--single-port", "-l", "127.0.0.1:0"],
    ] {
        refused(args, &["--single-port", "--port-range"]);
    }
}

#[test]
fn upload_networks_outside_allow_are_refused() {
    let up = tempfile::tempdir().unwrap();
    let up = up.path().to_str().unwrap();
    let base = ["-l", "127.0.0.1:0", "--allow-write", "--create", "--upload-dir", up];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    for (allow, from) in [
        ("10.0.0.0/8", "192.168.0.0/16"),
        ("10.0.0.0/8", "10.0.0.0/7"),
        ("127.0.0.0/8", "::1"),
        ("fd00::/8", "fe80::/10"),
    ] {
        let args = with(&["--allow", allow, "--allow-write-from", from]);
        refused(&args, &["--allow-write-from", from, "--allow"]);
    }
    // Inside one of the --allow networks: accepted.
    serves(&with(&["--allow", "10.0.0.0/8", "--allow", "127.0.0.0/8", "--allow-write-from", "127.0.0.1"]));
    serves(&with(&["--allow", "fd00::/8", "--allow-write-from", "fd12:3456::/32", "--allow-write-from", "fd00::/8"]));
    // Without --allow every network is served.
    serves(&with(&["--allow-write-from", "192.168.0.0/16"]));
}

#[test]
fn duplicate_listen_addresses_are_refused() {
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    drop(holder);
    let a = format!("127.0.0.1:{port}");
    refused(&["-l", &a, "-l", "[::1]:0", "-l", &a], &["--listen", &a, "twice"]);
    let b = format!("[::1]:{port}");
    refused(&["-l", &b, "-l", &b], &["--listen", &b, "twice"]);
}

/// A UDP socket bound to `addr`, with `SO_REUSEPORT` when `reuse_port`, IPv6-only for IPv6.
fn holder(addr: &str, reuse_port: bool) -> Socket {
    holder_v6only(addr, reuse_port, true)
}

/// [`holder`], for IPv6 also taking IPv4 unless `v6only`.
fn holder_v6only(addr: &str, reuse_port: bool, v6only: bool) -> Socket {
    let addr: SocketAddr = addr.parse().unwrap();
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_port(reuse_port).unwrap();
    if addr.is_ipv6() {
        s.set_only_v6(v6only).unwrap();
    }
    s.bind(&addr.into()).unwrap();
    s
}

fn port_of(s: &Socket) -> u16 {
    s.local_addr().unwrap().as_socket().unwrap().port()
}

/// The refusal names the address and says how to find who holds it.
fn refused_in_use(listen: &str) {
    let port = listen.rsplit(':').next().unwrap();
    refused(&["-l", listen], &[listen, "already", &format!("ss -ulpn 'sport = :{port}'")]);
}

#[test]
fn a_port_held_by_another_socket_is_refused() {
    for reuse_port in [true, false] {
        // The same address.
        let h = holder("127.0.0.1:0", reuse_port);
        refused_in_use(&format!("127.0.0.1:{}", port_of(&h)));
        let h = holder("[::1]:0", reuse_port);
        refused_in_use(&format!("[::1]:{}", port_of(&h)));
        // The wildcard held, a specific address asked for, and the other way round.
        let h = holder("0.0.0.0:0", reuse_port);
        refused_in_use(&format!("127.0.0.1:{}", port_of(&h)));
        let h = holder("127.0.0.1:0", reuse_port);
        refused_in_use(&format!("0.0.0.0:{}", port_of(&h)));
        let h = holder("[::]:0", reuse_port);
        refused_in_use(&format!("[::1]:{}", port_of(&h)));
        let h = holder("[::1]:0", reuse_port);
        refused_in_use(&format!("[::]:{}", port_of(&h)));
        // An IPv6 wildcard socket that also takes IPv4 holds the IPv4 port too.
        let h = holder_v6only("[::]:0", reuse_port, false);
        refused_in_use(&format!("127.0.0.1:{}", port_of(&h)));
        refused_in_use(&format!("0.0.0.0:{}", port_of(&h)));
    }
}

#[test]
fn own_overlapping_addresses_still_start() {
    // The wildcard and a specific address of one port, both bootstorm's own: not a conflict.
    let h = holder("127.0.0.1:0", false);
    let port = port_of(&h);
    drop(h);
    serves(&["-l", &format!("0.0.0.0:{port}"), "-l", &format!("127.0.0.1:{port}")]);
    // An IPv4 socket on a port is no conflict for an IPv6-only one on the same port.
    let h = holder("0.0.0.0:0", true);
    serves(&["-l", &format!("[::1]:{}", port_of(&h))]);
}

#[test]
fn a_second_server_on_the_same_port_is_refused() {
    let root = Root::new();
    let first = Server::start(root.path(), "epoll", &[]);
    for a in [first.v4, first.v6] {
        refused_in_use(&a.to_string());
    }
    // The first one still serves every request.
    for a in [first.v4, first.v6] {
        let c = Raw::new(a);
        let got = c.fetch("small.bin", wire::Mode::Octet, Default::default()).expect("the first server serves");
        assert_eq!(got, root.file("small.bin"));
    }
    let (st, log) = first.stop();
    assert!(st.success(), "{log}");
}

/// A range of `len` ports for `--port-range`, below the kernel's ephemeral ports, chosen by
/// this process's id so that concurrent runs rarely share one (ports in use are skipped).
fn some_range(len: u16) -> (u16, u16) {
    let lo = 10_000 + (std::process::id() % 20) as u16 * 1000;
    (lo, lo + len - 1)
}

fn transfer_ports_are_random_within_the_range(io: &str) {
    let root = Root::new();
    let (lo, hi) = some_range(1000);
    let range = format!("{lo}:{hi}");
    // One worker, whose transfers are the ones an attacker's own requests would reveal.
    let s = Server::start(root.path(), io, &["--port-range", &range, "--workers", "1"]);
    let mut ports = Vec::new();
    for _ in 0..20 {
        // A new client port each time: a request repeated from one port, arriving before the
        // ACK that ends the previous transfer, would be taken for a duplicate of it.
        let c = Raw::new(s.v4);
        c.rrq("empty.bin", &[]);
        let (p, from) = c.expect(Duration::from_secs(5));
        assert_eq!(data_of(&p), (1, Vec::new()));
        assert!((lo..=hi).contains(&from.port()), "transfer port {} outside {range}", from.port());
        c.ack(from, 1);
        ports.push(from.port());
    }
    let sequential = ports.windows(2).filter(|w| w[1] == w[0].wrapping_add(1)).count();
    assert!(sequential < 4, "{sequential} of 19 transfer ports were the previous one + 1: {ports:?}");
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
    assert_eq!(counter(&log, "ok"), 20, "{log}");
}

fn ipv6_sources_are_counted_per_64(io: &str) {
    let ns = Netns::new(&format!("bsstart-{io}-"));
    ns.ip("addr add 2001:db8::1/64 dev lo nodad");
    let sources: Vec<String> = (0x10..0x18).map(|i| format!("2001:db8::{i:x}")).collect();
    for a in &sources {
        ns.ip(&format!("addr add {a}/64 dev lo nodad"));
    }
    // Another /64, with an address of the same interface identifier.
    ns.ip("addr add 2001:db8:0:1::10/64 dev lo nodad");
    let root = Root::new();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, bin()]);
    // A burst of 3 and about one token a minute, one worker: a source gets 3 transfers.
    let limit = ["--rate-limit-always", "--rate-per-source", "0.02", "--burst-per-source", "3", "--workers", "1"];
    let s = Server::start_with(cmd, root.path(), io, &[&["-l", "[2001:db8::1]:69"][..], &limit].concat());
    let server: SocketAddr = "[2001:db8::1]:69".parse().unwrap();
    let answered = |from: &str| -> bool {
        let c = Raw::from(&format!("[{from}]:0"), server);
        c.rrq("empty.bin", &[]);
        match c.recv(Duration::from_millis(800)) {
            Some((p, tid)) => {
                assert!(matches!(Packet::decode(&p), Ok(Packet::Data { block: 1, .. })), "{p:?}");
                c.ack(tid, 1);
                true
            }
            None => false,
        }
    };
    let (one_64, other_64) = ns.run(|| {
        let one: Vec<bool> = sources.iter().map(|a| answered(a)).collect();
        (one, answered("2001:db8:0:1::10"))
    });
    let served = one_64.iter().filter(|&&b| b).count();
    assert_eq!(served, 3, "8 addresses of one /64 share one bucket of 3: {one_64:?} ({sources:?})");
    assert!(other_64, "another /64 has its own bucket");
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
    assert_eq!(counter(&log, "rate_limited"), 5, "{log}");
}
