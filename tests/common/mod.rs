//! Test harness: the real `bootstorm` binary on loopback, a packet-level client, and the real
//! TFTP clients the test command installs.

#![allow(dead_code, unreachable_pub)]

pub mod netns;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bootstorm::proto::wire::{self, Mode, Packet, RequestKind};
use bootstorm::proto::{ClientConfig, ClientOutcome, ClientTransmit, ReadClient, RequestOptions, Timestamp};

/// Generates one test per backend from `fn name(io: &str)`.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_uring {
            $( #[test] fn $name() { super::$name("uring") } )*
        }
        mod on_epoll {
            $( #[test] fn $name() { super::$name("epoll") } )*
        }
    };
}

/// Files every test root holds.
pub struct Root {
    pub dir: tempfile::TempDir,
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The netascii sample: LF, CR LF, a bare CR, a CR at the very end.
pub const TEXT: &[u8] = b"line1\nline2\rbare\r\nend\r";

impl Root {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("small.bin"), bytes(3000, 1)).unwrap();
        std::fs::write(p.join("big.bin"), bytes(3_000_000, 2)).unwrap();
        std::fs::write(p.join("exact1024.bin"), bytes(1024, 3)).unwrap();
        std::fs::write(p.join("empty.bin"), b"").unwrap();
        std::fs::write(p.join("text.txt"), TEXT).unwrap();
        std::fs::create_dir_all(p.join("boot/grub")).unwrap();
        std::fs::write(p.join("boot/grub/grub.cfg"), b"set timeout=1\n").unwrap();
        std::fs::write(p.join("vmlinuz"), bytes(100_000, 4)).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path().join(name)).unwrap()
    }

    pub fn write(&self, name: &str, data: &[u8]) {
        std::fs::write(self.path().join(name), data).unwrap();
    }
}

/// A spawned process's standard output, line by line, read on a thread of its own to the end
/// (also once nobody listens any more: a server must never write into a pipe without a
/// reader). `child` must have been spawned with its standard output piped.
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("standard output piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// How a wait for a server's listen addresses ended without them.
#[derive(Debug)]
pub enum NotListening {
    /// The process exited first.
    Exited(ExitStatus),
    /// Nothing within the time allowed.
    TimedOut,
}

/// The addresses of the first `count` `listening on` lines `child` prints (see
/// [`stdout_lines`]), waiting at most `limit`.
pub fn listening(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
    count: usize,
    limit: Duration,
) -> Result<Vec<SocketAddr>, NotListening> {
    let end = Instant::now() + limit;
    let mut addrs = Vec::new();
    while addrs.len() < count {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(20)) {
            if let Some(a) = line.strip_prefix("listening on ") {
                addrs.push(a.parse().expect("an address after `listening on`"));
            }
            continue;
        }
        if let Some(status) = child.try_wait().expect("wait for the server") {
            return Err(NotListening::Exited(status));
        }
        if Instant::now() > end {
            return Err(NotListening::TimedOut);
        }
    }
    Ok(addrs)
}

/// A running server process, stopped by PID.
pub struct Server {
    child: Option<Child>,
    pub v4: SocketAddr,
    pub v6: SocketAddr,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bootstorm")
}

impl Server {
    /// Starts the server on 127.0.0.1 and ::1 (ports chosen by the kernel) with `io` and `extra`.
    pub fn start(root: &Path, io: &str, extra: &[&str]) -> Self {
        Self::start_with(Command::new(bin()), root, io, extra)
    }

