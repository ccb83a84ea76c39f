//! The table of transfers: slots with generations (a [`Token`] names one transfer, so a stale
//! event is recognised), an index by client address and port, the oldest transfers whose
//! clients have shown nothing (to make room in a full table), and the requests the transfers
//! keep for their records, each once.

use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::rc::Rc;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::kind::Kind;
use super::peer::{self, Peer};
use super::record::{Asked, AskedHeader};
use crate::fs::FileVersion;
use crate::proto::Timestamp;
use crate::server::io::{SockRef, Token, Via};
use crate::sys::pages::{Mapped, Zeroed, page_size};
use crate::timer::{Links, TimerLink};

/// [`Route::local`] meaning "none".
pub(super) const NO_LOCAL: u16 = u16::MAX;

/// How a transfer's datagrams go, and its settings that fit in a byte, in 8 bytes: the socket
/// it is served from and, from a listening socket (single-port mode), the local address to send
/// from, or from a socket of its own, that socket's port.
#[derive(Clone, Copy, Debug)]
pub(super) struct Route {
    /// The listening socket's index ([`LISTEN`] set) or the transfer socket.
    socket: u32,
    /// [`LISTEN`]: index in `Engine::locals` of the address to send from; else the transfer
    /// socket's port (its transfer ID).
    end: u16,
    /// Index of its retransmission settings, those in force when it started, in
    /// `Engine::retransmits` (see `policy.rs`).
    retransmit: u8,
    /// [`LISTEN`], [`QUEUED`], [`NETASCII`].
    bits: u8,
}

/// [`Route::bits`]: served from a listening socket.
const LISTEN: u8 = 1;
/// [`Route::bits`]: in the ready queue.
const QUEUED: u8 = 2;
/// [`Route::bits`]: its mode is netascii (a read translates the file, an upload its DATA).
const NETASCII: u8 = 4;

impl Route {
    /// Served from listening socket `listen`, sent from the address of index `local` in
    /// `Engine::locals` ([`NO_LOCAL`]: the kernel's choice).
    pub(super) fn listen(listen: u32, local: u16, retransmit: u8, netascii: bool) -> Self {
        Self { socket: listen, end: local, retransmit, bits: LISTEN | if netascii { NETASCII } else { 0 } }
    }

    /// Served from transfer socket `sock`, bound to `port`.
    pub(super) fn socket(sock: SockRef, port: u16, retransmit: u8, netascii: bool) -> Self {
        Self { socket: sock.0, end: port, retransmit, bits: if netascii { NETASCII } else { 0 } }
    }

    /// The socket it is served from.
    pub(super) fn via(self) -> Via {
        if self.bits & LISTEN != 0 { Via::Listen(self.socket) } else { Via::Transfer(SockRef(self.socket)) }
    }

    /// Index in `Engine::locals` of the address to send from, [`NO_LOCAL`] for none.
    pub(super) fn local(self) -> u16 {
        if self.bits & LISTEN != 0 { self.end } else { NO_LOCAL }
    }

    /// Its socket's port, 0 when served from the listening port.
    pub(super) fn port(self) -> u16 {
        if self.bits & LISTEN != 0 { 0 } else { self.end }
    }

    /// Index of its retransmission settings in `Engine::retransmits`.
    pub(super) fn retransmit(self) -> u8 {
        self.retransmit
    }

    /// Its mode is netascii.
    pub(super) fn netascii(self) -> bool {
        self.bits & NETASCII != 0
    }

    /// In the ready queue.
    pub(super) fn queued(self) -> bool {
        self.bits & QUEUED != 0
    }

    /// Puts it in the ready queue or takes it out.
    pub(super) fn set_queued(&mut self, on: bool) {
        self.bits = (self.bits & !QUEUED) | if on { QUEUED } else { 0 };
    }
}

