//! The server side of a read transfer (RRQ): from the first answer to the final ACK.
//!
//! One file on purpose: a single state machine, whose phases and timers are read together.
//!
//! # Driving it
//! A `ReadTransfer` does no I/O and reads no clock. The owner:
//! 1. creates it when a request has been accepted ([`ReadTransfer::new`]), after negotiating
//!    options against the file;
//! 2. feeds it every packet from the client with [`handle_packet`](ReadTransfer::handle_packet),
//!    a repeated request with [`handle_repeated_request`](ReadTransfer::handle_repeated_request),
//!    and calls [`handle_timeout`](ReadTransfer::handle_timeout) once
//!    [`poll_timeout`](ReadTransfer::poll_timeout) has passed;
//! 3. after each of those, calls [`poll_transmit`](ReadTransfer::poll_transmit) until it returns
//!    `None`, sending what it returns. For DATA it returns the block's byte range, never the bytes:
//!    the I/O layer sends `[header, slice of the file]`;
//! 4. drops it once [`outcome`](ReadTransfer::outcome) is `Some`.
//!
//! # Policy
//! - Until the client acknowledges something, the first answer is resent on a timer: a lost
//!   ACK 0 or ACK 1 is recovered without waiting for the client, as RFC 1123 §4.2.3.2 expects of
//!   a sender (GRUB never repeats its ACK 0: without a resend it waits about a minute and fails
//!   the file). An OACK is resent up to four times, the first after the initial timeout (or the
//!   client's negotiated `timeout`, RFC 2349: never sooner), each wait twice the one before up to
//!   the longest retransmission timeout, and none once the unconfirmed wait has run out (with the
//!   defaults: at 1, 3 and 5 s, expiry at 6 s). A DATA 1 (no options) is resent exactly once: it
//!   may be blksize bytes. A spoofed request so costs its victim at most five OACKs, each about
//!   the size of the request, or two DATA 1. Clients also repeat their request when the answer
//!   is lost; each repeat is answered once and starts the timed resends over. How long such a
//!   transfer waits is the server's choice, not the request's: its timeout option can stretch the
//!   wait to at most twice the server's patience (enough for one retransmission by a slow
//!   client).
//! - Duplicate ACKs never cause a resend; only the adaptive timeout does.
//! - An ERROR 8 (or "User aborted") right after an OACK that carries tsize is the UEFI size
//!   probe: a normal, quiet end. Any other ERROR right after the OACK is a rejection of it.
//! - An ERROR 0 once the final block has been sent is PXELINUX closing the file: success.

use std::time::Duration;

use super::error::{ErrorCode, TransferError, Violation};
use super::options::{DATAGRAM_OVERHEAD, Negotiated, OackShape};
use super::sender::{AckEffect, RetransmitConfig, TimeoutEffect, WindowSender};
use super::time::Timestamp;
pub use super::transfer::{Outcome, Repeat};
use super::transfer::{is_size_probe, unconfirmed_wait};
use super::wire::Packet;

/// What to send next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// The OACK of this negotiation: what the transfer kept of the first one, so that a resend
    /// (on a timer or for a repeated request) says exactly what the first answer said. The owner
    /// encodes it with [`Negotiated::encode_oack`] while the request is at hand (the client's
    /// spelling and order), or with [`Negotiated::encode_oack_again`] without it.
    Oack(Negotiated),
    /// A DATA packet of `len` bytes of the file starting at `offset`.
    Data {
        /// Wire block number (wrapped to 16 bits).
        block: u16,
        /// Offset of the payload in the file.
        offset: u64,
        /// Payload length (0..=blksize).
        len: usize,
    },
    /// An ERROR packet; the transfer ends once it has been handed out.
    Error {
        /// The code.
        code: ErrorCode,
        /// The message.
        message: &'static str,
    },
}

/// The phase, and what only some phases need (six bytes in all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing acknowledged yet; the sender's deadline is the next timed resend of the first
    /// answer, `expires` when a silent client is forgotten, in [`EXPIRY_UNIT`]s from the start.
    Unconfirmed { expires: u16, first: First, blind: Blind, timeout: ClientTimeout },
    /// ACKs are flowing.
    Sending { blind: Blind, timeout: ClientTimeout },
    /// An ERROR is queued.
    Failing(TransferError),
    /// Over.
    Done(Outcome),
}

