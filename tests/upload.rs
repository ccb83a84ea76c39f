//! Uploads (WRQ) against the real binary on both backends: real clients pushing files, every
//! refusal with its exact ERROR code and the file system afterwards, an upload abandoned halfway,
//! a disk that fills up, and two uploads racing for one name.

#[macro_use]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootstorm::proto::wire::{self, Mode, Packet, RequestKind};
use common::*;

const SEC: Duration = Duration::from_secs(1);

both_backends!(
    real_clients_push_files,
    refusals_leave_the_file_system_alone,
    abandoned_upload_leaves_nothing,
    full_disk_is_error_3_and_cleans_up,
    racing_uploads_leave_exactly_one,
    blind_upload_single_port,
    the_largest_block_granted_fits_in_single_port_mode,
    blind_upload_default_mode_finds_the_transfer_gone,
    uploads_stay_out_of_the_served_tree,
    overwriting_served_files_needs_its_own_flag,
    upload_is_invisible_until_committed,
    long_names_upload,
    killed_mid_upload_leaves_nothing,
);

/// Uploads that may create and replace files (with an --upload-dir outside the root).
const WRITE: &[&str] = &["--allow-write", "--create", "--overwrite"];

/// `args` with uploads into the served root on purpose (and, with --overwrite, replacing
/// served files on purpose).
fn in_root<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    if v.contains(&"--allow-write") {
        v.push("--uploads-in-root");
        if v.contains(&"--overwrite") {
            v.push("--overwrite-served-files");
        }
    }
    v
}

/// Names in `dir`, sorted (temporary files included: they start with a dot).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Uploads `data` as `name` packet by packet (lock-step, in blocks of the blksize the server
/// acknowledged, else 512); returns the server's final answer to the last block, or the first
/// ERROR.
fn raw_put(addr: SocketAddr, name: &str, data: &[u8], opts: &[(&str, &str)]) -> Result<(), (u16, String)> {
    let c = Raw::new(addr);
    c.request(RequestKind::Write, name, Mode::Octet, opts);
    let (p, tid) = c.expect(5 * SEC);
    let blksize = match Packet::decode(&p).unwrap() {
        Packet::Ack { block: 0 } => 512,
        Packet::Oack(o) => o.get("blksize").map_or(512, |(_, v)| std::str::from_utf8(v).unwrap().parse().unwrap()),
        Packet::Error { code, message } => return Err((code.0, String::from_utf8_lossy(message).into())),
        other => panic!("{other:?}"),
    };
    let mut block = 1u16;
    for chunk in data.chunks(blksize).chain(if data.len() % blksize == 0 { Some(&[][..]) } else { None }) {
        let mut pkt = wire::data_header(block).to_vec();
        pkt.extend_from_slice(chunk);
        c.send(tid, &pkt);
        // The final ACK waits for fsync, which a busy disk can make slow.
        let (p, _) = c.expect(15 * SEC);
        match Packet::decode(&p).unwrap() {
            Packet::Ack { block: b } if b == block => {}
            Packet::Error { code, message } => return Err((code.0, String::from_utf8_lossy(message).into())),
            other => panic!("block {block}: {other:?}"),
        }
        block = block.wrapping_add(1);
    }
    Ok(())
}

