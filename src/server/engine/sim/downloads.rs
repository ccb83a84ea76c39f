//! Downloads through the engine: the loss matrix, duplication, repeated requests, exact timing
//! on a clean link, heavy loss across seeds, block-number rollover, a link that dies.

use std::time::Duration;

use super::link::{CLEAN, LinkParams};
use super::{SERVER_RETRANSMIT, Setup, Sim, blocks, opts};
use crate::config::BLIND_BUDGET;
use crate::proto::options::DATAGRAM_OVERHEAD;
use crate::proto::{ClientOutcome, RequestOptions, Timestamp};
use crate::server::stats::Counter;

/// The matrix: loss × duplication and reordering × blksize and windowsize × port mode, three
/// downloads of different sizes sharing the engine, and a send queue of two sends so that the
/// ready queue holds transfers back all the time. Every byte is checked; on a clean link every
/// block goes out once, and duplication alone causes no retransmission.
#[test]
fn lossy_matrix() {
    let mut stalls: Vec<(bool, String)> = Vec::new();
    for single_port in [false, true] {
        for (blksize, window) in [(512u16, 1u16), (1024, 4), (1468, 16)] {
            for loss in [0.0, 0.01, 0.05, 0.2] {
                for noisy in [false, true] {
                    let mix = if noisy { 0.05 } else { 0.0 };
                    let link = LinkParams { loss, dup: mix, reorder: mix, ..CLEAN };
                    let seed = u64::from(blksize) * 1000 + u64::from(window) * 10 + (loss * 100.0) as u64;
                    let mut setup = Setup::new(link, single_port, seed + u64::from(noisy));
                    setup.room = 2;
                    let mut sim = Sim::new(setup);
                    let lens = [usize::from(blksize) * 100 + 17, usize::from(blksize) * 40, 3000];
                    for (i, len) in lens.into_iter().enumerate() {
                        sim.add_read(&format!("f{i}"), len, opts(blksize, window), Duration::from_millis(i as u64));
                    }
                    let r = sim.run();
                    let case = format!("port {single_port} blk {blksize} win {window} loss {loss} noisy {noisy}");
                    sim.check_all_complete(Duration::from_secs(120));
                    let total: u64 = lens.iter().map(|&l| blocks(l, blksize)).sum();
                    if loss == 0.0 && !noisy {
                        assert_eq!(r.sends.data, total, "{case}: every block once: {r:?}");
                        assert_eq!(sim.counter(Counter::Retransmits), 0, "{case}");
                    }
                    if loss == 0.0 {
                        assert!(r.sends.data >= total, "{case}: {r:?}");
                    }
                    // Each lost or late datagram costs at most one window; repeated requests
                    // one first answer each; a lost final ACK, the last window up to the
                    // server's retry limit before the transfer times out.
                    let caused = r.link.dropped + r.link.reordered;
                    let resent = sim.counter(Counter::Retransmits);
                    let final_ack_lost = sim.counter(Counter::Timeouts) * u64::from(SERVER_RETRANSMIT.max_retries);
                    let explained =
                        u64::from(window) * (caused + final_ack_lost) + sim.counter(Counter::DuplicateRequests);
                    assert!(resent <= explained, "{case}: {resent} retransmissions: {r:?}");
                    // Up to 5% loss the server's timer recovers a loss, not the client's: a
                    // client resends at most once (its lost ACK 0, which only it can repeat).
                    // With one port the blind budget holds back the timed resend of the first
                    // window (at blksize 1468 its 3 blocks leave no room for a resend before
                    // the client has acknowledged a DATA block), so a client there may have to
                    // repeat an ACK once more: one such client in the matrix (f2, blksize 1468,
                    // 5% loss with duplication and reordering: its ACK 0 and two blocks of its
                    // first window lost), none in per-transfer port mode.
                    if loss <= 0.05 {
                        for c in sim.clients.iter().filter(|c| c.retransmits() > 1) {
                            let resends = c.retransmits();
                            stalls.push((single_port, format!("{case}: {} ({resends} resends): {r:?}", c.name)));
                        }
                    }
                    if window > 1 && loss == 0.0 {
                        assert!(r.sends.runs > 0, "{case}: windows go out as runs: {r:?}");
                    }
                }
            }
        }
    }
    let list = stalls.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("\n");
    let per_transfer_port = stalls.iter().filter(|(single_port, _)| !single_port).count();
    assert!(per_transfer_port == 0 && stalls.len() <= 1, "downloads stalled on their own timer:\n{list}");
}