/// The client's negotiated timeout in seconds, 0 for none (RFC 2349 allows 1 to 255).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClientTimeout(u8);

impl ClientTimeout {
    fn get(self) -> Option<u8> {
        (self.0 != 0).then_some(self.0)
    }
}

/// Where the first answer (OACK or DATA 1) stands while nothing is acknowledged, in one byte:
/// [`First::UNSENT`], or whether it is due (the low bit) and how many timed resends of it have
/// gone out since the client's latest request, the one due included (the other bits; at most
/// [`OACK_TIMED_RESENDS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct First(u8);

impl First {
    /// Due, never sent yet.
    const UNSENT: Self = Self(u8::MAX);
    /// Due again: the client repeated its request.
    const REPEAT: Self = Self::due(0);

    /// Due: the `n`th timed resend since the latest request, or for `n` = 0 the answer to it.
    const fn due(n: u8) -> Self {
        Self(n << 1 | 1)
    }

    /// Sent, after `n` timed resends since the latest request; the next timed resend, if one is
    /// left, is armed (the sender's deadline).
    const fn sent(n: u8) -> Self {
        Self(n << 1)
    }

    fn is_due(self) -> bool {
        self.0 & 1 == 1
    }

    /// Timed resends since the latest request, the one due included.
    fn resends(self) -> u8 {
        if self == Self::UNSENT { 0 } else { self.0 >> 1 }
    }

    /// Whether what is due is a resend on the timer (its answer is ambiguous: Karn's rule).
    fn is_timed(self) -> bool {
        self.is_due() && self.resends() > 0
    }
}

/// Most timed resends of an OACK per request of the client while nothing is acknowledged. GRUB
/// never repeats its ACK 0: each lost one, or each lost OACK, costs a resend, and without one it
/// waits about a minute and fails the file. An OACK is about the size of the request that drew
/// it, so a forged request costs its victim at most five of them.
const OACK_TIMED_RESENDS: u8 = 4;

/// Most timed resends of a DATA 1 (a first answer without options) per request: one. It may be
/// blksize bytes: more would make a forged request an amplifier.
const DATA_TIMED_RESENDS: u8 = 1;

/// How long after the first answer's `n`th timed resend (0: after the answer to a request) the
/// next one is due: the initial timeout, or the client's negotiated one (RFC 2349: no resend
/// sooner), doubled at each resend up to the longest retransmission timeout (or the client's, if
/// longer). `base` is the server's configuration, `cfg` the transfer's.
fn first_answer_wait(base: &RetransmitConfig, cfg: &RetransmitConfig, n: u8) -> Duration {
    let first = cfg.rto.initial;
    first.saturating_mul(1 << n.min(16)).min(base.rto.max.max(first))
}

/// How many more windows may go out on a timer while the client has acknowledged no DATA block
/// (it may not be able to receive at all: its address may be forged). [`Blind::ANY`] when the
/// transfer's port is a secret a forger cannot guess, or once a DATA block was acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Blind(u8);

impl Blind {
    const ANY: Self = Self(u8::MAX);
}

/// A read transfer in progress: 64 bytes.
#[derive(Clone, Debug)]
pub struct ReadTransfer {
    sender: WindowSender,
    phase: Phase,
    /// The options of the OACK, to write it again (none: the first answer is DATA 1).
    oack_shape: OackShape,
    retransmits: u32,
}

impl ReadTransfer {
    /// A transfer of `size` bytes (at most [`MAX_SIZE`](super::sender::MAX_SIZE)) with the
    /// negotiated parameters; its first answer is due at once.
    pub fn new(now: Timestamp, size: u64, negotiated: &Negotiated, base: &RetransmitConfig) -> Self {
        let expires = now + unconfirmed_wait(base, negotiated.timeout);
        let cfg = base.with_client_timeout(negotiated.timeout);
        let oack = negotiated.has_oack();
        let window = if oack { negotiated.windowsize } else { 1 };
        let blksize = if oack { negotiated.blksize } else { Negotiated::PLAIN.blksize };
        let mut sender = WindowSender::new(now, size, blksize, window, &cfg);
        sender.set_deadline(expires);
        Self {
            sender,
            phase: Phase::Unconfirmed {
                expires: expiry_units(now, expires),
                first: First::UNSENT,
                blind: Blind::ANY,
                timeout: ClientTimeout(negotiated.timeout.unwrap_or(0)),
            },
            oack_shape: negotiated.shape(),
            retransmits: 0,
        }
    }

