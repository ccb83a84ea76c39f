//! The session and step lifecycle of a client: a session starts (if the budget allows), runs
//! the plan's steps one after the other, and ends; a finished step is judged (complete, a miss
//! as expected, or a failure with its cause) and counted. A failed step is started again from a
//! new port after a pause, as PXE firmware does, while the session has restarts left
//! (`--session-retries`); the session fails when they are spent.

use std::sync::atomic::Ordering;

use bootstorm::proto::{ClientOutcome, ErrorCode, ReadClient, Timestamp, Violation, WriteClient};

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
        self.clients.0[idx as usize].session =
            Some(Session { number, started: now, step: 0, run: None, restarts: 0, restart_at: None });
        self.begin_step(idx, now);
    }

    /// Begins the session's current step (from a new port unless `--reuse-port`), or ends the
    /// session when no step is left.
    fn begin_step(&mut self, idx: u32, now: Timestamp) {
        let Some(sess) = self.clients.0[idx as usize].session.as_ref() else { return };
        let step = self.plan.step(sess.step);
        if step.is_some()
            && self.clients.0[idx as usize].carried
            && !self.plan.reuse_port
            && self.new_port(idx).is_err()
        {
            self.fail_session(idx, Failure::NoSocket, now);
            return;
        }
        let c = &mut self.clients.0[idx as usize];
        let Some(sess) = c.session.as_mut() else { return };
        c.carried |= step.is_some();
        match step {
            None => {
                if sess.restarts > 0 {
                    self.stats.recovered += 1;
                }
                self.end_session(idx, now)
            }
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

    /// Starts the failed step of client `idx`'s session again, from a new port, once its pause
    /// is over (the client's timer fired with no step in progress).
    pub(super) fn restart_step(&mut self, idx: u32, now: Timestamp) {
        let Some(sess) = self.clients.0[idx as usize].session.as_mut() else { return };
        match sess.restart_at {
            Some(at) if at <= now => sess.restart_at = None,
            Some(at) => {
                self.wheel.arm(&mut self.clients, idx, at);
                return;
            }
            None => return,
        }
        match self.new_port(idx) {
            Ok(()) => self.begin_step(idx, now),
            Err(_) => self.fail_session(idx, Failure::NoSocket, now),
        }
    }

    /// Counts client `idx`'s session as failed for `why`, and ends it.
    fn fail_session(&mut self, idx: u32, why: Failure, now: Timestamp) {
        self.stats.fail(why.key());
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        self.end_session(idx, now);
    }

    /// Ends the current step: `Ok(outcome)` from the client state machine, or `Err(why)`.
    pub(super) fn finish_step(&mut self, idx: u32, result: Result<ClientOutcome, Failure>, now: Timestamp) {
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
                    Some(Failure::ShortFile)
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
            (Step::Miss(_), Ok(ClientOutcome::Complete)) => Some(Failure::MissServed),
            (_, Ok(ClientOutcome::ServerError(code))) => Some(Failure::ServerError(code)),
            (_, Ok(ClientOutcome::TimedOut)) => Some(Failure::TimedOut),
            (_, Ok(ClientOutcome::ProtocolError(why))) => Some(Failure::Protocol(why)),
            (_, Err(why)) => Some(why),
        };
        let Some(why) = failure else {
            sess.step += 1;
            self.begin_step(idx, now);
            return;
        };
        if !why.restartable() || sess.restarts >= self.plan.session_retries {
            self.fail_session(idx, why, now);
            return;
        }
        sess.restarts += 1;
        let at = now + self.plan.retry_pause;
        sess.restart_at = Some(at);
        self.stats.restart(why.key());
        self.wheel.cancel(&mut self.clients, idx);
        self.wheel.arm(&mut self.clients, idx, at);
    }
}

/// Why a step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The server went silent (after the client's retransmissions).
    TimedOut,
    /// An ERROR answer, other than the file-not-found a configured miss expects.
    ServerError(ErrorCode),
    /// The server broke the protocol (the client answered with an ERROR).
    Protocol(Violation),
    /// DATA whose bytes differ from the file's (`--verify`).
    WrongData,
    /// The transfer ended before the file's last byte (`--verify`).
    ShortFile,
    /// An answer that provably belongs to another transfer (see `--reuse-port`).
    WrongAnswer(WrongAnswer),
    /// A configuration-file miss was served a file: the server's tree, not the transfer, is
    /// wrong, so it is not started again.
    MissServed,
    /// No new socket for the next step or a restart.
    NoSocket,
}

impl Failure {
    /// Whether a session's restart (`--session-retries`) may recover from it.
    fn restartable(self) -> bool {
        !matches!(self, Self::MissServed | Self::NoSocket)
    }

    /// How the report names it: the key of the `failures` and `retry_causes` counts.
    fn key(self) -> String {
        match self {
            Self::TimedOut => "timeout".into(),
            Self::ServerError(code) => format!("server error {}", code.0),
            Self::Protocol(why) => format!("protocol: {why}"),
            Self::WrongData => "wrong data".into(),
            Self::WrongAnswer(WrongAnswer::UnknownTid) => "wrong answer: ERROR 5 first".into(),
            Self::ShortFile => "short file".into(),
            Self::MissServed => "expected a miss, got the file".into(),
            Self::NoSocket => "no socket".into(),
        }
    }
}

/// An answer to a request that provably belongs to another transfer, besides DATA whose bytes
/// differ from the file's ([`Failure::WrongData`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WrongAnswer {
    /// ERROR 5 (unknown transfer ID) as the first answer: a request is never answered so.
    UnknownTid,
}