fn real_clients_push_files(io: &str) {
    let root = Root::new();
    let up = tempfile::tempdir().unwrap();
    let mut args = WRITE.to_vec();
    args.extend(["--upload-dir", up.path().to_str().unwrap()]);
    let s = Server::start(root.path(), io, &args);
    let src = bytes(1_500_000, 21);
    let dir = scratch();
    let file = dir.path().join("src.bin");
    std::fs::write(&file, &src).unwrap();
    let port = s.v4.port().to_string();
    let cases: Vec<(&str, Command)> = vec![
        ("hpa.bin", {
            let mut c = Command::new("tftp");
            c.args(["127.0.0.1", &port, "-m", "octet", "-c", "put"]).arg(&file).arg("hpa.bin");
            c
        }),
        ("atftp.bin", {
            let mut c = Command::new("atftp");
            c.args(["--option", "blksize 1468", "--option", "windowsize 8", "--option", "tsize 1500000", "-p", "-l"])
                .arg(&file)
                .args(["-r", "atftp.bin", "127.0.0.1", &port]);
            c
        }),
        ("curl.bin", {
            let mut c = Command::new("curl");
            c.args(["-sS", "-T"]).arg(&file).arg(format!("tftp://127.0.0.1:{port}/curl.bin"));
            c
        }),
        ("curl1024.bin", {
            let mut c = Command::new("curl");
            c.args(["-sS", "--tftp-blksize", "1024", "-T"])
                .arg(&file)
                .arg(format!("tftp://[::1]:{}/curl1024.bin", s.v6.port()));
            c
        }),
        ("busybox.bin", {
            let mut c = Command::new("busybox");
            c.args(["tftp", "-p", "-b", "1468", "-l"]).arg(&file).args(["-r", "busybox.bin", "127.0.0.1", &port]);
            c
        }),
    ];
    for (name, mut cmd) in cases {
        let (_, log) = run(&mut cmd, 60 * SEC);
        assert!(std::fs::read(up.path().join(name)).unwrap_or_default() == src, "{name}: {log}");
    }
    // netascii: tftp-hpa encodes the text, the server decodes it back.
    std::fs::write(dir.path().join("text"), TEXT).unwrap();
    let (_, log) = run(
        Command::new("tftp")
            .args(["127.0.0.1", &port, "-m", "netascii", "-c", "put"])
            .arg(dir.path().join("text"))
            .arg("text.up"),
        30 * SEC,
    );
    assert_eq!(std::fs::read(up.path().join("text.up")).unwrap_or_default(), TEXT, "{log}");
    // What was uploaded is not served: the upload directory is outside the root.
    assert_eq!(Raw::new(s.v4).fetch("curl.bin", Mode::Octet, Default::default()).unwrap_err().0, 1);
    assert!(names(up.path()).iter().all(|n| !n.starts_with('.')), "no temporary file: {:?}", names(up.path()));
    let (st, log) = s.stop();
    assert!(st.success());
    // Five binary uploads and the netascii one (counted in wire bytes, CR LF and CR NUL included).
    assert!(counter(&log, "uploaded") > 5 * 1_500_000, "{log}");
    assert_eq!(log.matches("direction=write").count(), 6, "{log}");
}

fn refusals_leave_the_file_system_alone(io: &str) {
    let root = Root::new();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path().join("x"), root.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("dirlink")).unwrap();
    let before = names(root.path());
    let small = root.file("small.bin");
    // (server flags, filename, options, expected ERROR code)
    type Case<'a> = (&'a [&'a str], &'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case<'_>> = vec![
        (&[], "new.bin", vec![], 2),
        (&["--allow-write", "--create"], "small.bin", vec![], 6),
        (&["--allow-write", "--overwrite"], "new.bin", vec![], 1),
        (&["--allow-write", "--create", "--max-upload-size", "1000"], "new.bin", vec![("tsize", "1001")], 3),
        (&["--allow-write", "--create"], "huge.bin", vec![("tsize", "999999999999999")], 3),
        (WRITE, "../escape.bin", vec![], 2),
        (WRITE, "link", vec![], 2),
        (WRITE, "dirlink/x", vec![], 2),
        (WRITE, "boot", vec![], 2),
        (WRITE, "nodir/x", vec![], 1),
        (&["--allow-write", "--create", "--allow-write-from", "10.0.0.0/8"], "new.bin", vec![], 2),
        (WRITE, "small.bin", vec![], 4),
    ];
    for (args, name, opts, code) in cases {
        let args = in_root(args);
        let s = Server::start(root.path(), io, &args);
        let c = Raw::new(s.v4);
        let mode = if code == 4 { Mode::Mail } else { Mode::Octet };
        c.request(RequestKind::Write, name, mode, &opts);
        let (p, _) = c.expect(2 * SEC);
        assert_eq!(error_of(&p).0, code, "{args:?} {name}");
        drop(s);
        assert_eq!(names(root.path()), before, "{args:?} {name}: nothing created");
        assert_eq!(root.file("small.bin"), small, "old content intact");
        assert!(names(outside.path()).is_empty(), "nothing written outside the root");
    }
    // A limit without tsize is enforced while receiving: ERROR 3, nothing left.
    let s = Server::start(root.path(), io, &in_root(&["--allow-write", "--create", "--max-upload-size", "1000"]));
    assert_eq!(raw_put(s.v4, "grows.bin", &bytes(3000, 1), &[]).unwrap_err().0, 3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(names(root.path()), before);
}

