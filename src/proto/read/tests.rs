//! Unit tests of the read transfer: each real-client pattern, packet by packet. (Over 400 lines
//! on purpose: one test per pattern, each readable alone.)

use std::time::Duration;

use super::*;
use crate::proto::LocalFailure;
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

fn negotiated(options: &str, size: u64) -> Negotiated {
    let mut raw = b"\x00\x01f\x00octet\x00".to_vec();
    for part in options.split_whitespace() {
        raw.extend(part.as_bytes());
        raw.push(0);
    }
    let opts: Options<'_> = match Packet::decode(&raw).unwrap() {
        Packet::Request(r) => r.options,
        _ => unreachable!(),
    };
    negotiate(RequestKind::Read, Mode::Octet, &opts, Some(size), Limits::default(), None)
}

fn drain(x: &mut ReadTransfer, now: Timestamp) -> Vec<Transmit> {
    drain_with(x, now, &CFG)
}

fn drain_with(x: &mut ReadTransfer, now: Timestamp, cfg: &RetransmitConfig) -> Vec<Transmit> {
    std::iter::from_fn(|| x.poll_transmit(now, cfg)).collect()
}

fn ack(x: &mut ReadTransfer, now: Timestamp, block: u16) {
    x.handle_packet(now, &Packet::Ack { block }, &CFG);
}

fn error(x: &mut ReadTransfer, now: Timestamp, code: ErrorCode) {
    x.handle_packet(now, &Packet::Error { code, message: b"" }, &CFG);
}

fn data(block: u16, offset: u64, len: usize) -> Transmit {
    Transmit::Data { block, offset, len }
}

#[test]
fn plain_request_lockstep() {
    let mut x = ReadTransfer::new(t(0), 1000, &negotiated("", 1000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [data(1, 0, 512)]);
    ack(&mut x, t(1), 1);
    assert_eq!(drain(&mut x, t(1)), [data(2, 512, 488)]);
    ack(&mut x, t(2), 2);
    assert_eq!(x.outcome(), Some(Outcome::Complete));
    assert_eq!(x.bytes_acked(), 1000);
    assert_eq!(x.retransmits(), 0);
    assert_eq!(x.poll_timeout(), None);
}

#[test]
fn oack_then_windows() {
    let n = negotiated("blksize 1468 tsize 0 windowsize 4", 1468 * 6);
    let mut x = ReadTransfer::new(t(0), 1468 * 6, &n, &CFG);
    assert_eq!(drain(&mut x, t(0)), [Transmit::Oack(x.oack())]);
    assert!(!x.is_confirmed());
    ack(&mut x, t(2), 0);
    assert!(x.is_confirmed());
    assert_eq!(x.sender().rtt().srtt(), Some(Duration::from_millis(2)), "OACK round trip sampled");
    let w = drain(&mut x, t(2));
    assert_eq!(w.len(), 4);
    assert_eq!(w[3], data(4, 1468 * 3, 1468));
    ack(&mut x, t(3), 4);
    // Blocks 5, 6 and the final empty block 7.
    assert_eq!(drain(&mut x, t(3)), [data(5, 1468 * 4, 1468), data(6, 1468 * 5, 1468), data(7, 1468 * 6, 0)]);
    ack(&mut x, t(4), 7);
    assert_eq!(x.outcome(), Some(Outcome::Complete));
}

#[test]
fn empty_file_is_one_empty_data() {
    let mut x = ReadTransfer::new(t(0), 0, &negotiated("", 0), &CFG);
    assert_eq!(drain(&mut x, t(0)), [data(1, 0, 0)]);
    ack(&mut x, t(1), 1);
    assert_eq!(x.outcome(), Some(Outcome::Complete));
}

#[test]
fn uefi_size_probe_is_a_probe() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("tsize 0 blksize 1468", 5000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [Transmit::Oack(x.oack())]);
    x.handle_packet(
        t(1),
        &Packet::Error { code: ErrorCode::OPTION_REFUSED, message: b"User aborted the transfer" },
        &CFG,
    );
    assert_eq!(x.outcome(), Some(Outcome::Probe));
    assert_eq!(drain(&mut x, t(1)), [], "nothing more is sent");
    assert_eq!(x.outcome().unwrap().label(), "probe");
    // "User aborted" with another code is the same probe.
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("tsize 0", 5000), &CFG);
    drain(&mut x, t(0));
    x.handle_packet(t(1), &Packet::Error { code: ErrorCode::NOT_DEFINED, message: b"user aborted" }, &CFG);
    assert_eq!(x.outcome(), Some(Outcome::Probe));
}