/// Sorcerer's Apprentice through the engine: duplicated ACKs and requests never make it send
/// a block twice.
#[test]
fn duplication_alone_causes_no_retransmission() {
    for single_port in [false, true] {
        for window in [1u16, 4, 16] {
            let link = LinkParams { dup: 0.3, ..CLEAN };
            let mut sim = Sim::new(Setup::new(link, single_port, 7 + u64::from(window)));
            let len = 1024 * 200 + 3;
            sim.add_read("a", len, opts(1024, window), Duration::ZERO);
            sim.add_read("b", len / 2, opts(1024, window), Duration::ZERO);
            let r = sim.run();
            sim.check_all_complete(Duration::from_secs(10));
            assert!(r.link.duplicated > 20, "{r:?}");
            // Only first answers to duplicated requests go out again (each request datagram may
            // get two); no DATA does. With one port, a transfer not yet confirmed treats a
            // repeated ACK 0 as a lost first window and sends it again, once per transfer.
            let again = if single_port { 2 * u64::from(window) } else { 0 };
            let resent = sim.counter(Counter::Retransmits);
            let case = format!("window {window} single port {single_port}: {r:?}");
            assert!(resent <= sim.counter(Counter::DuplicateRequests) + again, "{case}");
            let total = blocks(len, 1024) + blocks(len / 2, 1024);
            assert!(r.sends.data >= total && r.sends.data <= total + again, "{case}");
        }
    }
}

/// A request delivered twice, and again after the OACK, is answered by the one transfer: the
/// engine counts the repeats, opens one socket, and the client never hears from a second port.
#[test]
fn repeated_request_is_the_same_transfer() {
    for single_port in [false, true] {
        let mut sim = Sim::new(Setup::new(CLEAN, single_port, 11));
        let a = sim.add_read("a", 5000, opts(512, 4), Duration::ZERO);
        let b = sim.add_read("b", 5000, RequestOptions::default(), Duration::ZERO);
        for i in [a, b] {
            sim.clients[i].extra_requests = 1;
            sim.clients[i].repeat_after_answer = true;
        }
        let r = sim.run();
        sim.check_all_complete(Duration::from_secs(1));
        assert_eq!(sim.counter(Counter::Requests), 6, "{r:?}");
        assert_eq!(sim.counter(Counter::DuplicateRequests), 4, "single port {single_port}");
        assert_eq!(sim.counter(Counter::Ok), 2);
        if !single_port {
            assert_eq!(r.opened, 2);
        }
    }
}

/// On a clean link every block goes out once, nobody retransmits, and a transfer takes exactly
/// one round trip (1 ms) for the OACK and one per window: the engine answers at once and never
/// waits on a timer. Empty, one-byte, one-block and multi-window files; without options the
/// first block answers the request.
#[test]
fn clean_link_sends_each_block_once() {
    let cases = [(0, opts(512, 1)), (512, opts(512, 1)), (1024, opts(512, 4)), (100_000, opts(1468, 16))];
    let cases = cases.into_iter().chain([(1, opts(8, 1)), (1500, RequestOptions::default())]);
    for single_port in [false, true] {
        for (len, o) in cases.clone() {
            let mut sim = Sim::new(Setup::new(CLEAN, single_port, 1));
            sim.add_read("f", len, o, Duration::ZERO);
            let r = sim.run();
            let case = format!("{len} bytes, {o:?}, single port {single_port}: {r:?}");
            sim.check_all_complete(Duration::from_secs(1));
            let n = blocks(len, o.blksize.unwrap_or(512));
            assert_eq!(r.sends.data, n, "every block once: {case}");
            assert_eq!(sim.counter(Counter::Retransmits), 0, "server retransmissions: {case}");
            assert_eq!(sim.clients[0].retransmits(), 0, "client resends: {case}");
            // With one port the blind budget grants a smaller window (3 blocks of 1468, not
            // 16): a round trip for each of the windows granted.
            let blksize = u32::from(o.blksize.unwrap_or(512));
            let granted = match single_port {
                true => (BLIND_BUDGET / (blksize + DATAGRAM_OVERHEAD)).max(1),
                false => u32::MAX,
            };
            let window = u32::from(o.windowsize.unwrap_or(1)).min(granted);
            let windows = n.div_ceil(u64::from(window));
            let oack = u64::from(o != RequestOptions::default());
            let took = sim.clients[0].done_at.expect("done").saturating_since(Timestamp::ZERO);
            assert_eq!(took, Duration::from_millis(windows + oack), "one round trip per window: {case}");
        }
    }
}

