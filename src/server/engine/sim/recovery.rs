//! Recovery from a loss waits on the server's adaptive timer, not on the client's: a lost ACK
//! costs a few round trips, never the client's own retransmission timeout.

use std::time::Duration;

use super::link::{CLEAN, LinkParams};
use super::{Setup, Sim, opts};

/// A client's ACK 0 is lost (seed 1024046: the matrix's case of 1 KiB blocks, window 4, 5% loss
/// with duplication and reordering). Its resend, 200 ms later on the client's timer, reaches the
/// server as the first round trip it measures: were that taken as the path's round trip, the
/// server's timeout would stay above the client's for dozens of windows, and every later lost
/// ACK would wait for the client (six client resends, 1.2 s). The first exchange's samples are
/// replaced by the first unambiguous one, so no client resends more than once.
#[test]
fn a_lost_first_ack_does_not_slow_the_server_timer() {
    for single_port in [false, true] {
        let link = LinkParams { loss: 0.05, dup: 0.05, reorder: 0.05, ..CLEAN };
        let mut setup = Setup::new(link, single_port, 1_024_046);
        setup.room = 2;
        let mut sim = Sim::new(setup);
        for (i, len) in [1024 * 100 + 17, 1024 * 40, 3000].into_iter().enumerate() {
            sim.add_read(&format!("f{i}"), len, opts(1024, 4), Duration::from_millis(i as u64));
        }
        let r = sim.run();
        sim.check_all_complete(Duration::from_secs(10));
        for c in &sim.clients {
            let took = c.done_at.expect("done").saturating_since(c.start);
            let case = format!("single port {single_port}, {}: {} resends, {took:?}: {r:?}", c.name, c.retransmits());
            assert!(c.retransmits() <= 1, "{case}");
        }
    }
}