    /// Like [`start`](Self::start) with a prepared command (for `pre_exec` hooks).
    pub fn start_with(mut cmd: Command, root: &Path, io: &str, extra: &[&str]) -> Self {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("stderr.log");
        cmd.args(["--root", root.to_str().unwrap(), "-l", "127.0.0.1:0", "-l", "[::1]:0", "--io", io])
            .args(["--workers", "2", "--log-level", "debug", "--grace", "5"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("spawn bootstorm");
        let lines = stdout_lines(&mut child);
        let addrs = match listening(&mut child, &lines, 2, Duration::from_secs(10)) {
            Ok(addrs) => addrs,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not start ({e:?}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        Self { child: Some(child), v4: addrs[0], v6: addrs[1], log, _logdir: logdir }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (up to `timeout`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sends a signal to our own child process, by its PID.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGTERM, then waits for the exit; returns the status and the whole log.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, self.log());
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("server did not stop: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A packet-level client on one UDP socket.
pub struct Raw {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl Raw {
    pub fn new(server: SocketAddr) -> Self {
        let bind = if server.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" };
        let sock = UdpSocket::bind(bind).unwrap();
        Self { sock, server }
    }

    /// A client bound to `bind` (another loopback address, say).
    pub fn from(bind: &str, server: SocketAddr) -> Self {
        Self { sock: UdpSocket::bind(bind).unwrap(), server }
    }

    pub fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.sock.send_to(bytes, to).unwrap();
    }

    pub fn request(&self, kind: RequestKind, name: &str, mode: Mode, opts: &[(&str, &str)]) -> Vec<u8> {
        let mut buf = [0u8; 1024];
        let n = wire::encode_request(
            kind,
            name.as_bytes(),
            mode,
            opts.iter().map(|(a, b)| (a.as_bytes(), b.as_bytes())),
            &mut buf,
        )
        .unwrap();
        self.send(self.server, &buf[..n]);
        buf[..n].to_vec()
    }

    pub fn rrq(&self, name: &str, opts: &[(&str, &str)]) -> Vec<u8> {
        self.request(RequestKind::Read, name, Mode::Octet, opts)
    }

    pub fn ack(&self, to: SocketAddr, block: u16) {
        self.send(to, &wire::ack(block));
    }

    /// The next datagram, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 70_000];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                buf.truncate(n);
                Some((buf, from))
            }
            Err(_) => None,
        }
    }

    /// Receives and decodes; panics on silence.
    pub fn expect(&self, timeout: Duration) -> (Vec<u8>, SocketAddr) {
        self.recv(timeout).expect("no answer from the server")
    }

    /// Downloads `name` with the shared client state machine; returns the bytes, or the error code
    /// and message the server sent.
    pub fn fetch(&self, name: &str, mode: Mode, options: RequestOptions) -> Result<Vec<u8>, (u16, String)> {
        let cfg = ClientConfig { timeout: Duration::from_millis(500), max_retries: 10 };
        let origin = Instant::now();
        let now = || Timestamp::from_micros(origin.elapsed().as_micros() as u64);
        let mut c = ReadClient::new(now(), options);
        let mut tid: Option<SocketAddr> = None;
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            while let Some(t) = c.poll_transmit(now(), &cfg) {
                match t {
                    ClientTransmit::Request => {
                        let n = c.encode_request(name.as_bytes(), mode, &mut buf).unwrap();
                        self.send(self.server, &buf[..n]);
                    }
                    ClientTransmit::Ack(b) => self.ack(tid.unwrap(), b),
                    ClientTransmit::Error { code, message } => {
                        let n = wire::encode_error(code, message.as_bytes(), &mut buf).unwrap();
                        self.send(tid.unwrap(), &buf[..n]);
                    }
                }
            }
            match c.outcome() {
                Some(ClientOutcome::Complete) => return Ok(out),
                Some(ClientOutcome::ServerError(_)) => unreachable!("handled on receipt"),
                Some(o) => panic!("download of {name} failed: {o:?}"),
                None => {}
            }
            let wait = c.poll_timeout().map_or(Duration::from_secs(1), |t| t.saturating_since(now()));
            match self.recv(wait.max(Duration::from_millis(1))) {
                None => c.handle_timeout(now(), &cfg),
                Some((pkt, from)) => {
                    let tid = *tid.get_or_insert(from);
                    if from != tid {
                        continue;
                    }
                    let p = Packet::decode(&pkt).expect("server sent garbage");
                    if let Packet::Error { code, message } = p {
                        return Err((code.0, String::from_utf8_lossy(message).into()));
                    }
                    if let Some((off, data)) = c.handle_packet(now(), &p, &cfg) {
                        assert_eq!(off as usize, out.len(), "in order");
                        out.extend_from_slice(data);
                    }
                }
            }
        }
    }
}

pub fn error_of(p: &[u8]) -> (u16, String) {
    match Packet::decode(p).unwrap() {
        Packet::Error { code, message } => (code.0, String::from_utf8_lossy(message).into()),
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

pub fn data_of(p: &[u8]) -> (u16, Vec<u8>) {
    match Packet::decode(p).unwrap() {
        Packet::Data { block, data } => (block, data.to_vec()),
        other => panic!("expected DATA, got {other:?}"),
    }
}

/// Runs a real client command with a time limit; returns its exit code and combined output.
pub fn run_code(cmd: &mut Command, limit: Duration) -> (Option<i32>, String) {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e} (the test command installs tftp-hpa, atftp, curl and busybox)")
        });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    (status.and_then(|s| s.code()), out)
}

/// Runs a real client command with a time limit; returns whether it succeeded and its output.
pub fn run(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let (code, out) = run_code(cmd, limit);
    (code == Some(0), out)
}

/// Counter `name` in the exit report: the last `counters` record (totals over the workers).
pub fn counter(log: &str, name: &str) -> u64 {
    let key = format!(" {name}=");
    log.lines()
        .rfind(|l| l.contains(" msg=counters "))
        .and_then(|l| l.split(&key).nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The load generator built beside this test binary (target/<profile>/loadgen).
pub fn loadgen() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("loadgen");
    p.is_file().then_some(p)
}

/// The server under test for the storm tests: `BOOTSTORM_BIN` (another build, to see a test
/// fail on it), or the one built with the tests.
pub fn server_bin() -> String {
    std::env::var("BOOTSTORM_BIN").unwrap_or_else(|_| bin().to_string())
}

/// Raises the soft limit on open files to the hard limit (the server and the load generator
/// inherit it): the default mode holds a socket per transfer, the load generator one per
/// client. Returns the limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill and then read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// A server ([`server_bin`]) on 127.0.0.1 logging warnings only, as a storm needs (a record per
/// transfer at `debug` would be thousands of lines a second); killed when dropped.
pub struct Quiet {
    pub child: Child,
    pub port: u16,
}

impl Quiet {
    /// Starts it on a kernel-chosen port with `extra`.
    pub fn start(root: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(server_bin())
            .args(["--root", root.to_str().unwrap(), "-l", "127.0.0.1:0"])
            .args(["--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bootstorm");
        let lines = stdout_lines(&mut child);
        let port = match listening(&mut child, &lines, 1, Duration::from_secs(10)) {
            Ok(addrs) => addrs[0].port(),
            Err(e) => {
                let _ = child.kill();
                panic!("the server did not start: {e:?}");
            }
        };
        Self { child, port }
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load generator `lg` to its end against the server on `port` with `args`, every
/// byte checked against `root`, calling `tick` every 100 ms meanwhile; its JSON report. Fails
/// after 120 s.
pub fn loadgen_report(lg: &Path, port: u16, root: &Path, args: &[&str], mut tick: impl FnMut()) -> serde_json::Value {
    let server = format!("127.0.0.1:{port}");
    let mut child = Command::new(lg)
        .args(["run", "--server", &server, "--verify", root.to_str().unwrap(), "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the load generator did not end within 120 s");
        }
        tick();
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "loadgen failed: {out} {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("loadgen's report: {e}: {out}"))
}

/// A scratch directory for client downloads.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A test that cannot run here: on a developer's machine it says so and passes; under CI
/// (`CI` set, as `.ci/run` is run), where `scripts/test.sh` installs every tool, it fails.
pub fn cannot_run(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "cannot run under CI: {why}");
    println!("skipped: {why}");
}
