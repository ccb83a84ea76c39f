//! Uploads (WRQ) against the real binary on both backends: real clients pushing files, every
//! refusal with its exact ERROR code and the file system afterwards, an upload abandoned halfway,
//! a disk that fills up, and two uploads racing for one name.

#[macro_use]
mod common;

use std::net::SocketAddr;
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
);

const WRITE: &[&str] = &["--allow-write", "--create", "--overwrite"];

/// Names in `dir`, sorted (temporary files included: they start with a dot).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Uploads `data` as `name` packet by packet (lock-step, blksize 512); returns the server's
/// final answer to the last block, or the first ERROR.
fn raw_put(addr: SocketAddr, name: &str, data: &[u8], opts: &[(&str, &str)]) -> Result<(), (u16, String)> {
    let c = Raw::new(addr);
    c.request(RequestKind::Write, name, Mode::Octet, opts);
    let (p, tid) = c.expect(2 * SEC);
    match Packet::decode(&p).unwrap() {
        Packet::Ack { block: 0 } | Packet::Oack(_) => {}
        Packet::Error { code, message } => return Err((code.0, String::from_utf8_lossy(message).into())),
        other => panic!("{other:?}"),
    }
    let mut block = 1u16;
    for chunk in data.chunks(512).chain(if data.len() % 512 == 0 { Some(&[][..]) } else { None }) {
        let mut pkt = wire::data_header(block).to_vec();
        pkt.extend_from_slice(chunk);
        c.send(tid, &pkt);
        let (p, _) = c.expect(5 * SEC);
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
    let s = Server::start(root.path(), io, WRITE);
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
        assert!(std::fs::read(root.path().join(name)).unwrap_or_default() == src, "{name}: {log}");
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
    assert_eq!(std::fs::read(root.path().join("text.up")).unwrap_or_default(), TEXT, "{log}");
    // What was uploaded is served back.
    let back = Raw::new(s.v4).fetch("curl.bin", Mode::Octet, Default::default()).unwrap();
    assert!(back == src);
    assert!(names(root.path()).iter().all(|n| !n.starts_with('.')), "no temporary file: {:?}", names(root.path()));
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
        let s = Server::start(root.path(), io, args);
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
    let s = Server::start(root.path(), io, &["--allow-write", "--create", "--max-upload-size", "1000"]);
    assert_eq!(raw_put(s.v4, "grows.bin", &bytes(3000, 1), &[]).unwrap_err().0, 3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(names(root.path()), before);
}

fn abandoned_upload_leaves_nothing(io: &str) {
    let root = Root::new();
    let s = Server::start(
        root.path(),
        io,
        &["--allow-write", "--overwrite", "--timeout", "0.2", "--retries", "2", "--max-rto", "200"],
    );
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
    assert!(names(root.path()).iter().any(|n| n.starts_with(".vmlinuz")), "temporary file while receiving");
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
    assert!(s.wait_log("outcome=error", 5 * SEC), "{}", s.log());
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
    let s = Server::start(root.path(), io, WRITE);
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
    let s2 = Server::start(root.path(), io, &["--allow-write", "--create"]);
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