fn abandoned_upload_leaves_nothing(io: &str) {
    let root = Root::new();
    let s = Server::start(
        root.path(),
        io,
        &in_root(&["--allow-write", "--overwrite", "--timeout", "0.2", "--retries", "2", "--max-rto", "200"]),
    );
    let before = names(root.path());
    let old = root.file("vmlinuz");
    let c = Raw::new(s.v4);
    c.request(RequestKind::Write, "vmlinuz", Mode::Octet, &[]);
    let (_, tid) = c.expect(2 * SEC);
    for b in 1..=5u16 {
        let mut pkt = wire::data_header(b).to_vec();
        pkt.extend_from_slice(&[0xee; 512]);
        c.send(tid, &pkt);
        let _ = c.expect(2 * SEC);
    }
    assert_eq!(names(root.path()), before, "the upload's file has no name while receiving");
    // The client stops sending: the server repeats its last ACK, then gives up.
    assert!(s.wait_log("outcome=timeout", 5 * SEC), "{}", s.log());
    assert!(names(root.path()).iter().all(|n| !n.starts_with('.')), "temporary file removed");
    assert_eq!(root.file("vmlinuz"), old, "old file untouched");
    // A client that aborts with an ERROR: the same. (A new socket: the old one holds the ACKs
    // the server repeated before giving up.)
    let c = Raw::new(s.v4);
    c.request(RequestKind::Write, "vmlinuz", Mode::Octet, &[("blksize", "1024")]);
    let (_, tid) = c.expect(2 * SEC);
    let mut pkt = wire::data_header(1).to_vec();
    pkt.extend_from_slice(&[1; 1024]);
    c.send(tid, &pkt);
    let _ = c.expect(2 * SEC);
    c.send(tid, b"\x00\x05\x00\x00cancelled\x00");
    assert!(s.wait_log("outcome=client_error", 5 * SEC), "{}", s.log());
    assert!(names(root.path()).iter().all(|n| !n.starts_with('.')));
    assert_eq!(root.file("vmlinuz"), old);
}

fn full_disk_is_error_3_and_cleans_up(io: &str) {
    let root = Root::new();
    let up = tempfile::tempdir().unwrap();
    let dir = up.path().to_str().unwrap().to_string();
    // The server gets its own mount namespace with a 1 MiB tmpfs over the upload directory.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!("mount -t tmpfs -o size=1m bootstorm-test {dir} && exec \"$0\" \"$@\""))
        .arg(bin());
    let mut args = WRITE.to_vec();
    args.extend_from_slice(&["--upload-dir", &dir]);
    let s = Server::start_with(cmd, root.path(), io, &args);
    let seen = PathBuf::from(format!("/proc/{}/root{dir}", s.pid()));
    // Announced too big for the free space: refused before a byte.
    let r = raw_put(s.v4, "big.img", &[], &[("tsize", "2000000")]);
    assert_eq!(r.unwrap_err().0, 3);
    // Not announced: the disk fills while receiving.
    let r = raw_put(s.v4, "big.img", &bytes(2_000_000, 5), &[]);
    assert_eq!(r.unwrap_err().0, 3, "ERROR 3 when the disk is full");
    std::thread::sleep(Duration::from_millis(100));
    assert!(names(&seen).is_empty(), "nothing left on the full disk: {:?}", names(&seen));
    // A file that fits still goes through.
    raw_put(s.v4, "fits.img", &bytes(100_000, 6), &[]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(names(&seen), ["fits.img"]);
    assert!(names(up.path()).is_empty(), "the tmpfs was the server's alone");
}

fn racing_uploads_leave_exactly_one(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &in_root(WRITE));
    let a = bytes(400_000, 31);
    let b = bytes(400_000, 32);
    let addr = s.v4;
    let (a2, b2) = (a.clone(), b.clone());
    let ta = std::thread::spawn(move || raw_put(addr, "race.bin", &a2, &[]));
    let tb = std::thread::spawn(move || raw_put(addr, "race.bin", &b2, &[]));
    ta.join().unwrap().unwrap();
    tb.join().unwrap().unwrap();
    let got = root.file("race.bin");
    assert!(got == a || got == b, "exactly one upload, never a mix");
    assert!(names(root.path()).iter().all(|n| !n.starts_with('.')));
    // Without --overwrite, the second to finish is refused with ERROR 6 and loses nothing.
    let s2 = Server::start(root.path(), io, &in_root(&["--allow-write", "--create"]));
    let addr = s2.v4;
    let (a2, b2) = (a.clone(), b.clone());
    let ta = std::thread::spawn(move || raw_put(addr, "race2.bin", &a2, &[]));
    let tb = std::thread::spawn(move || raw_put(addr, "race2.bin", &b2, &[]));
    let results = [ta.join().unwrap(), tb.join().unwrap()];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| matches!(r, Err((6, _)))).count(), 1, "{results:?}");
    let got = root.file("race2.bin");
    assert!(got == a || got == b);
    assert!(names(root.path()).iter().all(|n| !n.starts_with('.')));
}

