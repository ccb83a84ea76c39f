//! The end of a transfer: the one place where it becomes counters, a latency sample and its log
//! line (`transfer finished`, whose fields tests and scripts parse).

use tracing::info;

use super::Engine;
use super::kind::Kind;
use super::table::Transfer;
use crate::proto::{Outcome, Timestamp};
use crate::server::io::{Io, Via};
use crate::server::stats::{Counter, Counters, Latencies};

impl Engine {
    /// Ends transfer `idx` with `outcome`: out of the table and the wheel, its socket closed,
    /// and recorded.
    pub(super) fn finish<I: Io>(&mut self, idx: u32, outcome: Outcome, now: Timestamp, io: &mut I) {
        self.wheel.cancel(&mut self.table.links(), idx);
        let Some(t) = self.table.remove(idx) else { return };
        self.sources.count(t.peer.ip(), false);
        if let Via::Transfer(sock) = t.via {
            io.close_transfer(sock);
        }
        self.active -= 1;
        self.counters.set(Counter::Active, self.active as u64);
        record(self.worker, &self.counters, &mut self.latencies, &t, outcome, now);
    }
}

/// Counts finished transfer `t`, samples its duration when complete, and logs it.
fn record(worker: usize, c: &Counters, latencies: &mut Latencies, t: &Transfer, outcome: Outcome, now: Timestamp) {
    let bytes = t.kind.bytes();
    c.add(if matches!(t.kind, Kind::Write(_)) { Counter::Uploaded } else { Counter::Bytes }, bytes);
    c.add(Counter::Retransmits, u64::from(t.kind.retransmits()));
    c.add(outcome_counter(outcome), 1);
    let elapsed = t.kind.completed().unwrap_or(now).saturating_since(t.kind.started());
    if outcome == Outcome::Complete {
        latencies.record_transfer(elapsed);
    }
    let code = match outcome {
        Outcome::PeerError(c) | Outcome::Aborted(c) => Some(c.0),
        _ => None,
    };
    info!(
        worker,
        client = %t.peer,
        file = %t.kind.name(),
        direction = %t.kind.direction(),
        mode = %t.kind.mode(),
        bytes,
        ms = elapsed.as_secs_f64() * 1000.0,
        retransmits = t.kind.retransmits(),
        outcome = %outcome.label(),
        code,
        "transfer finished"
    );
}

/// The counter a transfer that ended with `outcome` counts in.
fn outcome_counter(outcome: Outcome) -> Counter {
    match outcome {
        Outcome::Complete => Counter::Ok,
        Outcome::Probe => Counter::Probes,
        Outcome::TimedOut => Counter::Timeouts,
        Outcome::PeerError(_) | Outcome::Aborted(_) => Counter::Errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ErrorCode;

    #[test]
    fn each_outcome_counts_once_where_reports_expect_it() {
        assert_eq!(outcome_counter(Outcome::Complete), Counter::Ok);
        assert_eq!(outcome_counter(Outcome::Probe), Counter::Probes);
        assert_eq!(outcome_counter(Outcome::TimedOut), Counter::Timeouts);
        assert_eq!(outcome_counter(Outcome::PeerError(ErrorCode::DISK_FULL)), Counter::Errors);
        assert_eq!(outcome_counter(Outcome::Aborted(ErrorCode::NOT_DEFINED)), Counter::Errors);
    }
}
