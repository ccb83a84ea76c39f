//! The sending half of a transfer: windows of DATA blocks (RFC 7440), acknowledgements,
//! retransmission on timeout only, and block numbers of any size.
//!
//! Shared by the server's read transfers and a client's uploads. Blocks are numbered from 1 as
//! `u64` here and wrap to 0 on the wire after 65535, which is what every PXE client expects.
//! Only the window in flight is tracked, as 16-bit offsets from the last acknowledged block.

use std::time::Duration;

use super::rtt::{RtoBounds, RttEstimator};
use super::time::Timestamp;

/// Retransmission settings shared by all transfers of a server or client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// Bounds of the adaptive retransmission timeout.
    pub rto: RtoBounds,
    /// Most retransmissions in a row to a silent peer: after the last one it is given up.
    pub max_retries: u8,
    /// Least silence (no progress) before a transfer is abandoned: the wait after the last
    /// retransmission stretches to it, so that a fast adaptive timeout (10 ms on a short path)
    /// spends the retries in well under a second without giving up any sooner.
    pub patience: Duration,
    /// Silence after which a transfer is abandoned whatever the retries and timeouts say: what a
    /// client's `timeout` option (up to 255 s, times the retries) can hold a transfer for.
    pub max_silence: Duration,
}

/// The default [`RetransmitConfig::max_silence`].
pub const MAX_SILENCE: Duration = Duration::from_secs(60);

impl Default for RetransmitConfig {
    fn default() -> Self {
        Self {
            rto: RtoBounds {
                initial: Duration::from_secs(1),
                min: Duration::from_millis(10),
                max: Duration::from_secs(2),
            },
            max_retries: 6,
            patience: Duration::from_secs(6),
            max_silence: MAX_SILENCE,
        }
    }
}

impl RetransmitConfig {
    /// The settings for a transfer whose client negotiated `timeout` seconds (RFC 2349): every
    /// retransmission waits exactly that long (the adaptive timeout does not apply: the client
    /// asked not to be sent to again sooner), and patience grows to `max_retries` such waits.
    pub fn with_client_timeout(&self, timeout: Option<u8>) -> Self {
        match timeout {
            None => *self,
            Some(t) => {
                let t = Duration::from_secs(u64::from(t));
                //= https://www.rfc-editor.org/rfc/rfc2349#section-2
                //# #secs  The number of seconds to wait before retransmitting
                Self {
                    rto: RtoBounds { initial: t, min: t, max: t },
                    max_retries: self.max_retries,
                    patience: self.patience.max(t * u32::from(self.max_retries)).min(self.max_silence),
                    max_silence: self.max_silence,
                }
            }
        }
    }
}

/// What an acknowledgement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckEffect {
    /// New blocks were acknowledged.
    Progress,
    /// The final block was acknowledged: the transfer is complete.
    Complete,
    /// The same block as before was acknowledged again. Never a reason to resend
    /// (the Sorcerer's Apprentice fix, RFC 1123 §4.2.3.1).
    Duplicate,
    /// A block that is not in flight: ignored.
    Stale,
}

/// What a timer expiry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutEffect {
    /// The deadline has not passed.
    NotDue,
    /// The window will be sent again from the first unacknowledged block.
    Retransmit,
    /// Retries and patience are used up.
    GiveUp,
}

