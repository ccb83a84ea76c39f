//! The per-source limit on new transfers: a token bucket per source, where a source is an IPv4
//! address or an IPv6 /64 (see [`source_key`]).
//!
//! A boot storm spreads over many addresses and passes; one source starting thousands of
//! transfers (a misbehaving client, or one spoofed source) is held to the configured rate.
//! Requests beyond it are dropped, not answered, and counted. An IPv6 host is given a whole /64
//! (SLAAC, privacy addresses, a delegated prefix), so counting /128s would let one host take as
//! many buckets as it cares to use addresses.
//!
//! The buckets live in a fixed table allocated at start: a set-associative cache of
//! [`SETS`] × [`WAYS`] entries (16 bytes each, one cache line per set), indexed by a keyed hash
//! of the address, so its memory does not grow with the number of clients and no request can
//! make it allocate. A source that finds its set full takes the place of the entry closest to a
//! full bucket (the one that would be forgotten first); the evicted source starts again with a
//! full bucket, so a crowded table errs on the side of letting requests through. A single busy
//! source is never the one evicted while its bucket is low, which is the case the limit is for.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::DefaultHashBuilder;

use crate::config::SourceRate;
use crate::proto::Timestamp;

/// Sets in the table (a power of two).
pub(crate) const SETS: usize = 4096;
/// Entries per set.
pub(crate) const WAYS: usize = 4;

/// A source's bucket. `tag` is the address's hash (never 0; 0 marks a free entry), `last_ms` the
/// worker's clock in milliseconds at the last refill, wrapping every 49 days, which only matters
/// for a source silent that long: its bucket is full by then.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(16))]
struct Bucket {
    tag: u64,
    tokens: f32,
    last_ms: u32,
}

fn ms(t: Timestamp) -> u32 {
    (t.as_micros() / 1000) as u32
}

/// Token buckets by source address, in a fixed table.
pub(crate) struct SourceLimiter {
    rate: f32,
    burst: f32,
    hasher: DefaultHashBuilder,
    table: Box<[[Bucket; WAYS]]>,
}

impl std::fmt::Debug for SourceLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter").field("rate", &self.rate).field("burst", &self.burst).finish_non_exhaustive()
    }
}

impl SourceLimiter {
    /// `rate` new transfers per second per source, bursts of `burst`.
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate: rate as f32,
            burst: burst as f32,
            hasher: DefaultHashBuilder::default(),
            // Written whole here, so the table is resident from the start.
            table: vec![[Bucket::default(); WAYS]; SETS].into_boxed_slice(),
        }
    }

    /// One worker's share of a server-wide `rate` over `workers` workers: the kernel spreads one
    /// address's ports over the workers, so each holds an even share of the rate and the burst
    /// (a burst of at least one).
    pub(crate) fn worker_share(rate: SourceRate, workers: usize) -> Self {
        let share = workers.max(1) as f64;
        Self::new(rate.per_second / share, (rate.burst / share).max(1.0))
    }

    /// The bucket's tokens at `now_ms`, capped at the burst.
    fn level(&self, b: &Bucket, now_ms: u32) -> f32 {
        let dt = now_ms.wrapping_sub(b.last_ms) as f32 / 1000.0;
        (b.tokens + dt * self.rate).min(self.burst)
    }

    /// Takes a token for a new transfer from `ip`'s source; `false` means over the limit.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Timestamp) -> bool {
        let hash = self.hasher.hash_one(source_key(ip));
        let tag = hash | 1;
        let now_ms = ms(now);
        let set = (hash >> 1) as usize & (SETS - 1);
        let way = match self.table[set].iter().position(|b| b.tag == tag) {
            Some(w) => w,
            None => {
                // A free entry, else the one nearest to full (ties: the first).
                let mut victim = 0;
                let mut best = f32::MIN;
                for (w, b) in self.table[set].iter().enumerate() {
                    let level = if b.tag == 0 { f32::MAX } else { self.level(b, now_ms) };
                    if level > best {
                        best = level;
                        victim = w;
                    }
                }
                self.table[set][victim] = Bucket { tag, tokens: self.burst, last_ms: now_ms };
                victim
            }
        };
        let b = self.table[set][way];
        let tokens = self.level(&b, now_ms);
        let ok = tokens >= 1.0;
        self.table[set][way] = Bucket { tag, tokens: if ok { tokens - 1.0 } else { tokens }, last_ms: now_ms };
        ok
    }
}

