//! Adaptive retransmission timeout (RFC 1123 §4.2.3.2), computed as RFC 6298 does for TCP:
//! a smoothed round-trip time and its variation, exponential backoff on each timeout, and
//! Karn's rule: callers sample only blocks that were sent once, and an acknowledgement of a
//! resent block keeps the backoff (up to three doublings) until such a sample comes.
//!
//! One departure from RFC 6298: a sample may be *provisional*. The first exchanges of a transfer
//! (the OACK and ACK 0, the first answer and its ACK) are timed against the initial timeout, one
//! second, which is longer than many clients' own retransmission timers: when the client's first
//! ACK is lost, its resend on the client's timer arrives as a round trip of that timer. Smoothed
//! in, such a sample keeps the timeout above the client's for dozens of round trips, and every
//! lost ACK meanwhile waits for the client. A provisional sample sets the timeout, but the next
//! sample replaces it instead of being averaged with it.

use std::time::Duration;

/// Bounds of the retransmission timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtoBounds {
    /// Timeout before the first round trip has been measured.
    pub initial: Duration,
    /// Lower bound of the adaptive timeout.
    pub min: Duration,
    /// Upper bound, backoff included.
    pub max: Duration,
}

/// Round-trip estimator of one transfer: microseconds, 9 bytes (its two 32-bit values kept as
/// bytes, so that it needs no alignment padding, and the backoff and what the estimate rests on
/// share a byte). The bounds are not stored (they are the same for thousands of transfers) but
/// passed to each call, and the timeout is computed from the estimate when asked for rather
/// than kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    srtt: [u8; 4],
    rttvar: [u8; 4],
    /// The backoff (doublings, at most 31) in the low five bits, [`Samples`] above.
    state: u8,
}

/// What the estimate rests on (two bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Samples {
    /// No sample: the initial timeout.
    None,
    /// Only a provisional sample, which the next one replaces.
    Provisional,
    /// Samples smoothed as RFC 6298 says.
    Smoothed,
}

impl RtoBounds {
    fn micros(&self) -> (u32, u32) {
        let min = micros(self.min);
        (min, micros(self.max).max(min))
    }
}

/// Doublings of the timeout kept across an acknowledgement of a resent block: a peer up to
/// eight times slower than the estimate is still timed.
const KEPT_BACKOFF: u8 = 3;

/// The bits of [`RttEstimator::state`] that hold the backoff, and its most doublings.
const BACKOFF: u8 = 31;

