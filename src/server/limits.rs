//! The per-source limit on new transfers: a token bucket per client address.
//!
//! A boot storm spreads over many addresses and passes; one address starting thousands of
//! transfers (a misbehaving client, or one spoofed source) is held to the configured rate.
//! Requests beyond it are dropped, not answered, and counted. The table is bounded: entries
//! whose bucket has refilled are forgotten, and if it still grows past its bound it is emptied
//! (which errs on the side of letting requests through).

use std::net::IpAddr;

use hashbrown::HashMap;

use crate::proto::Timestamp;

const MAX_SOURCES: usize = 1 << 16;

/// A source's bucket: 8 bytes (tokens, and milliseconds of the worker's clock at the last refill,
/// wrapping every 49 days, which only matters for a source silent that long: its bucket is full
/// and forgotten by then).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f32,
    last_ms: u32,
}

/// An address as a 16-byte key (IPv4 mapped into IPv6).
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn ms(t: Timestamp) -> u32 {
    (t.as_micros() / 1000) as u32
}

/// Token buckets by source address.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<u128, Bucket>,
}

impl SourceLimiter {
    /// `rate` new transfers per second per source, bursts of `burst`.
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, buckets: HashMap::new() }
    }

    fn refill(&self, b: &mut Bucket, now: Timestamp) {
        let dt = f64::from(ms(now).wrapping_sub(b.last_ms)) / 1000.0;
        b.tokens = (f64::from(b.tokens) + dt * self.rate).min(self.burst) as f32;
        b.last_ms = ms(now);
    }

    /// Takes a token for a new transfer from `ip`; `false` means over the limit.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Timestamp) -> bool {
        let ip = key(ip);
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&ip) {
            self.sweep(now);
            if self.buckets.len() >= MAX_SOURCES {
                self.buckets.clear();
            }
        }
        let burst = self.burst as f32;
        let mut b = *self.buckets.entry(ip).or_insert(Bucket { tokens: burst, last_ms: ms(now) });
        self.refill(&mut b, now);
        let ok = b.tokens >= 1.0;
        if ok {
            b.tokens -= 1.0;
        }
        self.buckets.insert(ip, b);
        ok
    }

    /// Forgets sources whose bucket is full again.
    pub(crate) fn sweep(&mut self, now: Timestamp) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            let dt = f64::from(ms(now).wrapping_sub(b.last_ms)) / 1000.0;
            f64::from(b.tokens) + dt * rate < burst
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut l = SourceLimiter::new(10.0, 5.0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Timestamp::ZERO;
        assert_eq!((0..8).filter(|_| l.allow(a, t0)).count(), 5, "the burst");
        assert!(l.allow(b, t0), "another source has its own bucket");
        assert!(!l.allow(a, t0 + Duration::from_millis(50)));
        assert!(l.allow(a, t0 + Duration::from_millis(110)), "refilled at 10/s");
        l.sweep(t0 + Duration::from_secs(10));
        assert_eq!(l.len(), 0, "full buckets are forgotten");
    }
}