// ---------------------------------------------------------------------------------------------
// Blind (spoofed) uploads and where uploads may land.
//
// A raw UDP socket bound to another loopback address stands in for a forged source: the
// "attacker" sends from the address that --allow-write-from trusts and never reads an answer.

/// The address uploads are accepted from in the blind-upload tests; the forged source.
const TRUSTED: &str = "127.0.0.5";

/// Starts the server with `args` and returns its error output if it refused to start; `None`
/// if it was still running after a moment (it is stopped again, by PID).
fn refused_at_start(root: &Path, io: &str, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new(bin());
    cmd.args(["--root", root.to_str().unwrap(), "-l", "127.0.0.1:0", "--io", io, "--workers", "1"]).args(args);
    match run_code(&mut cmd, 3 * SEC) {
        (Some(code), out) if code != 0 => Some(out),
        _ => None,
    }
}

/// A WRQ for `name` (octet, `opts`) encoded as a datagram.
fn wrq(name: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = [0u8; 1024];
    let n = wire::encode_request(
        RequestKind::Write,
        name.as_bytes(),
        Mode::Octet,
        opts.iter().map(|(a, b)| (a.as_bytes(), b.as_bytes())),
        &mut buf,
    )
    .unwrap();
    buf[..n].to_vec()
}

/// DATA `block` carrying `payload`.
fn data_pkt(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = wire::data_header(block).to_vec();
    p.extend_from_slice(payload);
    p
}

/// The blind pair against a single-port server: WRQ, then DATA 1 50 ms later, both to the
/// listening port from the trusted address; nothing is read. Returns the socket (kept open so
/// that the answers meet a bound port, as they would meet the real host).
fn blind_pair(server: SocketAddr, name: &str, payload: &[u8]) -> UdpSocket {
    let sock = UdpSocket::bind(format!("{TRUSTED}:0")).unwrap();
    sock.send_to(&wrq(name, &[]), server).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    sock.send_to(&data_pkt(1, payload), server).unwrap();
    sock
}

