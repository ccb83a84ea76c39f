//! What a blind attacker or a slow client can make the server do, against the real binary on
//! both backends: unasked ERRORs within a budget, a silence bound whatever the client asked,
//! and room for real clients when never-acknowledged transfers pile up.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

const SEC: Duration = Duration::from_secs(1);

both_backends!(malformed_datagrams_get_a_bounded_number_of_errors);

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
