//! Unit tests of the write transfer: the upload patterns, packet by packet.

use std::time::Duration;

use super::*;
use crate::proto::options::{Limits, negotiate};
use crate::proto::rtt::RtoBounds;
use crate::proto::wire::{Mode, Options, RequestKind};

const CFG: RetransmitConfig = RetransmitConfig {
    rto: RtoBounds { initial: Duration::from_millis(100), min: Duration::from_millis(10), max: Duration::from_secs(1) },
    max_retries: 3,
    patience: Duration::from_secs(2),
    max_silence: Duration::from_secs(60),
};

fn t(ms: u64) -> Timestamp {
    Timestamp::from_micros(ms * 1000)
}

fn negotiated(options: &str) -> Negotiated {
    let mut raw = b"\x00\x02f\x00octet\x00".to_vec();
    for part in options.split_whitespace() {
        raw.extend(part.as_bytes());
        raw.push(0);
    }
    let opts: Options<'_> = match Packet::decode(&raw).unwrap() {
        Packet::Request(r) => r.options,
        _ => unreachable!(),
    };
    negotiate(RequestKind::Write, Mode::Octet, &opts, None, Limits::default(), None)
}

fn data<'a>(x: &mut WriteTransfer, now: Timestamp, block: u16, bytes: &'a [u8]) -> Option<(u64, &'a [u8])> {
    x.handle_packet(now, &Packet::Data { block, data: bytes }, &CFG)
}

fn drain(x: &mut WriteTransfer) -> Vec<WriteTransmit> {
    std::iter::from_fn(|| x.poll_transmit()).collect()
}

#[test]
fn plain_upload_commit_then_final_ack() {
    let mut x = WriteTransfer::new(t(0), &negotiated(""), 10_000, &CFG);
    assert_eq!(drain(&mut x), [WriteTransmit::Ack(0)]);
    assert_eq!(data(&mut x, t(1), 1, &[1; 512]), Some((0, &[1u8; 512][..])));
    assert_eq!(drain(&mut x), [WriteTransmit::Ack(1)]);
    assert_eq!(data(&mut x, t(2), 2, &[2; 10]).map(|(o, d)| (o, d.len())), Some((512, 10)));
    assert!(x.wants_commit());
    assert_eq!(drain(&mut x), [], "no final ACK before the commit");
    assert_eq!(x.poll_timeout(), None);
    x.commit_result(t(3), Ok(()), &CFG);
    assert_eq!(drain(&mut x), [WriteTransmit::Ack(2)]);
    assert!(x.is_committed());
    // A repeated final block (our ACK was lost) is answered while dallying.
    assert_eq!(data(&mut x, t(4), 2, &[2; 10]), None);
    assert_eq!(drain(&mut x), [WriteTransmit::Ack(2)]);
    x.handle_timeout(x.poll_timeout().unwrap(), &CFG);
    assert_eq!(x.outcome(), Some(Outcome::Complete));
    assert_eq!(x.received(), 522);
    assert_eq!(x.completed(), Some(t(3)), "the duration ends at the commit, not the dally");
}

#[test]
fn abort_while_dallying_is_a_success() {
    let mut x = WriteTransfer::new(t(0), &negotiated(""), 10_000, &CFG);
    drain(&mut x);
    data(&mut x, t(1), 1, b"all");
    x.commit_result(t(2), Ok(()), &CFG);
    drain(&mut x);
    x.fail(LocalFailure::ShuttingDown);
    assert_eq!(drain(&mut x), [], "no ERROR after the final ACK");
    assert_eq!(x.outcome(), Some(Outcome::Complete));
}

#[test]
fn failed_commit_is_an_error_not_an_ack() {
    let mut x = WriteTransfer::new(t(0), &negotiated(""), 10_000, &CFG);
    drain(&mut x);
    data(&mut x, t(1), 1, b"short");
    x.commit_result(t(2), Err(LocalFailure::DiskFull.into()), &CFG);
    assert_eq!(
        drain(&mut x),
        [WriteTransmit::Error { code: ErrorCode::DISK_FULL, message: "disk full or upload too large" }]
    );
    assert_eq!(x.outcome(), Some(Outcome::Aborted(ErrorCode::DISK_FULL)));
}

#[test]
fn oack_and_windowed_acks() {
    let mut x = WriteTransfer::new(t(0), &negotiated("blksize 100 windowsize 4 tsize 1000"), 10_000, &CFG);
    assert_eq!(drain(&mut x), [WriteTransmit::Oack(x.oack())]);
    for b in 1..=3 {
        assert!(data(&mut x, t(1), b, &[0; 100]).is_some());
        assert_eq!(drain(&mut x), []);
    }
    data(&mut x, t(1), 4, &[0; 100]);
    assert_eq!(drain(&mut x), [WriteTransmit::Ack(4)], "ACK at the window's end");
    // Block 6 before 5: the gap is reported with the last block in order.
    assert_eq!(data(&mut x, t(2), 6, &[0; 100]), None);
    assert_eq!(drain(&mut x), [WriteTransmit::Ack(4)]);
}

#[test]
fn size_limit_is_disk_full() {
    let mut x = WriteTransfer::new(t(0), &negotiated(""), 600, &CFG);
    drain(&mut x);
    assert!(data(&mut x, t(1), 1, &[0; 512]).is_some());
    assert_eq!(data(&mut x, t(2), 2, &[0; 512]), None);
    assert_eq!(
        drain(&mut x),
        [WriteTransmit::Error { code: ErrorCode::DISK_FULL, message: "upload larger than allowed" }]
    );
}

