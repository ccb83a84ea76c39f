//! Transfers held per source (an IPv4 address, an IPv6 /64), for the fair share under pressure.
//!
//! A fair share is never less than a sixteenth of the table (see [`Sources::fair_share`]), so
//! only a source holding that many transfers can be refused: what must be exact is the count of
//! the few heavy sources, not of the thousands that hold a transfer or two in a storm. Every
//! transfer is counted in a count-min sketch of fixed size, four rows of [`WIDTH`] counters,
//! each source in one counter of each row chosen by a hash keyed at random; the least of a
//! source's four counters is never below what it holds. A source whose estimate reaches its
//! share is counted exactly, once, from the transfers held, and from then on kept exactly (among
//! at most [`MOST_EXACT`] sources: room for one below a thirty-second of the table is made
//! when needed, and at most 32 hold more). So the count costs 4 KB a worker whatever the number
//! of sources, a source is refused only on its exact count, and a source whose counters all
//! meet heavier ones' is walked for once, not at every request.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::DefaultHashBuilder;

use crate::server::limits::source_key;

/// Rows of the sketch.
const ROWS: usize = 4;
/// Counters in each row (a power of two, at most 2^16).
const WIDTH: usize = 256;

/// Sources counted exactly at most.
const MOST_EXACT: usize = 64;

/// A source's key (see [`Sources::key`]) and the transfers it holds, exactly.
#[derive(Clone, Copy, Debug)]
struct Held {
    key: u32,
    transfers: u32,
}

/// Transfers held per source. See the module documentation.
#[derive(Debug)]
pub(super) struct Sources {
    /// The sketch: transfers held by the sources whose hash meets each counter.
    rows: Box<[[u32; WIDTH]; ROWS]>,
    /// Counters above zero, per row: the most of them is a count of the sources holding
    /// transfers that is never above the true count (sources sharing a counter count once).
    nonzero: [u32; ROWS],
    /// Sources counted exactly (see the module documentation).
    exact: Vec<Held>,
    /// The most transfers the worker holds.
    capacity: usize,
    hasher: DefaultHashBuilder,
}

impl Sources {
    /// An empty count for a worker of `capacity` transfers.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            rows: Box::new([[0; WIDTH]; ROWS]),
            nonzero: [0; ROWS],
            exact: Vec::new(),
            capacity,
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The most transfers one source may hold while the worker is under pressure: an even share
    /// of half the table among the sources holding transfers, and never less than a sixteenth
    /// of it (a rack of machines behind one NAT address still boots during a storm). The count
    /// of sources, read from the sketch, is never above the true count: the share errs larger,
    /// never smaller (and only while fewer than eight sources make it more than a sixteenth).
    pub(super) fn fair_share(&self) -> usize {
        let sources = self.nonzero.iter().copied().max().unwrap_or(0).max(1) as usize;
        (self.capacity / 2 / sources).max(self.capacity / 16).max(1)
    }

    /// Whether `ip`'s source holds its fair share or more. `held` gives the address of each
    /// transfer held; it is walked only the first time a source's estimate reaches its share.
    pub(super) fn at_share<I: Iterator<Item = IpAddr>>(&mut self, ip: IpAddr, held: impl FnOnce() -> I) -> bool {
        let key = self.key(ip);
        let share = self.fair_share();
        if let Some(h) = self.exact.iter().find(|h| h.key == key) {
            return h.transfers as usize >= share;
        }
        if self.estimate(key) < share {
            return false;
        }
        let transfers = held().filter(|&a| self.key(a) == key).count();
        self.remember(key, transfers as u32);
        transfers >= share
    }

    /// Counts `key`'s source exactly from now on, from the `transfers` it holds, making room
    /// by forgetting a source below the line (a thirty-second of the table) if need be; none
    /// is forgotten above it, and at most 32 sources are.
    fn remember(&mut self, key: u32, transfers: u32) {
        if self.exact.len() >= MOST_EXACT {
            let line = self.forget_line();
            let Some(i) = self.exact.iter().position(|h| (h.transfers as usize) < line) else { return };
            self.exact.swap_remove(i);
        }
        self.exact.push(Held { key, transfers });
    }

