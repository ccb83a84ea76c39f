//! Window sender tests: the window, acknowledgements, timeouts and the retransmission settings.

use super::*;

const CFG: RetransmitConfig = RetransmitConfig {
    rto: RtoBounds { initial: Duration::from_millis(100), min: Duration::from_millis(10), max: Duration::from_secs(1) },
    max_retries: 2,
    patience: Duration::from_millis(500),
    max_silence: Duration::from_secs(60),
};

fn t(ms: u64) -> Timestamp {
    Timestamp::from_micros(ms * 1000)
}

fn drain(s: &mut WindowSender, now: Timestamp) -> Vec<(u64, bool)> {
    std::iter::from_fn(|| s.next_block(now, &CFG)).collect()
}

#[test]
fn spans_and_final_blocks() {
    let s = WindowSender::new(t(0), 1024, 512, 1, &CFG);
    assert_eq!(s.last_block(), 3);
    assert_eq!(s.block_span(1), (0, 512));
    assert_eq!(s.block_span(3), (1024, 0), "multiple of blksize ends with an empty block");
    let s = WindowSender::new(t(0), 0, 512, 1, &CFG);
    assert_eq!(s.last_block(), 1);
    assert_eq!(s.block_span(1), (0, 0), "empty file is one empty block");
    let s = WindowSender::new(t(0), 1000, 512, 1, &CFG);
    assert_eq!(s.block_span(2), (512, 488));
}

#[test]
fn lockstep_and_duplicate_acks_never_resend() {
    let mut s = WindowSender::new(t(0), 1500, 512, 1, &CFG);
    assert_eq!(drain(&mut s, t(0)), [(1, false)]);
    assert_eq!(s.on_ack(t(1), 1, &CFG), AckEffect::Progress);
    assert_eq!(drain(&mut s, t(1)), [(2, false)]);
    // The same ACK again: nothing to send (Sorcerer's Apprentice).
    assert_eq!(s.on_ack(t(2), 1, &CFG), AckEffect::Duplicate);
    assert_eq!(drain(&mut s, t(2)), []);
    assert_eq!(s.on_ack(t(3), 2, &CFG), AckEffect::Progress);
    assert_eq!(drain(&mut s, t(3)), [(3, false)]);
    assert_eq!(s.on_ack(t(4), 3, &CFG), AckEffect::Complete);
    assert_eq!(s.deadline(), Timestamp::NEVER);
}

#[test]
fn windows_and_mid_window_ack_restarts() {
    let mut s = WindowSender::new(t(0), 512 * 10, 512, 4, &CFG);
    assert_eq!(drain(&mut s, t(0)).len(), 4);
    // The receiver saw a gap after block 2.
    assert_eq!(s.on_ack(t(1), 2, &CFG), AckEffect::Progress);
    assert_eq!(drain(&mut s, t(1)), [(3, true), (4, true), (5, false), (6, false)]);
    assert_eq!(s.on_ack(t(2), 6, &CFG), AckEffect::Progress);
    assert_eq!(drain(&mut s, t(2)), [(7, false), (8, false), (9, false), (10, false)]);
    assert_eq!(s.on_ack(t(3), 10, &CFG), AckEffect::Progress);
    assert_eq!(drain(&mut s, t(3)), [(11, false)], "final empty block in a short window");
    assert!(s.all_sent());
    assert_eq!(s.on_ack(t(4), 9, &CFG), AckEffect::Stale);
    assert_eq!(s.on_ack(t(4), 11, &CFG), AckEffect::Complete);
}

#[test]
fn timeout_resends_window_with_backoff_then_gives_up() {
    let mut s = WindowSender::new(t(0), 5000, 512, 2, &CFG);
    drain(&mut s, t(0));
    assert_eq!(s.deadline(), t(100));
    assert_eq!(s.on_timeout(t(99), &CFG), TimeoutEffect::NotDue);
    assert_eq!(s.on_timeout(t(100), &CFG), TimeoutEffect::Retransmit);
    assert_eq!(drain(&mut s, t(100)), [(1, true), (2, true)]);
    assert_eq!(s.deadline(), t(300), "backed off to 200 ms");
    assert_eq!(s.on_timeout(t(300), &CFG), TimeoutEffect::Retransmit);
    drain(&mut s, t(300));
    assert_eq!(s.deadline(), t(700));
    // Retries are used up, but patience (500 ms of silence) only just: give up.
    assert_eq!(s.on_timeout(t(700), &CFG), TimeoutEffect::GiveUp);
}