/// Sender state of one transfer (52 bytes, at four-byte alignment). Its times other than the
/// last progress are kept as 32-bit offsets from it (see [`Offset`] and
/// [`WindowSender::probe_sent`]), its size and the highest block acknowledged in 48 bits each.
///
/// It also keeps when the transfer started (for its owner's records and expiry): the sender is
/// where that fits in a byte of padding's room.
#[derive(Clone, Debug)]
pub struct WindowSender {
    size: U48,
    /// Highest block acknowledged; 0 before any.
    acked: U48,
    /// Last progress (or start): what the other times count from.
    idle_since: Time4,
    /// When the RTT probe block (or the handshake) was sent, in microseconds after
    /// `idle_since` (before it when negative).
    probe_sent: i32,
    deadline: Offset,
    /// When the transfer started: how long before `idle_since`.
    started: Offset,
    rtt: RttEstimator,
    blksize: u16,
    window: u16,
    /// Next block to send, as an offset from `acked` (1 = the first unacknowledged block).
    next_off: u16,
    /// Highest block sent so far, as an offset from `acked`.
    sent_off: u16,
    /// Block whose ACK will give an RTT sample, as an offset from `acked`; 0 = none.
    probe_off: u16,
    retries: u8,
}

/// The largest size a sender sends: 2^48 - 1 bytes (256 TiB; larger than the address space
/// of most systems, and so than any file the server can map).
pub const MAX_SIZE: u64 = (1 << 48) - 1;

/// An unsigned count below 2^48 in six bytes at two-byte alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct U48([u16; 3]);

impl U48 {
    /// `v`, at most [`MAX_SIZE`].
    fn new(v: u64) -> Self {
        let v = v.min(MAX_SIZE);
        Self([v as u16, (v >> 16) as u16, (v >> 32) as u16])
    }

    fn get(self) -> u64 {
        let [a, b, c] = self.0;
        u64::from(a) | u64::from(b) << 16 | u64::from(c) << 32
    }
}

/// A [`Timestamp`] at four-byte alignment, so that the sender packs without padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Time4([u32; 2]);

impl Time4 {
    fn new(t: Timestamp) -> Self {
        let us = t.as_micros();
        Self([us as u32, (us >> 32) as u32])
    }

    fn get(self) -> Timestamp {
        Timestamp::from_micros(u64::from(self.0[0]) | u64::from(self.0[1]) << 32)
    }
}

/// A time as an offset from the last progress, in four bytes (a deadline after it, the start
/// before it): up to 2^31 microseconds (35 minutes) exactly; beyond, in whole milliseconds
/// (a deadline rounded up: the server's timers tick in milliseconds), up to 24 days, which no
/// deadline reaches (the longest silence a transfer is allowed is 255 s times 255 retries,
/// twice: 36 hours) and a start further back reads as 24 days back; [`Offset::NEVER`] for no
/// deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Offset(u32);

impl Offset {
    const NEVER: Self = Self(u32::MAX);
    /// The high bit: the offset is in milliseconds.
    const MILLIS: u32 = 1 << 31;

    /// `at`, counted from `base`; a time before `base` counts as `base` (both are past).
    fn new(base: Timestamp, at: Timestamp) -> Self {
        if at == Timestamp::NEVER {
            return Self::NEVER;
        }
        let micros = at.as_micros().saturating_sub(base.as_micros());
        match u32::try_from(micros) {
            Ok(us) if us < Self::MILLIS => Self(us),
            _ => {
                let ms = micros.div_ceil(1000).min(u64::from(u32::MAX - 1 - Self::MILLIS));
                Self(Self::MILLIS | ms as u32)
            }
        }
    }

    /// The time it names before `base` (made as `Offset::new(it, base)`).
    fn before(self, base: Timestamp) -> Timestamp {
        let back = match self.0 {
            v if v & Self::MILLIS != 0 => u64::from(v & !Self::MILLIS) * 1000,
            us => u64::from(us),
        };
        Timestamp::from_micros(base.as_micros().saturating_sub(back))
    }

    /// The time it names, counted from `base`.
    fn at(self, base: Timestamp) -> Timestamp {
        match self.0 {
            u32::MAX => Timestamp::NEVER,
            v if v & Self::MILLIS != 0 => base + Duration::from_millis(u64::from(v & !Self::MILLIS)),
            us => base + Duration::from_micros(u64::from(us)),
        }
    }
}