    /// Bounds what a client that has acknowledged no DATA block can make this transfer send, for
    /// a server whose transfer IDs a forger can predict (one listening port, or a port range):
    /// the first window and its resends on a timer stay within `bytes` on the wire (IPv4 and
    /// UDP headers counted), at least one window; beyond that only the client's own ACKs
    /// release it again, one window per ACK. A forged request and a forged ACK 0 then cost
    /// their victim at most `bytes` of DATA.
    pub fn limit_blind_sends(&mut self, bytes: u32) {
        let window = u32::from(self.sender.window()) * (u32::from(self.sender.blksize()) + DATAGRAM_OVERHEAD);
        // The first window is one of them.
        let resends = (bytes / window.max(1)).saturating_sub(1).min(u32::from(u8::MAX - 1)) as u8;
        if let Phase::Unconfirmed { blind, .. } | Phase::Sending { blind, .. } = &mut self.phase {
            *blind = Blind(resends);
        }
    }

    /// The negotiation this transfer runs with, for writing its OACK again.
    pub fn oack(&self) -> Negotiated {
        let s = &self.sender;
        Negotiated::with_shape(self.oack_shape, s.blksize(), s.window(), self.client_timeout(), Some(s.size()))
    }

    /// The client's negotiated timeout, while it matters (the transfer is not over).
    fn client_timeout(&self) -> Option<u8> {
        match self.phase {
            Phase::Unconfirmed { timeout, .. } | Phase::Sending { timeout, .. } => timeout.get(),
            Phase::Failing(_) | Phase::Done(_) => None,
        }
    }

    fn cfg(&self, cfg: &RetransmitConfig) -> RetransmitConfig {
        cfg.with_client_timeout(self.client_timeout())
    }

    /// When a transfer nobody has acknowledged is given up (`expires` in [`EXPIRY_UNIT`]s).
    fn expiry(&self, expires: u16) -> Timestamp {
        self.sender.started() + EXPIRY_UNIT * u32::from(expires)
    }

    /// Handles a packet from the client (the owner has checked that it comes from the client's
    /// address and port).
    pub fn handle_packet(&mut self, now: Timestamp, packet: &Packet<'_>, cfg: &RetransmitConfig) {
        let cfg = self.cfg(cfg);
        let oack = self.oack_shape.has_oack();
        match (*packet, self.phase) {
            (_, Phase::Done(_) | Phase::Failing(_)) => {}
            (Packet::Ack { block }, Phase::Unconfirmed { blind, timeout, .. }) if oack => {
                if block == 0 {
                    self.sender.handshake_acked(now, &cfg);
                    self.phase = Phase::Sending { blind, timeout };
                }
            }
            (Packet::Ack { block }, Phase::Unconfirmed { blind, timeout, .. } | Phase::Sending { blind, timeout }) => {
                match self.sender.on_ack(now, block, &cfg) {
                    // A DATA block was acknowledged: the client receives.
                    AckEffect::Progress => self.phase = Phase::Sending { blind: Blind::ANY, timeout },
                    AckEffect::Complete => self.phase = Phase::Done(Outcome::Complete),
                    // A client that has received no DATA repeats its ACK 0 when the first window
                    // was lost: with the timer held back, its ACK releases the window again.
                    AckEffect::Duplicate if blind != Blind::ANY && self.sender.acked() == 0 => {
                        if matches!(self.phase, Phase::Sending { .. }) {
                            self.sender.rewind();
                        }
                    }
                    AckEffect::Duplicate | AckEffect::Stale => {}
                }
            }
            (Packet::Error { code, message }, Phase::Unconfirmed { .. }) if oack => {
                //= https://www.rfc-editor.org/rfc/rfc2347
                //# the client may respond with an ERROR packet, using error code 8, to terminate
                //# the transfer
                // EDK2 reads tsize from the OACK and stops with ERROR 8 "User aborted the
                // transfer"; any other ERROR here is an old ROM refusing the OACK.
                self.phase = Phase::Done(match is_size_probe(self.oack_shape.has_tsize(), code, message) {
                    true => Outcome::Probe,
                    false => Outcome::Rejected(code),
                });
            }
            (Packet::Error { code, .. }, Phase::Unconfirmed { .. }) => {
                self.phase = Phase::Done(Outcome::PeerError(code));
            }
            (Packet::Error { code, .. }, Phase::Sending { .. }) => {
                self.phase = Phase::Done(if code == ErrorCode::NOT_DEFINED && self.sender.all_sent() {
                    Outcome::Complete
                } else {
                    Outcome::PeerError(code)
                });
            }
            (Packet::Data { .. } | Packet::Request(_) | Packet::Oack(_), _) => {
                self.fail(Violation::UnexpectedOnRead);
            }
        }
    }

