//! netascii against the real binary: memory stays bounded under never-acknowledged requests for
//! many large files, and every block is exact (pairs split across blocks, bare and final CRs, the
//! empty file, retransmitted windows, partial ACKs, block-number rollover), on both backends.

#[macro_use]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use bootstorm::proto::RequestOptions;
use bootstorm::proto::netascii::Encoder;
use bootstorm::proto::wire::{self, Mode, Packet, RequestKind};
use common::*;

const SEC: Duration = Duration::from_secs(1);

both_backends!(
    memory_bounded_under_unacknowledged_requests,
    tricky_files_exact_at_every_blksize,
    retransmitted_and_partially_acknowledged_windows,
    rollover_past_65535_blocks,
    tftp_hpa_tricky_file,
);

/// The netascii form the server must send.
fn encoded(raw: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    Encoder::new().encode_to_vec(raw, &mut v);
    v
}

/// Text full of line ends, bare CRs, CR LF pairs and NULs, ending in a CR.
fn tricky(len: usize, seed: u64) -> Vec<u8> {
    let mut v: Vec<u8> = bytes(len, seed)
        .into_iter()
        .map(|b| match b % 8 {
            0 | 1 => b'\n',
            2 => b'\r',
            3 => 0,
            _ => b'a' + b % 26,
        })
        .collect();
    if let Some(last) = v.last_mut() {
        *last = b'\r';
    }
    v
}

