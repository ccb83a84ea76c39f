//! The table of transfers: a slab of slots with generations (a [`Token`] names one transfer, so
//! a stale event is recognised), an index by client address and port, the queue of transfers
//! in the order they started, to find the oldest whose client has shown nothing, and the
//! requests the transfers keep for their records, each once.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::kind::Kind;
use super::record::{Asked, AskedHeader};
use crate::server::io::{Token, Via};
use crate::sys::pages::Mapped;
use crate::timer::{Links, TimerLink};

/// `Transfer::local` meaning "none".
pub(super) const NO_LOCAL: u16 = u16::MAX;

/// A client's address and port in 24 bytes where a `SocketAddr` takes 32: the address as
/// IPv6 (IPv4 mapped) with whether it was IPv4, the port and the IPv6 scope. The flow label
/// is not kept: the kernel reports none unless asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Peer {
    ip: [u8; 16],
    scope_id: u32,
    port: u16,
    v4: bool,
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(a) => Self { ip: a.ip().to_ipv6_mapped().octets(), scope_id: 0, port: a.port(), v4: true },
            SocketAddr::V6(a) => Self { ip: a.ip().octets(), scope_id: a.scope_id(), port: a.port(), v4: false },
        }
    }
}

impl Peer {
    /// The address as the socket layer takes it.
    pub(super) fn addr(self) -> SocketAddr {
        let v6 = Ipv6Addr::from(self.ip);
        match (self.v4, v6.to_ipv4_mapped()) {
            (true, Some(v4)) => SocketAddr::V4(SocketAddrV4::new(v4, self.port)),
            _ => SocketAddr::V6(SocketAddrV6::new(v6, self.port, 0, self.scope_id)),
        }
    }

    /// The address without the port.
    pub(super) fn ip(self) -> IpAddr {
        self.addr().ip()
    }
}

/// One transfer.
#[derive(Debug)]
pub(super) struct Transfer {
    /// Its client (see [`Transfer::peer`]).
    pub(super) client: Peer,
    pub(super) via: Via,
    /// Index in `Engine::locals` of the address to send from (single-port mode).
    pub(super) local: u16,
    /// In the ready queue.
    pub(super) queued: bool,
    /// Its mode is netascii (a read translates the file, an upload its DATA).
    pub(super) netascii: bool,
    /// Its socket's port (its transfer ID), 0 when served from the listening port.
    pub(super) port: u16,
    /// Index of its retransmission settings, those in force when it started, in
    /// `Engine::retransmits` (see `policy.rs`).
    pub(super) retransmit: u16,
    pub(super) kind: Kind,
    /// What its record needs of the request; its bytes also tell a repeat from a new request.
    pub(super) asked: Asked,
}

impl Transfer {
    /// Its client's address and port.
    pub(super) fn peer(&self) -> SocketAddr {
        self.client.addr()
    }

    /// Its mode, as the record names it.
    pub(super) fn mode(&self) -> &'static str {
        if self.netascii { "netascii" } else { "octet" }
    }
}

#[derive(Debug, Default)]
pub(super) struct Slot {
    generation: u32,
    timer: TimerLink,
    transfer: Option<Transfer>,
}

/// The slots' timer links, for the wheel.
pub(super) struct SlotLinks<'a>(&'a mut Vec<Slot>);

impl Links for SlotLinks<'_> {
    fn link(&mut self, idx: u32) -> &mut TimerLink {
        &mut self.0[idx as usize].timer
    }
}

/// The transfers of one worker. See the module documentation.
#[derive(Debug)]
pub(super) struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    peers: PeerIndex,
    hasher: DefaultHashBuilder,
    /// Transfers in the order they started, to find the oldest whose client has shown nothing
    /// (entries of transfers since confirmed or ended are skipped, and dropped now and then).
    unconfirmed: VecDeque<Token>,
    /// When `unconfirmed` is compacted: it never grows past that.
    unconfirmed_max: usize,
    /// What the transfers held keep of their requests, one allocation per distinct request
    /// (in a storm, thousands of clients ask for the same file with the same options).
    requests: HashTable<Asked>,
}

impl Table {
    /// A table for up to `capacity` transfers.
    pub(super) fn new(capacity: usize) -> Self {
        let unconfirmed_max = 2 * capacity.max(64);
        Self {
            // Reserved for the worker's limit up front: address space only (pages become resident
            // as slots are first used), and the table never moves or leaves old copies behind.
            slots: Vec::with_capacity(capacity),
            free: Vec::new(),
            peers: PeerIndex::new(),
            hasher: DefaultHashBuilder::default(),
            unconfirmed: VecDeque::with_capacity(unconfirmed_max + 1),
            unconfirmed_max,
            requests: HashTable::new(),
        }
    }