impl WindowSender {
    /// A sender of `size` bytes in blocks of `blksize`, `window` blocks at a time.
    /// `window` is clamped to 1..=32768, `blksize` to at least 1 and `size` to [`MAX_SIZE`]
    /// (the owner refuses larger files).
    pub fn new(now: Timestamp, size: u64, blksize: u16, window: u16, cfg: &RetransmitConfig) -> Self {
        Self {
            size: U48::new(size),
            acked: U48::new(0),
            idle_since: Time4::new(now),
            probe_sent: 0,
            deadline: Offset::NEVER,
            started: Offset(0),
            rtt: RttEstimator::new(&cfg.rto),
            blksize: blksize.max(1),
            window: window.clamp(1, super::options::MAX_WINDOWSIZE),
            next_off: 1,
            sent_off: 0,
            probe_off: 0,
            retries: 0,
        }
    }

    /// Notes that the probe (or the handshake) was sent at `now`. A send more than 35 minutes
    /// after the last progress cannot be kept as an offset: it gives no sample.
    fn set_probe_sent(&mut self, now: Timestamp) {
        let since = now.as_micros().saturating_sub(self.idle_since().as_micros());
        match i32::try_from(since) {
            Ok(us) => self.probe_sent = us,
            Err(_) => {
                self.probe_sent = i32::MIN;
                self.probe_off = 0;
            }
        }
    }

    /// When the probe (or the handshake) was sent; `None` when that cannot be told.
    fn probe_sent(&self) -> Option<Timestamp> {
        let base = self.idle_since().as_micros();
        let at = base.checked_add_signed(i64::from(self.probe_sent)).filter(|_| self.probe_sent != i32::MIN)?;
        Some(Timestamp::from_micros(at))
    }

    /// Progress at `now`: the times are counted from it from now on.
    fn progress(&mut self, now: Timestamp) {
        let shift = now.as_micros().saturating_sub(self.idle_since().as_micros());
        // A probe still in flight sent more than 35 minutes before `now` gives no sample.
        self.probe_sent = i64::from(self.probe_sent)
            .checked_sub_unsigned(shift)
            .and_then(|v| i32::try_from(v).ok())
            .filter(|_| self.probe_sent != i32::MIN)
            .unwrap_or(i32::MIN);
        if self.probe_sent == i32::MIN {
            self.probe_off = 0;
        }
        let (deadline, started) = (self.deadline(), self.started());
        self.idle_since = Time4::new(self.idle_since().max(now));
        self.set_deadline(deadline);
        self.started = Offset::new(started, self.idle_since());
    }

    /// When the transfer started (when the sender was made).
    pub fn started(&self) -> Timestamp {
        self.started.before(self.idle_since())
    }

    /// Number of the final block: the first one shorter than blksize, empty when the size is a
    /// multiple of blksize, and block 1 (empty) for an empty file.
    pub fn last_block(&self) -> u64 {
        self.size() / u64::from(self.blksize) + 1
    }

    /// Byte offset and length of `block` (1-based).
    pub fn block_span(&self, block: u64) -> (u64, usize) {
        let offset = (block - 1) * u64::from(self.blksize);
        let len = self.size().saturating_sub(offset).min(u64::from(self.blksize));
        // At most blksize, a u16.
        (offset, len as usize)
    }

    /// The block to send now, if the window allows one, and whether it is a retransmission.
    /// Arms the retransmission deadline.
    pub fn next_block(&mut self, now: Timestamp, cfg: &RetransmitConfig) -> Option<(u64, bool)> {
        let block = self.acked() + u64::from(self.next_off);
        if block > self.last_block() || self.next_off > self.window {
            return None;
        }
        let resend = self.next_off <= self.sent_off;
        if resend {
            // Karn's rule: a block sent twice gives no RTT sample.
            if self.probe_off == self.next_off {
                self.probe_off = 0;
            }
        } else {
            self.sent_off = self.next_off;
            self.probe_off = self.next_off;
            self.set_probe_sent(now);
        }
        self.next_off += 1;
        self.set_deadline(self.next_deadline(now, cfg));
        Some((block, resend))
    }

