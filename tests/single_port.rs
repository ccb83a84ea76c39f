//! Single-port mode with a client that keeps one port from one file to the next. Every answer
//! then comes from the listening port, so the client cannot tell its previous transfer's late
//! packets from its next request's answer by their source: the server must not send any.
//!
//! A lockstep client that receives the final DATA twice (the server resent it while the ACK was
//! on its way) acknowledges it twice, and asks for its next file at once. The second ACK
//! reaches the server after the transfer has ended: answered with ERROR 5 "unknown transfer
//! ID", it would reach the client as the first answer to its next request.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;

both_backends!(a_duplicate_final_ack_draws_nothing_before_the_next_answer, the_next_request_ends_the_transfer);

const WAIT: Duration = Duration::from_secs(2);

/// DATA `block` of `file` at 512 bytes a block.
fn block_of(file: &[u8], block: usize) -> &[u8] {
    &file[(block - 1) * 512..(block * 512).min(file.len())]
}

fn a_duplicate_final_ack_draws_nothing_before_the_next_answer(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--single-port", "--workers", "1"]);
    let c = Raw::new(s.v4);
    let small = root.file("small.bin");
    for round in 0..20 {
        c.rrq("small.bin", &[]);
        for block in 1..=6u16 {
            let (p, from) = c.expect(WAIT);
            assert_eq!(from, s.v4, "every answer from the listening port");
            assert_eq!(data_of(&p), (block, block_of(&small, block.into()).to_vec()), "round {round}");
            c.ack(s.v4, block);
        }
        // The final block arrived twice: the client acknowledged it twice.
        c.ack(s.v4, 6);
        // Its next file, from the same port, at once.
        c.rrq("vmlinuz", &[]);
        let (p, from) = c.expect(WAIT);
        assert_eq!(from, s.v4);
        assert_eq!(
            data_of(&p),
            (1, block_of(&root.file("vmlinuz"), 1).to_vec()),
            "round {round}: the next request's first answer is its DATA 1, got {p:02x?}"
        );
        // End it: an ERROR from the client.
        c.send(s.v4, b"\x00\x05\x00\x00done\x00");
        std::thread::sleep(Duration::from_millis(20));
        while c.recv(Duration::from_millis(50)).is_some() {}
    }
    let (_, log) = s.stop();
    assert!(counter(&log, "late") >= 20, "the duplicates were counted as late: {log}");
}

fn the_next_request_ends_the_transfer(io: &str) {
    let root = Root::new();
    // A long retransmission timeout: nothing is resent by the timer during the test.
    let s = Server::start(root.path(), io, &["--single-port", "--workers", "1", "--min-rto", "1000"]);
    let c = Raw::new(s.v4);
    c.rrq("small.bin", &[]);
    for block in 1..=5u16 {
        let (p, _) = c.expect(WAIT);
        assert_eq!(data_of(&p).0, block);
        c.ack(s.v4, block);
    }
    let (p, _) = c.expect(WAIT);
    assert_eq!(data_of(&p).0, 6);
    // The final ACK is lost; the client asks for its next file from the same port.
    c.rrq("vmlinuz", &[]);
    let (p, _) = c.expect(WAIT);
    assert_eq!(data_of(&p).0, 1, "the new transfer's DATA 1, got {p:02x?}");
    c.ack(s.v4, 1);
    // From now on only the new transfer speaks: DATA 2, and no resend of the old DATA 6, ever
    // (its timer would have fired after 1 s).
    let (p, _) = c.expect(WAIT);
    assert_eq!(data_of(&p), (2, block_of(&root.file("vmlinuz"), 2).to_vec()));
    let mut late = Vec::new();
    while let Some((p, _)) = c.recv(Duration::from_millis(2500)) {
        late.push(data_of(&p).0);
    }
    assert!(late.iter().all(|&b| b == 2), "only resends of the new transfer's DATA 2: {late:?}");
}