/// Whether `path` holds `content` within `limit`.
fn becomes(path: &Path, content: &[u8], limit: Duration) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if std::fs::read(path).is_ok_and(|c| c == content) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn blind_upload_single_port(io: &str) {
    let root = Root::new();
    let up = tempfile::tempdir().unwrap();
    let cfg = up.path().join("pxelinux.cfg");
    std::fs::write(&cfg, b"default local\n").unwrap();
    let dir = up.path().to_str().unwrap();
    let from = format!("{TRUSTED}/32");
    let base =
        ["--single-port", "--allow-write", "--create", "--overwrite", "--upload-dir", dir, "--allow-write-from", &from];
    match refused_at_start(root.path(), io, &base) {
        Some(out) => assert!(out.contains("--allow-single-port-uploads"), "the refusal names the flag: {out}"),
        None => {
            let s = Server::start(root.path(), io, &base);
            let _sock = blind_pair(s.v4, "pxelinux.cfg", b"default evil\n");
            assert!(
                !becomes(&cfg, b"default evil\n", 2 * SEC),
                "--single-port: a blind forged WRQ + DATA 1 replaced the file"
            );
        }
    }
    assert_eq!(std::fs::read(&cfg).unwrap(), b"default local\n");
    // With the risk accepted: a warning at start says what it means, and the same two blind
    // datagrams do go through (which is what the flag accepts, and shows the attack is real).
    let mut args = base.to_vec();
    args.push("--allow-single-port-uploads");
    let s = Server::start(root.path(), io, &args);
    let log = s.log();
    assert!(
        log.contains("level=warn") && log.contains("--allow-single-port-uploads") && log.contains("forge"),
        "{log}"
    );
    let _sock = blind_pair(s.v4, "pxelinux.cfg", b"default evil\n");
    assert!(becomes(&cfg, b"default evil\n", 15 * SEC), "{}", s.log());
}

/// The largest blksize granted to an upload must fit a receive buffer with everything a receive
/// on the listening socket carries besides (io_uring: a header, the address and the packet
/// info); in single-port mode every DATA comes through it.
fn the_largest_block_granted_fits_in_single_port_mode(io: &str) {
    let root = Root::new();
    let up = tempfile::tempdir().unwrap();
    let dir = up.path().to_str().unwrap();
    let args = ["--single-port", "--allow-single-port-uploads", "--allow-write", "--create", "--upload-dir", dir];
    let s = Server::start(root.path(), io, &args);
    let data = bytes(20_000, 9);
    raw_put(s.v4, "big-blocks.bin", &data, &[("blksize", "65464")]).unwrap();
    assert_eq!(std::fs::read(up.path().join("big-blocks.bin")).unwrap(), data, "{}", s.log());
}