#[test]
fn patience_outlasts_a_fast_rto() {
    let mut s = WindowSender::new(t(0), 5000, 512, 1, &CFG);
    drain(&mut s, t(0));
    // Measure a 1 ms RTT: the RTO drops to the 10 ms floor.
    assert_eq!(s.on_ack(t(1), 1, &CFG), AckEffect::Progress);
    assert_eq!(s.rtt().srtt(), Some(Duration::from_millis(1)));
    drain(&mut s, t(1));
    let mut resends = 0;
    let now = loop {
        let now = s.deadline();
        match s.on_timeout(now, &CFG) {
            TimeoutEffect::Retransmit => resends += drain(&mut s, now).len(),
            TimeoutEffect::GiveUp => break now,
            TimeoutEffect::NotDue => unreachable!(),
        }
    };
    assert!(now.saturating_since(t(1)) >= CFG.patience, "gave up after {now:?}");
    assert_eq!(resends, 2, "the retries, no more: the last wait stretched to patience");
}

#[test]
fn rtt_sampled_only_from_blocks_sent_once() {
    let mut s = WindowSender::new(t(0), 5000, 512, 1, &CFG);
    drain(&mut s, t(0));
    assert_eq!(s.on_timeout(t(100), &CFG), TimeoutEffect::Retransmit);
    drain(&mut s, t(100));
    assert_eq!(s.on_ack(t(105), 1, &CFG), AckEffect::Progress);
    assert_eq!(s.rtt().srtt(), None, "ambiguous sample skipped");
    drain(&mut s, t(105));
    assert_eq!(s.on_ack(t(108), 2, &CFG), AckEffect::Progress);
    assert_eq!(s.rtt().srtt(), Some(Duration::from_millis(3)));
}

#[test]
fn rollover_past_65535() {
    let blocks = 70_000u64;
    let mut s = WindowSender::new(t(0), blocks * 8 + 3, 8, 16, &CFG);
    let mut now = t(0);
    let mut sent = 0u64;
    loop {
        let w = drain(&mut s, now);
        sent += w.len() as u64;
        let last = w.last().unwrap().0;
        now = now + Duration::from_micros(10);
        match s.on_ack(now, last as u16, &CFG) {
            AckEffect::Complete => break,
            e => assert_eq!(e, AckEffect::Progress),
        }
    }
    assert_eq!(sent, blocks + 1);
    assert_eq!(s.acked(), blocks + 1);
}

#[test]
fn client_timeout_option_bounds_the_rto() {
    let c = RetransmitConfig::default().with_client_timeout(Some(2));
    assert_eq!(c.rto.initial, Duration::from_secs(2));
    assert_eq!(c.rto.min, Duration::from_secs(2), "no retransmission sooner than asked");
    assert_eq!(c.rto.max, Duration::from_secs(2));
    assert_eq!(c.patience, Duration::from_secs(12));
    let long = RetransmitConfig::default().with_client_timeout(Some(255));
    assert_eq!(long.patience, MAX_SILENCE, "255 s × 6 retries is capped at the silence bound");
    assert_eq!(RetransmitConfig::default().with_client_timeout(None), RetransmitConfig::default());
}

/// `--retries N` means N: a client that goes silent mid-transfer is sent at most `max_retries`
/// retransmissions in a row before it is given up, however fast the adaptive timeout has become
/// on a short path (the loopback RTO of 10 ms once gave `--retries 6` nine resends within the
/// six seconds of patience). Patience still holds: the last wait stretches to it.
#[test]
fn retries_bound_the_resends_to_a_silent_client() {
    for retries in [1u8, 3, 6] {
        // As `config::policy::retransmit` builds it from the command line's defaults.
        let rto =
            RtoBounds { initial: Duration::from_secs(1), min: Duration::from_millis(10), max: Duration::from_secs(2) };
        let patience = rto.initial * u32::from(retries);
        let cfg = RetransmitConfig { rto, max_retries: retries, patience, max_silence: MAX_SILENCE };
        let mut s = WindowSender::new(t(0), 512 * 100, 512, 1, &cfg);
        let mut now = t(0);
        // Ten blocks acknowledged 1 ms after each send: the RTO falls to its 10 ms floor.
        for block in 1..=10u16 {
            assert_eq!(std::iter::from_fn(|| s.next_block(now, &cfg)).count(), 1);
            now = now + Duration::from_millis(1);
            assert_eq!(s.on_ack(now, block, &cfg), AckEffect::Progress);
        }
        assert_eq!(s.rtt().rto(&cfg.rto), Duration::from_millis(10));
        let silent_since = now;
        assert_eq!(std::iter::from_fn(|| s.next_block(now, &cfg)).count(), 1, "block 11");
        // The client says nothing more.
        let mut resends = 0;
        let gave_up = loop {
            now = s.deadline();
            match s.on_timeout(now, &cfg) {
                TimeoutEffect::Retransmit => {
                    resends += std::iter::from_fn(|| s.next_block(now, &cfg)).filter(|&(_, resend)| resend).count()
                }
                TimeoutEffect::GiveUp => break now,
                TimeoutEffect::NotDue => {}
            }
        };
        assert_eq!(resends, usize::from(retries), "--retries {retries}");
        let waited = gave_up.saturating_since(silent_since);
        assert!(waited >= patience, "--retries {retries}: gave up after {waited:?} of silence");
    }
}

