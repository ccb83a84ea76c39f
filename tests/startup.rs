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
//! - start-up traps from tftpd-hpa and dnsmasq habits: `--timeout 500000` (tftpd-hpa's `-T` is
//!   in microseconds) refused with the unit and the hint; the default listen falling back to
//!   IPv4 on a host without IPv6; a specific listen address not configured yet (IP_FREEBIND);
//!   the descriptor-limit warning; a start-up error printed once, its cause once.
//!
//! Traffic goes only to 127.0.0.1, ::1 and the namespaces this file creates.
//!
//! `BOOTSTORM_BIN` runs the tests written for issue 15 against another build of the binary (an
//! older one, to see them fail there).

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
    /// It printed a "listening on" line (and was then killed); its standard error until then.
    Served(String, String),
}

/// The binary under test: `BOOTSTORM_BIN` when set (to run these tests against another build),
/// else this build's.
fn bin_under_test() -> String {
    std::env::var("BOOTSTORM_BIN").unwrap_or_else(|_| bin().to_string())
}

/// Runs bootstorm with `args` (and `--root` a fresh sample root unless `args` has one); returns
/// whether it exited or started serving.
fn start(args: &[&str]) -> Start {
    start_cmd(Command::new(bin()), args)
}

/// [`start`] with a prepared command: the binary, or a wrapper (`ip netns exec`, `prlimit`)
/// whose last argument is the binary.
fn start_cmd(mut cmd: Command, args: &[&str]) -> Start {
    let root = Root::new();
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
                return Start::Served(line, err.join().unwrap_or_default());
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
    cmd_refused(Command::new(bin()), args, needles)
}

