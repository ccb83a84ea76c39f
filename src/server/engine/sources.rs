//! Transfers held per source (an IPv4 address, an IPv6 /64), for the fair share under pressure.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::server::limits::source_key;

/// A source's key (see [`key`]) and the transfers it holds, in 12 bytes where `(u64, u32)` would
/// take 16: the key as two 32-bit halves keeps the entry's alignment at 4.
#[derive(Clone, Copy, Debug)]
struct Held {
    key: [u32; 2],
    transfers: u32,
}

impl Held {
    fn key(&self) -> u64 {
        u64::from(self.key[0]) << 32 | u64::from(self.key[1])
    }
}

/// Transfers held per source. See the module documentation.
#[derive(Debug)]
pub(super) struct Sources {
    /// Transfers held per source: 12 bytes a source.
    held: HashTable<Held>,
    hasher: DefaultHashBuilder,
}

impl Sources {
    /// An empty count. The table grows with the sources seen rather than being sized for the
    /// worker's limit up front: its slots are reached at random, so a table reserved for every
    /// transfer a worker may hold is soon resident in full, whatever few are held.
    pub(super) fn new() -> Self {
        Self { held: HashTable::new(), hasher: DefaultHashBuilder::default() }
    }

    /// The most transfers one source may hold while a worker of `capacity` transfers is under
    /// pressure: an even share of half the table among the sources holding transfers, and never
    /// less than a sixteenth of it (a rack of machines behind one NAT address still boots during
    /// a storm).
    pub(super) fn fair_share(&self, capacity: usize) -> usize {
        (capacity / 2 / self.held.len().max(1)).max(capacity / 16).max(1)
    }

    /// Transfers `ip`'s source holds.
    pub(super) fn held_by(&self, ip: IpAddr) -> usize {
        let key = key(ip);
        self.held.find(self.hasher.hash_one(key), |e| e.key() == key).map_or(0, |e| e.transfers as usize)
    }

    /// Counts a transfer of `ip`'s source in (`started`) or out.
    pub(super) fn count(&mut self, ip: IpAddr, started: bool) {
        let key = key(ip);
        let hasher = &self.hasher;
        let hash = hasher.hash_one(key);
        match self.held.find_entry(hash, |e| e.key() == key) {
            Ok(mut e) if started => e.get_mut().transfers += 1,
            Ok(mut e) if e.get().transfers > 1 => e.get_mut().transfers -= 1,
            Ok(e) => drop(e.remove()),
            Err(_) if started => {
                let held = Held { key: [(key >> 32) as u32, key as u32], transfers: 1 };
                self.held.insert_unique(hash, held, |e| hasher.hash_one(e.key()));
            }
            Err(_) => {}
        }
    }
}

/// [`source_key`] in eight bytes: an IPv4 address keeps its IPv4-mapped low half (the high half
/// is zero), an IPv6 /64 its prefix (the low half is zero). Only a source in the reserved
/// `0:ffff::/32` could meet an IPv4 address's key, and would share its count.
fn key(ip: IpAddr) -> u64 {
    let k = source_key(ip);
    (k >> 64) as u64 | k as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_counted_in_and_out_and_shares_shrink_with_more_sources() {
        let mut s = Sources::new();
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
    fn a_source_takes_12_bytes() {
        assert_eq!(std::mem::size_of::<Held>(), 12);
        let k = key("2001:db8:1:2::1".parse().unwrap());
        assert_eq!(Held { key: [(k >> 32) as u32, k as u32], transfers: 1 }.key(), k);
    }

    #[test]
    fn keys_of_ipv4_addresses_and_ipv6_prefixes_stay_apart() {
        let k = |s: &str| key(s.parse().unwrap());
        assert_eq!(k("192.0.2.1"), k("::ffff:192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_ne!(k("2001:db8::1"), k("2001:db8:0:1::1"));
        for v6 in ["::1", "2001:db8::1", "fe80::1", "::"] {
            assert_ne!(k(v6), k("0.0.0.0"), "{v6}");
            assert_ne!(k(v6), k("192.0.2.1"), "{v6}");
        }
    }
}