#[test]
fn silent_client_before_data_expires_without_resends() {
    // The wait for the first DATA is the initial timeout (100 ms here), not the patience.
    let mut x = WriteTransfer::new(t(0), &negotiated("blksize 1024"), 10_000, &CFG);
    assert_eq!(drain(&mut x), [WriteTransmit::Oack(x.oack())]);
    assert_eq!(x.poll_timeout(), Some(t(100)));
    x.handle_timeout(t(60), &CFG);
    assert_eq!(drain(&mut x), []);
    assert_eq!(x.handle_repeated_request(t(80), &CFG), Repeat::ResendFirst);
    assert_eq!(drain(&mut x), [WriteTransmit::Oack(x.oack())]);
    assert_eq!(x.poll_timeout(), Some(t(180)), "a repeat gets the wait again");
    x.handle_timeout(t(180), &CFG);
    assert_eq!(x.outcome(), Some(Outcome::TimedOut));
}

#[test]
fn first_data_wait_is_short_and_cannot_be_bought() {
    // A client's timeout option does not lengthen the wait for the first DATA.
    for opts in ["", "timeout 10", "timeout 255 blksize 1024"] {
        let mut x = WriteTransfer::new(t(0), &negotiated(opts), 10_000, &CFG);
        drain(&mut x);
        assert_eq!(x.poll_timeout(), Some(t(100)), "{opts:?}");
        // Repeats extend it, but never beyond twice the wait from the start.
        for at in [90, 150, 190] {
            assert_eq!(x.handle_repeated_request(t(at), &CFG), Repeat::ResendFirst);
            drain(&mut x);
        }
        assert_eq!(x.poll_timeout(), Some(t(200)), "{opts:?}");
        // DATA 1 after that finds the transfer over.
        x.handle_timeout(t(200), &CFG);
        assert_eq!(x.outcome(), Some(Outcome::TimedOut));
        assert_eq!(data(&mut x, t(201), 1, b"late"), None);
    }
    // DATA 1 in time starts the upload; after that the client's timeout applies as before.
    let mut x = WriteTransfer::new(t(0), &negotiated("timeout 3"), 10_000, &CFG);
    drain(&mut x);
    assert_eq!(data(&mut x, t(99), 1, &[0; 512]), Some((0, &[0u8; 512][..])));
    assert_eq!(x.poll_timeout(), Some(t(99 + 3000)));
}

#[test]
fn stalled_client_gets_last_ack_again_then_is_given_up() {
    let mut x = WriteTransfer::new(t(0), &negotiated(""), 10_000, &CFG);
    drain(&mut x);
    data(&mut x, t(1), 1, &[0; 512]);
    drain(&mut x);
    let mut acks = 0;
    while x.outcome().is_none() {
        let at = x.poll_timeout().unwrap();
        x.handle_timeout(at, &CFG);
        acks += drain(&mut x).len();
    }
    assert_eq!(x.outcome(), Some(Outcome::TimedOut));
    assert!(acks >= 3, "{acks}");
}

#[test]
fn client_abort_and_stray_packets() {
    let mut x = WriteTransfer::new(t(0), &negotiated(""), 10_000, &CFG);
    drain(&mut x);
    x.handle_packet(t(1), &Packet::Error { code: ErrorCode::NOT_DEFINED, message: b"" }, &CFG);
    assert_eq!(x.outcome(), Some(Outcome::PeerError(ErrorCode::NOT_DEFINED)));
    let mut x = WriteTransfer::new(t(0), &negotiated(""), 10_000, &CFG);
    drain(&mut x);
    x.handle_packet(t(1), &Packet::Ack { block: 1 }, &CFG);
    assert!(matches!(drain(&mut x)[..], [WriteTransmit::Error { code: ErrorCode::ILLEGAL_OPERATION, .. }]));
}

#[test]
fn retries_bound_the_acks_resent_to_a_silent_uploader() {
    for retries in [1u8, 3, 6] {
        let cfg = RetransmitConfig { max_retries: retries, patience: Duration::from_secs(2), ..CFG };
        let mut x = WriteTransfer::new(t(0), &negotiated(""), 1 << 20, &cfg);
        assert_eq!(drain(&mut x), [WriteTransmit::Ack(0)]);
        // A few blocks acknowledged at once: the timeout falls to its floor.
        for block in 1..=5u16 {
            assert!(x.handle_packet(t(u64::from(block)), &Packet::Data { block, data: &[0; 512] }, &cfg).is_some());
            assert_eq!(drain(&mut x), [WriteTransmit::Ack(block)]);
        }
        let silent_since = t(5);
        // The client says nothing more.
        let mut resent = 0;
        for _ in 0..1000 {
            let Some(at) = x.poll_timeout() else { break };
            x.handle_timeout(at, &cfg);
            resent += drain(&mut x).len();
            if x.outcome().is_some() {
                assert!(at.saturating_since(silent_since) >= cfg.patience, "--retries {retries}: gave up early");
                break;
            }
        }
        assert_eq!(x.outcome(), Some(Outcome::TimedOut), "--retries {retries}");
        assert_eq!(resent, usize::from(retries), "--retries {retries}: ACKs resent to a silent uploader");
    }
}