    /// What a transfer keeps of `request` for its record, with `header` (see [`Asked`]): shared
    /// with the transfers held for the same request, and allocated only for the first of them.
    pub(super) fn asked(&mut self, header: &AskedHeader, request: &[u8]) -> Asked {
        let hasher = &self.hasher;
        let hash = hasher.hash_one((header.bytes(), request));
        match self.requests.find(hash, |a| a.is(header, request)) {
            Some(a) => a.clone(),
            None => {
                let a = Asked::with_header(header, request);
                self.requests.insert_unique(hash, a.clone(), |a| hasher.hash_one((a.header(), a.request())));
                a
            }
        }
    }

    /// The table's hash of `v`.
    fn hash<T: Hash + ?Sized>(&self, v: &T) -> u64 {
        self.hasher.hash_one(v)
    }

    /// Slots ever used (transfers live or not): the range of slot indices.
    pub(super) fn slots(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The token of the transfer (or of the next one) in slot `idx`.
    pub(super) fn token(&self, idx: u32) -> Token {
        Token::new(idx, self.slots[idx as usize].generation)
    }

    /// The transfer `token` names, if it is still held.
    pub(super) fn live(&mut self, token: Token) -> Option<&mut Transfer> {
        let slot = self.slots.get_mut(token.slot() as usize)?;
        if slot.generation != token.generation() {
            return None;
        }
        slot.transfer.as_mut()
    }

    /// The transfer in slot `idx`, if any.
    pub(super) fn get_mut(&mut self, idx: u32) -> Option<&mut Transfer> {
        self.slots.get_mut(idx as usize)?.transfer.as_mut()
    }

    /// The transfer in slot `idx`, if any.
    pub(super) fn get(&self, idx: u32) -> Option<&Transfer> {
        self.slots.get(idx as usize)?.transfer.as_ref()
    }

    /// The slot of the transfer with client `peer`.
    pub(super) fn find_peer(&self, peer: &SocketAddr) -> Option<u32> {
        let peer = Peer::from(*peer);
        self.peers.find(self.hash(&peer), |i| self.client(i) == Some(peer))
    }

    /// The client of the transfer in slot `idx`, if any.
    fn client(&self, idx: u32) -> Option<Peer> {
        self.slots[idx as usize].transfer.as_ref().map(|t| t.client)
    }

    /// A free slot for a new transfer (given back with [`release`](Self::release) when the
    /// transfer does not start after all).
    pub(super) fn reserve(&mut self) -> u32 {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Gives back a slot from [`reserve`](Self::reserve) that was not used.
    pub(super) fn release(&mut self, idx: u32) {
        self.free.push(idx);
    }

    /// Puts transfer `t` in reserved slot `idx`, indexed by its peer and queued as unconfirmed.
    pub(super) fn insert(&mut self, idx: u32, t: Transfer) {
        let peer = t.client;
        self.slots[idx as usize].transfer = Some(t);
        let (slots, hasher) = (&self.slots, &self.hasher);
        // Rehashing on growth must hash exactly what lookups hash: the peer address.
        let rehash = |i: u32| slots[i as usize].transfer.as_ref().map_or(0, |t| hasher.hash_one(t.client));
        self.peers.insert(self.hasher.hash_one(peer), idx, rehash);
        if self.unconfirmed.len() >= self.unconfirmed_max {
            let slots = &self.slots;
            self.unconfirmed.retain(|tok| live_unconfirmed(slots, *tok));
        }
        let token = self.token(idx);
        self.unconfirmed.push_back(token);
    }

    /// Takes the transfer out of slot `idx`: its token goes stale and the slot is free again.
    pub(super) fn remove(&mut self, idx: u32) -> Option<Transfer> {
        let slot = &mut self.slots[idx as usize];
        let t = slot.transfer.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(idx);
        let (slots, hasher) = (&self.slots, &self.hasher);
        let rehash = |i: u32| slots[i as usize].transfer.as_ref().map_or(0, |t| hasher.hash_one(t.client));
        self.peers.remove(self.hasher.hash_one(t.client), idx, rehash);
        // The last transfer of its request: its copy goes with it.
        if t.asked.holders() == 2 {
            let hash = self.hasher.hash_one((t.asked.header(), t.asked.request()));
            if let Ok(e) = self.requests.find_entry(hash, |a| a.same(&t.asked)) {
                e.remove();
            }
        }
        Some(t)
    }

    /// The requests kept for the transfers held, each once.
    #[cfg(test)]
    pub(super) fn requests_kept(&self) -> usize {
        self.requests.len()
    }

    /// The slot of the oldest transfer whose client has shown nothing yet, taken off the queue.
    pub(super) fn pop_oldest_unconfirmed(&mut self) -> Option<u32> {
        while let Some(tok) = self.unconfirmed.pop_front() {
            if live_unconfirmed(&self.slots, tok) {
                return Some(tok.slot());
            }
        }
        None
    }

    /// The transfers held.
    pub(super) fn transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.slots.iter().filter_map(|s| s.transfer.as_ref())
    }

    /// The slots' timer links, for the wheel.
    pub(super) fn links(&mut self) -> SlotLinks<'_> {
        SlotLinks(&mut self.slots)
    }
}

