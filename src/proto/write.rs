//! The server side of a write transfer (WRQ): blocks in, ACKs out, and a commit before the final
//! ACK.
//!
//! Driven like [`ReadTransfer`](super::read::ReadTransfer). [`handle_packet`](WriteTransfer::handle_packet)
//! hands back each block received in order (`offset`, `bytes`, borrowed from the datagram) for
//! the owner to write. When the final block has arrived, the transfer waits for the owner to make
//! the upload durable ([`wants_commit`](WriteTransfer::wants_commit), then
//! [`commit_result`](WriteTransfer::commit_result)); only then does the final ACK leave, so a client
//! that sees it knows the file is in place, and a failed commit becomes an ERROR instead.
//!
//! Before the client has sent anything, the first answer (OACK or ACK 0) is repeated only when
//! the request is, never on a timer, and the transfer waits only briefly for its first DATA: the
//! server's initial timeout (`--timeout`, 1 s by default), whatever `timeout` the client asked
//! for, and a repeated request extends that to at most twice as long from the first one. A real
//! client sends DATA 1 as soon as the answer arrives; a forger who cannot see the answer must find
//! the transfer's port within that time. After the final ACK the transfer dallies for a while to
//! answer a repeated final block (RFC 1350 §6).

use std::time::Duration;

use super::error::{ErrorCode, LocalFailure, TransferError, Violation};
use super::options::Negotiated;
use super::receiver::{Received, WindowReceiver};
use super::rtt::RttEstimator;
use super::sender::RetransmitConfig;
use super::time::Timestamp;
use super::transfer::{Outcome, Repeat};
use super::wire::Packet;

/// What to send next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteTransmit {
    /// The OACK of this negotiation, as the transfer kept it (see
    /// [`Transmit::Oack`](super::read::Transmit::Oack)).
    Oack(Negotiated),
    /// An ACK of this wire block number (ACK 0 answers a request without options).
    Ack(u16),
    /// An ERROR; the transfer ends.
    Error {
        /// The code.
        code: ErrorCode,
        /// The message.
        message: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No DATA yet; the first answer is an OACK or ACK 0.
    Unconfirmed {
        oack: bool,
        expires: Timestamp,
    },
    Receiving,
    /// The final block is in; the owner is committing the file.
    Committing,
    /// Committed and finally acknowledged; answering repeats of the final block until `until`.
    Dallying {
        until: Timestamp,
    },
    /// An ERROR is queued.
    Failing(TransferError),
    Done(Outcome),
}

/// A write transfer in progress.
#[derive(Clone, Debug)]
pub struct WriteTransfer {
    recv: WindowReceiver,
    phase: Phase,
    started: Timestamp,
    deadline: Timestamp,
    idle_since: Timestamp,
    rtt: RttEstimator,
    max_size: u64,
    received: u64,
    /// An ACK due (wire block number).
    ack_due: Option<u16>,
    first_due: bool,
    retries: u8,
    client_timeout: u8,
    retransmits: u32,
    /// When the commit succeeded and the final ACK became due.
    completed: Option<Timestamp>,
    /// The negotiation, to answer a repeated request with the same OACK.
    negotiated: Negotiated,
}

impl WriteTransfer {
    /// A transfer with the negotiated parameters that accepts at most `max_size` bytes; its first
    /// answer is due at once.
    pub fn new(now: Timestamp, negotiated: &Negotiated, max_size: u64, base: &RetransmitConfig) -> Self {
        let oack = negotiated.has_oack();
        let (blksize, window) =
            if oack { (negotiated.blksize, negotiated.windowsize) } else { (Negotiated::PLAIN.blksize, 1) };
        let expires = now + first_data_wait(base);
        let cfg = base.with_client_timeout(negotiated.timeout);
        Self {
            recv: WindowReceiver::new(blksize, window),
            phase: Phase::Unconfirmed { oack, expires },
            started: now,
            deadline: expires,
            idle_since: now,
            rtt: RttEstimator::new(&cfg.rto),
            max_size,
            received: 0,
            ack_due: None,
            first_due: true,
            retries: 0,
            client_timeout: negotiated.timeout.unwrap_or(0),
            retransmits: 0,
            completed: None,
            negotiated: *negotiated,
        }
    }

    fn cfg(&self, base: &RetransmitConfig) -> RetransmitConfig {
        base.with_client_timeout((self.client_timeout != 0).then_some(self.client_timeout))
    }