/// One transfer.
#[derive(Debug)]
pub(super) struct Transfer {
    /// Its client (see [`Transfer::peer`]).
    pub(super) client: Peer,
    pub(super) route: Route,
    pub(super) kind: Kind,
    /// What its record needs of the request; its bytes also tell a repeat from a new request.
    pub(super) asked: Asked,
}

impl Transfer {
    /// Its client's address and port.
    pub(super) fn peer(&self) -> SocketAddr {
        self.client.addr()
    }

    /// The name of its file: the file version's, or the upload's.
    pub(super) fn name(&self) -> &str {
        match &self.kind {
            Kind::Write(w) => &w.name,
            Kind::Read { .. } => self.asked.file_name().unwrap_or_default(),
        }
    }

    /// Its mode, as the record names it.
    pub(super) fn mode(&self) -> &'static str {
        if self.route.netascii() { "netascii" } else { "octet" }
    }
}

/// One slot: its generation (which its token carries), its place in the timer wheel, and,
/// when [`Table::holding`] says so, a transfer. All zeros is a free slot (see [`Zeroed`]): the
/// pages of slots that are all free are given back to the system, and read as zeros after.
pub(super) struct Slot {
    generation: u32,
    timer: TimerLink,
    transfer: MaybeUninit<Transfer>,
}

// SAFETY: integers and a `MaybeUninit` (never read unless written since, never dropped by the
// slot): all zeros is valid, and there is no drop glue. The table drops what it holds.
unsafe impl Zeroed for Slot {}

/// The slots' timer links, for the wheel.
pub(super) struct SlotLinks<'a>(&'a mut [Slot]);

impl Links for SlotLinks<'_> {
    fn link(&mut self, idx: u32) -> &mut TimerLink {
        &mut self.0[idx as usize].timer
    }
}

/// A set of slots, a bit each.
#[derive(Debug)]
struct SlotBits(Vec<u64>);

impl SlotBits {
    fn new(slots: usize) -> Self {
        Self(vec![0; slots.div_ceil(64)])
    }

    fn has(&self, idx: u32) -> bool {
        self.0.get(idx as usize / 64).is_some_and(|w| w & (1 << (idx % 64)) != 0)
    }

    fn set(&mut self, idx: u32, on: bool) {
        let w = &mut self.0[idx as usize / 64];
        *w = (*w & !(1 << (idx % 64))) | (u64::from(on) << (idx % 64));
    }

    /// Whether none of slots `first..=last` is in the set.
    fn none_in(&self, first: usize, last: usize) -> bool {
        (first / 64..=last / 64).all(|i| {
            let lo = if i == first / 64 { first % 64 } else { 0 };
            let hi = if i == last / 64 { last % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
            self.0.get(i).is_none_or(|w| w & mask == 0)
        })
    }

    /// The lowest slot not in the set, from word `from` on (the words before it are full).
    fn first_absent(&self, from: usize) -> Option<(usize, u32)> {
        let (i, w) = self.0.iter().enumerate().skip(from).find(|(_, w)| **w != u64::MAX)?;
        Some((i, (i * 64) as u32 + w.trailing_ones()))
    }
}

/// The transfers of one worker. See the module documentation.
///
/// The slots are reserved for the worker's limit up front, as address space only: a slot's
/// page becomes resident when it is first used, and is given back once every slot on it is
/// free again (after a storm, the memory its transfers held). A new transfer takes the lowest
/// free slot, so that the slots in use stay together and the pages past them stay free. A
/// slot's generation is drawn from a count of the worker's transfers rather than kept per
/// slot, as the pages given back forget it.
#[derive(Debug)]
pub(super) struct Table {
    slots: Mapped<Slot>,
    /// Slots ever used: the range of slot indices.
    used: u32,
    /// Slots reserved or holding a transfer.
    busy: SlotBits,
    /// Slots holding a transfer (their `transfer` is written).
    holding: SlotBits,
    /// The words of `busy` before this one are full.
    first_open_word: usize,
    /// The generation of the next slot reserved.
    next_generation: u32,
    peers: PeerIndex,
    hasher: DefaultHashBuilder,
    oldest: Oldest,
    /// What the transfers held keep of their requests, one allocation per distinct request
    /// (in a storm, thousands of clients ask for the same file with the same options).
    requests: HashTable<Asked>,
}

impl Table {
    /// A table for up to `capacity` transfers.
    pub(super) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Self {
            slots: Mapped::new(capacity),
            used: 0,
            busy: SlotBits::new(capacity),
            holding: SlotBits::new(capacity),
            first_open_word: 0,
            next_generation: 0,
            peers: PeerIndex::new(),
            hasher: DefaultHashBuilder::default(),
            oldest: Oldest::new(),
            requests: HashTable::new(),
        }
    }

