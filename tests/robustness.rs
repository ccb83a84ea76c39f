//! Garbage while real transfers run: thousands of malformed datagrams (truncated, unterminated
//! strings, huge option lists, unknown opcodes, stray DATA/ACK/ERROR) to the listening port and
//! to the transfer ports of transfers in progress. Every real transfer must complete byte-exact,
//! and the server must stay up and keep serving.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bootstorm::proto::RequestOptions;
use bootstorm::proto::wire::Mode;
use common::*;

/// The UDP ports process `pid` has open (its listening and transfer sockets), from /proc.
fn udp_ports(pid: i32) -> HashSet<u16> {
    let mut inodes = HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if let Some(i) =
                    link.to_str().and_then(|s| s.strip_prefix("socket:[")).and_then(|s| s.strip_suffix(']'))
                {
                    inodes.insert(i.to_string());
                }
            }
        }
    }
    let mut ports = HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.contains(f[9]) {
                if let Some(p) = f[1].rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok()) {
                    ports.insert(p);
                }
            }
        }
    }
    ports
}

/// The malformed datagrams, cycled through.
fn garbage(i: usize) -> Vec<u8> {
    let mut huge = b"\x00\x01f\x00octet\x00".to_vec();
    for k in 0..40 {
        huge.extend(format!("opt{k}\x00{k}\x00").bytes());
    }
    let long_name = [&b"\x00\x01"[..], &[b'a'; 600], b"\x00octet\x00"].concat();
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 1],
        b"\x00\x01nonul".to_vec(),
        b"\x00\x01f\x00octet".to_vec(),
        b"\x00\x01f\x00octet\x00blksize\x00".to_vec(),
        b"\x00\x01f\x00xyzzy\x00".to_vec(),
        huge,
        long_name,
        b"\x00\x09\x00\x00".to_vec(),
        b"\xff\xff\xff\xff".to_vec(),
        b"\x00\x03\x00\x01stray data".to_vec(),
        b"\x00\x04\x00\x01".to_vec(),
        b"\x00\x04\x00\x01\x00".to_vec(),
        b"\x00\x04\xff\xff".to_vec(),
        b"\x00\x05\x00\x03disk full\x00".to_vec(),
        b"\x00\x05".to_vec(),
        b"\x00\x06blksize\x0065464\x00".to_vec(),
        b"\x00\x02../../etc/passwd\x00octet\x00".to_vec(),
        (0..(i % 1400)).map(|k| (k * 31 + i) as u8).collect(),
    ];
    cases[i % cases.len()].clone()
}

fn transfers_survive_garbage(io: &str) {
    let root = Root::new();
    root.write("mid.bin", &bytes(1_000_000, 77));
    let s = Server::start(root.path(), io, &[]);
    let (addr, pid) = (s.v4, s.pid());
    let fetchers: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let opts = RequestOptions {
                    blksize: Some([512, 1468, 8192][i % 3]),
                    windowsize: Some([1, 4, 16][i % 3]),
                    tsize: true,
                    timeout: None,
                };
                let mut done = 0;
                for _ in 0..3 {
                    let got = Raw::new(addr).fetch("mid.bin", Mode::Octet, opts).expect("transfer failed");
                    assert_eq!(got.len(), 1_000_000);
                    done += 1;
                }
                done
            })
        })
        .collect();
    // Garbage from many sockets, to the listening port and to every transfer port, until the
    // real transfers are done and at least 2,000 datagrams went (bounded: 20,000 datagrams,
    // 60 s): on a fast machine the transfers may end within a few rounds.
    let senders: Vec<UdpSocket> = (0..16).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let start = Instant::now();
    let mut sent = 0usize;
    let mut hit_transfer_ports = 0usize;
    while (!fetchers.iter().all(|f| f.is_finished()) || sent < 2_000)
        && sent < 20_000
        && start.elapsed() < Duration::from_secs(60)
    {
        let ports = udp_ports(pid);
        for (k, port) in ports.iter().enumerate() {
            let to = SocketAddr::new(addr.ip(), *port);
            if *port != addr.port() {
                hit_transfer_ports += 1;
            }
            for j in 0..20 {
                let _ = senders[(k + j) % senders.len()].send_to(&garbage(sent), to);
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let total: usize = fetchers.into_iter().map(|f| f.join().unwrap()).sum();
    assert_eq!(total, 24, "every real transfer completed");
    assert!(sent >= 2_000, "only {sent} malformed datagrams were sent");
    assert!(hit_transfer_ports > 0, "garbage reached transfer ports");
    // Still serving.
    assert_eq!(Raw::new(s.v6).fetch("vmlinuz", Mode::Octet, RequestOptions::default()).unwrap(), root.file("vmlinuz"));
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
    assert!(counter(&log, "malformed") > 0 && counter(&log, "foreign") > 0, "{log}");
    println!(
        "{io}: {sent} malformed datagrams, {hit_transfer_ports} transfer-port rounds; {} malformed, {} foreign counted",
        counter(&log, "malformed"),
        counter(&log, "foreign")
    );
}

#[test]
fn transfers_survive_garbage_uring() {
    transfers_survive_garbage("uring");
}

#[test]
fn transfers_survive_garbage_epoll() {
    transfers_survive_garbage("epoll");
}
