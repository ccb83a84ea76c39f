//! Running bootstorm as a service, from outside, with the real binary:
//!
//! - `--user nobody`: the process drops root before serving (`/proc/PID/status` shows the
//!   user's ids and no supplementary groups) and still serves, on both backends;
//! - a root that user cannot read, an unknown user, or `--group` without `--user`: refused at
//!   start with a message that names the user (or the flag);
//! - systemd's `Type=notify`: `READY=1` with a `STATUS=` once serving and `STOPPING=1` on
//!   SIGTERM, on a notify socket the test owns (systemd is not PID 1 here);
//! - socket activation: sockets passed by `systemd-socket-activate --datagram` (or by a shell
//!   that sets `LISTEN_PID`) served from, shared by the workers or joined with `SO_REUSEPORT`,
//!   and those bootstorm cannot serve from refused with what to change;
//! - no root at all: `nobody` with only `CAP_NET_BIND_SERVICE` binds a port below 1024;
//! - the units in `dist/` pass `systemd-analyze verify`, with the security score the docs give.
//!
//! Needs root (the test command runs as root). Traffic goes only to 127.0.0.1 and ::1.

#[macro_use]
mod common;

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bootstorm::proto::RequestOptions;
use bootstorm::proto::wire::Mode;
use common::*;

both_backends!(drops_to_the_user_and_still_serves, activated_by_the_first_request_and_served_from_the_passed_sockets);

/// The uid and gid of `nobody` here, and whether the tests can switch users at all.
fn nobody() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        cannot_run("needs root");
        return None;
    }
    let id = bootstorm::sys::privilege::Identity::lookup("nobody", None).expect("the user nobody");
    Some((id.uid, id.gid))
}

/// A sample root every user may read (a temporary directory is 0700).
fn readable_root() -> Root {
    let root = Root::new();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

/// The `Name:` line of `/proc/PID/status`, its fields after the name.
fn status_line(pid: i32, name: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap_or_else(|| panic!("no {name}"));
    line[name.len() + 1..].split_whitespace().map(str::to_string).collect()
}

fn drops_to_the_user_and_still_serves(io: &str) {
    let Some((uid, gid)) = nobody() else { return };
    let root = readable_root();
    let s = Server::start(root.path(), io, &["--user", "nobody"]);
    // Real, effective, saved and file-system ids, in the main thread and in every worker.
    let mut pids = vec![s.pid().to_string()];
    for t in std::fs::read_dir(format!("/proc/{}/task", s.pid())).unwrap() {
        pids.push(format!("{}/task/{}", s.pid(), t.unwrap().file_name().to_string_lossy()));
    }
    for p in &pids {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap();
            line[name.len() + 1..].split_whitespace().map(str::to_string).collect::<Vec<_>>()
        };
        assert_eq!(field("Uid"), vec![uid.to_string(); 4], "{p}");
        assert_eq!(field("Gid"), vec![gid.to_string(); 4], "{p}");
        assert!(field("Groups").is_empty(), "{p}: supplementary groups left: {:?}", field("Groups"));
    }
    assert_eq!(status_line(s.pid(), "CapEff"), vec!["0000000000000000"]);
    // Serving goes on: a transfer on each address, from a fresh transfer port.
    for addr in [s.v4, s.v6] {
        let got = Raw::new(addr).fetch("big.bin", Mode::Octet, RequestOptions::default()).unwrap();
        assert_eq!(got, root.file("big.bin"));
    }
    // The real tftp-hpa client too.
    let dir = scratch();
    let out = dir.path().join("vmlinuz");
    let (ok, log) = run(
        Command::new("tftp")
            .args(["127.0.0.1", &s.v4.port().to_string(), "-m", "binary", "-c", "get", "vmlinuz"])
            .arg(&out),
        Duration::from_secs(20),
    );
    assert!(ok, "tftp failed: {log}");
    assert_eq!(std::fs::read(&out).unwrap(), root.file("vmlinuz"));
    assert!(s.wait_log("dropped privileges", Duration::from_secs(1)), "{}", s.log());
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
}

/// Runs the binary with `args` to its exit (or kills it after 10 s); its exit code and output.
fn exit_of(args: &[&str]) -> (Option<i32>, String) {
    run_code(
        Command::new(bin()).args(["-l", "127.0.0.1:0", "--workers", "1", "--no-pin", "--io", "epoll"]).args(args),
        Duration::from_secs(10),
    )
}