    /// What a transfer keeps of `request` for its record, with `header` (see [`Asked`]): shared
    /// with the transfers held for the same request, and allocated only for the first of them.
    pub(super) fn asked(&mut self, header: &AskedHeader, request: &[u8], file: Option<Rc<FileVersion>>) -> Asked {
        let hasher = &self.hasher;
        let hash = hasher.hash_one((header.bytes(), request));
        match self.requests.find(hash, |a| a.is(header, request, file.as_ref())) {
            Some(a) => a.clone(),
            None => {
                let a = Asked::with_header(header, request, file);
                self.requests.insert_unique(hash, a.clone(), |a| hasher.hash_one((a.header(), a.request())));
                a
            }
        }
    }

    /// Slots ever used (transfers live or not): the range of slot indices.
    pub(super) fn slots(&self) -> u32 {
        self.used
    }

    /// The token of the transfer in slot `idx` (or of the one it is reserved for).
    pub(super) fn token(&self, idx: u32) -> Token {
        Token::new(idx, self.slots[idx as usize].generation)
    }

    /// The transfer `token` names, if it is still held.
    pub(super) fn live(&mut self, token: Token) -> Option<&mut Transfer> {
        if self.is_live(token) { self.get_mut(token.slot()) } else { None }
    }

    /// Whether the transfer `token` names is still held.
    fn is_live(&self, token: Token) -> bool {
        self.holding.has(token.slot()) && self.slots[token.slot() as usize].generation == token.generation()
    }

    /// The transfer in slot `idx`, if any.
    pub(super) fn get_mut(&mut self, idx: u32) -> Option<&mut Transfer> {
        if !self.holding.has(idx) {
            return None;
        }
        // SAFETY: a slot in `holding` was written by `insert` and not read out since.
        Some(unsafe { self.slots[idx as usize].transfer.assume_init_mut() })
    }

    /// The transfer in slot `idx`, if any.
    pub(super) fn get(&self, idx: u32) -> Option<&Transfer> {
        holding(&self.slots, &self.holding, idx)
    }

    /// The slot of the transfer with client `peer`.
    pub(super) fn find_peer(&self, peer: &SocketAddr) -> Option<u32> {
        self.peers.find(self.hasher.hash_one(peer::key(peer)), |i| {
            holding(&self.slots, &self.holding, i).is_some_and(|t| t.client.is(peer))
        })
    }

    /// The lowest free slot, for a new transfer (given back with [`release`](Self::release)
    /// when the transfer does not start after all); `None` when all are taken.
    pub(super) fn reserve(&mut self) -> Option<u32> {
        let (word, idx) = self.busy.first_absent(self.first_open_word)?;
        let slot = self.slots.get_mut(idx as usize)?;
        self.first_open_word = word;
        self.busy.set(idx, true);
        self.used = self.used.max(idx + 1);
        slot.generation = self.next_generation;
        slot.timer = TimerLink::default();
        self.next_generation = self.next_generation.wrapping_add(1);
        Some(idx)
    }