#[test]
fn any_other_error_right_after_the_oack_is_a_rejection() {
    // Another code after tsize, ERROR 0 without a word, or ERROR 8 when tsize was not asked.
    for (options, code) in [
        ("tsize 0", ErrorCode::ACCESS_VIOLATION),
        ("tsize 0", ErrorCode::NOT_DEFINED),
        ("blksize 1468", ErrorCode::OPTION_REFUSED),
    ] {
        let mut x = ReadTransfer::new(t(0), 5000, &negotiated(options, 5000), &CFG);
        drain(&mut x, t(0));
        error(&mut x, t(1), code);
        assert_eq!(x.outcome(), Some(Outcome::Rejected(code)), "{options} then ERROR {}", code.0);
        assert_eq!(x.outcome().unwrap().label(), "rejected");
        assert_eq!(drain(&mut x, t(1)), [], "nothing more is sent");
    }
    // Without an OACK an ERROR is the client's error, never a probe.
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("", 5000), &CFG);
    drain(&mut x, t(0));
    error(&mut x, t(1), ErrorCode::OPTION_REFUSED);
    assert_eq!(x.outcome(), Some(Outcome::PeerError(ErrorCode::OPTION_REFUSED)));
}

#[test]
fn pxelinux_close_after_final_block_is_success() {
    let mut x = ReadTransfer::new(t(0), 600, &negotiated("tsize 0 blksize 1408", 600), &CFG);
    drain(&mut x, t(0));
    ack(&mut x, t(1), 0);
    assert_eq!(drain(&mut x, t(1)), [data(1, 0, 600)]);
    error(&mut x, t(2), ErrorCode::NOT_DEFINED);
    assert_eq!(x.outcome(), Some(Outcome::Complete));
    // ERROR 0 in the middle of a file is a client abort.
    let mut x = ReadTransfer::new(t(0), 6000, &negotiated("", 6000), &CFG);
    drain(&mut x, t(0));
    ack(&mut x, t(1), 1);
    drain(&mut x, t(1));
    error(&mut x, t(2), ErrorCode::NOT_DEFINED);
    assert_eq!(x.outcome(), Some(Outcome::PeerError(ErrorCode::NOT_DEFINED)));
}