#[test]
fn a_root_the_user_cannot_read_is_refused_at_start() {
    if nobody().is_none() {
        return;
    }
    let root = Root::new();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, out) = exit_of(&["--root", root.path().to_str().unwrap(), "--user", "nobody"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("user nobody cannot read --root"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(!out.contains("listening on"), "served before refusing: {out}");
}

#[test]
fn an_upload_directory_the_user_cannot_write_is_refused_at_start() {
    if nobody().is_none() {
        return;
    }
    let root = readable_root();
    let uploads = scratch();
    std::fs::set_permissions(uploads.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out) = exit_of(&[
        "--root",
        root.path().to_str().unwrap(),
        "--allow-write",
        "--create",
        "--upload-dir",
        uploads.path().to_str().unwrap(),
        "--user",
        "nobody",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("user nobody cannot write to the upload directory"), "{out}");
}

#[test]
fn unknown_users_and_groups_are_refused_by_name() {
    let root = readable_root();
    let r = root.path().to_str().unwrap();
    let (code, out) = exit_of(&["--root", r, "--user", "no-such-user-bootstorm"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--user no-such-user-bootstorm: no such user"), "{out}");
    let (code, out) = exit_of(&["--root", r, "--user", "nobody", "--group", "no-such-group-bootstorm"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--group no-such-group-bootstorm: no such group"), "{out}");
    let (code, out) = exit_of(&["--root", r, "--group", "nogroup"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--user"), "{out}");
}

/// The next datagram on the notify socket, as text.
fn notified(sock: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn systemd_is_told_ready_with_a_status_then_stopping() {
    let dir = scratch();
    let path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut cmd = Command::new(bin());
    cmd.env("NOTIFY_SOCKET", &path);
    let root = Root::new();
    let s = Server::start_with(cmd, root.path(), "auto", &[]);
    let ready = notified(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let status = ready.lines().find_map(|l| l.strip_prefix("STATUS=")).expect("a STATUS line");
    assert!(status.contains(&s.v4.to_string()) && status.contains("0 transfers in progress"), "{status}");
    // Ready means serving.
    assert_eq!(
        Raw::new(s.v4).fetch("small.bin", Mode::Octet, RequestOptions::default()).unwrap(),
        root.file("small.bin")
    );
    s.signal(libc::SIGTERM);
    let stopping = notified(&sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
}

#[test]
fn without_a_notify_socket_nothing_is_sent_and_nothing_fails() {
    let root = Root::new();
    let mut cmd = Command::new(bin());
    cmd.env_remove("NOTIFY_SOCKET");
    let s = Server::start_with(cmd, root.path(), "epoll", &[]);
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
    assert!(!log.contains("cannot notify"), "{log}");
}

// ---- Socket activation and running without root -------------------------------------------

/// Whether `tool` can be run here; says why not otherwise.
fn have(tool: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    if !found {
        cannot_run(&format!("needs {tool}"));
    }
    found
}

/// A UDP port free on both 127.0.0.1 and ::1.
fn free_port() -> u16 {
    (0..100)
        .find_map(|_| {
            let v4 = UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = v4.local_addr().ok()?.port();
            UdpSocket::bind(("::1", port)).ok().map(|_| port)
        })
        .expect("a free port")
}

/// The inodes of the UDP sockets bound to `port`, IPv4 and IPv6, from `/proc/net/udp*`.
fn sockets_on(port: u16) -> Vec<u64> {
    let hex = format!(":{port:04X}");
    let mut out = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        for line in std::fs::read_to_string(table).unwrap().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[1].ends_with(&hex) {
                out.push(f[9].parse().unwrap());
            }
        }
    }
    out.sort_unstable();
    out
}

/// The inode of the socket at descriptor `fd` of process `pid`.
fn socket_inode(pid: i32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// bootstorm under a launcher that passes it sockets (`systemd-socket-activate`, or a shell that
/// sets `LISTEN_PID`), with a notify socket the test owns; output to a log file.
struct Activated {
    child: std::process::Child,
    log: std::path::PathBuf,
    notify: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Activated {
    /// `launcher` (the command and its arguments before bootstorm), then bootstorm with `args`.
    fn spawn(mut launcher: Command, args: &[&str]) -> Self {
        let dir = scratch();
        let (log, path) = (dir.path().join("log"), dir.path().join("notify"));
        let notify = UnixDatagram::bind(&path).unwrap();
        // The service may run as another user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = launcher
            .arg(bin())
            .args(["--no-pin", "--log-level", "debug", "--grace", "2"])
            .args(args)
            .env("NOTIFY_SOCKET", &path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn the launcher");
        Self { child, log, notify, _dir: dir }
    }

    /// `systemd-socket-activate` binding `listen` (datagram sockets, or stream ones).
    fn systemd(listen: &[SocketAddr], datagram: bool, args: &[&str]) -> Self {
        let mut cmd = Command::new("systemd-socket-activate");
        // It passes on only the variables -E names.
        cmd.args(datagram.then_some("--datagram")).args(["-E", "NOTIFY_SOCKET"]);
        for a in listen {
            cmd.arg(format!("--listen={a}"));
        }
        let me = Self::spawn(cmd, args);
        me.wait_log_count("Listening on ", listen.len());
        me
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log_count(&self, needle: &str, count: usize) {
        let end = Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() < count {
            assert!(Instant::now() < end, "no {count} × {needle:?}: {}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The next notification, as text.
    fn notified(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.notify.recv(&mut buf).unwrap_or_else(|e| panic!("no notification ({e}): {}", self.log()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Waits up to 10 s for the exit; its code and the log.
    fn exit(mut self) -> (Option<i32>, String) {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code(), self.log());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (None, self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM: `STOPPING=1` is told, and the exit is clean.
    fn stop(self) -> String {
        // SAFETY: sends a signal to our own child process, by its PID.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        // READY=1 may still be unread.
        let stopping = (0..3).map(|_| self.notified()).find(|n| n.lines().any(|l| l == "STOPPING=1"));
        assert!(stopping.is_some(), "no STOPPING=1: {}", self.log());
        let (code, log) = self.exit();
        assert_eq!(code, Some(0), "{log}");
        log
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn activated_by_the_first_request_and_served_from_the_passed_sockets(io: &str) {
    if !have("systemd-socket-activate") {
        return;
    }
    let root = Root::new();
    let port = free_port();
    let (v4, v6): (SocketAddr, SocketAddr) = (([127, 0, 0, 1], port).into(), (Ipv6Addr::LOCALHOST, port).into());
    let r = root.path().to_str().unwrap();
    let s = Activated::systemd(&[v4, v6], true, &["--root", r, "--io", io, "--workers", "2"]);
    // The launcher starts bootstorm on the first datagram, which waits in the passed socket.
    let got = Raw::new(v4).fetch("big.bin", Mode::Octet, RequestOptions::default());
    assert_eq!(got.unwrap_or_else(|e| panic!("{e:?}: {}", s.log())), root.file("big.bin"));
    let ready = s.notified();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let status = ready.lines().find_map(|l| l.strip_prefix("STATUS=")).expect("a STATUS line");
    assert!(status.contains(&v4.to_string()) && status.contains(&v6.to_string()), "{status}");
    // It serves from the passed sockets (descriptors 3 and 4), the only ones on the port: the
    // two workers share them, as they cannot join sockets without SO_REUSEPORT.
    let passed: Vec<u64> = [3, 4].iter().filter_map(|&fd| socket_inode(s.pid(), fd)).collect();
    let mut sorted = passed.clone();
    sorted.sort_unstable();
    assert_eq!(sockets_on(port), sorted, "sockets on the port besides the passed ones: {}", s.log());
    assert!(s.log().contains("passed by the service manager, shared by the workers"), "{}", s.log());
    // IPv6 through the real tftp-hpa client; then, idle a while, IPv4 once more.
    let dir = scratch();
    let out = dir.path().join("vmlinuz");
    let (ok, log) = run(
        Command::new("tftp").args(["::1", &port.to_string(), "-m", "binary", "-c", "get", "vmlinuz"]).arg(&out),
        Duration::from_secs(20),
    );
    assert!(ok, "tftp failed: {log}: {}", s.log());
    assert_eq!(std::fs::read(&out).unwrap(), root.file("vmlinuz"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        Raw::new(v4).fetch("small.bin", Mode::Octet, RequestOptions::default()).unwrap(),
        root.file("small.bin")
    );
    let log = s.stop();
    assert_eq!(counter(&log, "ok"), 3, "{log}");
}

#[test]
fn single_port_serves_from_the_passed_socket_and_refuses_to_share_it() {
    if !have("systemd-socket-activate") {
        return;
    }
    let root = Root::new();
    let r = root.path().to_str().unwrap();
    let port = free_port();
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = Activated::systemd(&[v4], true, &["--root", r, "--workers", "1", "--single-port"]);
    let c = Raw::new(v4);
    c.rrq("small.bin", &[]);
    let (first, from) = c.expect(Duration::from_secs(10));
    assert_eq!(from, v4, "the transfer runs on the passed socket's port");
    assert_eq!(data_of(&first).0, 1);
    assert!(s.notified().lines().any(|l| l == "READY=1"));
    assert_eq!(sockets_on(port).len(), 1, "{}", s.log());
    s.stop();

    // With two workers, the passed socket (no SO_REUSEPORT) cannot give each its own.
    let s = Activated::systemd(&[v4], true, &["--root", r, "--workers", "2", "--single-port"]);
    Raw::new(v4).rrq("small.bin", &[]);
    let (code, log) = s.exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("--single-port with 2 workers") && log.contains("ReusePort=yes"), "{log}");
}

/// A launcher passing `socket` as descriptor 3 (`LISTEN_FDS=1`, `LISTEN_PID` the shell's own
/// PID, which bootstorm keeps through `exec`), then running `prefix` (a `setpriv`, say).
fn pass_socket(socket: &socket2::Socket, prefix: &[&str]) -> Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = socket.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$@\"", "sh"]).args(prefix);
    // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe, on a
    // descriptor the parent keeps open; descriptor 3 of the child is replaced, nothing else.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) != 3 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd
}

/// A UDP socket on 127.0.0.1 and a free port, with `SO_REUSEPORT` (`ReusePort=yes`).
fn reuse_port_socket() -> (socket2::Socket, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (s, addr)
}

#[test]
fn a_passed_reuse_port_socket_is_joined_by_each_worker_of_the_same_user() {
    let Some(_) = nobody() else { return };
    let root = readable_root();
    let r = root.path().to_str().unwrap();
    // Same user: worker 1 binds its own socket into the passed socket's group, so --single-port
    // works with two workers.
    let (sock, addr) = reuse_port_socket();
    let s = Activated::spawn(pass_socket(&sock, &[]), &["--root", r, "--workers", "2", "--single-port"]);
    assert!(s.notified().lines().any(|l| l == "READY=1"), "{}", s.log());
    assert_eq!(sockets_on(addr.port()).len(), 2, "the passed socket and worker 1's: {}", s.log());
    for _ in 0..4 {
        let got = Raw::new(addr).fetch("small.bin", Mode::Octet, RequestOptions::default());
        assert_eq!(got.unwrap_or_else(|e| panic!("{e:?}: {}", s.log())), root.file("small.bin"));
    }
    assert!(s.log().contains("joined by each worker's own socket"), "{}", s.log());
    s.stop();
    drop(sock);

    // The passed socket belongs to root and the service runs as nobody (a .socket unit with
    // User= in the service): the kernel lets no other user's socket join, so the workers share
    // the passed socket; --single-port with two workers is refused.
    let nobody_ = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"];
    let (sock, addr) = reuse_port_socket();
    let s = Activated::spawn(pass_socket(&sock, &nobody_), &["--root", r, "--workers", "2"]);
    assert!(s.notified().lines().any(|l| l == "READY=1"), "{}", s.log());
    assert_eq!(sockets_on(addr.port()).len(), 1, "{}", s.log());
    let got = Raw::new(addr).fetch("vmlinuz", Mode::Octet, RequestOptions::default());
    assert_eq!(got.unwrap_or_else(|e| panic!("{e:?}: {}", s.log())), root.file("vmlinuz"));
    assert!(s.log().contains("shared by the workers"), "{}", s.log());
    s.stop();
    let s = Activated::spawn(pass_socket(&sock, &nobody_), &["--root", r, "--workers", "2", "--single-port"]);
    let (code, log) = s.exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("--single-port with 2 workers") && log.contains("belongs to another user"), "{log}");
}

#[test]
fn passed_sockets_bootstorm_cannot_serve_from_are_refused_by_what_to_change() {
    if !have("systemd-socket-activate") {
        return;
    }
    let root = Root::new();
    let r = root.path().to_str().unwrap();
    let port = free_port();
    let (v4, any6): (SocketAddr, SocketAddr) = (([127, 0, 0, 1], port).into(), (Ipv6Addr::UNSPECIFIED, port).into());
    // A stream socket (ListenStream=), started by a connection.
    let s = Activated::systemd(&[v4], false, &["--root", r]);
    let _conn = std::net::TcpStream::connect(v4).unwrap();
    let (code, log) = s.exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("descriptor 3 passed by the service manager is a stream socket"), "{log}");
    // An IPv6 wildcard socket that also takes IPv4 (ListenDatagram=69 without BindIPv6Only=).
    let s = Activated::systemd(&[any6], true, &["--root", r]);
    Raw::new((Ipv6Addr::LOCALHOST, port).into()).rrq("small.bin", &[]);
    let (code, log) = s.exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("also receives IPv4") && log.contains("BindIPv6Only=ipv6-only"), "{log}");
    // A --listen that is not where the passed sockets are.
    let other = format!("127.0.0.1:{}", free_port());
    let s = Activated::systemd(&[v4], true, &["--root", r, "--listen", &other]);
    Raw::new(v4).rrq("small.bin", &[]);
    let (code, log) = s.exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&format!("passed sockets on {v4}")) && log.contains("leave --listen out"), "{log}");
    // The same address named explicitly is accepted.
    let s = Activated::systemd(&[v4], true, &["--root", r, "--listen", &v4.to_string()]);
    assert_eq!(
        Raw::new(v4).fetch("small.bin", Mode::Octet, RequestOptions::default()).unwrap(),
        root.file("small.bin")
    );
    s.stop();
}

#[test]
fn runs_without_root_with_only_cap_net_bind_service() {
    if nobody().is_none() || !have("setpriv") {
        return;
    }
    let root = readable_root();
    // A privileged port free here (69 itself where nothing holds it).
    let port = [69u16].into_iter().chain(600..1000).find(|&p| UdpSocket::bind(("127.0.0.1", p)).is_ok()).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let args = ["--root", root.path().to_str().unwrap(), "--listen", &listen, "--workers", "2"];
    let user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"];
    let mut with_cap = Command::new(user[0]);
    with_cap.args(&user[1..]).args(["--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service"]);
    let s = Activated::spawn(with_cap, &args);
    assert!(s.notified().lines().any(|l| l == "READY=1"), "{}", s.log());
    let (uid, gid) = nobody().unwrap();
    assert_eq!(status_line(s.pid(), "Uid"), vec![uid.to_string(); 4]);
    assert_eq!(status_line(s.pid(), "Gid"), vec![gid.to_string(); 4]);
    assert_eq!(status_line(s.pid(), "CapEff"), vec![format!("{:016x}", 1u64 << 10 /* CAP_NET_BIND_SERVICE */)]);
    let addr: SocketAddr = listen.parse().unwrap();
    assert_eq!(Raw::new(addr).fetch("big.bin", Mode::Octet, RequestOptions::default()).unwrap(), root.file("big.bin"));
    s.stop();

    // The same user without the capability cannot take the port.
    let mut without = Command::new(user[0]);
    without.args(&user[1..]).args(["--inh-caps=-all", "--ambient-caps=-all"]);
    let (code, log) = Activated::spawn(without, &args).exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&format!("port {port} needs root or CAP_NET_BIND_SERVICE")), "{log}");
}

#[test]
fn the_shipped_units_verify_and_their_security_score_is_the_documented_one() {
    if !have("systemd-analyze") {
        return;
    }
    let dir = scratch();
    let dist = concat!(env!("CARGO_MANIFEST_DIR"), "/dist");
    let service = std::fs::read_to_string(format!("{dist}/bootstorm.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/bootstorm "), "{service}");
    assert!(service.contains("ExecReload=/bin/kill -HUP $MAINPID"), "{service}");
    // verify checks that the command exists: the one built here stands in for /usr/bin's.
    std::fs::write(dir.path().join("bootstorm.service"), service.replace("/usr/bin/bootstorm", bin())).unwrap();
    std::fs::copy(format!("{dist}/bootstorm.socket"), dir.path().join("bootstorm.socket")).unwrap();
    let (code, out) = run_code(
        Command::new("systemd-analyze")
            .arg("verify")
            .current_dir(dir.path())
            .args(["bootstorm.socket", "bootstorm.service"]),
        Duration::from_secs(30),
    );
    assert_eq!((code, out.trim()), (Some(0), ""), "systemd-analyze verify");
    let (code, out) = run_code(
        Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(dir.path().join("bootstorm.service")),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(0), "{out}");
    let score = out.split("Overall exposure level for bootstorm.service: ").nth(1).expect(&out);
    let score: String = score.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    assert!(docs.contains(&format!("rates it **{score}**")), "docs/operations.md should give the score {score}");
}
