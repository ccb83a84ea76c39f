//! Deadlines: what a client's timer does when it fires. Before a session it is the client's
//! storm arrival; between a failed step and its restart, the end of the pause; during a step
//! it sends a held ACK whose time has come and lets the state machine retransmit or give up.

use std::os::fd::AsRawFd;

use bootstorm::proto::Timestamp;
use bootstorm::proto::wire;

use super::Driver;
use super::client::StepClient;

impl Driver<'_> {
    /// Client `idx`'s deadline has passed.
    pub(super) fn on_timer(&mut self, idx: u32, now: Timestamp) {
        let cfg = self.plan.client;
        let c = &mut self.clients.0[idx as usize];
        if c.session.is_none() {
            if c.start_at.take().is_some() {
                self.pending_starts -= 1;
                self.start_session(idx, now);
            }
            return;
        }
        let fd = c.sock.as_raw_fd();
        let Some(run) = c.session.as_mut().and_then(|s| s.run.as_mut()) else {
            self.restart_step(idx, now);
            return;
        };
        if let Some((b, at)) = run.held
            && at <= now
        {
            run.held = None;
            if let Some(tid) = run.tid {
                self.send(fd, tid, &wire::ack(b));
            }
        }
        let Some(run) = self.clients.0[idx as usize].session.as_mut().and_then(|s| s.run.as_mut()) else { return };
        match &mut run.client {
            StepClient::Read(c) => c.handle_timeout(now, &cfg),
            StepClient::Write(c) => c.handle_timeout(now),
        }
        self.pump(idx, now);
    }
}
