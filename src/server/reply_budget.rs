//! The budget for ERRORs a worker sends unasked: answers to datagrams that are no request and
//! belong to no transfer (malformed, or from a port that is not the transfer's).
//!
//! Each such ERROR is larger than the datagram that caused it can be (1.6–2.3× for a short
//! malformed one), and the datagram's source may be forged, so the ERRORs leave only within a
//! token bucket per worker; beyond it the datagram is dropped and counted. A real client seldom
//! sends such a datagram (a late retransmission after its transfer ended), and loses nothing
//! when its ERROR is withheld. Answers to requests (file not found, busy, refused) are not
//! counted here: each request gets its one answer.

use crate::proto::Timestamp;

/// ERRORs per second a worker may send unasked.
pub(crate) const RATE: f64 = 50.0;
/// How many it may send at once.
pub(crate) const BURST: f64 = 50.0;

/// A token bucket for unasked ERRORs.
#[derive(Debug)]
pub(crate) struct ReplyBudget {
    tokens: f64,
    last: Timestamp,
}

impl ReplyBudget {
    /// A full bucket at `now`.
    pub(crate) fn new(now: Timestamp) -> Self {
        Self { tokens: BURST, last: now }
    }

    /// Takes a token for one ERROR at `now`; `false`: send nothing.
    pub(crate) fn take(&mut self, now: Timestamp) -> bool {
        let dt = now.saturating_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * RATE).min(BURST);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Timestamp::ZERO;
        let mut b = ReplyBudget::new(t0);
        assert_eq!((0..1000).filter(|_| b.take(t0)).count(), BURST as usize);
        assert!(!b.take(t0 + Duration::from_millis(10)));
        assert!(b.take(t0 + Duration::from_millis(20)), "one token per 20 ms at 50/s");
        let later = t0 + Duration::from_secs(10);
        assert_eq!((0..1000).filter(|_| b.take(later)).count(), BURST as usize, "never more than the burst");
    }
}
