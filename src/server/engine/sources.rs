//! Transfers held per source (an IPv4 address, an IPv6 /64), for the fair share under pressure.
//!
//! Counted only while they matter: from when the worker comes under pressure (counted then from
//! the transfers it holds) until the pressure has long gone (see `Engine::track_sources`). A
//! storm that stays under half the table, each of its thousands of clients at an address of
//! its own, so costs no table of sources (8 bytes a source, in a table at most three quarters
//! full).

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::DefaultHashBuilder;

use crate::server::limits::source_key;
use crate::sys::pages::{Mapped, Zeroed};

/// A source's key (see [`Sources::key`]) and the transfers it holds, in 8 bytes. No
/// transfers: an empty bucket.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    key: u32,
    transfers: u32,
}

// SAFETY: two u32s, nothing to drop; all zeros is an empty bucket.
unsafe impl Zeroed for Held {}

/// Buckets of a table that has not grown: a page's worth.
const FIRST_BUCKETS: usize = 256;

/// Transfers held per source. See the module documentation.
///
/// An open-addressing table with linear probing (a removal shifts back the entries after it, so
/// there are no tombstones), at most three quarters full, that doubles as sources come: it grows
/// with the sources seen rather than being sized for the worker's limit up front (its buckets
/// are reached at random, so a table reserved for every transfer a worker may hold is soon
/// resident in full, whatever few are held), and its buckets are mapped pages of their own (see
/// [`Mapped`]), so that the copies a doubling leaves are given back.
#[derive(Debug)]
pub(super) struct Sources {
    buckets: Mapped<Held>,
    /// Sources holding transfers.
    len: usize,
    hasher: DefaultHashBuilder,
    /// Whether transfers are counted now (see the module documentation).
    counting: bool,
}

impl Sources {
    /// An empty count, not counting.
    pub(super) fn new() -> Self {
        Self { buckets: Mapped::new(FIRST_BUCKETS), len: 0, hasher: DefaultHashBuilder::default(), counting: false }
    }

    /// Whether transfers are counted now.
    pub(super) fn counting(&self) -> bool {
        self.counting
    }

    /// Counts from now on, starting from the sources of the transfers `held` (an address
    /// each).
    pub(super) fn start(&mut self, held: impl IntoIterator<Item = IpAddr>) {
        self.counting = true;
        for ip in held {
            self.count(ip, true);
        }
    }

    /// Stops counting; the table's pages are given back.
    pub(super) fn stop(&mut self) {
        *self = Self::new();
    }

    /// The most transfers one source may hold while a worker of `capacity` transfers is under
    /// pressure: an even share of half the table among the sources holding transfers, and never
    /// less than a sixteenth of it (a rack of machines behind one NAT address still boots during
    /// a storm).
    pub(super) fn fair_share(&self, capacity: usize) -> usize {
        (capacity / 2 / self.len.max(1)).max(capacity / 16).max(1)
    }

    /// Transfers `ip`'s source holds.
    pub(super) fn held_by(&self, ip: IpAddr) -> usize {
        self.find(self.key(ip)).map_or(0, |i| self.buckets[i].transfers as usize)
    }

    /// Counts a transfer of `ip`'s source in (`started`) or out, while counting.
    pub(super) fn count(&mut self, ip: IpAddr, started: bool) {
        if !self.counting {
            return;
        }
        let key = self.key(ip);
        match self.find(key) {
            Ok(i) if started => self.buckets[i].transfers += 1,
            Ok(i) if self.buckets[i].transfers > 1 => self.buckets[i].transfers -= 1,
            Ok(i) => self.remove(i),
            Err(_) if started => {
                if (self.len + 1) * 4 > self.buckets.len() * 3 {
                    self.grow();
                }
                let Err(i) = self.find(key) else { return };
                self.buckets[i] = Held { key, transfers: 1 };
                self.len += 1;
            }
            Err(_) => {}
        }
    }