    /// Handles a packet from the client. Returns a block received in order, with its offset, for
    /// the owner to write before anything else happens.
    pub fn handle_packet<'a>(
        &mut self,
        now: Timestamp,
        packet: &Packet<'a>,
        base: &RetransmitConfig,
    ) -> Option<(u64, &'a [u8])> {
        let cfg = self.cfg(base);
        match (*packet, self.phase) {
            (_, Phase::Done(_) | Phase::Failing(_)) => None,
            (Packet::Data { block, data }, Phase::Unconfirmed { .. } | Phase::Receiving) => {
                if matches!(self.phase, Phase::Unconfirmed { .. }) {
                    // Timed from the latest first answer: a repeat proves the earlier one lost.
                    self.rtt.on_sample(now.saturating_since(self.idle_since), &cfg.rto);
                    self.phase = Phase::Receiving;
                    self.first_due = false;
                }
                let (kind, ack) = self.recv.on_data(block, data.len());
                self.ack_due = ack.or(self.ack_due);
                match kind {
                    Received::InOrder { offset, last, .. } => {
                        self.received += data.len() as u64;
                        if self.received > self.max_size {
                            self.set_failing(LocalFailure::UploadTooLarge.into());
                            return None;
                        }
                        self.progress(now, &cfg);
                        if last {
                            // The final ACK waits for the commit.
                            self.ack_due = None;
                            self.phase = Phase::Committing;
                        }
                        Some((offset, data))
                    }
                    Received::Oversized => {
                        self.set_failing(Violation::OversizedData.into());
                        None
                    }
                    Received::Duplicate | Received::Gap => None,
                }
            }
            (Packet::Data { .. }, Phase::Dallying { .. }) => {
                // The final ACK was lost: say it again.
                self.ack_due = Some(self.recv.last_acked());
                None
            }
            (Packet::Data { .. }, Phase::Committing) => None,
            // After the final ACK, an ERROR (a client closing) changes nothing: the file is in.
            (Packet::Error { .. }, Phase::Dallying { .. }) => {
                self.phase = Phase::Done(Outcome::Complete);
                None
            }
            (Packet::Error { code, .. }, _) => {
                self.phase = Phase::Done(Outcome::PeerError(code));
                None
            }
            (Packet::Ack { .. } | Packet::Request(_) | Packet::Oack(_), _) => {
                self.set_failing(Violation::UnexpectedOnWrite.into());
                None
            }
        }
    }

    fn progress(&mut self, now: Timestamp, cfg: &RetransmitConfig) {
        self.retries = 0;
        self.rtt.on_progress();
        self.idle_since = now;
        self.deadline = now + self.wait(cfg);
    }

    /// How long to wait for the next DATA before repeating the last ACK: the client drives an
    /// upload, so the server's wait is generous (the round trip plus the client's own timeout).
    fn wait(&self, cfg: &RetransmitConfig) -> Duration {
        self.rtt.rto(&cfg.rto).max(cfg.rto.initial)
    }

    fn set_failing(&mut self, failure: TransferError) {
        self.phase = Phase::Failing(failure);
    }

    /// The client repeated its request; see [`Repeat`].
    pub fn handle_repeated_request(&mut self, now: Timestamp, base: &RetransmitConfig) -> Repeat {
        match self.phase {
            Phase::Unconfirmed { oack, .. } => {
                // A repeat (its first answer was lost) gets the wait again, but a forger who
                // repeats the request cannot keep the transfer open: at most twice the wait from
                // the start.
                let wait = first_data_wait(base);
                let expires = (now + wait).min(self.started + wait * 2);
                self.phase = Phase::Unconfirmed { oack, expires };
                self.deadline = expires;
                self.first_due = true;
                self.retransmits += 1;
                self.idle_since = now;
                Repeat::ResendFirst
            }
            Phase::Dallying { .. } => {
                self.phase = Phase::Done(Outcome::Complete);
                Repeat::Finished
            }
            _ => Repeat::Ignored,
        }
    }

    /// Handles the timer: the last ACK again (with backoff) while receiving, the end of the
    /// dally, or the client given up.
    pub fn handle_timeout(&mut self, now: Timestamp, base: &RetransmitConfig) {
        let cfg = self.cfg(base);
        match self.phase {
            Phase::Unconfirmed { expires, .. } if now >= expires => self.phase = Phase::Done(Outcome::TimedOut),
            Phase::Receiving if now >= self.deadline => {
                // At most `max_retries` ACKs resent in a row to a silent client; it is given up
                // once they are spent and patience has passed too (the last wait stretches to it).
                if self.retries >= cfg.max_retries {
                    let patient_until = self.idle_since + cfg.patience;
                    if now >= patient_until {
                        self.phase = Phase::Done(Outcome::TimedOut);
                    } else {
                        self.deadline = patient_until;
                    }
                    return;
                }
                self.retries += 1;
                self.rtt.on_timeout();
                self.retransmits += 1;
                self.ack_due = Some(self.recv.last_acked());
                self.deadline = now + self.wait(&cfg);
            }
            Phase::Dallying { until } if now >= until => self.phase = Phase::Done(Outcome::Complete),
            _ => {}
        }
    }

    /// Whether the final block is in and the owner must commit the upload.
    pub fn wants_commit(&self) -> bool {
        self.phase == Phase::Committing
    }

    /// The owner's commit finished: `Ok` sends the final ACK, `Err` the ERROR that reports it.
    pub fn commit_result(&mut self, now: Timestamp, result: Result<(), TransferError>, base: &RetransmitConfig) {
        if self.phase != Phase::Committing {
            return;
        }
        match result {
            Ok(()) => {
                self.completed = Some(now);
                self.ack_due = Some(self.recv.last_acked());
                let cfg = self.cfg(base);
                self.phase = Phase::Dallying { until: now + self.wait(&cfg) * 2 };
            }
            Err(failure) => self.set_failing(failure),
        }
    }

    /// Ends the transfer with the ERROR that reports `error` (the next transmit). An upload
    /// already committed (only dallying for a lost final ACK) just ends, successfully.
    pub fn fail(&mut self, error: impl Into<TransferError>) {
        match self.phase {
            Phase::Done(_) => {}
            Phase::Dallying { .. } => self.phase = Phase::Done(Outcome::Complete),
            _ => self.set_failing(error.into()),
        }
    }

    /// Ends the transfer at once without sending anything.
    pub fn cancel(&mut self, outcome: Outcome) {
        self.phase = Phase::Done(outcome);
    }

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self) -> Option<WriteTransmit> {
        match self.phase {
            Phase::Failing(error) => {
                let code = ErrorCode::from(&error);
                self.phase = Phase::Done(Outcome::Aborted(code));
                Some(WriteTransmit::Error { code, message: error.message() })
            }
            Phase::Unconfirmed { oack, .. } if self.first_due => {
                self.first_due = false;
                Some(if oack { WriteTransmit::Oack(self.negotiated) } else { WriteTransmit::Ack(0) })
            }
            Phase::Receiving | Phase::Dallying { .. } => self.ack_due.take().map(WriteTransmit::Ack),
            _ => None,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due; `None` while committing or over.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.phase {
            Phase::Unconfirmed { expires, .. } => Some(expires),
            Phase::Receiving => Some(self.deadline),
            Phase::Dallying { until } => Some(until),
            _ => None,
        }
    }

    /// Whether `poll_transmit` has something to hand out.
    pub fn wants_transmit(&self) -> bool {
        match self.phase {
            Phase::Failing(_) => true,
            Phase::Unconfirmed { .. } => self.first_due,
            Phase::Receiving | Phase::Dallying { .. } => self.ack_due.is_some(),
            _ => false,
        }
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Whether the upload has been committed (the final ACK is out or due).
    #[cfg(test)]
    pub(crate) fn is_committed(&self) -> bool {
        matches!(self.phase, Phase::Dallying { .. }) || self.outcome() == Some(Outcome::Complete)
    }

    /// When the transfer was created.
    pub fn started(&self) -> Timestamp {
        self.started
    }

    /// When the upload was committed and finally acknowledged, if it was.
    pub fn completed(&self) -> Option<Timestamp> {
        self.completed
    }

    /// Bytes received in order.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// ACKs sent again (after timeouts) and repeated first answers.
    pub fn retransmits(&self) -> u32 {
        self.retransmits
    }

    /// The negotiation this transfer runs with, for writing its OACK again.
    pub fn oack(&self) -> Negotiated {
        self.negotiated
    }

    /// The block size in use.
    pub fn blksize(&self) -> u16 {
        self.recv.blksize()
    }
}

/// How long an upload waits for its first DATA: the server's initial timeout, never the client's
/// `timeout` option (a client cannot buy a longer wait).
fn first_data_wait(base: &RetransmitConfig) -> Duration {
    base.rto.initial
}

#[cfg(test)]
mod tests;