/// Clock granularity term of RFC 6298 §2: the server's timers tick in milliseconds.
const GRANULARITY_US: u32 = 1_000;

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl RttEstimator {
    /// A new estimator with no samples.
    pub fn new(_bounds: &RtoBounds) -> Self {
        Self { srtt: [0; 4], rttvar: [0; 4], state: 0 }
    }

    fn srtt_us(&self) -> u32 {
        u32::from_ne_bytes(self.srtt)
    }

    fn rttvar_us(&self) -> u32 {
        u32::from_ne_bytes(self.rttvar)
    }

    fn backoff(&self) -> u8 {
        self.state & BACKOFF
    }

    fn set_backoff(&mut self, backoff: u8) {
        self.state = (self.state & !BACKOFF) | backoff.min(BACKOFF);
    }

    fn samples(&self) -> Samples {
        match self.state >> 5 {
            0 => Samples::None,
            1 => Samples::Provisional,
            _ => Samples::Smoothed,
        }
    }

    fn set_samples(&mut self, samples: Samples) {
        self.state = (self.state & BACKOFF) | (samples as u8) << 5;
    }

    /// Feeds one round-trip sample.
    pub fn on_sample(&mut self, rtt: Duration, bounds: &RtoBounds) {
        self.sample(rtt, bounds, Samples::Smoothed);
    }

    /// Feeds a sample that may be the peer's own retransmission timeout rather than a round
    /// trip (see the module's documentation): it sets the timeout until the next sample, which
    /// replaces it. Ignored once samples are being smoothed.
    pub fn on_provisional_sample(&mut self, rtt: Duration, bounds: &RtoBounds) {
        if self.samples() != Samples::Smoothed {
            self.sample(rtt, bounds, Samples::Provisional);
        }
    }

    fn sample(&mut self, rtt: Duration, _bounds: &RtoBounds, kind: Samples) {
        let r = micros(rtt);
        //= https://www.rfc-editor.org/rfc/rfc6298#section-2
        //# RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|
        //# SRTT <- (1 - alpha) * SRTT + alpha * R'
        if self.samples() == Samples::Smoothed {
            let (srtt, rttvar) = (self.srtt_us(), self.rttvar_us());
            let delta = srtt.abs_diff(r);
            self.rttvar = (((3 * u64::from(rttvar) + u64::from(delta)) / 4) as u32).to_ne_bytes();
            self.srtt = (((7 * u64::from(srtt) + u64::from(r)) / 8) as u32).to_ne_bytes();
        } else {
            self.srtt = r.to_ne_bytes();
            self.rttvar = (r / 2).to_ne_bytes();
            self.set_samples(kind);
        }
    }

    /// The timeout before backoff: the initial one without a sample, else RFC 6298's.
    fn base_rto(&self, bounds: &RtoBounds) -> u32 {
        let (min, max) = bounds.micros();
        let rto = match self.samples() {
            Samples::None => u64::from(micros(bounds.initial)),
            //= https://www.rfc-editor.org/rfc/rfc6298#section-2
            //# RTO <- SRTT + max (G, K*RTTVAR)
            Samples::Provisional | Samples::Smoothed => {
                u64::from(self.srtt_us()) + u64::from(GRANULARITY_US.max(self.rttvar_us().saturating_mul(4)))
            }
        };
        u32::try_from(rto).unwrap_or(u32::MAX).clamp(min, max)
    }

    /// A retransmission timeout expired: double the timeout (up to the maximum).
    pub fn on_timeout(&mut self) {
        self.set_backoff(self.backoff().saturating_add(1));
    }

    /// The peer acknowledged a block sent once (a valid sample): drop the backoff.
    pub fn on_progress(&mut self) {
        self.set_backoff(0);
    }

    /// The peer acknowledged only what was sent more than once (no sample: Karn's algorithm).
    /// The backoff stays, so that a peer slower than the estimate gets a block sent once and
    /// answered, whose round trip then enters the estimate; but at most [`KEPT_BACKOFF`]
    /// doublings of it, so that on a path losing many packets, where the estimate is right and
    /// the resends were needed, the timeout stays well under the client's patience.
    pub fn on_ambiguous_progress(&mut self) {
        self.set_backoff(self.backoff().min(KEPT_BACKOFF));
    }

    /// The timeout to use now, backoff included.
    pub fn rto(&self, bounds: &RtoBounds) -> Duration {
        let (_, max) = bounds.micros();
        let t = u64::from(self.base_rto(bounds)) << self.backoff();
        Duration::from_micros(t.min(u64::from(max)))
    }

    /// The smoothed round-trip time, if a sample was taken.
    pub fn srtt(&self) -> Option<Duration> {
        (self.samples() != Samples::None).then(|| Duration::from_micros(u64::from(self.srtt_us())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: RtoBounds =
        RtoBounds { initial: Duration::from_secs(1), min: Duration::from_millis(10), max: Duration::from_secs(8) };

    #[test]
    fn initial_then_adapts_down_to_the_floor() {
        let mut r = RttEstimator::new(&B);
        assert_eq!(r.rto(&B), Duration::from_secs(1));
        assert_eq!(r.srtt(), None);
        for _ in 0..50 {
            r.on_sample(Duration::from_micros(200), &B);
        }
        assert_eq!(r.srtt(), Some(Duration::from_micros(200)));
        assert_eq!(r.rto(&B), Duration::from_millis(10), "clamped to the minimum");
    }

    #[test]
    fn follows_a_slow_path() {
        let mut r = RttEstimator::new(&B);
        r.on_sample(Duration::from_millis(100), &B);
        // srtt 100 ms, rttvar 50 ms: 100 + 200.
        assert_eq!(r.rto(&B), Duration::from_millis(300));
        r.on_sample(Duration::from_millis(100), &B);
        // rttvar 37.5 ms: 100 + 150.
        assert_eq!(r.rto(&B), Duration::from_millis(250));
    }

    #[test]
    fn a_provisional_sample_is_replaced_by_the_next() {
        let mut r = RttEstimator::new(&B);
        // The client's first ACK was lost and came again on its 200 ms timer.
        r.on_provisional_sample(Duration::from_millis(200), &B);
        assert_eq!(r.rto(&B), Duration::from_millis(600));
        r.on_provisional_sample(Duration::from_millis(100), &B);
        assert_eq!(r.srtt(), Some(Duration::from_millis(100)), "replaced, not averaged");
        r.on_sample(Duration::from_millis(1), &B);
        assert_eq!(r.srtt(), Some(Duration::from_millis(1)), "replaced, not averaged");
        assert_eq!(r.rto(&B), Duration::from_millis(10));
        r.on_provisional_sample(Duration::from_millis(200), &B);
        assert_eq!(r.srtt(), Some(Duration::from_millis(1)), "ignored once smoothing");
        r.on_sample(Duration::from_millis(9), &B);
        assert_eq!(r.srtt(), Some(Duration::from_millis(2)), "smoothed");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut r = RttEstimator::new(&B);
        r.on_timeout();
        assert_eq!(r.rto(&B), Duration::from_secs(2));
        r.on_timeout();
        r.on_timeout();
        assert_eq!(r.rto(&B), Duration::from_secs(8));
        for _ in 0..40 {
            r.on_timeout();
        }
        assert_eq!(r.rto(&B), Duration::from_secs(8));
        r.on_progress();
        assert_eq!(r.rto(&B), Duration::from_secs(1));
    }

    #[test]
    fn an_ack_of_a_resent_block_keeps_up_to_three_doublings() {
        let mut r = RttEstimator::new(&B);
        for _ in 0..20 {
            r.on_sample(Duration::from_millis(1), &B);
        }
        assert_eq!(r.rto(&B), Duration::from_millis(10));
        r.on_timeout();
        r.on_ambiguous_progress();
        assert_eq!(r.rto(&B), Duration::from_millis(20), "kept: no sample says the path is faster");
        for _ in 0..4 {
            r.on_timeout();
        }
        assert_eq!(r.rto(&B), Duration::from_millis(320));
        r.on_ambiguous_progress();
        assert_eq!(r.rto(&B), Duration::from_millis(80), "at most three doublings kept");
        r.on_progress();
        assert_eq!(r.rto(&B), Duration::from_millis(10), "a valid sample ends the backoff");
    }
}