/// The process's resident set in KiB (`VmRSS`).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 500 netascii requests for 100 files of 4 MiB, none acknowledged: the server's RSS must not
/// grow by more than 48 MiB (the translation of all of them would take 2 × 425 MiB: one per file
/// per worker), and must stay there once the transfers are gone.
fn memory_bounded_under_unacknowledged_requests(io: &str) {
    const FILES: usize = 100;
    const REQUESTS: usize = 500;
    const LIMIT_KIB: u64 = 48 << 10;
    let root = Root::new();
    // Four distinct 4 MiB texts, each under 25 names (hard links: distinct paths, so distinct
    // cache entries, without writing 400 MiB).
    for k in 0..4 {
        let base = root.path().join(format!("t{k}.txt"));
        let chunk = tricky(1 << 16, 100 + k as u64);
        let mut data = Vec::with_capacity(4 << 20);
        while data.len() < 4 << 20 {
            data.extend_from_slice(&chunk);
        }
        std::fs::write(&base, &data).unwrap();
    }
    for i in 0..FILES {
        let base = root.path().join(format!("t{}.txt", i % 4));
        std::fs::hard_link(&base, root.path().join(format!("f{i}.txt"))).unwrap();
    }
    let s = Server::start(root.path(), io, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let start = rss_kib(s.pid());
    let clients: Vec<Raw> = (0..50).map(|_| Raw::new(s.v4)).collect();
    let began = Instant::now();
    for r in 0..REQUESTS {
        // No options: the answer is DATA 1, translated at once.
        let c = &clients[r % clients.len()];
        c.request(RequestKind::Read, &format!("f{}.txt", r % FILES), Mode::Netascii, &[]);
        if r % 50 == 49 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Every request answered (each from its own transfer port), and never acknowledged.
    let mut answered = 0;
    for c in &clients {
        let mut tids = std::collections::HashSet::new();
        while tids.len() < REQUESTS / clients.len() {
            let Some((p, from)) = c.recv(5 * SEC) else { break };
            if matches!(Packet::decode(&p), Ok(Packet::Data { block: 1, .. })) {
                tids.insert(from);
            }
        }
        answered += tids.len();
    }
    let peak = rss_kib(s.pid());
    eprintln!(
        "{io}: RSS {start} KiB at start, {peak} KiB after {REQUESTS} requests ({answered} answered) in {:?}",
        began.elapsed()
    );
    assert!(answered >= REQUESTS * 9 / 10, "{answered} of {REQUESTS} answered");
    assert!(peak < start + LIMIT_KIB, "{io}: RSS grew from {start} KiB to {peak} KiB");
    // The transfers give up (no client ever answers) and the memory stays bounded.
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_kib(s.pid());
    eprintln!("{io}: RSS {after} KiB once idle");
    assert!(after < start + LIMIT_KIB, "{io}: RSS {after} KiB once idle, from {start} KiB");
    drop(s);
}

/// Downloads `name` in netascii with a client that acknowledges every `window`th block and checks
/// every DATA it receives, in order or again, against `expect`; `drop_ack` skips the ACK of the
/// windows it names (by count), `partial` acknowledges only the first half of the windows it
/// names. Handles block-number rollover. Returns how many DATA were retransmissions.
fn checked_fetch(
    server: SocketAddr,
    name: &str,
    blksize: usize,
    window: usize,
    expect: &[u8],
    drop_ack: impl Fn(u64) -> bool,
    partial: impl Fn(u64) -> bool,
) -> u64 {
    let sock = UdpSocket::bind(if server.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
    let mut buf = [0u8; 1024];
    let (b, w) = (blksize.to_string(), window.to_string());
    let n = wire::encode_request(
        RequestKind::Read,
        name.as_bytes(),
        Mode::Netascii,
        [(&b"blksize"[..], b.as_bytes()), (b"windowsize", w.as_bytes())],
        &mut buf,
    )
    .unwrap();
    sock.send_to(&buf[..n], server).unwrap();
    sock.set_read_timeout(Some(10 * SEC)).unwrap();
    let mut pkt = vec![0u8; 70_000];
    let (len, tid) = sock.recv_from(&mut pkt).expect("no OACK");
    assert!(matches!(Packet::decode(&pkt[..len]), Ok(Packet::Oack(_))), "{:?}", &pkt[..len]);
    sock.send_to(&wire::ack(0), tid).unwrap();
    let last = (expect.len() / blksize + 1) as u64; // blocks, counted from 1
    let mut sent_ack: u64 = 0; // the last ACK sent
    let mut acked: u64 = 0; // every block up to here received
    let mut windows: u64 = 0;
    let mut repeats = 0;
    let mut highest = 0; // the highest block received
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < last {
        assert!(Instant::now() < deadline, "{name}: stuck at block {acked}");
        let Ok((len, from)) = sock.recv_from(&mut pkt) else {
            // Silence: ask for what is missing again.
            sock.send_to(&wire::ack(acked as u16), tid).unwrap();
            sent_ack = acked;
            continue;
        };
        assert_eq!(from, tid);
        let (block, data) = match Packet::decode(&pkt[..len]) {
            Ok(Packet::Data { block, data }) => (block, data),
            p => panic!("{name}: unexpected {p:?}"),
        };
        // The block's full number: the nearest above `sent_ack - 2 windows` with these low bits.
        let base = sent_ack.saturating_sub(window as u64 * 2);
        let full = base + u64::from(block.wrapping_sub(base as u16));
        let at = (full as usize - 1) * blksize;
        let want = &expect[at.min(expect.len())..(at + blksize).min(expect.len())];
        assert_eq!(data, want, "{name}: block {full} (wire {block}) at {at}, blksize {blksize}");
        if full <= highest {
            repeats += 1;
        }
        highest = highest.max(full);
        if full <= acked {
            continue;
        }
        if full != acked + 1 {
            continue; // a gap: wait for the retransmission
        }
        acked = full;
        if acked == sent_ack + window as u64 || acked == last {
            windows += 1;
            if acked < last && drop_ack(windows) {
                // A lost ACK: the window is forgotten, the server sends it again on its timer.
                acked = sent_ack;
                continue;
            }
            if acked < last && partial(windows) && window >= 2 {
                acked -= window as u64 / 2;
            }
            sock.send_to(&wire::ack(acked as u16), tid).unwrap();
            sent_ack = acked;
        }
    }
    repeats
}

fn tricky_files_exact_at_every_blksize(io: &str) {
    let root = Root::new();
    let files: [(&str, Vec<u8>); 6] = [
        ("tricky.txt", tricky(20_000, 7)),
        ("empty.txt", Vec::new()),
        ("cr.txt", b"\r".to_vec()),
        ("lf.txt", b"\n".to_vec()),
        ("bare.txt", b"a\rb\r\r\n\r\0c\r".to_vec()),
        // Each line is 7 bytes and 8 once encoded: at blksize 8 every block ends in its CR.
        ("lines.txt", b"abcdef\n".repeat(300)),
    ];
    for (name, data) in &files {
        root.write(name, data);
    }
    let s = Server::start(root.path(), io, &[]);
    for (name, data) in &files {
        let expect = encoded(data);
        for blksize in [8, 9, 512, 1428] {
            for window in [1, 4, 16] {
                let got = Raw::new(s.v4)
                    .fetch(
                        name,
                        Mode::Netascii,
                        RequestOptions { blksize: Some(blksize), windowsize: Some(window), ..Default::default() },
                    )
                    .unwrap();
                assert_eq!(got.len(), expect.len(), "{name} blksize {blksize} window {window}");
                assert!(got == expect, "{name} blksize {blksize} window {window}: bytes differ");
            }
        }
        // Without options: 512-byte blocks, lock-step, over IPv6.
        assert_eq!(Raw::new(s.v6).fetch(name, Mode::Netascii, RequestOptions::default()).unwrap(), expect, "{name}");
    }
    // The sample has CRs ending blocks followed by both a NUL and an LF.
    let t = encoded(&files[0].1);
    let split =
        |second: u8| t.chunks(8).zip(t.chunks(8).skip(1)).filter(|(a, b)| a[7] == b'\r' && b[0] == second).count();
    assert!(split(0) > 10 && split(b'\n') > 10, "{} {}", split(0), split(b'\n'));
    let (st, log) = s.stop();
    assert!(st.success());
    assert!(!log.contains("outcome=error") && !log.contains("file changed"), "{log}");
}

fn retransmitted_and_partially_acknowledged_windows(io: &str) {
    let root = Root::new();
    let raw = tricky(30_000, 11);
    root.write("t.txt", &raw);
    let s = Server::start(root.path(), io, &[]);
    let expect = encoded(&raw);
    for (blksize, window) in [(8, 4), (9, 16), (512, 8), (1428, 2)] {
        let repeats = checked_fetch(s.v4, "t.txt", blksize, window, &expect, |w| w == 3 || w == 20, |w| w % 7 == 3);
        assert!(repeats > 0, "blksize {blksize} window {window}: no retransmission seen");
    }
    let (st, _) = s.stop();
    assert!(st.success());
}

fn rollover_past_65535_blocks(io: &str) {
    let root = Root::new();
    // 600,000 netascii bytes: 75,000 blocks of 8.
    let raw = b"abcd\nefg\r\n".repeat(46_154);
    root.write("long.txt", &raw);
    let s = Server::start(root.path(), io, &[]);
    let expect = encoded(&raw);
    assert!(expect.len() / 8 > 70_000);
    let got = Raw::new(s.v4)
        .fetch(
            "long.txt",
            Mode::Netascii,
            RequestOptions { blksize: Some(8), windowsize: Some(64), ..Default::default() },
        )
        .unwrap();
    assert!(got == expect, "rolled-over netascii differs");
    let (st, log) = s.stop();
    assert!(st.success());
    assert!(log.contains("outcome=ok"), "{log}");
}

fn tftp_hpa_tricky_file(io: &str) {
    let root = Root::new();
    // tftp-hpa turns CR NUL back into CR and CR LF into LF; NULs of the file come back as such.
    let raw = tricky(50_000, 13);
    root.write("t.txt", &raw);
    let s = Server::start(root.path(), io, &[]);
    let dir = scratch();
    for (addr, flag) in [(s.v4, "-4"), (s.v6, "-6")] {
        let out = dir.path().join("t.txt");
        let _ = std::fs::remove_file(&out);
        let (_, log) = run(
            Command::new("tftp")
                .args([flag, &addr.ip().to_string(), &addr.port().to_string()])
                .args(["-m", "netascii", "-c", "get", "t.txt"])
                .arg(&out),
            30 * SEC,
        );
        assert!(std::fs::read(&out).unwrap_or_default() == raw, "tftp-hpa netascii over {addr}: {log}");
    }
    let (st, _) = s.stop();
    assert!(st.success());
}