#[test]
fn first_answer_resent_on_a_timer_with_backoff_and_per_request() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("blksize 1024", 5000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [Transmit::Oack(x.oack())]);
    // The client is silent: a resend after the initial timeout (100 ms here), not before.
    assert_eq!(x.poll_timeout(), Some(t(100)));
    x.handle_timeout(t(99), &CFG);
    assert_eq!(drain(&mut x, t(99)), []);
    x.handle_timeout(t(100), &CFG);
    assert_eq!(drain(&mut x, t(100)), [Transmit::Oack(x.oack())]);
    assert_eq!(x.retransmits(), 1);
    let again = x.oack();
    assert_eq!((again.blksize, again.tsize, again.has_oack()), (1024, Some(5000), true));
    // The next one waits twice as long.
    assert_eq!(x.poll_timeout(), Some(t(300)));
    x.handle_timeout(t(299), &CFG);
    assert_eq!(drain(&mut x, t(299)), []);
    x.handle_timeout(t(300), &CFG);
    assert_eq!(drain(&mut x, t(300)), [Transmit::Oack(x.oack())]);
    assert_eq!(x.poll_timeout(), Some(t(700)));
    // The client repeats its request: one more OACK, and the timed resends start over.
    assert_eq!(x.handle_repeated_request(t(500), &CFG), Repeat::ResendFirst);
    assert_eq!(drain(&mut x, t(500)), [Transmit::Oack(x.oack())]);
    assert_eq!(x.retransmits(), 3);
    assert_eq!(x.poll_timeout(), Some(t(600)), "the initial timeout again, from the repeat");
    ack(&mut x, t(503), 0);
    assert_eq!(x.sender().rtt().srtt(), Some(Duration::from_millis(3)), "timed from the latest OACK");
    assert_eq!(drain(&mut x, t(503)), [data(1, 0, 1024)]);

    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("blksize 1024", 5000), &CFG);
    drain(&mut x, t(0));
    assert_eq!(x.handle_repeated_request(t(1500), &CFG), Repeat::ResendFirst);
    drain(&mut x, t(1500));
    // The expiry restarted at the repeat (2 s of patience); the timed resends come before it.
    let (sent, end) = silent_client(&mut x, &CFG);
    assert_eq!(sent, [1600, 1800, 2200, 3000]);
    assert_eq!(end, 3500);
    assert_eq!(x.outcome(), Some(Outcome::TimedOut));
    assert_eq!(drain(&mut x, t(3500)), [], "no ERROR to a silent, unconfirmed peer");
}

/// Lets the client stay silent until the transfer ends: the times (ms) of what went out on the
/// timer, all of it the first answer, and when the transfer timed out.
fn silent_client(x: &mut ReadTransfer, cfg: &RetransmitConfig) -> (Vec<u64>, u64) {
    let first = x.oack();
    let mut sent = Vec::new();
    for _ in 0..100 {
        let now = x.poll_timeout().expect("a silent transfer ends only by timing out");
        x.handle_timeout(now, cfg);
        for p in drain_with(x, now, cfg) {
            match p {
                Transmit::Oack(n) => assert_eq!(n, first),
                Transmit::Data { block, offset, .. } => assert_eq!((block, offset), (1, 0)),
                Transmit::Error { .. } => panic!("an ERROR to a silent client at {now:?}"),
            }
            sent.push(now.saturating_since(t(0)).as_millis() as u64);
        }
        if x.outcome().is_some() {
            assert_eq!(x.outcome(), Some(Outcome::TimedOut));
            return (sent, now.saturating_since(t(0)).as_millis() as u64);
        }
    }
    panic!("still going after 100 timers: {sent:?}");
}

#[test]
fn oack_resent_with_backoff_up_to_the_bound_never_after_the_patience() {
    // GRUB never repeats its ACK 0: each lost one (or lost OACK) is recovered only by the
    // server's timer. Waits of 100, 200, 400, 800 ms, until the 2 s of patience run out.
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("blksize 1024 tsize 0", 5000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [Transmit::Oack(x.oack())]);
    assert_eq!(silent_client(&mut x, &CFG), (vec![100, 300, 700, 1500], 2000));
    assert_eq!(x.retransmits(), 4);

    // More patience: the bound, four timed resends per request, stops them.
    let patient = RetransmitConfig { patience: Duration::from_secs(10), ..CFG };
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("blksize 1024", 5000), &patient);
    drain_with(&mut x, t(0), &patient);
    assert_eq!(silent_client(&mut x, &patient), (vec![100, 300, 700, 1500], 10_000));

    // The waits stop doubling at the longest timeout (here 300 ms).
    let capped = RetransmitConfig { rto: RtoBounds { max: Duration::from_millis(300), ..CFG.rto }, ..patient };
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("blksize 1024", 5000), &capped);
    drain_with(&mut x, t(0), &capped);
    assert_eq!(silent_client(&mut x, &capped), (vec![100, 300, 600, 900], 10_000));

    // Less patience: nothing after it has run out.
    let impatient = RetransmitConfig { patience: Duration::from_millis(1000), ..CFG };
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("blksize 1024", 5000), &impatient);
    drain_with(&mut x, t(0), &impatient);
    assert_eq!(silent_client(&mut x, &impatient), (vec![100, 300, 700], 1000));

    // The defaults: 1, 3 and 5 s, given up at 6 s.
    let defaults = RetransmitConfig::default();
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("blksize 1024 tsize 0", 5000), &defaults);
    drain_with(&mut x, t(0), &defaults);
    assert_eq!(silent_client(&mut x, &defaults), (vec![1000, 3000, 5000], 6000));
}