/// The source `ip` counts as: an IPv4 address (also when written IPv4-mapped), or the /64 of an
/// IPv6 address.
pub(crate) fn source_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits() & !u128::from(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut l = SourceLimiter::new(10.0, 5.0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let t0 = Timestamp::ZERO;
        assert_eq!((0..8).filter(|_| l.allow(a, t0)).count(), 5, "the burst");
        assert!(l.allow(b, t0), "another source has its own bucket");
        assert!(!l.allow(a, t0 + Duration::from_millis(50)));
        assert!(l.allow(a, t0 + Duration::from_millis(110)), "refilled at 10/s");
        assert!(!l.allow(a, t0 + Duration::from_millis(120)), "and spent again");
    }

    #[test]
    fn a_busy_source_stays_limited_among_many_others() {
        let mut l = SourceLimiter::new(10.0, 5.0);
        let heavy: IpAddr = "198.51.100.7".parse().unwrap();
        let t0 = Timestamp::ZERO;
        for _ in 0..5 {
            assert!(l.allow(heavy, t0));
        }
        // Four times as many other sources as the table has entries, each asking once, within
        // 50 ms: all get through, and the heavy source's empty bucket is never the one evicted.
        let others = (SETS * WAYS * 4) as u32;
        for i in 0..others {
            let t = t0 + Duration::from_micros(u64::from(i) * 50_000 / u64::from(others));
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.allow(ip, t), "source {i} is new and has a full bucket");
            if i % 1024 == 0 {
                assert!(!l.allow(heavy, t), "the heavy source is still limited after {i} others");
            }
        }
    }

    #[test]
    fn an_ipv6_64_is_one_source() {
        let mut l = SourceLimiter::new(10.0, 5.0);
        let t0 = Timestamp::ZERO;
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        // A host of one /64 using a new address for each request: one bucket of 5.
        let got = (1..=50u16).filter(|i| l.allow(ip(&format!("2001:db8:0:7:{i:x}::{i:x}")), t0)).count();
        assert_eq!(got, 5, "many /128s of one /64 share one bucket");
        assert!(!l.allow(ip("2001:db8:0:7:ffff:ffff:ffff:ffff"), t0), "the /64's last address too");
        // Its neighbouring /64s are other sources.
        assert!(l.allow(ip("2001:db8:0:6::1"), t0) && l.allow(ip("2001:db8:0:8::1"), t0));
        // IPv4 addresses stay one source each, written plainly or IPv4-mapped alike.
        let v4 = (0..5).filter(|_| l.allow(ip("192.0.2.1"), t0)).count();
        assert_eq!(v4, 5);
        assert!(!l.allow(ip("::ffff:192.0.2.1"), t0), "the IPv4-mapped form is the same source");
        assert!(l.allow(ip("::ffff:192.0.2.2"), t0), "and its neighbour another one");
        assert_eq!(source_key(ip("2001:db8::1")), source_key(ip("2001:db8::ffff:1")));
        assert_ne!(source_key(ip("192.0.2.1")), source_key(ip("192.0.2.2")));
    }

    #[test]
    fn the_table_is_fixed_size() {
        let l = SourceLimiter::new(100.0, 500.0);
        assert_eq!(std::mem::size_of::<Bucket>(), 16);
        assert_eq!(std::mem::size_of_val(&*l.table), SETS * WAYS * 16);
    }
}
