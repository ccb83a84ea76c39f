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
//! The entries are kept in a fixed table indexed by a keyed hash of the client's address and
//! port (the same client always reaches the same worker): it never allocates, and a client whose
//! entry another took is only as well off as without the table.

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

    fn entry(&self, client: &SocketAddr) -> (u64, usize) {
        let hash = self.hasher.hash_one(client);
        (hash, hash as usize & (ENTRIES - 1))
    }

    /// The port `client`'s last transfer was served from, if known and not the listening port.
    pub(super) fn last(&self, client: &SocketAddr) -> Option<u16> {
        let (hash, i) = self.entry(client);
        let e = self.table[i];
        (e.hash == hash && e.port != 0).then_some(e.port)
    }

    /// Whether `client`'s last transfer was served from the listening port and ended less than
    /// [`DALLY`] before `now`.
    pub(super) fn dallying(&self, client: &SocketAddr, now: Timestamp) -> bool {
        let (hash, i) = self.entry(client);
        let e = self.table[i];
        e.hash == hash && e.port == 0 && millis(now).wrapping_sub(e.ended_ms) < DALLY.as_millis() as u32
    }

    /// `client`'s transfer was served from `port` (0: the listening port) and ended at `now`.
    pub(super) fn remember(&mut self, client: &SocketAddr, port: u16, now: Timestamp) {
        let (hash, i) = self.entry(client);
        self.table[i] = Entry { hash, port, ended_ms: millis(now) };
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