fn blind_upload_default_mode_finds_the_transfer_gone(io: &str) {
    let root = Root::new();
    let up = tempfile::tempdir().unwrap();
    let cfg = up.path().join("pxelinux.cfg");
    std::fs::write(&cfg, b"default local\n").unwrap();
    let from = format!("{TRUSTED}/32");
    let s = Server::start(
        root.path(),
        io,
        &[
            "--allow-write",
            "--create",
            "--overwrite",
            "--upload-dir",
            up.path().to_str().unwrap(),
            "--allow-write-from",
            &from,
        ],
    );
    // With and without a client timeout option: a client cannot buy a longer wait.
    for (n, opts) in [vec![], vec![("timeout", "10")]].into_iter().enumerate() {
        let sock = UdpSocket::bind(format!("{TRUSTED}:0")).unwrap();
        let sent = std::time::Instant::now();
        sock.send_to(&wrq("pxelinux.cfg", &opts), s.v4).unwrap();
        // The attacker sprays DATA 1 over the ephemeral ports (1.9 s for all 28,232 of them);
        // the test learns the transfer port from the answer instead of spraying, and sends its
        // DATA 1 there 1.6 s after the request, as a spray would reach it.
        sock.set_read_timeout(Some(2 * SEC)).unwrap();
        let mut buf = [0u8; 1500];
        let (_, port) = sock.recv_from(&mut buf).expect("first answer");
        std::thread::sleep(Duration::from_millis(1600).saturating_sub(sent.elapsed()));
        // A busy machine may run the server's timer late: give it until 4 s (the old wait was
        // 6 s, or 12 s with the option).
        let gone = |l: String| l.matches("outcome=timeout").count() > n;
        while !gone(s.log()) && sent.elapsed() < 4 * SEC {
            std::thread::sleep(Duration::from_millis(20));
        }
        sock.send_to(&data_pkt(1, b"default evil\n"), port).unwrap();
        assert!(
            !becomes(&cfg, b"default evil\n", SEC),
            "{opts:?}: a DATA 1 {:?} after the WRQ still found the upload waiting and replaced the file",
            sent.elapsed()
        );
    }
    // The wait for the first DATA is short: both transfers above timed out, each after about
    // the initial timeout (1 s; more on a busy machine).
    let log = s.log();
    let waits: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("outcome=timeout"))
        .filter_map(|l| l.split(" ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(waits.len(), 2, "{log}");
    assert!(waits.iter().all(|&ms| (950.0..3000.0).contains(&ms)), "{waits:?}");
}

/// Uploads must not land in the served tree unless the operator says so.
fn uploads_stay_out_of_the_served_tree(io: &str) {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("tftp");
    std::fs::create_dir_all(root.join("uploads")).unwrap();
    std::fs::write(root.join("vmlinuz"), b"kernel").unwrap();
    let r = root.to_str().unwrap().to_string();
    let inside = root.join("uploads").to_str().unwrap().to_string();
    let above = outer.path().to_str().unwrap().to_string();
    // (server flags, name uploaded, where it would be served from)
    let cases: [(Vec<&str>, &str, &str); 3] = [
        (vec!["--allow-write", "--create", "--overwrite"], "vmlinuz", "vmlinuz"),
        (vec!["--allow-write", "--create", "--upload-dir", &inside], "new.cfg", "uploads/new.cfg"),
        (vec!["--allow-write", "--create", "--upload-dir", &above], "tftp/new2.cfg", "new2.cfg"),
    ];
    for (args, name, served) in cases {
        match refused_at_start(Path::new(&r), io, &args) {
            Some(out) => assert!(out.contains("--uploads-in-root"), "{args:?}: the refusal names the flag: {out}"),
            None => {
                let s = Server::start(Path::new(&r), io, &args);
                let put = raw_put(s.v4, name, b"evil", &[]);
                std::thread::sleep(Duration::from_millis(100));
                let back = Raw::new(s.v4).fetch(served, Mode::Octet, Default::default());
                assert!(back != Ok(b"evil".to_vec()), "{args:?}: an upload ({put:?}) is served as {served}");
            }
        }
    }
    assert_eq!(std::fs::read(root.join("vmlinuz")).unwrap(), b"kernel");
    // On purpose: --uploads-in-root, with a warning; new files only (--overwrite would need
    // --overwrite-served-files).
    let s = Server::start(Path::new(&r), io, &["--allow-write", "--uploads-in-root", "--create"]);
    assert!(s.log().contains("level=warn") && s.log().contains("--uploads-in-root"), "{}", s.log());
    raw_put(s.v4, "new.cfg", b"fresh", &[]).unwrap();
    assert_eq!(Raw::new(s.v4).fetch("new.cfg", Mode::Octet, Default::default()).unwrap(), b"fresh");
    assert_eq!(raw_put(s.v4, "vmlinuz", b"evil", &[]).unwrap_err().0, 6);
    drop(s);
    // An explicit --upload-dir inside the root, accepted with the same flag.
    let s =
        Server::start(Path::new(&r), io, &["--allow-write", "--uploads-in-root", "--create", "--upload-dir", &inside]);
    raw_put(s.v4, "in.cfg", b"in", &[]).unwrap();
    assert_eq!(Raw::new(s.v4).fetch("uploads/in.cfg", Mode::Octet, Default::default()).unwrap(), b"in");
}

fn overwriting_served_files_needs_its_own_flag(io: &str) {
    let root = Root::new();
    let old = root.file("vmlinuz");
    let out = refused_at_start(root.path(), io, &["--allow-write", "--uploads-in-root", "--create", "--overwrite"]);
    let out = out.expect("--overwrite of served files without --overwrite-served-files: the server started");
    assert!(out.contains("--overwrite-served-files"), "{out}");
    let out = refused_at_start(root.path(), io, &["--allow-write", "--create", "--overwrite-served-files"]);
    assert!(out.is_some_and(|o| o.contains("--uploads-in-root")), "the flag alone means nothing");
    assert_eq!(root.file("vmlinuz"), old);
    let s = Server::start(
        root.path(),
        io,
        &["--allow-write", "--uploads-in-root", "--create", "--overwrite", "--overwrite-served-files"],
    );
    assert!(s.log().contains("--overwrite-served-files"), "warned: {}", s.log());
    raw_put(s.v4, "vmlinuz", b"new kernel", &[]).unwrap();
    assert_eq!(root.file("vmlinuz"), b"new kernel");
}

// ---------------------------------------------------------------------------------------------
// The upload's file: unnamed until committed.

fn upload_is_invisible_until_committed(io: &str) {
    let root = Root::new();
    let up = tempfile::tempdir().unwrap();
    std::fs::write(up.path().join("cfg"), b"old").unwrap();
    let s = Server::start(
        root.path(),
        io,
        &["--allow-write", "--create", "--overwrite", "--upload-dir", up.path().to_str().unwrap()],
    );
    let c = Raw::new(s.v4);
    c.request(RequestKind::Write, "cfg", Mode::Octet, &[]);
    let (_, tid) = c.expect(2 * SEC);
    assert_eq!(names(up.path()), ["cfg"], "no file of the upload before its first DATA");
    let src = bytes(2000, 9);
    for (i, chunk) in src.chunks(512).enumerate() {
        if i == 3 {
            assert_eq!(names(up.path()), ["cfg"], "no file of the upload visible while receiving");
        }
        c.send(tid, &data_pkt(i as u16 + 1, chunk));
        let (p, _) = c.expect(5 * SEC);
        assert!(matches!(Packet::decode(&p).unwrap(), Packet::Ack { .. }));
    }
    assert_eq!(names(up.path()), ["cfg"]);
    assert_eq!(std::fs::read(up.path().join("cfg")).unwrap(), src);
    drop(s);
    // Uploads in the served root (on purpose): nothing of an upload in progress can be fetched.
    let s = Server::start(root.path(), io, &["--allow-write", "--uploads-in-root", "--create"]);
    let before = names(root.path());
    let c = Raw::new(s.v4);
    c.request(RequestKind::Write, "new.bin", Mode::Octet, &[]);
    let (_, tid) = c.expect(2 * SEC);
    c.send(tid, &data_pkt(1, &[7; 512]));
    let _ = c.expect(2 * SEC);
    let during = names(root.path());
    if let Some(n) = during.iter().find(|n| !before.contains(n)) {
        let got = Raw::new(s.v4).fetch(n, Mode::Octet, Default::default());
        panic!("{n} appeared during the upload, RRQ gives {:?}", got.map(|v| v.len()));
    }
}

fn long_names_upload(io: &str) {
    let root = Root::new();
    let up = tempfile::tempdir().unwrap();
    let s = Server::start(
        root.path(),
        io,
        &["--allow-write", "--create", "--overwrite", "--upload-dir", up.path().to_str().unwrap()],
    );
    for len in [236, 250, 255] {
        let name = "n".repeat(len);
        let r = raw_put(s.v4, &name, b"long", &[]);
        assert!(r.is_ok(), "{len}-byte name: {r:?}");
        assert_eq!(std::fs::read(up.path().join(&name)).unwrap(), b"long");
        raw_put(s.v4, &name, b"again", &[]).unwrap();
        assert_eq!(std::fs::read(up.path().join(&name)).unwrap(), b"again", "{len}: replaced");
    }
    assert_eq!(raw_put(s.v4, &"n".repeat(256), b"x", &[]).unwrap_err().0, 0, "over NAME_MAX");
    assert_eq!(names(up.path()).len(), 3);
}

fn killed_mid_upload_leaves_nothing(io: &str) {
    let root = Root::new();
    let up = tempfile::tempdir().unwrap();
    std::fs::write(up.path().join("cfg"), b"old").unwrap();
    let s = Server::start(
        root.path(),
        io,
        &["--allow-write", "--create", "--overwrite", "--upload-dir", up.path().to_str().unwrap()],
    );
    let clients = [Raw::new(s.v4), Raw::new(s.v4)];
    for (c, name) in clients.iter().zip(["cfg", "new.bin"]) {
        c.request(RequestKind::Write, name, Mode::Octet, &[("blksize", "1024")]);
        let (_, tid) = c.expect(2 * SEC);
        for b in 1..=4u16 {
            c.send(tid, &data_pkt(b, &[0xab; 1024]));
            let _ = c.expect(2 * SEC);
        }
    }
    s.signal(libc::SIGKILL);
    drop(s); // reaps the killed process
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(names(up.path()), ["cfg"], "nothing of the two uploads survives the crash");
    assert_eq!(std::fs::read(up.path().join("cfg")).unwrap(), b"old");
}
