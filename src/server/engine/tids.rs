//! The transfer ID (the server's port) of each client's last transfer, so that its next transfer
//! is given another one.
//!
//! A client keeps its address and port from one transfer to the next (a PXE loader fetching
//! file after file) and ignores answers from the transfer ID it has just finished with, as
//! RFC 1350 asks, so that a late retransmission of the previous transfer cannot be taken for
//! the new one. The kernel draws ports at random and may hand out the port of a socket closed a
//! moment ago; a new transfer on the port its client's previous one used would never be heard.
//! The ports are kept in a fixed table indexed by a keyed hash of the client's address and
//! port (the same client always reaches the same worker): it never allocates, and a client whose
//! entry another took is only as well off as without the table.

use std::hash::BuildHasher;
use std::net::SocketAddr;

use hashbrown::DefaultHashBuilder;

/// Entries in the table (a power of two).
const ENTRIES: usize = 4096;

/// The port of each client's last transfer. See the module documentation.
#[derive(Debug)]
pub(super) struct RecentTids {
    hasher: DefaultHashBuilder,
    /// (hash of the client, port); a port of 0 marks a free entry.
    table: Box<[(u64, u16)]>,
}

impl RecentTids {
    /// An empty table.
    pub(super) fn new() -> Self {
        Self { hasher: DefaultHashBuilder::default(), table: vec![(0, 0); ENTRIES].into_boxed_slice() }
    }

    /// The port `client`'s last transfer was served from, if known.
    pub(super) fn last(&self, client: &SocketAddr) -> Option<u16> {
        let hash = self.hasher.hash_one(client);
        let (tag, port) = self.table[hash as usize & (ENTRIES - 1)];
        (tag == hash && port != 0).then_some(port)
    }

    /// `client`'s transfer was served from `port` (0: the listening port, nothing to remember).
    pub(super) fn remember(&mut self, client: &SocketAddr, port: u16) {
        let hash = self.hasher.hash_one(client);
        self.table[hash as usize & (ENTRIES - 1)] = (hash, port);
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
        t.remember(&a, 40_000);
        assert_eq!((t.last(&a), t.last(&b)), (Some(40_000), None), "by address and port");
        t.remember(&a, 40_001);
        assert_eq!(t.last(&a), Some(40_001));
    }
}