    /// Counts a transfer of `ip`'s source in (`started`) or out: each counted out must have
    /// been counted in.
    pub(super) fn count(&mut self, ip: IpAddr, started: bool) {
        let key = self.key(ip);
        let cells = self.cells(key);
        // Counting out a source that holds nothing changes nothing.
        if !started && self.least(&cells) == 0 {
            return;
        }
        for (row, cell) in cells.into_iter().enumerate() {
            let n = &mut self.rows[row][cell];
            match (started, *n) {
                (true, 0) => self.nonzero[row] += 1,
                (false, 1) => self.nonzero[row] -= 1,
                _ => {}
            }
            *n = if started { *n + 1 } else { *n - 1 };
        }
        if let Some(i) = self.exact.iter().position(|h| h.key == key) {
            let h = &mut self.exact[i];
            h.transfers = if started { h.transfers + 1 } else { h.transfers.saturating_sub(1) };
            if h.transfers == 0 {
                self.exact.swap_remove(i);
            }
        }
    }

    /// The line below which a source counted exactly may be forgotten to make room: a
    /// thirty-second of the table (half the least share), at least one.
    fn forget_line(&self) -> usize {
        (self.capacity / 32).max(1)
    }

    /// The most `key`'s source may hold: the least of its counters.
    fn estimate(&self, key: u32) -> usize {
        self.least(&self.cells(key))
    }

    /// The least of the counters at `cells`, one per row.
    fn least(&self, cells: &[usize; ROWS]) -> usize {
        (0..ROWS).map(|row| self.rows[row][cells[row]]).min().unwrap_or(0) as usize
    }

    /// `key`'s counter in each row.
    fn cells(&self, key: u32) -> [usize; ROWS] {
        let h = self.hasher.hash_one(key);
        std::array::from_fn(|row| (h >> (16 * row)) as usize & (WIDTH - 1))
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
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(Ipv4Addr::from(0xc000_0000 + i))
    }

    /// Every transfer counted in so far, as `held` gives them.
    struct Held(Vec<IpAddr>);

    impl Held {
        fn start(&mut self, s: &mut Sources, a: IpAddr) {
            s.count(a, true);
            self.0.push(a);
        }

        fn end(&mut self, s: &mut Sources, a: IpAddr) {
            s.count(a, false);
            let i = self.0.iter().position(|&b| b == a).unwrap();
            self.0.swap_remove(i);
        }

        fn at_share(&self, s: &mut Sources, a: IpAddr) -> bool {
            s.at_share(a, || self.0.iter().copied())
        }
    }

    #[test]
    fn shares_shrink_with_more_sources_down_to_a_sixteenth_of_the_table() {
        let mut s = Sources::new(64);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        assert_eq!(s.fair_share(), 32);
        s.count(a, true);
        s.count(a, true);
        s.count(b, true);
        // The same /64: still two sources.
        s.count("2001:db8::2".parse().unwrap(), true);
        assert_eq!(s.fair_share(), 16);
        s.count(a, false);
        s.count(a, false);
        assert_eq!(s.fair_share(), 32);
        for i in 0..100 {
            s.count(ip(i), true);
        }
        assert_eq!(s.fair_share(), 4, "a sixteenth of 64");
    }

