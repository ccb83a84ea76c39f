//! The parts of a loop turn both backends share: how long to wait, what a wake-up means, and the
//! end of a turn (send errors, timers, flush, the send errors of that flush).
//!
//! A turn of either backend: wait (for completions or readiness) up to [`next_wait`]; hand each
//! received datagram to the engine, reporting the send errors of each batch with
//! [`report_send_errors`] and a wake-up with [`on_wake`]; then [`after_completions`], which says
//! whether the loop is over.

use std::time::Duration;

use super::control::WorkerControl;
use super::engine::Engine;
use super::io::{Io, SendErrors};
use crate::proto::Timestamp;

/// Longest wait of one turn, even with no deadline pending.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// What the shared turn needs from a backend beyond [`Io`].
pub(crate) trait LoopIo: Io {
    /// Stops accepting requests: closes the listening sockets (kept where transfers use them).
    fn close_listens(&mut self);

    /// The failed sends the backend owes the engine.
    fn send_errors(&mut self) -> &mut SendErrors;
}

/// How long the turn starting at `now` may wait: until the engine's next deadline, at most
/// [`MAX_WAIT`].
pub(crate) fn next_wait(engine: &Engine, now: Timestamp) -> Duration {
    engine.next_wakeup().map_or(MAX_WAIT, |t| t.saturating_since(now)).min(MAX_WAIT)
}

/// The worker was woken through its [`WorkerControl`]: a serving policy posted by a reload is
/// taken (between two datagrams: every request after this one sees it); a stop closes the
/// listening sockets and lets transfers finish; an abort ends them now.
pub(crate) fn on_wake<I: LoopIo>(engine: &mut Engine, io: &mut I, control: &WorkerControl, now: Timestamp) {
    if let Some(posted) = control.new_policy() {
        engine.set_policy(std::sync::Arc::clone(&posted.policy), now);
        control.applied(posted.generation);
    }
    if control.stop_requested() {
        engine.begin_stop(now);
        io.close_listens();
    }
    if control.abort_requested() {
        engine.abort_now(now);
    }
}

/// Hands the engine every failed send recorded so far.
pub(crate) fn report_send_errors<I: LoopIo>(engine: &mut Engine, io: &mut I, now: Timestamp) {
    while let Some((token, errno)) = io.send_errors().pop() {
        engine.on_send_error(now, token, errno, io);
    }
}

/// Ends a turn once its completions are handled: send errors, expired timers, the ready
/// transfers' sends, and the errors of those sends (each followed by a flush, as an error may
/// free room for others). Returns whether the engine has finished after a stop.
pub(crate) fn after_completions<I: LoopIo>(engine: &mut Engine, io: &mut I, now: Timestamp) -> bool {
    report_send_errors(engine, io, now);
    engine.on_timers(now, io);
    engine.flush(now, io);
    while let Some((token, errno)) = io.send_errors().pop() {
        engine.on_send_error(now, token, errno, io);
        engine.flush(now, io);
    }
    let finished = engine.is_finished();
    if finished {
        engine.flush_folded();
    }
    finished
}