#[test]
fn first_exchanges_time_the_path_provisionally() {
    // The OACK's ACK 0 came back on the client's 200 ms timer, then the first windows answer in
    // 1 ms: the timeout follows the windows, not the client's timer.
    let mut s = WindowSender::new(t(0), 100_000, 512, 4, &CFG);
    s.handshake_sent(t(0));
    s.handshake_acked(t(200), &CFG);
    assert_eq!(s.rtt().srtt(), Some(Duration::from_millis(200)));
    drain(&mut s, t(200));
    assert_eq!(s.on_ack(t(201), 4, &CFG), AckEffect::Progress);
    assert_eq!(s.rtt().srtt(), Some(Duration::from_millis(1)), "the handshake's sample replaced");
    drain(&mut s, t(201));
    assert_eq!(s.on_ack(t(202), 8, &CFG), AckEffect::Progress);
    assert_eq!(s.rtt().srtt(), Some(Duration::from_millis(1)));
    assert_eq!(s.rtt().rto(&CFG.rto), CFG.rto.min);
}

#[test]
fn deadlines_are_exact_to_35_minutes_after_progress_and_never_early_beyond() {
    let base = Timestamp::from_micros(7_000_123);
    for us in [0, 1, 999_999, (1 << 31) - 1] {
        let at = Timestamp::from_micros(base.as_micros() + us);
        assert_eq!(Offset::new(base, at).at(base), at, "{us}");
    }
    // Beyond 2^31 microseconds: whole milliseconds, rounded up.
    let at = Timestamp::from_micros(base.as_micros() + (1 << 31) + 1);
    assert_eq!(Offset::new(base, at).at(base), Timestamp::from_micros(base.as_micros() + 2_147_484_000));
    let hours36 = base + Duration::from_secs(36 * 3600);
    assert_eq!(Offset::new(base, hours36).at(base), hours36);
    assert_eq!(Offset::new(base, Timestamp::NEVER).at(base), Timestamp::NEVER);
    // A time already past counts as the base: due either way.
    assert_eq!(Offset::new(base, Timestamp::ZERO).at(base), base);
    // The farthest that can be kept, 24 days, never reads as "never".
    assert!(Offset::new(base, base + Duration::from_secs(30 * 86_400)).at(base) < Timestamp::NEVER);
}

#[test]
fn a_transfer_silent_for_hours_keeps_its_deadline() {
    // A client timeout of 255 s and 255 retries: a wait of more than an hour is allowed.
    let cfg = RetransmitConfig {
        max_retries: 255,
        patience: Duration::from_secs(255 * 255),
        max_silence: Duration::from_secs(2 * 255 * 255),
        ..CFG.with_client_timeout(Some(255))
    };
    let mut s = WindowSender::new(t(0), 4096, 512, 1, &cfg);
    assert_eq!(drain(&mut s, t(0)), [(1, false)]);
    s.set_deadline(t(0) + Duration::from_secs(3 * 3600));
    assert_eq!(s.deadline(), t(3 * 3600 * 1000));
    assert_eq!(s.on_timeout(t(3 * 3600 * 1000 - 1), &cfg), TimeoutEffect::NotDue);
    assert_eq!(s.on_ack(t(2 * 3600 * 1000), 1, &cfg), AckEffect::Progress);
    assert_eq!(s.deadline(), t(2 * 3600 * 1000 + 255_000), "the client's timeout, from the new progress");
}