    /// The client sent its request again; see [`Repeat`]. Before anything has been acknowledged,
    /// the first answer is due again and the client's silence timer restarts.
    pub fn handle_repeated_request(&mut self, now: Timestamp, base: &RetransmitConfig) -> Repeat {
        match self.phase {
            Phase::Unconfirmed { blind, timeout, .. } => {
                if !self.oack_shape.has_oack() {
                    self.sender.rewind();
                }
                let expiry = now + unconfirmed_wait(base, timeout.get());
                let expires = expiry_units(self.sender.started(), expiry);
                self.phase = Phase::Unconfirmed { expires, first: First::REPEAT, blind, timeout };
                self.sender.set_deadline(expiry);
                Repeat::ResendFirst
            }
            Phase::Sending { .. } if self.sender.all_sent() => {
                // It only asks again once it has the final block.
                self.sender.acknowledge_all();
                self.phase = Phase::Done(Outcome::Complete);
                Repeat::Finished
            }
            _ => Repeat::Ignored,
        }
    }

    /// Handles the timer (a call before the deadline does nothing).
    pub fn handle_timeout(&mut self, now: Timestamp, cfg: &RetransmitConfig) {
        let cfg = self.cfg(cfg);
        let oack = self.oack_shape.has_oack();
        match self.phase {
            Phase::Unconfirmed { expires, .. } if now >= self.expiry(expires) => {
                self.phase = Phase::Done(Outcome::TimedOut);
            }
            Phase::Unconfirmed { first, .. }
                if !first.is_due() && first.resends() < timed_resends(oack) && now >= self.sender.deadline() =>
            {
                //= https://www.rfc-editor.org/rfc/rfc1123#section-4.2.3.2
                //# TFTP [...] MUST use an adaptive timeout.
                // The first answer or the client's first ACK was lost: send it again.
                self.set_first(First::due(first.resends() + 1));
                if !oack {
                    self.sender.rewind();
                }
            }
            Phase::Sending { blind, timeout } => match self.sender.on_timeout(now, &cfg) {
                TimeoutEffect::GiveUp => self.phase = Phase::Done(Outcome::TimedOut),
                TimeoutEffect::Retransmit if blind == Blind::ANY => {}
                TimeoutEffect::Retransmit if blind.0 == 0 => self.sender.hold(),
                TimeoutEffect::Retransmit => self.phase = Phase::Sending { blind: Blind(blind.0 - 1), timeout },
                TimeoutEffect::NotDue => {}
            },
            _ => {}
        }
    }

    /// Ends the transfer with the ERROR that reports `error` (for example: the file became
    /// unreadable, or the server is stopping). The ERROR is the next transmit.
    pub fn fail(&mut self, error: impl Into<TransferError>) {
        if !matches!(self.phase, Phase::Done(_)) {
            self.phase = Phase::Failing(error.into());
        }
    }

    /// Notes where the first answer stands (while nothing is acknowledged).
    fn set_first(&mut self, to: First) {
        if let Phase::Unconfirmed { first, .. } = &mut self.phase {
            *first = to;
        }
    }

