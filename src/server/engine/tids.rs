//! What each client's last transfer leaves behind for a short while: the transfer ID (the
//! server's port) it was served from, so that the client's next transfer is given another one,
//! and when it ended, so that its late packets in single-port mode get no answer.
//!
//! A client keeps its address and port from one transfer to the next (a PXE loader fetching
//! file after file) and ignores answers from the transfer ID it has just finished with, as
//! RFC 1350 asks, so that a late retransmission of the previous transfer cannot be taken for
//! the new one. The kernel draws ports at random and may hand out the port of a socket closed a
//! moment ago; a new transfer on the port its client's previous one used would never be heard.
//!
//! In single-port mode every transfer has the listening port as its ID, so the client cannot
//! tell transfers apart by port: a duplicate ACK of a transfer that has just ended (the client
//! repeated it while the final block was on its way) must not be answered with ERROR 5 "unknown
//! transfer ID", which the client, already waiting for the answer to its next request from the
//! same port, would take for that answer. For [`DALLY`] after a transfer ends its client's
//! packets that start nothing are dropped instead.
//!
//! The entries are kept in a fixed table of two-entry buckets indexed by a keyed hash of the
//! client's address and port (the same client always reaches the same worker): a new entry takes
//! the place of the client's own, else of the one that ended first. It never allocates, and a
//! client whose entry two others took is only as well off as without the table.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::Duration;

use hashbrown::DefaultHashBuilder;

use crate::proto::Timestamp;

/// Entries in the table (a power of two).
const ENTRIES: usize = 4096;

/// How long after a single-port transfer ends its client's late packets are dropped rather
/// than answered: longer than any queueing or reordering delay of a packet sent before the
/// client moved on, shorter than a health checker takes to move a failed instance's clients.
pub(super) const DALLY: Duration = Duration::from_secs(2);

/// One client's last transfer.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// The keyed hash of the client's address and port (0 with `port` 0: a free entry).
    hash: u64,
    /// The transfer's port; 0 for the listening port (single-port mode).
    port: u16,
    /// When it ended: milliseconds since the origin, modulo 2^32.
    ended_ms: u32,
}

/// Each client's last transfer. See the module documentation.
#[derive(Debug)]
pub(super) struct RecentTids {
    hasher: DefaultHashBuilder,
    table: Box<[Entry]>,
}

/// `now` in milliseconds modulo 2^32 (the time differences taken are far shorter).
fn millis(now: Timestamp) -> u32 {
    (now.as_micros() / 1000) as u32
}

impl RecentTids {
    /// An empty table.
    pub(super) fn new() -> Self {
        Self { hasher: DefaultHashBuilder::default(), table: vec![Entry::default(); ENTRIES].into_boxed_slice() }
    }

    /// The keyed hash of `client` (never 0, which marks a free entry) and the index of the
    /// first entry of its bucket.
    fn bucket(&self, client: &SocketAddr) -> (u64, usize) {
        let hash = self.hasher.hash_one(client).max(1);
        (hash, (hash as usize & (ENTRIES / 2 - 1)) * 2)
    }

    /// `client`'s entry, if the table still holds it.
    fn find(&self, client: &SocketAddr) -> Option<Entry> {
        let (hash, i) = self.bucket(client);
        self.table[i..i + 2].iter().copied().find(|e| e.hash == hash)
    }

    /// The port `client`'s last transfer was served from, if known and not the listening port.
    pub(super) fn last(&self, client: &SocketAddr) -> Option<u16> {
        self.find(client).map(|e| e.port).filter(|&p| p != 0)
    }

    /// Whether `client`'s last transfer was served from the listening port and ended less than
    /// [`DALLY`] before `now`.
    pub(super) fn dallying(&self, client: &SocketAddr, now: Timestamp) -> bool {
        self.find(client)
            .is_some_and(|e| e.port == 0 && millis(now).wrapping_sub(e.ended_ms) < DALLY.as_millis() as u32)
    }

    /// `client`'s transfer was served from `port` (0: the listening port) and ended at `now`.
    pub(super) fn remember(&mut self, client: &SocketAddr, port: u16, now: Timestamp) {
        let (hash, i) = self.bucket(client);
        let now_ms = millis(now);
        let [a, b] = [self.table[i], self.table[i + 1]];
        // The client's own entry, else a free one, else the one that ended first.
        let slot = if a.hash == hash || a.hash == 0 {
            i
        } else if b.hash == hash || b.hash == 0 {
            i + 1
        } else if now_ms.wrapping_sub(a.ended_ms) >= now_ms.wrapping_sub(b.ended_ms) {
            i
        } else {
            i + 1
        };
        self.table[slot] = Entry { hash, port, ended_ms: now_ms };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_s_last_port_is_kept_until_its_next_transfer_ends() {
        let mut t = RecentTids::new();
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        let b: SocketAddr = "192.0.2.10:2001".parse().unwrap();
        assert_eq!(t.last(&a), None);
        t.remember(&a, 40_000, Timestamp::ZERO);
        assert_eq!((t.last(&a), t.last(&b)), (Some(40_000), None), "by address and port");
        t.remember(&a, 40_001, Timestamp::ZERO);
        assert_eq!(t.last(&a), Some(40_001));
        assert!(!t.dallying(&a, Timestamp::ZERO), "a transfer on a port of its own leaves no dally");
    }

    #[test]
    fn a_newer_entry_takes_the_place_of_the_one_that_ended_first() {
        let mut t = RecentTids::new();
        // Three clients of one bucket: find them by trying addresses.
        let first: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let bucket = t.bucket(&first).1;
        let mut same =
            (1001..u16::MAX).map(|p| SocketAddr::from(([192, 0, 2, 1], p))).filter(|c| t.bucket(c).1 == bucket);
        let (second, third) = (same.next().unwrap(), same.next().unwrap());
        let at = |ms: u64| Timestamp::from_micros(ms * 1000);
        t.remember(&first, 0, at(100));
        t.remember(&second, 0, at(200));
        assert!(t.dallying(&first, at(300)) && t.dallying(&second, at(300)), "two clients share a bucket");
        t.remember(&first, 0, at(250));
        t.remember(&third, 0, at(300));
        assert!(!t.dallying(&second, at(300)), "the one that ended first gave way");
        assert!(t.dallying(&first, at(300)) && t.dallying(&third, at(300)));
    }

    #[test]
    fn a_single_port_transfer_dallies_for_a_while() {
        let mut t = RecentTids::new();
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        let b: SocketAddr = "192.0.2.11:2000".parse().unwrap();
        let ended = Timestamp::from_micros(5_000_000);
        t.remember(&a, 0, ended);
        assert_eq!(t.last(&a), None, "the listening port is no port to avoid");
        assert!(t.dallying(&a, ended + Duration::from_millis(1999)));
        assert!(!t.dallying(&a, ended + DALLY));
        assert!(!t.dallying(&b, ended), "by address and port");
    }
}
