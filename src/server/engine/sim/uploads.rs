//! Uploads through the engine and its commit channel: over a lossy link alongside a download,
//! the edges (an empty file, block-number rollover), and duplication alone.

use std::time::Duration;

use super::link::{CLEAN, LinkParams};
use super::{Setup, Sim, opts};
use crate::proto::RequestOptions;
use crate::server::stats::Counter;

/// Uploads and downloads sharing the engine over a lossy link, commits through the commit
/// channel: the stored files are exactly what was sent.
#[test]
fn uploads_over_a_lossy_link() {
    for single_port in [false, true] {
        for (blksize, window) in [(512u16, 1u16), (1024, 8)] {
            for loss in [0.0, 0.05, 0.2] {
                let link = LinkParams { loss, dup: loss / 2.0, reorder: loss / 2.0, ..CLEAN };
                let mut setup = Setup::new(link, single_port, 100 + (loss * 100.0) as u64 + u64::from(window));
                setup.uploads = true;
                let mut sim = Sim::new(setup);
                sim.add_write("up0", usize::from(blksize) * 60 + 9, opts(blksize, window), Duration::ZERO);
                sim.add_write("up1", usize::from(blksize) * 20, opts(blksize, window), Duration::from_millis(3));
                sim.add_read("down", 20_000, opts(blksize, window), Duration::from_millis(1));
                sim.run();
                sim.check_all_complete(Duration::from_secs(120));
                assert_eq!(sim.counter(Counter::Uploaded), (usize::from(blksize) * 80 + 9) as u64);
            }
        }
    }
}

/// The edges on a clean link: an empty file, one full block (then an empty one), and more than
/// 65,535 blocks (the block number wraps, windowed): stored exactly, and nobody resends.
#[test]
fn upload_edges_and_rollover() {
    for (len, o) in [(0, RequestOptions::default()), (512, RequestOptions::default()), (70_000 * 8 + 1, opts(8, 8))] {
        let mut setup = Setup::new(CLEAN, false, 3);
        setup.uploads = true;
        let mut sim = Sim::new(setup);
        sim.add_write("up", len, o, Duration::ZERO);
        let r = sim.run();
        sim.check_all_complete(Duration::from_secs(600));
        assert_eq!(sim.clients[0].retransmits(), 0, "client resends, {len} bytes: {r:?}");
        assert_eq!(sim.counter(Counter::Retransmits), 0, "server retransmissions, {len} bytes: {r:?}");
        assert_eq!(sim.counter(Counter::Uploaded), len as u64, "{r:?}");
    }
}

/// Sorcerer's Apprentice the other way: duplicated ACKs (30% of datagrams arrive twice) never
/// make the uploading client send a block again.
#[test]
fn duplication_alone_causes_no_client_resend() {
    for single_port in [false, true] {
        let mut setup = Setup::new(LinkParams { dup: 0.3, ..CLEAN }, single_port, 9);
        setup.uploads = true;
        let mut sim = Sim::new(setup);
        sim.add_write("up", 200_000, opts(1024, 4), Duration::ZERO);
        let r = sim.run();
        sim.check_all_complete(Duration::from_secs(10));
        assert_eq!(sim.clients[0].retransmits(), 0, "single port {single_port}: {r:?}");
        assert!(r.link.duplicated > 10, "{r:?}");
    }
}
