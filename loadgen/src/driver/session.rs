//! The session and step lifecycle of a client: a session starts (if the budget allows), runs
//! the plan's steps one after the other, and ends; a finished step is judged (complete, a miss
//! as expected, or a failure with its cause) and counted.

use std::sync::atomic::Ordering;

use bootstorm::proto::{ClientOutcome, ErrorCode, ReadClient, Timestamp, WriteClient};

use super::Driver;
use super::client::{Session, StepClient, StepRun};
use crate::plan::{Arrivals, Step};

impl Driver<'_> {
    /// Starts a session on client `idx` if the budget allows (closed loop: the session count
    /// and the duration), and begins its first step.
    pub(super) fn start_session(&mut self, idx: u32, now: Timestamp) {
        let number = self.shared.sessions_started.fetch_add(1, Ordering::Relaxed);
        let allowed = match self.plan.arrivals {
            Arrivals::Closed { total, .. } => {
                total.is_none_or(|t| number < t) && !self.shared.closing.load(Ordering::Relaxed)
            }
            Arrivals::Storm { .. } => true,
        };
        if !allowed {
            return;
        }
        self.active += 1;
        self.clients.0[idx as usize].session = Some(Session { number, started: now, step: 0, run: None });
        self.begin_step(idx, now);
    }

    /// Begins the session's current step, or ends the session when no step is left.
    fn begin_step(&mut self, idx: u32, now: Timestamp) {
        let Some(sess) = self.clients.0[idx as usize].session.as_mut() else { return };
        match self.plan.step(sess.step) {
            None => self.end_session(idx, now),
            Some(step) => {
                let options = self.plan.options_for(step);
                let client = match (step, self.plan.upload) {
                    (Step::Fetch(f), true) => {
                        let size = self.plan.files[f].expect.as_ref().map_or(0, |e| e.len() as u64);
                        StepClient::Write(WriteClient::new(now, size, options, &self.plan.client))
                    }
                    _ => StepClient::Read(ReadClient::new(now, options)),
                };
                sess.run = Some(StepRun { step, client, tid: None, started: now, received: 0, held: None });
                self.pump(idx, now);
            }
        }
    }

    /// Ends client `idx`'s session, counts it, and (closed loop) starts the next one.
    fn end_session(&mut self, idx: u32, now: Timestamp) {
        let c = &mut self.clients.0[idx as usize];
        let Some(sess) = c.session.take() else { return };
        self.wheel.cancel(&mut self.clients, idx);
        self.active -= 1;
        self.stats.session_done(now.saturating_since(sess.started));
        self.shared.last_end_us.fetch_max(now.as_micros(), Ordering::Relaxed);
        if matches!(self.plan.arrivals, Arrivals::Closed { .. }) {
            self.start_session(idx, now);
        }
    }

    /// Ends the current step: `Ok(outcome)` from the client state machine, or `Err(cause)`.
    pub(super) fn finish_step(&mut self, idx: u32, result: Result<ClientOutcome, String>, now: Timestamp) {
        let client = &mut self.clients.0[idx as usize];
        let Some(sess) = client.session.as_mut() else { return };
        let Some(run) = sess.run.take() else { return };
        client.previous_tid = run.tid.or(client.previous_tid);
        self.stats.retransmits += u64::from(run.client.retransmits());
        let failure = match (run.step, result) {
            (Step::Fetch(f), Ok(ClientOutcome::Complete)) => {
                let expect = self.plan.files[f].expect.as_ref().map(|e| e.len() as u64);
                if self.plan.upload {
                    // An upload's bytes are the file's; the server's final ACK says it has them.
                    let size = expect.unwrap_or(0);
                    self.stats.transfer_done(size, now.saturating_since(run.started), None);
                    self.shared.ok.fetch_add(1, Ordering::Relaxed);
                    self.shared.bytes.fetch_add(size, Ordering::Relaxed);
                    None
                } else if expect.is_some_and(|len| len != run.received) {
                    Some(format!("short file ({} of {} bytes)", run.received, expect.unwrap_or(0)))
                } else {
                    let first = run.client.first_data().map(|t| t.saturating_since(run.started));
                    self.stats.transfer_done(run.received, now.saturating_since(run.started), first);
                    self.shared.ok.fetch_add(1, Ordering::Relaxed);
                    self.shared.bytes.fetch_add(run.received, Ordering::Relaxed);
                    None
                }
            }
            (Step::Miss(_), Ok(ClientOutcome::ServerError(ErrorCode::FILE_NOT_FOUND))) => {
                self.stats.misses += 1;
                None
            }
            (Step::Probe(_), Ok(ClientOutcome::Complete)) => {
                self.stats.probes += 1;
                None
            }
            (Step::Miss(_), Ok(ClientOutcome::Complete)) => Some("expected a miss, got the file".into()),
            (_, Ok(ClientOutcome::ServerError(code))) => Some(format!("server error {}", code.0)),
            (_, Ok(ClientOutcome::TimedOut)) => Some("timeout".into()),
            (_, Ok(ClientOutcome::ProtocolError(why))) => Some(format!("protocol: {why}")),
            (_, Err(cause)) => Some(cause),
        };
        match failure {
            None => {
                sess.step += 1;
                self.begin_step(idx, now);
            }
            Some(cause) => {
                self.stats.fail(cause);
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                self.end_session(idx, now);
            }
        }
    }
}