#[test]
fn oack_resends_stop_at_the_first_ack_0() {
    let mut x = ReadTransfer::new(t(0), 50_000, &negotiated("blksize 1024 tsize 0", 50_000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [Transmit::Oack(x.oack())]);
    for ms in [100, 300] {
        x.handle_timeout(t(ms), &CFG);
        assert_eq!(drain(&mut x, t(ms)), [Transmit::Oack(x.oack())]);
    }
    // The ACK 0 of the second resend arrives: DATA 1, and never an OACK again.
    ack(&mut x, t(310), 0);
    assert!(x.is_confirmed());
    assert_eq!(drain(&mut x, t(310)), [data(1, 0, 1024)]);
    let mut timed = 0;
    while x.outcome().is_none() {
        let now = x.poll_timeout().unwrap();
        x.handle_timeout(now, &CFG);
        for p in drain(&mut x, now) {
            assert_eq!(p, data(1, 0, 1024), "only DATA 1 again once the ACK 0 came ({now:?})");
            timed += 1;
        }
    }
    assert_eq!(x.outcome(), Some(Outcome::TimedOut));
    assert_eq!(timed, CFG.max_retries, "DATA 1 resent by the sender's own rule");
    assert_eq!(x.retransmits(), 2 + u32::from(CFG.max_retries));
}

#[test]
fn data_1_still_resent_only_once_to_a_silent_client() {
    // Without options the first answer is DATA 1, up to blksize bytes: one timed resend per
    // request, however patient the server, so a forged request costs its victim two datagrams.
    for cfg in [CFG, RetransmitConfig { patience: Duration::from_secs(10), ..CFG }, RetransmitConfig::default()] {
        let mut x = ReadTransfer::new(t(0), 5000, &negotiated("", 5000), &cfg);
        assert_eq!(drain_with(&mut x, t(0), &cfg), [data(1, 0, 512)]);
        let (sent, end) = silent_client(&mut x, &cfg);
        assert_eq!(sent, [cfg.rto.initial.as_millis() as u64], "{cfg:?}");
        assert_eq!(end, cfg.patience.as_millis() as u64, "{cfg:?}");
    }
}

#[test]
fn oack_resends_never_come_sooner_than_the_negotiated_timeout() {
    // RFC 2349: a client that asks for timeout N is never sent to again sooner. With the
    // defaults (initial 1 s, longest 2 s, 6 s of patience) the waits start at N and double up
    // to 2 s or N, whichever is longer; a longer timeout also means fewer resends within 6 s.
    let defaults = RetransmitConfig::default();
    for (timeout, want) in [(1, vec![1000, 3000, 5000]), (2, vec![2000, 4000]), (3, vec![3000]), (4, vec![4000])] {
        let n = negotiated(&format!("blksize 1024 timeout {timeout}"), 5000);
        let mut x = ReadTransfer::new(t(0), 5000, &n, &defaults);
        assert_eq!(drain_with(&mut x, t(0), &defaults), [Transmit::Oack(x.oack())]);
        let (sent, end) = silent_client(&mut x, &defaults);
        assert_eq!(sent, want, "timeout {timeout}");
        assert_eq!(end, 6000.max(2000 * timeout), "timeout {timeout}");
    }
}

#[test]
fn lost_ack_1_recovered_by_one_timed_resend_of_data_1() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("", 5000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [data(1, 0, 512)]);
    x.handle_timeout(t(100), &CFG);
    assert_eq!(drain(&mut x, t(100)), [data(1, 0, 512)]);
    assert_eq!(x.retransmits(), 1);
    x.handle_timeout(t(300), &CFG);
    assert_eq!(drain(&mut x, t(300)), [], "only one timed resend");
    ack(&mut x, t(250), 1);
    assert_eq!(x.sender().rtt().srtt(), None, "a timer-driven resend gives no sample (Karn)");
    assert_eq!(drain(&mut x, t(250)), [data(2, 512, 512)]);
}