/// 30% loss with duplication and reordering, over 20 seeds and both port modes: every
/// download completes byte-exact, through retransmissions.
#[test]
fn heavy_loss_still_completes_across_seeds() {
    let link = LinkParams { loss: 0.3, dup: 0.1, reorder: 0.1, ..CLEAN };
    for seed in 0..20 {
        for single_port in [false, true] {
            let mut sim = Sim::new(Setup::new(link, single_port, seed));
            sim.add_read("f", 20_000, opts(512, 8), Duration::ZERO);
            let r = sim.run();
            sim.check_all_complete(Duration::from_secs(300));
            assert!(sim.counter(Counter::Retransmits) > 0, "seed {seed}, single port {single_port}: {r:?}");
        }
    }
}

/// More than 65,535 blocks: the block number wraps, in lock step and windowed, through the
/// engine's runs, over a lossy link, and at the default blksize without options.
#[test]
fn rollover_beyond_65535_blocks() {
    for (window, single_port) in [(1u16, false), (8, true)] {
        let mut sim = Sim::new(Setup::new(CLEAN, single_port, 3));
        let len = 70_000 * 8 + 5;
        sim.add_read("big", len, opts(8, window), Duration::ZERO);
        let r = sim.run();
        sim.check_all_complete(Duration::from_secs(600));
        assert_eq!(r.sends.data, 70_001, "window {window}: {r:?}");
    }
    let link = LinkParams { loss: 0.02, reorder: 0.02, ..CLEAN };
    let mut sim = Sim::new(Setup::new(link, false, 5));
    sim.add_read("big", 66_000 * 8, opts(8, 4), Duration::ZERO);
    sim.run();
    sim.check_all_complete(Duration::from_secs(600));
    // The default blksize without options, past 32 MiB: lock step, no OACK.
    let mut sim = Sim::new(Setup::new(CLEAN, false, 4));
    sim.add_read("big", 65_540 * 512, RequestOptions::default(), Duration::ZERO);
    let r = sim.run();
    sim.check_all_complete(Duration::from_secs(600));
    assert_eq!(r.sends.data, 65_541, "{r:?}");
}

/// A link that dies mid-transfer: the client gives up, and the engine ends the transfer as
/// timed out, without an ERROR and within its patience.
#[test]
fn dead_link_ends_cleanly() {
    for single_port in [false, true] {
        let mut sim = Sim::new(Setup::new(CLEAN, single_port, 13));
        sim.io.link.dead_after = Timestamp::ZERO + Duration::from_millis(20);
        sim.add_read("a", 512 * 1000, opts(512, 4), Duration::ZERO);
        let r = sim.run();
        assert_eq!(sim.clients[0].outcome(), Some(ClientOutcome::TimedOut));
        assert_eq!(sim.counter(Counter::Timeouts), 1, "{r:?}");
        assert_eq!(sim.counter(Counter::Ok) + sim.counter(Counter::Errors), 0);
        assert!(r.elapsed <= Duration::from_secs(120), "{r:?}");
    }
}