#[test]
fn the_start_is_kept_through_progress() {
    let start = Timestamp::from_micros(5_000_321);
    let mut s = WindowSender::new(start, 512 * 100, 512, 1, &CFG);
    for (block, at) in [(1u16, 7u64), (2, 60_000), (3, 34 * 60_000)] {
        drain(&mut s, t(5000 + at - 1));
        assert_eq!(s.on_ack(t(5000 + at), block, &CFG), AckEffect::Progress);
        assert_eq!(s.started(), start, "exact while the last progress is within 35 minutes");
    }
    // Two hours in: whole milliseconds, never later than it was.
    drain(&mut s, t(5000 + 7_200_000 - 1));
    assert_eq!(s.on_ack(t(5000 + 7_200_000), 4, &CFG), AckEffect::Progress);
    assert!(s.started() <= start && start.saturating_since(s.started()) < Duration::from_millis(1));
}

#[test]
fn a_probe_sent_before_progress_is_timed_exactly() {
    let mut s = WindowSender::new(t(0), 4096, 512, 2, &CFG);
    assert_eq!(drain(&mut s, t(0)), [(1, false), (2, false)]);
    // ACK 1 is progress; block 2, the probe, was sent before it.
    assert_eq!(s.on_ack(t(1000), 1, &CFG), AckEffect::Progress);
    assert_eq!(s.on_ack(t(1005), 2, &CFG), AckEffect::Progress);
    assert_eq!(s.rtt().srtt(), Some(Duration::from_millis(1005)));
    // Sent more than 35 minutes before the progress: no sample rather than a wrong one.
    let mut s = WindowSender::new(t(0), 4096, 512, 2, &CFG);
    drain(&mut s, t(0));
    assert_eq!(s.on_ack(t(36 * 60 * 1000), 1, &CFG), AckEffect::Progress);
    assert_eq!(s.on_ack(t(36 * 60 * 1000 + 5), 2, &CFG), AckEffect::Progress);
    assert_eq!(s.rtt().srtt(), None);
}

#[test]
fn sender_state_stays_small() {
    assert_eq!(std::mem::size_of::<WindowSender>(), 52);
    assert_eq!(std::mem::size_of::<crate::proto::rtt::RttEstimator>(), 9);
}

/// A client slower than the adaptive timeout's floor (a starved or distant one: every ACK comes
/// 25 ms after its block): the first block times out, and so may the next, but the backoff
/// stays until a block sent once is acknowledged (Karn's algorithm, RFC 6298 §5.5–5.7), that
/// block's round trip enters the estimate, and from then on the blocks go out once each. When
/// every ACK dropped the backoff, the timeout fell back to the floor after each block and every
/// block was sent twice for as long as the transfer lasted.
#[test]
fn a_client_slower_than_the_floor_gets_each_block_once_after_the_timeout_adapts() {
    const DELAY: u64 = 25;
    let cfg = RetransmitConfig { max_retries: 6, patience: Duration::from_secs(6), ..CFG };
    let mut s = WindowSender::new(t(0), 512 * 200, 512, 1, &cfg);
    // The first exchanges time the path provisionally: start with a measured 1 ms path, as
    // on a LAN before the client slows down.
    let mut now = t(0);
    for _ in 0..5 {
        assert_eq!(std::iter::from_fn(|| s.next_block(now, &cfg)).count(), 1);
        now = now + Duration::from_millis(1);
        s.on_ack(now, s.acked() as u16 + 1, &cfg);
    }
    // Now each block's ACK comes DELAY ms after the block's first send; a resend changes
    // nothing (the client answers what it has).
    let mut resends = 0;
    let mut late = Vec::new();
    for block in 6..=200u64 {
        let sent_at = now;
        let first: Vec<(u64, bool)> = std::iter::from_fn(|| s.next_block(now, &cfg)).collect();
        assert_eq!(first, [(block, false)]);
        let ack_at = sent_at + Duration::from_millis(DELAY);
        while s.deadline() <= ack_at {
            now = s.deadline();
            assert_eq!(s.on_timeout(now, &cfg), TimeoutEffect::Retransmit);
            let again: Vec<(u64, bool)> = std::iter::from_fn(|| s.next_block(now, &cfg)).collect();
            assert_eq!(again, [(block, true)]);
            resends += 1;
            late.push(block);
        }
        now = ack_at;
        assert!(matches!(s.on_ack(now, block as u16, &cfg), AckEffect::Progress | AckEffect::Complete));
    }
    assert!(resends <= 4, "{resends} resends, for blocks {late:?}");
    assert!(late.iter().all(|&b| b < 12), "the timeout adapted within a few blocks: {late:?}");
}