/// Buckets of an index that has not grown: a page's worth.
const FIRST_PEER_BUCKETS: usize = 1024;

/// The index of transfers by client address: an open-addressing table of slot indices with
/// linear probing (a removal shifts back the entries after it, so there are no tombstones), at
/// most three quarters full, 4 bytes a bucket. It doubles as transfers come, in mapped pages of
/// its own (see [`Mapped`]), so that the copies a doubling leaves are given back. The addresses
/// are in the slots: the index keeps slot indices plus one (0: an empty bucket), and is handed
/// the hash of a slot's address (`rehash`) when entries move.
#[derive(Debug)]
struct PeerIndex {
    buckets: Mapped<u32>,
    len: usize,
}

impl PeerIndex {
    fn new() -> Self {
        Self { buckets: Mapped::new(FIRST_PEER_BUCKETS), len: 0 }
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// The first slot in `hash`'s probe sequence that `is` accepts.
    fn find(&self, hash: u64, is: impl Fn(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            match self.buckets[i] {
                0 => return None,
                e if is(e - 1) => return Some(e - 1),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Indexes slot `idx`, whose address hashes to `hash`.
    fn insert(&mut self, hash: u64, idx: u32, rehash: impl Fn(u32) -> u64) {
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            let bigger = Mapped::new(self.buckets.len() * 2);
            let old = std::mem::replace(&mut self.buckets, bigger);
            for &e in old.iter().filter(|&&e| e != 0) {
                self.put(rehash(e - 1), e);
            }
        }
        self.put(hash, idx + 1);
        self.len += 1;
    }

    /// Puts entry `e` in the first empty bucket of `hash`'s probe sequence.
    fn put(&mut self, hash: u64, e: u32) {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        while self.buckets[i] != 0 {
            i = (i + 1) & mask;
        }
        self.buckets[i] = e;
    }

    /// Takes slot `idx`, whose address hashed to `hash`, out of the index.
    fn remove(&mut self, hash: u64, idx: u32, rehash: impl Fn(u32) -> u64) {
        let mask = self.mask();
        let mut hole = hash as usize & mask;
        loop {
            match self.buckets[hole] {
                0 => return,
                e if e == idx + 1 => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.buckets[j];
            if e == 0 {
                break;
            }
            // `e` may fill the hole when its home is not in the stretch after the hole.
            let home = rehash(e - 1) as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.buckets[hole] = e;
                hole = j;
            }
        }
        self.buckets[hole] = 0;
        self.len -= 1;
    }
}

/// Whether `tok` names a transfer still held whose client has shown nothing yet.
fn live_unconfirmed(slots: &[Slot], tok: Token) -> bool {
    slots.get(tok.slot() as usize).is_some_and(|s| {
        s.generation == tok.generation() && s.transfer.as_ref().is_some_and(|t| t.kind.is_unconfirmed())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_index_finds_every_slot_through_growth_and_removals() {
        // Hashes that collide in runs of five and land on the last buckets (probes wrap around).
        let hash = |i: u32| u64::from(i / 5).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 0x3ff;
        let mut index = PeerIndex::new();
        for i in 0..5000 {
            index.insert(hash(i), i, hash);
        }
        assert!(index.buckets.len() >= 8192);
        let gone = |i: u32| i % 3 == 0 || (1000..1100).contains(&i);
        for i in (0..5000).filter(|&i| gone(i)).rev() {
            index.remove(hash(i), i, hash);
        }
        for i in 0..5000 {
            assert_eq!(index.find(hash(i), |s| s == i), (!gone(i)).then_some(i), "{i}");
        }
        assert_eq!(index.len, (0..5000).filter(|&i| !gone(i)).count());
        // Removing what is not there changes nothing.
        index.remove(hash(3), 3, hash);
        assert_eq!(index.len, (0..5000).filter(|&i| !gone(i)).count());
    }

    #[test]
    fn a_client_address_reads_back_as_it_came() {
        for a in
            ["192.0.2.1:69", "0.0.0.0:0", "[::ffff:192.0.2.1]:1", "[2001:db8::1]:65535", "[fe80::1%7]:2000", "[::]:5"]
        {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(Peer::from(a).addr(), a);
            assert_eq!(Peer::from(a).ip(), a.ip());
        }
        let v4: SocketAddr = "192.0.2.1:69".parse().unwrap();
        assert_ne!(Peer::from(v4), Peer::from("[::ffff:192.0.2.1]:69".parse::<SocketAddr>().unwrap()));
        assert_eq!(std::mem::size_of::<Peer>(), 24);
    }
}
