//! `bootstorm probe ADDR FILE`, the health check, against the real server on loopback: it passes
//! on a file served (with and without options), and fails with exit status 1 on a missing file,
//! on a server that never answers (within its timeout), on a file smaller than `--min-size`, and
//! on a server whose tsize disagrees with what it sends.

mod common;
mod config;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::Root;
use config::{Served, run};

/// A server on 127.0.0.1 serving `root`, and its address.
fn serve(root: &Root) -> (Served, String) {
    let args = ["--root", root.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"];
    let s = Served::start(&args, 1).unwrap_or_else(|e| panic!("refused: {e:?}"));
    let addr = s.addrs[0].to_string();
    (s, addr)
}

/// Runs `bootstorm probe` with `args`: exit status, the line on standard output, standard error.
fn probe(args: &[&str]) -> (Option<i32>, String, String) {
    let mut argv = vec!["probe"];
    argv.extend_from_slice(args);
    run(&argv)
}

#[test]
fn passes_on_a_file_served_with_its_size() {
    let root = Root::new();
    let (_s, addr) = serve(&root);
    let (code, out, err) = probe(&[&addr, "vmlinuz"]);
    assert_eq!(code, Some(0), "stdout {out:?} stderr {err:?}");
    assert!(out.starts_with(&format!("ok {addr} vmlinuz 100000 bytes in ")), "{out:?}");
    assert!(out.trim_end().ends_with(" ms") && out.lines().count() == 1, "{out:?}");
}

#[test]
fn passes_without_options() {
    let root = Root::new();
    let (_s, addr) = serve(&root);
    let (code, out, err) = probe(&["--blksize", "0", &addr, "vmlinuz"]);
    assert_eq!(code, Some(0), "stdout {out:?} stderr {err:?}");
    assert!(out.starts_with(&format!("ok {addr} vmlinuz 100000 bytes")), "{out:?}");
}

#[test]
fn fails_on_a_missing_file() {
    let root = Root::new();
    let (_s, addr) = serve(&root);
    let (code, out, err) = probe(&[&addr, "pxelinux.0"]);
    assert_eq!(code, Some(1), "stdout {out:?} stderr {err:?}");
    assert!(out.is_empty(), "{out:?}");
    assert!(err.contains(&format!("probe failed: {addr} pxelinux.0: ERROR 1 file not found")), "{err:?}");
}

#[test]
fn fails_on_a_file_smaller_than_the_minimum() {
    let root = Root::new();
    let (_s, addr) = serve(&root);
    let (code, _, err) = probe(&["--min-size", "100001", &addr, "vmlinuz"]);
    assert_eq!(code, Some(1), "{err:?}");
    assert!(err.contains("got 100000 bytes, fewer than the minimum 100001"), "{err:?}");
    let (code, out, err) = probe(&["--min-size", "100000", &addr, "vmlinuz"]);
    assert_eq!(code, Some(0), "stdout {out:?} stderr {err:?}");
}

#[test]
fn fails_within_its_timeout_when_nobody_answers() {
    // A port that is bound (no ICMP unreachable) and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let start = Instant::now();
    let (code, out, err) = probe(&["--timeout", "0.5", &addr, "pxelinux.0"]);
    let took = start.elapsed();
    assert_eq!(code, Some(1), "stdout {out:?} stderr {err:?}");
    assert!(err.contains(&format!("probe failed: {addr} pxelinux.0: no answer within 0.5 s")), "{err:?}");
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "took {took:?}");
    // It asked more than once within the timeout.
    silent.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 600];
    let mut requests = 0;
    while silent.recv_from(&mut buf).is_ok() {
        requests += 1;
    }
    assert!(requests >= 2, "{requests} requests");
}

/// A server that announces tsize 100 and sends 10 bytes.
fn lying_server() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listen = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = listen.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        listen.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 600];
        let Ok((_, client)) = listen.recv_from(&mut buf) else { return };
        let tid = UdpSocket::bind("127.0.0.1:0").unwrap();
        tid.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tid.send_to(b"\x00\x06tsize\x00100\x00blksize\x001468\x00", client).unwrap();
        let Ok(_) = tid.recv_from(&mut buf) else { return };
        tid.send_to(b"\x00\x03\x00\x010123456789", client).unwrap();
        let _ = tid.recv_from(&mut buf);
    });
    (addr, t)
}

#[test]
fn fails_when_tsize_disagrees_with_the_data() {
    let (addr, server) = lying_server();
    let (code, out, err) = probe(&[&addr.to_string(), "pxelinux.0"]);
    server.join().unwrap();
    assert_eq!(code, Some(1), "stdout {out:?} stderr {err:?}");
    assert!(err.contains("tsize said 100, got 10 bytes"), "{err:?}");
}
