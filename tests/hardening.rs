//! What a blind attacker or a slow client can make the server do, against the real binary on
//! both backends: unasked ERRORs within a budget, a silence bound whatever the client asked,
//! and room for real clients when never-acknowledged transfers pile up.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

const SEC: Duration = Duration::from_secs(1);

both_backends!(
    malformed_datagrams_get_a_bounded_number_of_errors,
    never_acknowledged_requests_do_not_lock_out_real_clients,
    one_source_holding_transfers_open_cannot_fill_the_server,
);

/// 500 malformed datagrams in a burst from one source: each used to get an ERROR (1.6–2.3× its
/// bytes, to a source that may be forged); now at most the budget's burst and rate.
fn malformed_datagrams_get_a_bounded_number_of_errors(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let c = Raw::new(s.v4);
    let t0 = Instant::now();
    for i in 0..500u32 {
        c.send(s.v4, &[0, 9, (i >> 8) as u8, i as u8, b'x']);
    }
    let mut errors = 0;
    while c.recv(SEC / 2).is_some() {
        errors += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    // One source reaches one worker: a burst of 50 and 50 per second after it.
    let bound = 50.0 + 50.0 * secs + 1.0;
    assert!(errors >= 1, "malformed datagrams are still answered within the budget");
    assert!(f64::from(errors) <= bound, "{errors} ERRORs to 500 malformed datagrams in {secs:.1} s (bound {bound:.0})");
    // A real request from the same source is still served.
    assert_eq!(
        c.fetch("small.bin", bootstorm::proto::wire::Mode::Octet, Default::default()).unwrap(),
        root.file("small.bin")
    );
    let (_, log) = s.stop();
    assert!(counter(&log, "errors_withheld") >= 400, "{log}");
}

/// A flood of requests whose clients never answer (forged sources, one per address, 2,000/s)
/// on a server with few descriptors (1,024, which the flood would use up in half a second): real clients are served throughout, never "busy", because the
/// table fills before descriptors run out and a never-acknowledged transfer gives way.
fn never_acknowledged_requests_do_not_lock_out_real_clients(io: &str) {
    use std::os::unix::process::CommandExt;
    let root = Root::new();
    let mut cmd = std::process::Command::new(bin());
    // SAFETY: the closure runs between fork and exec and makes one setrlimit call.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
    let s = Server::start_with(cmd, root.path(), io, &["--workers", "1"]);
    let addr = s.v4;
    let flood = std::thread::spawn(move || {
        for i in 0..2000u32 {
            // Each from its own address: no per-source limit is involved.
            let src = std::net::Ipv4Addr::from(0x7f03_0001 + i);
            if let Ok(sock) = std::net::UdpSocket::bind((src, 0)) {
                let _ = sock.send_to(b"\x00\x01big.bin\x00octet\x00", addr);
            }
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    // Real clients fetch all through the flood and after it, while the flood's transfers wait.
    let mut refused = Vec::new();
    let end = Instant::now() + Duration::from_millis(2500);
    let mut n = 0;
    while Instant::now() < end {
        let got = Raw::new(addr).fetch("small.bin", bootstorm::proto::wire::Mode::Octet, Default::default());
        match got {
            Ok(b) => assert_eq!(b, root.file("small.bin")),
            Err(e) => refused.push((n, e)),
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    flood.join().unwrap();
    assert!(refused.is_empty(), "real clients refused during the flood: {refused:?}");
    let (_, log) = s.stop();
    assert!(counter(&log, "evicted") > 0, "the flood filled the table: {log}");
    assert_eq!(counter(&log, "busy"), 0, "{log}");
}

/// One address asks for `timeout 255`, acknowledges the OACK and goes silent, again and again
/// (within any per-source rate): it used to hold every slot of a small server for 25 minutes,
/// and everyone else got "busy". Now it holds at most its share, and others are served.
fn one_source_holding_transfers_open_cannot_fill_the_server(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--max-transfers", "16", "--workers", "1"]);
    let mut held = Vec::new();
    let mut busy = 0;
    for _ in 0..16 {
        let c = Raw::from("127.0.0.7:0", s.v4);
        c.rrq("big.bin", &[("timeout", "255")]);
        let (p, tid) = c.expect(2 * SEC);
        if error_of_opt(&p).is_some() {
            busy += 1;
            continue;
        }
        c.ack(tid, 0);
        let _ = c.expect(2 * SEC);
        held.push(c);
    }
    assert!(held.len() <= 8 && busy >= 8, "one source held {} of 16 slots ({busy} busy)", held.len());
    for n in 0..5 {
        let got =
            Raw::from("127.0.0.8:0", s.v4).fetch("small.bin", bootstorm::proto::wire::Mode::Octet, Default::default());
        assert_eq!(got.map_err(|e| (n, e)).unwrap(), root.file("small.bin"));
    }
}

/// The ERROR in `p`, if it is one.
fn error_of_opt(p: &[u8]) -> Option<(u16, String)> {
    match bootstorm::proto::wire::Packet::decode(p) {
        Ok(bootstorm::proto::wire::Packet::Error { code, message }) => {
            Some((code.0, String::from_utf8_lossy(message).into()))
        }
        _ => None,
    }
}
