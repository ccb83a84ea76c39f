//! Running bootstorm as a service, from outside, with the real binary:
//!
//! - `--user nobody`: the process drops root before serving (`/proc/PID/status` shows the
//!   user's ids and no supplementary groups) and still serves, on both backends;
//! - a root that user cannot read, an unknown user, or `--group` without `--user`: refused at
//!   start with a message that names the user (or the flag);
//! - systemd's `Type=notify`: `READY=1` with a `STATUS=` once serving and `STOPPING=1` on
//!   SIGTERM, on a notify socket the test owns (systemd is not PID 1 here).
//!
//! Needs root (the test command runs as root). Traffic goes only to 127.0.0.1 and ::1.

#[macro_use]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use bootstorm::proto::RequestOptions;
use bootstorm::proto::wire::Mode;
use common::*;

both_backends!(drops_to_the_user_and_still_serves);

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