    /// [`source_key`] in four bytes: an IPv4 address as it is, an IPv6 /64 as a hash of it,
    /// keyed at random. A /64 whose hash meets another source's key shares its count (one in
    /// about four billion for each other source held, and no one outside can aim for it).
    fn key(&self, ip: IpAddr) -> u32 {
        match ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_bits(),
            IpAddr::V6(_) => self.hasher.hash_one(source_key(ip)) as u32,
        }
    }

    /// The home bucket of `key`.
    fn home(&self, key: u32) -> usize {
        self.hasher.hash_one(key) as usize & (self.buckets.len() - 1)
    }

    /// The bucket holding `key`, or the empty bucket where it would go.
    fn find(&self, key: u32) -> Result<usize, usize> {
        let mask = self.buckets.len() - 1;
        let mut i = self.home(key);
        loop {
            let e = self.buckets[i];
            if e.transfers == 0 {
                return Err(i);
            }
            if e.key == key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Empties bucket `i`, shifting back the entries after it that would no longer be found.
    fn remove(&mut self, i: usize) {
        let mask = self.buckets.len() - 1;
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = self.buckets[j];
            if e.transfers == 0 {
                break;
            }
            // `e` may fill the hole when its home is not in the stretch after the hole.
            if (j.wrapping_sub(self.home(e.key)) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.buckets[hole] = e;
                hole = j;
            }
        }
        self.buckets[hole] = Held::default();
        self.len -= 1;
    }

    /// Doubles the buckets.
    fn grow(&mut self) {
        let bigger = Mapped::new(self.buckets.len() * 2);
        let old = std::mem::replace(&mut self.buckets, bigger);
        for e in old.iter().filter(|e| e.transfers != 0) {
            if let Err(i) = self.find(e.key) {
                self.buckets[i] = *e;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_counted_in_and_out_and_shares_shrink_with_more_sources() {
        let mut s = Sources::new();
        s.start([]);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        assert_eq!(s.fair_share(64), 32);
        s.count(a, true);
        s.count(a, true);
        s.count(b, true);
        // The same /64.
        assert_eq!((s.held_by(a), s.held_by("2001:db8::2".parse().unwrap())), (2, 1));
        assert_eq!(s.fair_share(64), 16);
        s.count(a, false);
        s.count(a, false);
        assert_eq!((s.held_by(a), s.fair_share(64)), (0, 32));
    }

    #[test]
    fn counts_stay_right_through_growth_and_removals() {
        let mut s = Sources::new();
        s.start([]);
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0xc000_0000 + i));
        let mut want = std::collections::HashMap::new();
        // Thousands of sources (the table doubles several times), some with several transfers,
        // then taken out in another order (removals shift entries back across wrap-arounds).
        for i in 0..3000u32 {
            for _ in 0..=(i % 3) {
                s.count(ip(i), true);
                *want.entry(i).or_insert(0) += 1;
            }
        }
        assert!(s.buckets.len() >= 4096);
        for i in (0..3000u32).filter(|i| i % 7 != 0).rev() {
            s.count(ip(i), false);
            *want.get_mut(&i).unwrap() -= 1;
        }
        for i in 0..3000u32 {
            assert_eq!(s.held_by(ip(i)), want[&i], "{i}");
        }
        assert_eq!(s.len, want.values().filter(|&&n| n > 0).count());
        for (i, n) in want {
            for _ in 0..n {
                s.count(ip(i), false);
            }
        }
        assert_eq!(s.len, 0);
        assert!(s.buckets.iter().all(|e| e.transfers == 0));
        // Counting out a source that holds nothing changes nothing.
        s.count(ip(1), false);
        assert_eq!((s.len, s.held_by(ip(1))), (0, 0));
    }

    #[test]
    fn transfers_are_counted_from_those_held_when_counting_starts_until_it_stops() {
        let mut s = Sources::new();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        s.count(a, true);
        assert_eq!((s.counting(), s.held_by(a)), (false, 0), "nothing kept while not counting");
        s.start([a, a, b]);
        s.count(a, true);
        s.count(b, false);
        assert_eq!((s.held_by(a), s.held_by(b), s.len), (3, 0, 1));
        s.stop();
        s.count(a, false);
        assert_eq!((s.counting(), s.held_by(a), s.len), (false, 0, 0));
    }

    #[test]
    fn a_source_takes_8_bytes() {
        assert_eq!(std::mem::size_of::<Held>(), 8);
    }

    #[test]
    fn keys_of_ipv4_addresses_and_ipv6_prefixes_stay_apart() {
        let s = Sources::new();
        let k = |a: &str| s.key(a.parse().unwrap());
        assert_eq!(k("192.0.2.1"), k("::ffff:192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_ne!(k("2001:db8::1"), k("2001:db8:0:1::1"));
        assert_eq!(k("2001:db8::1"), k("2001:db8::2:3"), "one /64");
        for v6 in ["::1", "2001:db8::1", "fe80::1", "::"] {
            assert_ne!(k(v6), k("0.0.0.0"), "{v6}");
            assert_ne!(k(v6), k("192.0.2.1"), "{v6}");
        }
    }
}