#[test]
fn negotiated_timeout_is_the_wait_before_every_resend() {
    // RFC 2349: a client that asks for timeout 3 is never sent to again sooner.
    let mut x = ReadTransfer::new(t(0), 50_000, &negotiated("timeout 3", 50_000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [Transmit::Oack(x.oack())]);
    assert_eq!(x.poll_timeout(), Some(t(3000)), "the OACK's resend waits the client's timeout");
    ack(&mut x, t(1), 0);
    assert_eq!(drain(&mut x, t(1)), [data(1, 0, 512)]);
    // Fast ACKs measure a tiny round trip; the wait stays 3 s anyway.
    for b in 1..20u16 {
        let now = t(1 + u64::from(b));
        ack(&mut x, now, b);
        assert_eq!(drain(&mut x, now).len(), 1);
    }
    assert_eq!(x.poll_timeout(), Some(t(20 + 3000)));
    x.handle_timeout(t(20 + 2999), &CFG);
    assert_eq!(drain(&mut x, t(20 + 2999)), []);
    x.handle_timeout(t(20 + 3000), &CFG);
    assert_eq!(drain(&mut x, t(20 + 3000)), [data(20, 19 * 512, 512)]);
    // And the backoff never stretches it either.
    assert_eq!(x.poll_timeout(), Some(t(20 + 6000)));
}

#[test]
fn repeated_plain_request_resends_data_1_timed_from_the_repeat() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("", 5000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [data(1, 0, 512)]);
    assert_eq!(x.handle_repeated_request(t(300), &CFG), Repeat::ResendFirst);
    assert_eq!(drain(&mut x, t(300)), [data(1, 0, 512)]);
    ack(&mut x, t(301), 1);
    assert_eq!(
        x.sender().rtt().srtt(),
        Some(Duration::from_millis(1)),
        "timed from the repeat: the client's repeated request shows the first copy was lost"
    );
    assert_eq!(x.handle_repeated_request(t(302), &CFG), Repeat::Ignored, "ignored once confirmed");
    assert_eq!(drain(&mut x, t(302)), [data(2, 512, 512)]);
}

#[test]
fn duplicate_acks_never_resend() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("", 5000), &CFG);
    drain(&mut x, t(0));
    ack(&mut x, t(1), 1);
    assert_eq!(drain(&mut x, t(1)), [data(2, 512, 512)]);
    for i in 0..10 {
        ack(&mut x, t(2 + i), 1);
        assert_eq!(drain(&mut x, t(2 + i)), []);
    }
    assert_eq!(x.retransmits(), 0);
}

#[test]
fn timeout_resends_after_adaptive_rto() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("windowsize 2", 5000), &CFG);
    drain(&mut x, t(0));
    ack(&mut x, t(4), 0);
    drain(&mut x, t(4));
    // srtt 4 ms, rttvar 2 ms: RTO = 4 + 8 = 12 ms.
    assert_eq!(x.poll_timeout(), Some(t(16)));
    x.handle_timeout(t(15), &CFG);
    assert_eq!(drain(&mut x, t(15)), []);
    x.handle_timeout(t(16), &CFG);
    assert_eq!(drain(&mut x, t(16)), [data(1, 0, 512), data(2, 512, 512)]);
    assert_eq!(x.retransmits(), 2);
}

#[test]
fn gives_up_after_retries_and_patience() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("", 5000), &CFG);
    drain(&mut x, t(0));
    ack(&mut x, t(1), 1);
    drain(&mut x, t(1));
    let mut now = t(1);
    while x.outcome().is_none() {
        now = x.poll_timeout().unwrap();
        x.handle_timeout(now, &CFG);
        drain(&mut x, now);
    }
    assert_eq!(x.outcome(), Some(Outcome::TimedOut));
    assert!(now.saturating_since(t(1)) >= CFG.patience);
}

