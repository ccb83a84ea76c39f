//! What real fleets do to a server, packet by packet against the real binary on both backends:
//! many clients behind one address (a NAT gateway, a Kubernetes node, a relay), a client that
//! negotiates its own retransmission timeout (RFC 2349), and a client whose first ACK is lost.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use bootstorm::proto::RequestOptions;
use bootstorm::proto::wire::{Mode, Packet};
use common::*;

const SEC: Duration = Duration::from_secs(1);

both_backends!(
    clients_sharing_one_address_are_all_served,
    negotiated_timeout_is_the_wait_before_a_resend,
    first_data_is_resent_once_to_a_silent_client,
    lost_ack_0_is_recovered_by_one_resent_oack,
);

/// Every datagram that arrives within `window`, with its arrival time after `since`.
fn collect(c: &Raw, since: Instant, window: Duration) -> Vec<(Duration, Vec<u8>, std::net::SocketAddr)> {
    let mut out = Vec::new();
    let end = since + window;
    while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        if let Some((p, from)) = c.recv(left) {
            out.push((since.elapsed(), p, from));
        }
    }
    out
}

/// 600 clients from 127.0.0.1, each from its own port, ask at once with the defaults: every one
/// gets its first DATA (the default burst per address is 500, split over the workers, which on
/// an idle server must not matter).
fn clients_sharing_one_address_are_all_served(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let clients: Vec<Raw> = (0..600).map(|_| Raw::from("127.0.0.1:0", s.v4)).collect();
    for c in &clients {
        c.rrq("small.bin", &[]);
    }
    let mut silent = 0;
    for c in &clients {
        match c.recv(2 * SEC) {
            Some((p, tid)) => {
                assert_eq!(data_of(&p), (1, root.file("small.bin")[..512].to_vec()));
                c.send(tid, b"\x00\x05\x00\x00done\x00");
            }
            None => silent += 1,
        }
    }
    assert_eq!(silent, 0, "{silent} of 600 clients on one address got no answer");
    // And a whole transfer still works from that address.
    let c = Raw::from("127.0.0.1:0", s.v4);
    assert_eq!(c.fetch("big.bin", Mode::Octet, RequestOptions::default()).unwrap(), root.file("big.bin"));
    let (_, log) = s.stop();
    assert_eq!(counter(&log, "rate_limited"), 0, "{log}");
}

/// A client that negotiates `timeout 3` gets no retransmission sooner than 3 s, however fast
/// its round trips were.
fn negotiated_timeout_is_the_wait_before_a_resend(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let c = Raw::new(s.v4);
    c.rrq("big.bin", &[("timeout", "3")]);
    let (p, tid) = c.expect(2 * SEC);
    assert!(matches!(Packet::decode(&p).unwrap(), Packet::Oack(_)));
    // A few fast round trips, so that the adaptive timeout would have gone down to milliseconds.
    c.ack(tid, 0);
    for block in 1..=5u16 {
        let (p, _) = c.expect(2 * SEC);
        assert_eq!(data_of(&p).0, block);
        if block < 5 {
            c.ack(tid, block);
        }
    }
    // Silence after DATA 5: the only copy within 2.9 s is none; the first arrives after 3 s.
    let since = Instant::now();
    let got = collect(&c, since, Duration::from_millis(3600));
    let copies: Vec<_> = got.iter().map(|(t, p, _)| (t.as_millis(), data_of(p).0)).collect();
    assert_eq!(copies.len(), 1, "one resend in 3.6 s, after the negotiated 3 s: {copies:?}");
    assert!(copies[0].0 >= 2900, "resent after {} ms, before the negotiated 3 s", copies[0].0);
    assert_eq!(copies[0].1, 5);
}

/// A client that received DATA 1 but whose ACK was lost gets DATA 1 once more, from the same
/// port, after the initial timeout (1 s) — and nothing more on a timer, so a spoofed request
/// costs its victim at most two datagrams.
fn first_data_is_resent_once_to_a_silent_client(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let c = Raw::new(s.v4);
    c.rrq("small.bin", &[]);
    let (first, tid) = c.expect(2 * SEC);
    let since = Instant::now();
    let got = collect(&c, since, Duration::from_millis(3500));
    assert_eq!(got.len(), 1, "exactly one timed resend: {:?}", got.iter().map(|g| g.0).collect::<Vec<_>>());
    let (at, p, from) = &got[0];
    assert!((800..2000).contains(&at.as_millis()), "resent after {} ms, expected about 1 s", at.as_millis());
    assert_eq!((p, *from), (&first, tid), "the same bytes from the same port");
    // The ACK of the resent DATA 1 carries the transfer on.
    c.ack(tid, 1);
    let (p, _) = c.expect(2 * SEC);
    assert_eq!(data_of(&p).0, 2);
}

/// GRUB's stall: the OACK arrives, the client's ACK 0 is lost, and the client waits for DATA 1.
/// The OACK comes again after 1 s; its ACK 0 then starts the data.
fn lost_ack_0_is_recovered_by_one_resent_oack(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let c = Raw::new(s.v4);
    c.rrq("small.bin", &[("blksize", "1024"), ("tsize", "0")]);
    let (oack, tid) = c.expect(2 * SEC);
    assert!(matches!(Packet::decode(&oack).unwrap(), Packet::Oack(_)));
    let since = Instant::now();
    let got = collect(&c, since, Duration::from_millis(2500));
    assert_eq!(got.len(), 1, "one resent OACK: {:?}", got.iter().map(|g| g.0).collect::<Vec<_>>());
    let (at, p, from) = &got[0];
    assert!((800..2000).contains(&at.as_millis()), "OACK resent after {} ms", at.as_millis());
    assert_eq!((p, *from), (&oack, tid), "the same OACK from the same port");
    c.ack(tid, 0);
    let mut file = Vec::new();
    for block in 1..=3u16 {
        let (p, _) = c.expect(2 * SEC);
        let (n, data) = data_of(&p);
        assert_eq!(n, block);
        file.extend(data);
        c.ack(tid, block);
    }
    assert_eq!(file, root.file("small.bin"));
}