    /// Gives back a slot from [`reserve`](Self::reserve) that was not used.
    pub(super) fn release(&mut self, idx: u32) {
        if !self.holding.has(idx) {
            self.free(idx);
        }
    }

    /// Slot `idx` is free again; the pages it lies on are given back if every slot on them is.
    fn free(&mut self, idx: u32) {
        self.busy.set(idx, false);
        self.first_open_word = self.first_open_word.min(idx as usize / 64);
        let size = std::mem::size_of::<Slot>();
        let page = page_size();
        let (first_page, last_page) = (idx as usize * size / page, ((idx as usize + 1) * size - 1) / page);
        for p in first_page..=last_page {
            // The slots that lie on page `p`, wholly or in part.
            let (first, end) = (p * page / size, ((p + 1) * page).div_ceil(size));
            if self.busy.none_in(first, end - 1) {
                self.slots.discard(first..end);
            }
        }
    }

    /// Puts transfer `t` in reserved slot `idx`, indexed by its peer (and, unconfirmed, among
    /// the oldest if they are all known).
    pub(super) fn insert(&mut self, idx: u32, t: Transfer) {
        let hash = self.hasher.hash_one(t.client.key());
        // A transfer outside a reserved slot could be on a page given back.
        assert!(self.busy.has(idx) && !self.holding.has(idx), "a transfer put in slot {idx}, not reserved");
        self.slots[idx as usize].transfer.write(t);
        self.holding.set(idx, true);
        self.peers.insert(hash, idx, peer_rehash(&self.slots, &self.holding, &self.hasher));
        let token = self.token(idx);
        self.oldest.started(token);
    }

    /// Takes the transfer out of slot `idx`: its token goes stale and the slot is free again.
    pub(super) fn remove(&mut self, idx: u32) -> Option<Transfer> {
        if !self.holding.has(idx) {
            return None;
        }
        self.holding.set(idx, false);
        // SAFETY: the slot was in `holding` (written by `insert`), and is no longer: it is read
        // out once, here.
        let t = unsafe { self.slots[idx as usize].transfer.assume_init_read() };
        self.peers.remove(
            self.hasher.hash_one(t.client.key()),
            idx,
            peer_rehash(&self.slots, &self.holding, &self.hasher),
        );
        self.free(idx);
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

    /// The slot of the oldest transfer whose client has shown nothing yet, handed out once (see
    /// [`Oldest`]).
    pub(super) fn pop_oldest_unconfirmed(&mut self) -> Option<u32> {
        loop {
            while let Some(token) = self.oldest.tokens.pop_back() {
                if self.is_live(token) && self.get(token.slot()).is_some_and(|t| t.kind.is_unconfirmed()) {
                    return Some(token.slot());
                }
            }
            if self.oldest.complete {
                return None;
            }
            self.scan_oldest();
        }
    }

    /// Finds the oldest unconfirmed transfers, up to a batch (see [`Oldest`]).
    fn scan_oldest(&mut self) {
        let (slots, holds, oldest) = (&self.slots, &self.holding, &mut self.oldest);
        let mut found = 0;
        for idx in 0..self.used {
            let Some(t) = holding(slots, holds, idx).filter(|t| t.kind.is_unconfirmed()) else { continue };
            found += 1;
            let key = (t.kind.started(), idx, slots[idx as usize].generation);
            if oldest.heap.len() < OLDEST_BATCH {
                oldest.heap.push(key);
            } else if oldest.heap.peek().is_some_and(|&youngest| key < youngest) {
                oldest.heap.pop();
                oldest.heap.push(key);
            }
        }
        oldest.complete = found <= OLDEST_BATCH;
        // The youngest first, to the front: the oldest end at the back.
        while let Some((_, idx, generation)) = oldest.heap.pop() {
            oldest.tokens.push_back(Token::new(idx, generation));
        }
    }

    /// The transfers held.
    pub(super) fn transfers(&self) -> impl Iterator<Item = &Transfer> {
        (0..self.used).filter_map(|i| self.get(i))
    }

    /// The slots' timer links, for the wheel.
    pub(super) fn links(&mut self) -> SlotLinks<'_> {
        SlotLinks(&mut self.slots)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        for idx in 0..self.used {
            drop(self.remove(idx));
        }
    }
}