    #[test]
    fn a_heavy_source_among_thousands_is_refused_on_its_exact_count() {
        // 4,000 sources of one transfer each and one of many, in a table of 16,384: the share
        // is 1,024 (a sixteenth).
        let mut s = Sources::new(16_384);
        let mut held = Held(Vec::new());
        for i in 0..4000 {
            held.start(&mut s, ip(i));
        }
        let heavy = ip(9999);
        for _ in 0..1023 {
            held.start(&mut s, heavy);
        }
        assert_eq!(s.fair_share(), 1024);
        assert!(!held.at_share(&mut s, heavy), "1,023 held, below its share");
        held.start(&mut s, heavy);
        assert!(held.at_share(&mut s, heavy), "1,024 held: at its share");
        assert_eq!(s.exact.len(), 1, "counted exactly from now on");
        held.end(&mut s, heavy);
        assert!(!held.at_share(&mut s, heavy));
        // None of the light sources is at its share, however their counters meet.
        assert!((0..4000).all(|i| !held.at_share(&mut s, ip(i))));
        // Holding nothing again: no longer counted exactly.
        while held.0.contains(&heavy) {
            held.end(&mut s, heavy);
        }
        assert!(s.exact.is_empty());
        assert!(!held.at_share(&mut s, heavy));
    }

    #[test]
    fn the_estimate_is_never_below_the_count_and_the_walk_is_made_once() {
        let mut s = Sources::new(1024);
        let mut held = Held(Vec::new());
        let mut want = std::collections::HashMap::<u32, usize>::new();
        // Sources of one to five transfers each, some taken out again, in another order.
        for i in 0..3000u32 {
            for _ in 0..=(i % 5) {
                held.start(&mut s, ip(i));
                *want.entry(i).or_insert(0) += 1;
            }
        }
        for i in (0..3000u32).filter(|i| i % 7 != 0).rev() {
            held.end(&mut s, ip(i));
            *want.get_mut(&i).unwrap() -= 1;
        }
        for (&i, &n) in &want {
            assert!(s.estimate(s.key(ip(i))) >= n, "{i}");
        }
        // A source at its share (64 of 1,024) is walked for once, then counted exactly.
        let heavy = ip(5000);
        for _ in 0..64 {
            held.start(&mut s, heavy);
        }
        assert!(held.at_share(&mut s, heavy));
        let mut walks = 0;
        assert!(s.at_share(heavy, || {
            walks += 1;
            std::iter::empty()
        }));
        assert_eq!(walks, 0, "counted exactly: no second walk");
        // Counting out a source that holds nothing (no counter of it above zero) changes
        // nothing.
        let mut s = Sources::new(1024);
        s.count(ip(1), true);
        s.count(ip(2), false);
        s.count(ip(1), false);
        s.count(ip(1), false);
        assert_eq!((s.rows.iter().flatten().sum::<u32>(), s.nonzero), (0, [0; ROWS]));
    }

    #[test]
    fn the_count_is_fixed_in_size() {
        // 20,000 sources cost no more than none: the sketch and at most 32 exact counts.
        let mut s = Sources::new(32_768);
        for i in 0..20_000 {
            s.count(ip(i), true);
        }
        assert_eq!(std::mem::size_of_val(&*s.rows), ROWS * WIDTH * 4);
        assert!(s.exact.capacity() == 0);
    }

    #[test]
    fn room_among_the_exact_counts_is_made_only_below_the_line() {
        // A table of 1,024: the line is 32.
        let mut s = Sources::new(1024);
        for key in 0..MOST_EXACT as u32 {
            s.remember(key, if key % 2 == 0 { 40 } else { 3 });
        }
        s.remember(1000, 50);
        assert_eq!(s.exact.len(), MOST_EXACT);
        assert!(s.exact.iter().any(|h| h.key == 1000));
        assert_eq!(s.exact.iter().filter(|h| h.transfers >= 32).count(), 33, "none above the line forgotten");
        // With every source above the line (more than the table holds; no room is made).
        for h in &mut s.exact {
            h.transfers = 40;
        }
        s.remember(2000, 1);
        assert!(!s.exact.iter().any(|h| h.key == 2000));
        assert_eq!(s.exact.len(), MOST_EXACT);
    }

    #[test]
    fn keys_of_ipv4_addresses_and_ipv6_prefixes_stay_apart() {
        let s = Sources::new(64);
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