    /// Ends the transfer at once without sending anything.
    pub fn cancel(&mut self, outcome: Outcome) {
        self.phase = Phase::Done(outcome);
    }

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self, now: Timestamp, base: &RetransmitConfig) -> Option<Transmit> {
        let cfg = self.cfg(base);
        match self.phase {
            Phase::Failing(error) => {
                let code = ErrorCode::from(&error);
                self.phase = Phase::Done(Outcome::Aborted(code));
                Some(Transmit::Error { code, message: error.message() })
            }
            Phase::Unconfirmed { first, expires, .. } if first.is_due() => {
                let oack = self.oack_shape.has_oack();
                if first != First::UNSENT {
                    self.retransmits += 1;
                }
                let timed = first.is_timed();
                let t = if oack {
                    // An ACK 0 after a timer-driven resend may answer any copy: it is timed from
                    // the copy the client asked for (Karn's rule), which errs long.
                    if !timed {
                        self.sender.handshake_sent(now);
                    }
                    Some(Transmit::Oack(self.oack()))
                } else {
                    let t = self.data(now, &cfg);
                    if !timed {
                        // A repeated request shows the earlier copy was lost: the sample is
                        // unambiguous. A timer-driven resend's is not (Karn's rule).
                        self.sender.retime_last_sent(now);
                    }
                    t
                };
                // A bounded number of timed resends per answer to a request, further and further
                // apart, none once the unconfirmed wait has run out.
                let n = first.resends();
                self.set_first(First::sent(n));
                let expires = self.expiry(expires);
                let next = match n < timed_resends(oack) {
                    true => (now + first_answer_wait(base, &cfg, n)).min(expires),
                    false => expires,
                };
                self.sender.set_deadline(next);
                t
            }
            Phase::Sending { .. } => self.data(now, &cfg),
            _ => None,
        }
    }

    fn data(&mut self, now: Timestamp, cfg: &RetransmitConfig) -> Option<Transmit> {
        let (block, resend) = self.sender.next_block(now, cfg)?;
        if resend && matches!(self.phase, Phase::Sending { .. }) {
            self.retransmits += 1;
        }
        let (offset, len) = self.sender.block_span(block);
        Some(Transmit::Data { block: block as u16, offset, len })
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due; `None` once the transfer is over.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.phase {
            Phase::Unconfirmed { .. } => Some(self.sender.deadline()),
            Phase::Sending { .. } => Some(self.sender.deadline()),
            Phase::Failing(_) | Phase::Done(_) => None,
        }
    }

    /// Whether `poll_transmit` has something to hand out.
    pub fn wants_transmit(&self) -> bool {
        match self.phase {
            Phase::Failing(_) => true,
            Phase::Unconfirmed { first, .. } => first.is_due(),
            Phase::Sending { .. } => self.sender.can_send(),
            Phase::Done(_) => false,
        }
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Whether the client has acknowledged anything yet.
    pub fn is_confirmed(&self) -> bool {
        !matches!(self.phase, Phase::Unconfirmed { .. })
    }

    /// When the transfer was created.
    pub fn started(&self) -> Timestamp {
        self.sender.started()
    }

    /// Bytes the client has acknowledged.
    pub fn bytes_acked(&self) -> u64 {
        self.sender.bytes_acked()
    }

    /// Packets sent again (DATA blocks and repeated first answers).
    pub fn retransmits(&self) -> u32 {
        self.retransmits
    }

    /// The sender, for its round-trip estimate and parameters.
    pub fn sender(&self) -> &WindowSender {
        &self.sender
    }
}

/// The unit of an unconfirmed transfer's expiry: it is kept in two bytes, rounded up, and at
/// most 655 s after the transfer started (longer than any silence a request can buy).
const EXPIRY_UNIT: Duration = Duration::from_millis(10);

/// Most timed resends of the first answer per request: an OACK's or a DATA 1's.
fn timed_resends(oack: bool) -> u8 {
    if oack { OACK_TIMED_RESENDS } else { DATA_TIMED_RESENDS }
}

/// `to` in [`EXPIRY_UNIT`]s after `from`, rounded up, saturating.
fn expiry_units(from: Timestamp, to: Timestamp) -> u16 {
    let unit = EXPIRY_UNIT.as_micros();
    u16::try_from(to.saturating_since(from).as_micros().div_ceil(unit)).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests;