#[test]
fn client_timeout_option_caps_waits() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("timeout 1", 5000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [Transmit::Oack(x.oack())]);
    ack(&mut x, t(900), 0);
    drain(&mut x, t(900));
    // 900 ms round trip would give 2.7 s; the client asked for 1 s.
    assert_eq!(x.poll_timeout(), Some(t(1900)));
}

#[test]
fn unexpected_packets_answered_with_error_4() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("", 5000), &CFG);
    drain(&mut x, t(0));
    x.handle_packet(t(1), &Packet::Data { block: 1, data: b"x" }, &CFG);
    assert_eq!(
        drain(&mut x, t(1)),
        [Transmit::Error { code: ErrorCode::ILLEGAL_OPERATION, message: "unexpected packet on a read transfer" }]
    );
    assert_eq!(x.outcome(), Some(Outcome::Aborted(ErrorCode::ILLEGAL_OPERATION)));
}

#[test]
fn abort_sends_error_once() {
    let mut x = ReadTransfer::new(t(0), 5000, &negotiated("", 5000), &CFG);
    drain(&mut x, t(0));
    x.fail(LocalFailure::ShuttingDown);
    assert!(x.wants_transmit());
    assert_eq!(
        drain(&mut x, t(1)),
        [Transmit::Error { code: ErrorCode::NOT_DEFINED, message: "server shutting down" }]
    );
    x.fail(LocalFailure::FileChanged);
    assert_eq!(drain(&mut x, t(1)), []);
}

#[test]
fn stale_acks_ignored() {
    let mut x = ReadTransfer::new(t(0), 50_000, &negotiated("windowsize 4", 50_000), &CFG);
    drain(&mut x, t(0));
    ack(&mut x, t(1), 0);
    drain(&mut x, t(1));
    ack(&mut x, t(2), 9);
    assert_eq!(drain(&mut x, t(2)), [], "ACK beyond what was sent");
    ack(&mut x, t(2), 65535);
    assert_eq!(drain(&mut x, t(2)), []);
    ack(&mut x, t(3), 4);
    assert_eq!(drain(&mut x, t(3)).len(), 4);
}

#[test]
fn request_options_cannot_stretch_the_unconfirmed_wait() {
    // patience is 2 s: a client asking for timeout 255 gets at most 4 s before it must answer.
    let x = ReadTransfer::new(t(0), 5000, &negotiated("timeout 255", 5000), &CFG);
    assert_eq!(x.poll_timeout(), Some(t(4000)));
    let x = ReadTransfer::new(t(0), 5000, &negotiated("timeout 1", 5000), &CFG);
    assert_eq!(x.poll_timeout(), Some(t(2000)));
}

#[test]
fn repeat_after_the_last_block_is_a_new_request() {
    // The client got the final block, sent its final ACK to the transfer's port and asked for the
    // same file again on the listening port; the request overtook the ACK.
    let mut x = ReadTransfer::new(t(0), 1000, &negotiated("blksize 512", 1000), &CFG);
    drain(&mut x, t(0));
    ack(&mut x, t(1), 0);
    drain(&mut x, t(1));
    ack(&mut x, t(2), 1);
    assert_eq!(x.handle_repeated_request(t(3), &CFG), Repeat::Ignored, "block 2 not sent yet");
    assert_eq!(drain(&mut x, t(3)), [data(2, 512, 488)]);
    assert_eq!(x.handle_repeated_request(t(4), &CFG), Repeat::Finished);
    assert_eq!(x.outcome(), Some(Outcome::Complete));
    assert_eq!(x.bytes_acked(), 1000, "counted as delivered");
}