/// The hash of each slot's client for the index's moves: exactly what lookups hash, the client's
/// address (0 for a slot without a transfer).
fn peer_rehash<'a>(slots: &'a [Slot], holds: &'a SlotBits, hasher: &'a DefaultHashBuilder) -> impl Fn(u32) -> u64 + 'a {
    move |i| holding(slots, holds, i).map_or(0, |t| hasher.hash_one(t.client.key()))
}

/// The transfer in slot `idx` of `slots`, if `holds` says it holds one.
fn holding<'a>(slots: &'a [Slot], holds: &SlotBits, idx: u32) -> Option<&'a Transfer> {
    if !holds.has(idx) {
        return None;
    }
    // SAFETY: a slot in `holding` was written by `insert` and not read out since.
    Some(unsafe { slots.get(idx as usize)?.transfer.assume_init_ref() })
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

/// Unconfirmed transfers a scan keeps (8 bytes each).
const OLDEST_BATCH: usize = 256;

/// The oldest transfers whose clients have shown nothing yet, for a full table to make room by
/// ending the oldest (perhaps a forged request's): found by a scan of the slots, up to
/// [`OLDEST_BATCH`] at a time, and handed out oldest first. A scan is made again only once they
/// are all handed out and it did not find them all, or transfers started since did not fit:
/// a full table of transfers that all progress costs one scan, not one per request, and a
/// flood of forged requests one scan per batch. Its memory is fixed, where a queue of every
/// transfer started cost 4 bytes a transfer, and more for those ended since.
#[derive(Debug)]
struct Oldest {
    /// Youngest at the front, oldest at the back (some may have been confirmed or ended since).
    tokens: VecDeque<Token>,
    /// Whether every unconfirmed transfer is in `tokens`.
    complete: bool,
    /// A scan's candidates: (started, slot, generation), the youngest on top.
    heap: BinaryHeap<(Timestamp, u32, u32)>,
}

impl Oldest {
    fn new() -> Self {
        Self {
            tokens: VecDeque::with_capacity(OLDEST_BATCH),
            complete: true,
            heap: BinaryHeap::with_capacity(OLDEST_BATCH),
        }
    }

    /// Transfer `token` started (transfers start in the order of time: it is the youngest),
    /// kept while every unconfirmed one fits.
    fn started(&mut self, token: Token) {
        if self.complete {
            if self.tokens.len() < OLDEST_BATCH {
                self.tokens.push_front(token);
            } else {
                self.complete = false;
            }
        }
    }
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
    fn a_new_transfer_takes_the_lowest_free_slot_with_a_new_generation() {
        let mut t = Table::new(130);
        let (a, b, c) = (t.reserve(), t.reserve(), t.reserve());
        assert_eq!((a, b, c), (Some(0), Some(1), Some(2)));
        let stale = t.token(2);
        t.release(2);
        t.release(0);
        // Taking a transfer out of a slot that holds none changes nothing.
        assert!(t.remove(2).is_none() && t.remove(1).is_none());
        assert_eq!((t.reserve(), t.reserve(), t.reserve()), (Some(0), Some(2), Some(3)));
        assert_ne!(t.token(2), stale);
        assert!(t.live(stale).is_none());
        // Past the first word of the set, and up to the limit.
        for i in 4..130 {
            assert_eq!(t.reserve(), Some(i));
        }
        assert_eq!(t.reserve(), None);
        t.release(77);
        assert_eq!((t.reserve(), t.reserve()), (Some(77), None));
        assert_eq!(t.slots(), 130);
    }