    /// Handles an ACK of wire block number `wire`.
    pub fn on_ack(&mut self, now: Timestamp, wire: u16, cfg: &RetransmitConfig) -> AckEffect {
        // The low 16 bits of `acked` are what the peer last acknowledged on the wire.
        let off = wire.wrapping_sub(self.acked() as u16);
        if off == 0 {
            return AckEffect::Duplicate;
        }
        if off > self.sent_off {
            return AckEffect::Stale;
        }
        if self.probe_off != 0 && off >= self.probe_off {
            let rtt = self.probe_sent().map(|sent| now.saturating_since(sent));
            match rtt {
                // The first window (or first answer) was timed against the initial timeout: a
                // lost ACK may have come again on the peer's timer, posing as a round trip.
                Some(rtt) if self.acked() == 0 => self.rtt.on_provisional_sample(rtt, &cfg.rto),
                Some(rtt) => self.rtt.on_sample(rtt, &cfg.rto),
                None => {}
            }
            //= https://www.rfc-editor.org/rfc/rfc6298#section-5
            //# once a new RTT measurement is obtained (which can only happen when new data
            //# has been sent and acknowledged), the computations outlined in Section 2 are
            //# performed
            // Karn's algorithm: only a block sent once, acknowledged, ends the backoff. An ACK
            // of a resent block says nothing of the round trip; dropping the backoff on it put
            // the timeout back under the round trip of a client slower than the floor, and
            // every block went out twice (see `RttEstimator::on_ambiguous_progress`).
            self.rtt.on_progress();
            self.probe_off = 0;
        } else {
            self.rtt.on_ambiguous_progress();
            if self.probe_off != 0 {
                self.probe_off -= off;
            }
        }
        self.acked = U48::new(self.acked() + u64::from(off));
        self.sent_off -= off;
        //= https://www.rfc-editor.org/rfc/rfc7440#section-4
        //# the sender [...] will start sending the next window from the block after the
        //# acknowledged one
        // An ACK inside the window means the receiver saw a gap: go back to the block after it.
        self.next_off = 1;
        self.retries = 0;
        self.progress(now);
        if self.acked() == self.last_block() {
            self.deadline = Offset::NEVER;
            return AckEffect::Complete;
        }
        self.set_deadline(self.next_deadline(now, cfg));
        AckEffect::Progress
    }

    /// When to act next after a send at `now`: one timeout later, or, once the retries are
    /// spent, no sooner than patience after the last progress; never past the silence bound, so
    /// that a long timeout ends in giving up rather than in a late resend.
    fn next_deadline(&self, now: Timestamp, cfg: &RetransmitConfig) -> Timestamp {
        let mut at = now + self.rtt.rto(&cfg.rto);
        if self.retries >= cfg.max_retries {
            at = at.max(self.idle_since() + cfg.patience);
        }
        at.min(self.idle_since() + cfg.max_silence)
    }

    /// Handles the retransmission timer: a retransmission while fewer than `max_retries` have
    /// been made since the last progress, then giving up once patience has passed too.
    pub fn on_timeout(&mut self, now: Timestamp, cfg: &RetransmitConfig) -> TimeoutEffect {
        if now < self.deadline() {
            return TimeoutEffect::NotDue;
        }
        let idle = now.saturating_since(self.idle_since());
        if idle >= cfg.max_silence || (self.retries >= cfg.max_retries && idle >= cfg.patience) {
            self.deadline = Offset::NEVER;
            return TimeoutEffect::GiveUp;
        }
        if self.retries >= cfg.max_retries {
            // The retries are spent but patience is not (the owner moved the deadline): wait
            // out the rest rather than send more than `max_retries`.
            self.set_deadline(self.idle_since() + cfg.patience.min(cfg.max_silence));
            return TimeoutEffect::NotDue;
        }
        self.retries += 1;
        //= https://www.rfc-editor.org/rfc/rfc1123#section-4.2.3.2
        //# TFTP [...] MUST use an adaptive timeout.
        self.rtt.on_timeout();
        self.probe_off = 0;
        self.next_off = 1;
        self.set_deadline(self.next_deadline(now, cfg));
        TimeoutEffect::Retransmit
    }