#[test]
fn blind_budget_holds_timer_resends_until_data_is_acknowledged() {
    let size = 100_000;
    let mut x = ReadTransfer::new(t(0), size, &negotiated("blksize 1468 windowsize 3", size), &CFG);
    x.limit_blind_sends(5000);
    assert_eq!(drain(&mut x, t(0)), [Transmit::Oack(x.oack())]);
    // A forged ACK 0: one window, 3 × 1,500 bytes on the wire.
    ack(&mut x, t(1), 0);
    assert_eq!(drain(&mut x, t(1)).len(), 3);
    // Nothing on a timer while no DATA is acknowledged: the budget has no room for a resend.
    while x.outcome().is_none() {
        let now = x.poll_timeout().unwrap();
        x.handle_timeout(now, &CFG);
        assert_eq!(drain(&mut x, now), [], "timer resend at {now:?} before any DATA was acknowledged");
    }
    assert_eq!(x.outcome(), Some(Outcome::TimedOut));

    // A real client that lost the first window repeats its ACK 0: the window goes out again.
    let mut x = ReadTransfer::new(t(0), size, &negotiated("blksize 1468 windowsize 3", size), &CFG);
    x.limit_blind_sends(5000);
    drain(&mut x, t(0));
    ack(&mut x, t(1), 0);
    drain(&mut x, t(1));
    ack(&mut x, t(500), 0);
    assert_eq!(drain(&mut x, t(500)), [data(1, 0, 1468), data(2, 1468, 1468), data(3, 2936, 1468)]);
    // Once a DATA block is acknowledged, the timer resends as usual.
    ack(&mut x, t(501), 3);
    assert_eq!(drain(&mut x, t(501)).len(), 3);
    let due = x.poll_timeout().unwrap();
    x.handle_timeout(due, &CFG);
    assert_eq!(drain(&mut x, due).len(), 3, "resent on the timer once the client showed it receives");
}

#[test]
fn blind_budget_leaves_room_for_resends_of_a_small_window() {
    // GRUB asks for no windowsize: one block of 1,024 bytes; the budget allows the first send
    // and three resends on the timer (4 × 1,056 bytes), so a lost DATA 1 is still recovered.
    let size = 100_000;
    let mut x = ReadTransfer::new(t(0), size, &negotiated("blksize 1024", size), &CFG);
    x.limit_blind_sends(5000);
    drain(&mut x, t(0));
    ack(&mut x, t(1), 0);
    assert_eq!(drain(&mut x, t(1)), [data(1, 0, 1024)]);
    let mut sent = 1;
    while x.outcome().is_none() {
        let now = x.poll_timeout().unwrap();
        x.handle_timeout(now, &CFG);
        sent += drain(&mut x, now).len();
    }
    assert_eq!(sent, 4, "first send and three timed resends within 5,000 bytes");
}

#[test]
fn a_long_client_timeout_cannot_hold_a_transfer_past_the_silence_bound() {
    // timeout 255 and one ACK used to hold the transfer for 255 s × retries (25 minutes).
    let mut x = ReadTransfer::new(t(0), 50_000, &negotiated("timeout 255", 50_000), &CFG);
    drain(&mut x, t(0));
    ack(&mut x, t(1), 0);
    assert_eq!(drain(&mut x, t(1)).len(), 1);
    assert_eq!(x.poll_timeout(), Some(t(1 + 60_000)), "the next event is the silence bound, not 255 s");
    x.handle_timeout(t(1 + 60_000), &CFG);
    assert_eq!(x.outcome(), Some(Outcome::TimedOut));
}

#[test]
fn an_ack_0_after_the_timed_oack_resend_is_timed_from_the_first_oack() {
    // The client is slower than the initial timeout (100 ms here): its ACK 0 answers the first
    // OACK. Timing it from the resend would make the round trip look like 5 ms (Karn's rule).
    let mut x = ReadTransfer::new(t(0), 50_000, &negotiated("blksize 1024", 50_000), &CFG);
    assert_eq!(drain(&mut x, t(0)), [Transmit::Oack(x.oack())]);
    x.handle_timeout(t(100), &CFG);
    assert_eq!(drain(&mut x, t(100)), [Transmit::Oack(x.oack())]);
    ack(&mut x, t(105), 0);
    assert_eq!(x.sender().rtt().srtt(), Some(Duration::from_millis(105)));
}