/// Asserts that bootstorm with `args` starts serving.
fn serves(args: &[&str]) {
    match start(args) {
        Start::Served(..) => {}
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

/// Asserts that `cmd` with `args` refuses to start, with every one of `needles` in its standard
/// error; returns that.
fn cmd_refused(cmd: Command, args: &[&str], needles: &[&str]) -> String {
    match start_cmd(cmd, args) {
        Start::Served(line, _) => panic!("bootstorm {args:?} started ({line}) instead of refusing"),
        Start::Exited(code, err) => {
            assert!(code.is_some_and(|c| c != 0), "bootstorm {args:?} exited with {code:?}: {err}");
            for n in needles {
                assert!(err.contains(n), "bootstorm {args:?}: the refusal does not say {n:?}: {err}");
            }
            err
        }
    }
}

/// Asserts that `cmd` with `args` starts serving; returns its first "listening on" line and its
/// standard error until then.
fn cmd_serves(cmd: Command, args: &[&str]) -> (String, String) {
    match start_cmd(cmd, args) {
        Start::Served(line, err) => (line, err),
        Start::Exited(code, err) => panic!("bootstorm {args:?} refused to start ({code:?}): {err}"),
    }
}

#[test]
fn tftpd_hpa_microsecond_timeouts_are_refused() {
    let err = cmd_refused(
        Command::new(bin_under_test()),
        &["--timeout", "500000", "-l", "127.0.0.1:0"],
        &[
            "--timeout 500000 is in seconds and above 60 s",
            "did you mean --timeout 0.5? tftpd-hpa's -T is in microseconds",
        ],
    );
    assert_eq!(err.matches("did you mean").count(), 1, "once: {err}");
    cmd_refused(Command::new(bin_under_test()), &["--timeout", "900", "-l", "127.0.0.1:0"], &["above 60 s", "-t"]);
    cmd_serves(Command::new(bin_under_test()), &["--timeout", "0.5", "-l", "127.0.0.1:0"]);
}

#[test]
fn a_start_up_error_is_printed_once_with_its_cause_once() {
    let missing = "/nonexistent/bootstorm-issue15/tftpp";
    let err = cmd_refused(
        Command::new(bin_under_test()),
        &["--root", missing, "-l", "127.0.0.1:0"],
        &[&format!("cannot open root {missing}"), "No such file or directory"],
    );
    assert_eq!(err.matches("cannot open root").count(), 1, "the error once: {err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "its cause once: {err}");
    // A port someone else holds: the hint, once.
    let h = holder("127.0.0.1:0", false);
    let port = port_of(&h);
    let err = cmd_refused(
        Command::new(bin_under_test()),
        &["-l", &format!("127.0.0.1:{port}")],
        &[&format!("(see `ss -ulpn 'sport = :{port}'`)")],
    );
    assert_eq!(err.matches("ss -ulpn").count(), 1, "the hint once: {err}");
}

#[test]
fn a_low_descriptor_limit_is_warned_about() {
    // 256 descriptors cannot hold 65,536 transfers (one socket each): the start says so, with
    // what is needed, and serves all the same.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=256", &bin_under_test()]);
    let (_, log) = cmd_serves(cmd, &["-l", "127.0.0.1:0"]);
    assert!(log.contains("the descriptor limit is below what --max-transfers needs over the workers"), "{log}");
    assert!(log.contains("descriptors=256") && log.contains("needed="), "{log}");
    assert!(log.contains("max_transfers=65536"), "the server total: {log}");
    // With enough descriptors for the transfers asked for: no warning.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=4096", &bin_under_test()]);
    let (_, log) = cmd_serves(cmd, &["-l", "127.0.0.1:0", "--max-transfers", "1000"]);
    assert!(!log.contains("descriptor limit"), "{log}");
}

#[test]
fn the_default_listen_falls_back_to_ipv4_without_ipv6() {
    // A host booted with ipv6.disable=1 has no IPv6 sockets: socket(AF_INET6) fails with
    // EAFNOSUPPORT. A seccomp filter gives the server exactly that (the sysctl
    // net.ipv6.conf.all.disable_ipv6=1 cannot: it removes the addresses, yet [::]:69 still
    // binds); the namespace gives it a port 69 of its own.
    let ns = Netns::new("bsv6off-");
    let wrapped = || {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, &bin_under_test()]);
        no_ipv6_sockets(&mut cmd);
        cmd
    };
    let (line, log) = cmd_serves(wrapped(), &[]);
    assert_eq!(line, "listening on 0.0.0.0:69", "{log}");
    assert!(log.contains("IPv6 is unavailable on this host: listening on IPv4 only"), "{log}");
    assert!(log.contains("level=warn msg=\"IPv6 is unavailable"), "a warning: {log}");
    // An IPv6 address asked for is never dropped.
    cmd_refused(wrapped(), &["-l", ":69"], &["cannot listen on [::]:69", "Address family not supported"]);
    cmd_refused(wrapped(), &["-l", "[::1]:69", "-l", "127.0.0.1:69"], &["cannot listen on [::1]:69"]);
}

/// Makes every `socket(AF_INET6, …)` of the command's process (and what it executes) fail with
/// `EAFNOSUPPORT`, as on a kernel booted with `ipv6.disable=1`: a seccomp filter installed
/// between fork and exec.
fn no_ipv6_sockets(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // seccomp_data: nr at 0, arch at 4, args[0] at 16 (its low half, little-endian).
    let filter = [
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 0, 5, AUDIT_ARCH),
        op(LD_W_ABS, 0, 0, 0),
        op(JEQ_K, 0, 3, libc::SYS_socket as u32),
        op(LD_W_ABS, 0, 0, 16),
        op(JEQ_K, 0, 1, libc::AF_INET6 as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: between fork and exec only prctl runs, which is async-signal-safe; the filter is
    // moved into the closure and lives while the kernel copies it.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn a_listen_address_not_up_yet_is_served_once_configured() {
    // Addresses of the namespace's loopback, added only after the server started.
    let ns = Netns::new("bsfreebind-");
    let root = Root::new();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, &bin_under_test()]);
    let s = Server::start_with(cmd, root.path(), "epoll", &["-l", "198.18.5.1:69", "-l", "[2001:db8::5]:69"]);
    ns.ip("addr add 198.18.5.1/32 dev lo");
    ns.ip("addr add 2001:db8::5/128 dev lo nodad");
    for (server, bind) in [("198.18.5.1:69", "198.18.5.1:0"), ("[2001:db8::5]:69", "[2001:db8::5]:0")] {
        let server: SocketAddr = server.parse().unwrap();
        let got = ns.run(|| Raw::from(bind, server).fetch("small.bin", wire::Mode::Octet, Default::default()));
        assert_eq!(got.expect("served once the address is up"), root.file("small.bin"), "{server}");
    }
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
    let help = Command::new(bin_under_test()).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("IP_FREEBIND"), "--help says so");
}

#[test]
fn an_unprivileged_start_says_what_is_missing() {
    // As nobody (no capabilities), in a namespace where ports below 1024 are privileged.
    let ns = Netns::new("bsnobody-");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=1024"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let nobody = || {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]);
        cmd.arg(bin_under_test());
        cmd
    };
    // The root is readable by nobody; the flag says so.
    let whole = ["--root", "/", "--serve-whole-filesystem"];
    let err = cmd_refused(
        nobody(),
        &[&whole[..], &["-l", "127.0.0.1:69"]].concat(),
        &["cannot listen on 127.0.0.1:69: port 69 needs root or CAP_NET_BIND_SERVICE", "Permission denied"],
    );
    assert_eq!(err.matches("Permission denied").count(), 1, "{err}");
    // A receive buffer above net.core.rmem_max, without CAP_NET_ADMIN to force it.
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap().trim().parse().unwrap();
    let asked = (rmem_max * 2).to_string();
    let (_, log) = cmd_serves(nobody(), &[&whole[..], &["-l", "127.0.0.1:0", "--recv-buffer", &asked]].concat());
    assert!(log.contains("the kernel granted a smaller receive buffer than --recv-buffer"), "{log}");
    assert!(log.contains(&format!("asked={asked} granted={rmem_max}")), "{log}");
}
