//! What happens to transfers besides their datagrams: timers, the stop and its grace period,
//! finished commits, and failed sends.

use tracing::{debug, warn};

use super::kind::Kind;
use super::{Engine, HOUSEKEEPING};
use crate::proto::{LocalFailure, Timestamp};
use crate::server::io::{Io, Token};
use crate::server::stats::Counter;

impl Engine {
    /// Handles expired timers and housekeeping.
    pub(crate) fn on_timers<I: Io>(&mut self, now: Timestamp, io: &mut I) {
        self.due.clear();
        self.wheel.expire(now, &mut self.table.links(), &mut self.due);
        for i in 0..self.due.len() {
            let idx = self.due[i];
            let Some(t) = self.table.get_mut(idx) else { continue };
            t.kind.handle_timeout(now, self.retransmits.get(t.route.retransmit()));
            self.after_event(idx, now, io);
        }
        self.poll_commits(now, io);
        if self.stop.is_some() {
            // Stopping: committed uploads need not wait for a lost final ACK. (A scan per loop
            // turn, but only while stopping.)
            self.fail_each(now, io, |k| k.is_dallying());
        }
        if let Some(deadline) = self.stop {
            if now >= deadline && !self.aborted {
                self.aborted = true;
                self.fail_each(now, io, |_| true);
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.files.sweep(now, false);
            self.sweep_folded(now);
            self.tids.housekeeping(now);
        }
    }

    /// Ends every transfer that `which` picks with the ERROR of a server shutting down.
    fn fail_each<I: Io>(&mut self, now: Timestamp, io: &mut I, which: impl Fn(&Kind) -> bool) {
        for idx in 0..self.table.slots() {
            if let Some(t) = self.table.get_mut(idx) {
                if which(&t.kind) {
                    t.kind.fail(LocalFailure::ShuttingDown);
                    self.after_event(idx, now, io);
                }
            }
        }
    }

    /// Takes the results of finished commits: the final ACK, or the ERROR.
    fn poll_commits<I: Io>(&mut self, now: Timestamp, io: &mut I) {
        loop {
            let Some(done) = self.commits.as_ref().and_then(|l| l.done.try_recv().ok()) else { return };
            let worker = self.worker;
            let Some(t) = self.table.live(done.token) else { continue };
            let Kind::Write(w) = &mut t.kind else { continue };
            let result = done.result.as_ref().map(|_| ()).map_err(|e| {
                warn!(worker, client = %t.client.addr(), file = %w.name, error = %e, "upload not committed");
                LocalFailure::from(e).into()
            });
            w.xfer.commit_result(now, result, self.retransmits.get(t.route.retransmit()));
            self.after_event(done.token.slot(), now, io);
        }
    }

    /// A send of transfer `token` failed with `errno`.
    pub(crate) fn on_send_error<I: Io>(&mut self, now: Timestamp, token: Token, errno: i32, io: &mut I) {
        self.counters.add(Counter::SendErrors, 1);
        let worker = self.worker;
        let Some(t) = self.table.live(token) else { return };
        if errno == libc::EFAULT {
            // The file shrank under its mapping: the kernel could not read the pages.
            warn!(worker, client = %t.client.addr(), file = %t.name(), "file truncated while being served");
            t.kind.fail(LocalFailure::FileChanged);
        } else {
            debug!(worker, client = %t.client.addr(), errno, "send failed");
        }
        self.after_event(token.slot(), now, io);
    }
}