    /// A read of 100 bytes for `client`, started at `started` ms.
    fn transfer(t: &mut Table, client: u32, started: u64) -> Transfer {
        use crate::proto::{Negotiated, ReadTransfer, RetransmitConfig};
        let at = Timestamp::from_micros(started * 1000);
        let xfer = ReadTransfer::new(at, 100, &Negotiated::PLAIN, &RetransmitConfig::default());
        let plain = AskedHeader::new(None, &Negotiated::PLAIN, None);
        let client = SocketAddr::from((std::net::Ipv4Addr::from(0xc000_0200 + client), 1000));
        Transfer {
            client: Peer::new(client),
            route: Route::listen(0, NO_LOCAL, 0, false),
            kind: Kind::Read { xfer },
            asked: t.asked(&plain, b"\x00\x01f\x00octet\x00", None),
        }
    }

    #[test]
    fn a_full_table_hands_out_its_unconfirmed_transfers_oldest_first_and_each_once() {
        use crate::proto::{Packet, RetransmitConfig};
        let n = 700;
        let mut t = Table::new(n);
        let cfg = RetransmitConfig::default();
        // One a millisecond, into the slots in a scrambled order (a scan meets them out of
        // order); every third client acknowledges its first block.
        let slots: Vec<u32> = (0..n).map(|_| t.reserve().unwrap()).collect();
        for i in 0..n as u32 {
            let mut x = transfer(&mut t, i, u64::from(i));
            if i % 3 == 0 {
                let Kind::Read { xfer } = &mut x.kind else { unreachable!() };
                let at = Timestamp::from_micros(u64::from(i) * 1000);
                assert!(xfer.poll_transmit(at, &cfg).is_some());
                xfer.handle_packet(at, &Packet::Ack { block: 1 }, &cfg);
            }
            t.insert(slots[(i * 389) as usize % n], x);
        }
        let mut order = Vec::new();
        while let Some(idx) = t.pop_oldest_unconfirmed() {
            let x = t.remove(idx).unwrap();
            order.push(x.kind.started().as_micros() / 1000);
        }
        // Past a batch: scanned again; each unconfirmed transfer once, oldest first.
        assert_eq!(order.len(), (0..n as u32).filter(|i| i % 3 != 0).count());
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
        // None left, and nothing scanned for: a new one is known at once.
        assert_eq!(t.pop_oldest_unconfirmed(), None);
        let idx = t.reserve().unwrap();
        let x = transfer(&mut t, 9999, 1000);
        t.insert(idx, x);
        assert_eq!(t.pop_oldest_unconfirmed(), Some(idx));
        assert_eq!(t.pop_oldest_unconfirmed(), None);
    }

    #[test]
    fn the_pages_of_slots_that_are_all_free_are_given_back() {
        let per_page = page_size() / std::mem::size_of::<Slot>();
        let n = 4 * per_page + 3;
        let mut t = Table::new(n + 1000);
        let taken: Vec<u32> = (0..n).map(|_| t.reserve().unwrap()).collect();
        assert!(t.slots.resident(n).is_none_or(|r| r == [true; 5]));
        // One slot on the second page stays taken: the first, third and fourth pages go (the
        // slots that straddle pages keep the pages on both sides).
        let keep = (per_page + per_page / 2) as u32;
        for &i in taken.iter().filter(|&&i| i != keep) {
            t.release(i);
        }
        assert!(t.slots.resident(n).is_none_or(|r| r == [false, true, false, false, false]));
        // The first free slot is on a page given back: it is used as a new one.
        let again = t.reserve().unwrap();
        assert_eq!(again, 0);
        assert!(t.slots.resident(n).is_none_or(|r| r == [true, true, false, false, false]));
        assert!(t.get(again).is_none() && t.get(keep).is_none());
        t.release(keep);
        t.release(again);
        assert!(t.slots.resident(n).is_none_or(|r| r == [false; 5]));
    }
}
