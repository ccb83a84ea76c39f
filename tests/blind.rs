//! A blind attacker: it forges a victim's address, sends a read request and ACKs it never saw,
//! and never reads an answer. What the victim receives, per byte the attacker sent, in each
//! port mode. With one listening port (`--single-port`) or a port range, the transfer ID is
//! predictable, so a forged ACK 0 reaches the transfer: what it releases must stay within 60×
//! the attacker's bytes. The victim here is a loopback socket standing in for the forged
//! address; the attacker's datagrams leave from it, as forged ones would appear to.

#[macro_use]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

both_backends!(one_forged_ack_is_bounded_in_every_mode);

/// On-the-wire size of a datagram with `payload` bytes (IPv4 and UDP headers).
fn wire(payload: usize) -> usize {
    payload + 28
}

/// Sends a forged RRQ for a large file with the options that release the most, then a forged
/// ACK 0 to each of `ports` (where the attacker guesses the transfer is), then `more` blind
/// ACKs of one block each (the window granted when a forger can predict the port); returns (bytes the victim received,
/// bytes the attacker sent), both on the wire, counted until the server gives up.
fn attack(server: SocketAddr, ports: &[u16], more: u16) -> (usize, usize) {
    let victim = UdpSocket::bind("127.0.0.9:0").unwrap();
    let rrq = b"\x00\x01big.bin\x00octet\x00blksize\x0065464\x00windowsize\x0064\x00tsize\x000\x00";
    victim.send_to(rrq, server).unwrap();
    let mut sent = wire(rrq.len());
    std::thread::sleep(Duration::from_millis(50));
    for &port in ports {
        victim.send_to(&[0, 4, 0, 0], SocketAddr::new(server.ip(), port)).unwrap();
        sent += wire(4);
    }
    // Blind ACKs, spaced so that each one's window has gone out.
    let mut block = 0u16;
    for _ in 0..more {
        std::thread::sleep(Duration::from_millis(30));
        block = block.wrapping_add(1);
        for &port in ports {
            victim.send_to(&[0, 4, (block >> 8) as u8, block as u8], SocketAddr::new(server.ip(), port)).unwrap();
            sent += wire(4);
        }
    }
    // Everything that arrives until the server has given up (patience 6 s, one resend).
    victim.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 70_000];
    let end = Instant::now() + Duration::from_secs(9);
    while Instant::now() < end {
        if let Ok((n, _)) = victim.recv_from(&mut buf) {
            got += wire(n);
        }
    }
    (got, sent)
}

/// A port range of 16 free ports, for `--port-range`.
fn free_range() -> (u16, u16) {
    (0..200)
        .find_map(|_| {
            let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
            let lo = probe.local_addr().ok()?.port().checked_add(1)?;
            let held: Vec<_> = (lo..lo.checked_add(16)?).map(|p| UdpSocket::bind(("127.0.0.1", p)).ok()).collect();
            held.iter().all(Option::is_some).then_some((lo, lo + 15))
        })
        .expect("16 free adjacent ports")
}

fn one_forged_ack_is_bounded_in_every_mode(io: &str) {
    let root = Root::new();
    // One listening port: the ACK goes where the request went.
    let s = Server::start(root.path(), io, &["--single-port", "--workers", "1"]);
    let (got, sent) = attack(s.v4, &[s.v4.port()], 0);
    let ratio = got as f64 / sent as f64;
    eprintln!("{io} --single-port, RRQ + one forged ACK 0: {got} / {sent} bytes = {ratio:.1}x");
    assert!(ratio <= 60.0, "--single-port: one forged ACK released {got} bytes for {sent} ({ratio:.0}x)");
    let (got, sent) = attack(s.v4, &[s.v4.port()], 15);
    eprintln!(
        "{io} --single-port, RRQ + ACK 0 + 15 blind ACKs: {got} / {sent} bytes = {:.1}x",
        got as f64 / sent as f64
    );
    drop(s);

    // A budget raised for windowed clients (`--blind-budget 24000`: windowsize 16 at blksize
    // 1468): what one forged ACK 0 releases grows with it, and stays within it.
    let s = Server::start(root.path(), io, &["--single-port", "--blind-budget", "24000", "--workers", "1"]);
    let (got, sent) = attack(s.v4, &[s.v4.port()], 0);
    let raised = got as f64 / sent as f64;
    eprintln!("{io} --single-port --blind-budget 24000, RRQ + one forged ACK 0: {got} / {sent} bytes = {raised:.1}x");
    assert!(raised > 2.0 * ratio && got <= 24_000 + 2 * 1_000, "budget 24000 released {got} bytes ({raised:.0}x)");
    drop(s);

    // A port range: the attacker sprays its ACK 0 over every port of the range.
    let (lo, hi) = free_range();
    let range = format!("{lo}:{hi}");
    let s = Server::start(root.path(), io, &["--port-range", &range, "--workers", "1"]);
    let ports: Vec<u16> = (lo..=hi).collect();
    let (got, sent) = attack(s.v4, &ports, 0);
    let ratio = got as f64 / sent as f64;
    eprintln!("{io} --port-range {range}, RRQ + ACK 0 to all 16 ports: {got} / {sent} bytes = {ratio:.1}x");
    assert!(ratio <= 60.0, "--port-range: a sprayed ACK 0 released {got} bytes for {sent} ({ratio:.0}x)");
    let (got, sent) = attack(s.v4, &ports, 15);
    eprintln!(
        "{io} --port-range {range}, RRQ + 16 rounds of ACKs to all 16 ports: {got} / {sent} bytes = {:.1}x",
        got as f64 / sent as f64
    );
    drop(s);

    // A new kernel-chosen port per transfer: the forger cannot find the transfer; an ACK to the
    // listening port gets one small ERROR.
    let s = Server::start(root.path(), io, &["--workers", "1"]);
    let (got, sent) = attack(s.v4, &[s.v4.port()], 0);
    let ratio = got as f64 / sent as f64;
    eprintln!("{io} default mode, RRQ + ACK 0 to the listening port: {got} / {sent} bytes = {ratio:.1}x");
    assert!(ratio <= 60.0, "default mode: {got} bytes for {sent} ({ratio:.0}x)");
    let (got, sent) = attack(s.v4, &[s.v4.port()], 15);
    eprintln!(
        "{io} default mode, RRQ + 16 ACKs to the listening port: {got} / {sent} bytes = {:.1}x",
        got as f64 / sent as f64
    );
}