    /// Sends nothing more until the next ACK or timeout: undoes the rewind of a timeout whose
    /// resend the owner holds back. The deadline stays armed, so retries and patience still
    /// run out.
    pub fn hold(&mut self) {
        self.next_off = self.sent_off + 1;
    }

    /// Sends the first unacknowledged block again on the next [`next_block`](Self::next_block)
    /// (used when a client repeats its request before acknowledging anything).
    pub fn rewind(&mut self) {
        self.next_off = 1;
    }

    /// Notes that a handshake packet (an OACK, acknowledged by ACK 0) was sent now.
    pub fn handshake_sent(&mut self, now: Timestamp) {
        self.set_probe_sent(now);
    }

    /// The handshake packet was acknowledged: a provisional RTT sample from its latest send (the
    /// ACK may be the peer's resend on its own timer, as the OACK's timer is the initial
    /// timeout), which the first DATA round trip replaces.
    pub fn handshake_acked(&mut self, now: Timestamp, cfg: &RetransmitConfig) {
        if let Some(sent) = self.probe_sent() {
            self.rtt.on_provisional_sample(now.saturating_since(sent), &cfg.rto);
        }
        self.progress(now);
    }

    /// Times the block just sent again from now. For a first block repeated because the client
    /// repeated its request: the request shows that the earlier copy was lost, so the sample is
    /// not ambiguous the way a timer-driven resend is. Without a sample the timeout would stay
    /// at its initial value, and a timeout longer than the client's own lets the client's
    /// retransmissions pose as round trips.
    pub fn retime_last_sent(&mut self, now: Timestamp) {
        if self.next_off > 1 {
            self.probe_off = self.next_off - 1;
            self.set_probe_sent(now);
        }
    }

    /// Records that the peer has every block (it showed so without the final ACK arriving).
    pub fn acknowledge_all(&mut self) {
        self.acked = U48::new(self.last_block());
        self.next_off = 1;
        self.sent_off = 0;
        self.probe_off = 0;
        self.deadline = Offset::NEVER;
    }

    /// Overrides the deadline.
    pub fn set_deadline(&mut self, deadline: Timestamp) {
        self.deadline = Offset::new(self.idle_since(), deadline);
    }

    /// The retransmission deadline ([`Timestamp::NEVER`] when nothing is outstanding).
    pub fn deadline(&self) -> Timestamp {
        self.deadline.at(self.idle_since())
    }

    /// Highest block acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked.get()
    }

    /// Bytes acknowledged by the peer.
    pub fn bytes_acked(&self) -> u64 {
        (self.acked() * u64::from(self.blksize)).min(self.size())
    }

    /// Whether the final block has been sent at least once.
    pub fn all_sent(&self) -> bool {
        self.acked() + u64::from(self.sent_off) == self.last_block()
    }

    /// Whether a block can be sent right now.
    pub fn can_send(&self) -> bool {
        self.next_off <= self.window && self.acked() + u64::from(self.next_off) <= self.last_block()
    }

    /// The round-trip estimator.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// Block size.
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// Window size.
    pub fn window(&self) -> u16 {
        self.window
    }

    /// Total bytes.
    pub fn size(&self) -> u64 {
        self.size.get()
    }

    /// The last progress (or the start).
    fn idle_since(&self) -> Timestamp {
        self.idle_since.get()
    }
}

#[cfg(test)]
mod tests;
