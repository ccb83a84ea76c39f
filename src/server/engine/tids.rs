//! What each client's last transfer leaves behind for a short while: the transfer ID (the
//! server's port) it was served from, so that the client's next transfer is given another one;
//! when it ended, so that its late packets in single-port mode get no answer; and the request
//! last answered and when, so that a copy of it that waited in the listening socket's queue
//! starts nothing.
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
//! A client repeats a request it has no answer to yet; when the server is slow to read its
//! listening socket (a storm, a CPU taken by something else), the repeat waits in the queue
//! behind the original, and may be read after the transfer that answered the original has
//! ended, or after the request was refused. Started again, that transfer's first DATA (or the
//! refusal's ERROR) would reach a client that keeps its port from one request to the next and
//! is now waiting for the answer to its next request: it would take it for that answer (the
//! wrong file's data, "file not found" for a file that exists). The kernel stamps each
//! datagram of a listening socket with the time it arrived; a request that arrived before the
//! answer to the same request from the same address and port left was sent before the client
//! could have seen that answer, so it is a copy of the request answered, never a new one.
//!
//! The entries are kept in a table of sixteen-entry buckets indexed by a keyed hash of the
//! client's address and port (the same client always reaches the same worker): a new entry
//! takes the place of the client's own, else of a free one, else of the one that ended first.
//! When that one is younger than [`RECENT`] and two thirds of the table are taken by entries
//! that young, the table doubles first (the entries move by the hash they keep), up to twice as
//! many entries as the worker may hold transfers: in a storm of that many clients all but about
//! one in a hundred keep their entry for as long as a copy can wait, while a quiet server keeps
//! the first [`MIN_ENTRIES`] (12 bytes each, in pages mapped zeroed; a doubling unmaps the old
//! ones). It allocates only when it doubles, and a client whose entry others took is only as
//! well off as without the table.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::Duration;

use crate::proto::Timestamp;
use crate::sys::pages::{Mapped, Zeroed};

/// The entries the table starts with.
const MIN_ENTRIES: usize = 4096;

/// Entries in a bucket.
const WAYS: usize = 16;

/// How long after a single-port transfer ends its client's late packets are dropped rather
/// than answered: longer than any queueing or reordering delay of a packet sent before the
/// client moved on, shorter than a health checker takes to move a failed instance's clients.
pub(super) const DALLY: Duration = Duration::from_secs(2);

/// How long a copy of a request can have waited in a listening socket's queue: older arrival
/// times and answers are not compared (they would be a clock's error).
const COPY_HORIZON: Duration = Duration::from_secs(60);

/// An entry younger than this is not given up for another client's while the table may still
/// double.
const RECENT: Duration = COPY_HORIZON;

/// One client's last transfer, and the request it was last answered for: 12 bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// The low half of the keyed hash of the client's address and port, never 0 (0: a free
    /// entry); its low bits are the entry's bucket.
    tag: u32,
    /// The transfer's port; 0 for the listening port (single-port mode).
    port: u16,
    /// How long before `later` the other of its two times was, in milliseconds; [`LONG_AGO`]
    /// for that long or longer (past [`COPY_HORIZON`] and [`DALLY`]: no comparison needs more).
    earlier: u16,
    /// The later of when its transfer ended (or, without one, the refusal was sent) and when
    /// the loop turn that gave its last answer began, in milliseconds modulo 2^22 (70 minutes:
    /// entries idle for [`RECENT`] are freed every [`SWEEP_EVERY`], long before the count
    /// wraps); above them 8 bits of the keyed hash of the request last answered (0: none),
    /// [`ANSWERED_LAST`] (the answer is the later of the two) and [`TRANSFER`] (the client had
    /// a transfer, `port` is its).
    later: u32,
}

// SAFETY: integers: all-zero is a valid (free) entry; nothing to drop.
unsafe impl Zeroed for Entry {}

/// [`Entry::later`]'s flags, its request hash and its milliseconds.
const TRANSFER: u32 = 1 << 31;
const ANSWERED_LAST: u32 = 1 << 30;
const REQUEST_SHIFT: u32 = 22;
const LATER_MS: u32 = (1 << REQUEST_SHIFT) - 1;

/// [`Entry::earlier`]: that long ago or longer.
const LONG_AGO: u16 = u16::MAX;

impl Entry {
    /// The entry of the client of `tag`, answered for the request of hash `request`, with the
    /// client's transfer served from `port` (`transfer`), ended `ended_ago` and answered
    /// `answered_ago` milliseconds before `now`.
    fn new(
        tag: u32,
        request: u8,
        port: u16,
        transfer: bool,
        now: Timestamp,
        ended_ago: u32,
        answered_ago: u32,
    ) -> Self {
        let later_ago = ended_ago.min(answered_ago);
        let earlier = (ended_ago.max(answered_ago) - later_ago).min(u32::from(LONG_AGO)) as u16;
        let flags = if transfer { TRANSFER } else { 0 } | if answered_ago < ended_ago { ANSWERED_LAST } else { 0 };
        let later = (millis(now).wrapping_sub(later_ago) & LATER_MS) | u32::from(request) << REQUEST_SHIFT | flags;
        Self { tag, port, earlier, later }
    }

    /// The hash of the request last answered (0: none).
    fn request(self) -> u8 {
        (self.later >> REQUEST_SHIFT) as u8
    }

    fn transfer(self) -> bool {
        self.later & TRANSFER != 0
    }

    /// Milliseconds since the later of its two times: since it was last of use.
    fn idle(self, now: Timestamp) -> u32 {
        millis(now).wrapping_sub(self.later) & LATER_MS
    }

    /// Milliseconds since the earlier of its two times (`u32::MAX`: long ago).
    fn earlier_ago(self, now: Timestamp) -> u32 {
        match self.earlier {
            LONG_AGO => u32::MAX,
            ms => self.idle(now) + u32::from(ms),
        }
    }

    /// Milliseconds since its transfer ended (or the refusal was sent).
    fn ended_ago(self, now: Timestamp) -> u32 {
        if self.later & ANSWERED_LAST != 0 { self.earlier_ago(now) } else { self.idle(now) }
    }

    /// Milliseconds since the turn that gave its answer began.
    fn answered_ago(self, now: Timestamp) -> u32 {
        if self.later & ANSWERED_LAST != 0 { self.idle(now) } else { self.earlier_ago(now) }
    }

    /// Not of use for [`RECENT`]: it may give way without the table doubling.
    fn stale(self, now: Timestamp) -> bool {
        self.idle(now) >= RECENT.as_millis() as u32
    }
}

/// Each client's last transfer. See the module documentation.
#[derive(Debug)]
pub(super) struct RecentTids {
    /// SipHash, keyed at random: a client's bucket must not be guessable, and the fast hash of
    /// the other tables spread a storm's clients (addresses that differ in a few bits) unevenly
    /// over the buckets with some keys (a table a third full losing a quarter of them).
    hasher: RandomState,
    /// A power of two of entries.
    table: Mapped<Entry>,
    /// The most entries it may have.
    max_entries: usize,
    /// Entries taken.
    used: usize,
    /// When the answers of each long loop turn left, by when the turn began.
    long_turns: LongTurns,
    /// When the table is next swept of entries idle for [`RECENT`].
    next_sweep: Timestamp,
}

/// How often the table is swept of idle entries, so that none outlives its millisecond count
/// (2^22 ms, 70 minutes): a few megabytes read every ten minutes at most.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// The loop turns of the last [`COPY_HORIZON`] whose sends left at least a millisecond after
/// they began (a storm's turns, or a turn a CPU quota paused): an answer is given in a turn,
/// timed by the turn's beginning, but leaves with the turn's sends at its end. A turn shorter
/// than that is not kept: its answers left when it began, to the millisecond. A few of a long
/// turn's sends leave before its end (the submission queue full, a resend due, every send slot
/// taken), and their answers are timed as leaving at the end: a client that got such an answer
/// and sent the same request again before the turn ended (only after an ERROR, asking again at
/// once) has that request taken for a copy, and asks again after its timeout. Dropping a new
/// request once costs that client a timeout; answering a copy can cost it its boot. A turn that
/// left sends waiting for room (every send slot taken) is timed by the first later turn that
/// leaves none waiting. At most [`LONG_TURNS`] are kept (a turn past that is timed by its
/// beginning, so its copies may be missed).
#[derive(Debug)]
struct LongTurns {
    /// (began, sends left), in milliseconds since the origin modulo 2^32, oldest first.
    turns: VecDeque<(u32, u32)>,
    /// When the last turn recorded, long or not, began.
    last_began: Option<u32>,
    /// Turns whose sends are not all gone yet (when each began), oldest first; at most
    /// [`LONG_TURNS`].
    waiting: Vec<u32>,
}

/// The most long turns kept (8 bytes each).
const LONG_TURNS: usize = 8192;

impl LongTurns {
    fn new() -> Self {
        Self { turns: VecDeque::with_capacity(LONG_TURNS), last_began: None, waiting: Vec::new() }
    }

    /// The turn that began at `began` sent its answers at `sent`, but for some still `waiting`
    /// for room; those of the turns before it that were waiting have gone too unless it says so.
    fn record(&mut self, began: Timestamp, sent: Timestamp, waiting: bool) {
        if waiting {
            if self.waiting.len() < LONG_TURNS {
                self.waiting.push(millis(began));
            }
            return;
        }
        for k in 0..self.waiting.len() {
            let earlier = self.waiting[k];
            self.record_ms(earlier, millis(sent));
        }
        self.waiting.clear();
        self.record_ms(millis(began), millis(sent));
    }

    /// The turn that began at `began` (ms) sent its answers at `sent_ms`.
    fn record_ms(&mut self, began: u32, sent_ms: u32) {
        while self.turns.front().is_some_and(|&(b, _)| sent_ms.wrapping_sub(b) > COPY_HORIZON.as_millis() as u32) {
            self.turns.pop_front();
        }
        // A turn that began in the same millisecond as the one before shares its key: the
        // answers of the earlier (which left at once) would be timed by the later's sends.
        if sent_ms != began && self.last_began != Some(began) {
            if self.turns.len() == LONG_TURNS {
                self.turns.pop_front();
            }
            self.turns.push_back((began, sent_ms));
        }
        self.last_began = Some(began);
    }

    /// When the answers given in the turn that began at `began_ms` left.
    fn left(&self, began_ms: u32) -> u32 {
        // In order of beginning, within the horizon: ages from the newest grow toward the
        // front, and no millisecond count wraps between them.
        let newest = self.turns.back().map_or(began_ms, |&(b, _)| b);
        let age = newest.wrapping_sub(began_ms);
        self.turns.binary_search_by(|&(b, _)| age.cmp(&newest.wrapping_sub(b))).map_or(began_ms, |i| self.turns[i].1)
    }
}

/// `now` in milliseconds modulo 2^32 (the time differences taken are far shorter).
fn millis(now: Timestamp) -> u32 {
    (now.as_micros() / 1000) as u32
}

impl RecentTids {
    /// An empty table for a worker that may hold `capacity` transfers.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            table: Mapped::new(MIN_ENTRIES),
            max_entries: capacity.saturating_mul(2).max(MIN_ENTRIES).next_power_of_two(),
            used: 0,
            long_turns: LongTurns::new(),
            next_sweep: Timestamp::ZERO + SWEEP_EVERY,
        }
    }

    /// The tag of `client` (never 0, which marks a free entry).
    fn tag(&self, client: &SocketAddr) -> u32 {
        (self.hasher.hash_one(client) as u32).max(1)
    }

    /// The first entry of the bucket of `tag`.
    fn bucket(&self, tag: u32) -> usize {
        (tag as usize & (self.table.len() / WAYS - 1)) * WAYS
    }

    /// The keyed hash of a request's bytes, 8 bits of it (never 0, which marks none): a new
    /// request whose hash meets the last one's is taken for a copy only if it arrived before
    /// the last one's answer left, which a client that waits for its answers never does.
    fn request_hash(&self, request: &[u8]) -> u8 {
        (self.hasher.hash_one(request) as u8).max(1)
    }

    /// `client`'s entry, if the table still holds it.
    fn find(&self, client: &SocketAddr) -> Option<Entry> {
        let tag = self.tag(client);
        let i = self.bucket(tag);
        self.table[i..i + WAYS].iter().copied().find(|e| e.tag == tag)
    }

    /// The port `client`'s last transfer was served from, if known and not the listening port.
    pub(super) fn last(&self, client: &SocketAddr) -> Option<u16> {
        self.find(client).filter(|e| e.transfer()).map(|e| e.port).filter(|&p| p != 0)
    }

    /// Whether `client`'s last transfer was served from the listening port and ended less than
    /// [`DALLY`] before `now`.
    pub(super) fn dallying(&self, client: &SocketAddr, now: Timestamp) -> bool {
        self.find(client).is_some_and(|e| e.transfer() && e.port == 0 && e.ended_ago(now) < DALLY.as_millis() as u32)
    }

    /// Whether `request` from `client`, which arrived at `arrived`, is a copy of the request
    /// `client` was last answered for that arrived before that answer was sent (see the module
    /// documentation).
    pub(super) fn is_copy(&self, client: &SocketAddr, request: &[u8], arrived: Timestamp, now: Timestamp) -> bool {
        let horizon = COPY_HORIZON.as_millis() as u32;
        if now.saturating_since(arrived) > COPY_HORIZON {
            return false;
        }
        self.find(client).is_some_and(|e| {
            let ago = e.answered_ago(now);
            e.request() == self.request_hash(request)
                && ago <= horizon
                && self.before(arrived, millis(now).wrapping_sub(ago))
        })
    }

    /// Whether `arrived` is before the answer given in the turn that began at `answered_ms`
    /// left.
    fn before(&self, arrived: Timestamp, answered_ms: u32) -> bool {
        (self.long_turns.left(answered_ms).wrapping_sub(millis(arrived)) as i32) > 0
    }

    /// Whether `arrived` is before the first answer of a transfer that started at `started`
    /// left.
    pub(super) fn before_start(&self, arrived: Timestamp, started: Timestamp) -> bool {
        arrived < started || self.before(arrived, millis(started))
    }

    /// `client`'s transfer was served from `port` (0: the listening port), started at
    /// `started` for `request`, and ended at `now`.
    pub(super) fn remember(
        &mut self,
        client: &SocketAddr,
        port: u16,
        request: &[u8],
        started: Timestamp,
        now: Timestamp,
    ) {
        let request = self.request_hash(request);
        let (slot, tag) = self.slot_for(client, now);
        let answered_ago = millis(now).wrapping_sub(millis(started));
        self.table[slot] = Entry::new(tag, request, port, true, now, 0, answered_ago);
    }

    /// `client`'s `request` was refused in the loop turn that began at `now` (an ERROR was
    /// sent, no transfer started). The port and end of the client's last transfer, if the table
    /// has them, are kept.
    pub(super) fn refused(&mut self, client: &SocketAddr, request: &[u8], now: Timestamp) {
        let request = self.request_hash(request);
        let (slot, tag) = self.slot_for(client, now);
        let e = self.table[slot];
        self.table[slot] = match e.tag == tag && e.transfer() {
            true => Entry::new(tag, request, e.port, true, now, e.ended_ago(now), 0),
            false => Entry::new(tag, request, 0, false, now, 0, 0),
        };
    }

    /// Frees the entries idle for [`RECENT`] every [`SWEEP_EVERY`], so that no entry outlives
    /// its millisecond count.
    pub(super) fn housekeeping(&mut self, now: Timestamp) {
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            self.sweep(now);
        }
    }

    /// The sends of the loop turn that began at `began` were handed to the kernel at `sent`;
    /// with `waiting`, some are still waiting for room and leave in a later turn (the answers
    /// of this turn are then timed by the first turn that leaves none waiting).
    pub(super) fn answers_sent(&mut self, began: Timestamp, sent: Timestamp, waiting: bool) {
        self.long_turns.record(began, sent, waiting);
    }

    /// The entry for `client`: its own, else a free one, else the one that ended first (the
    /// table doubles first when that one is recent and it may); and `client`'s tag.
    fn slot_for(&mut self, client: &SocketAddr, now: Timestamp) -> (usize, u32) {
        let tag = self.tag(client);
        loop {
            let i = self.bucket(tag);
            let bucket = &self.table[i..i + WAYS];
            if let Some(k) = bucket.iter().position(|e| e.tag == tag) {
                return (i + k, tag);
            }
            if let Some(k) = bucket.iter().position(|e| e.tag == 0) {
                self.used += 1;
                return (i + k, tag);
            }
            let oldest = (0..WAYS).max_by_key(|&k| bucket[k].idle(now)).unwrap_or(0);
            let stay = 3 * self.used < 2 * self.table.len() || self.table.len() >= self.max_entries;
            if stay || bucket[oldest].stale(now) {
                return (i + oldest, tag);
            }
            if !self.sweep(now) {
                self.double(now);
            }
        }
    }

    /// Frees the entries not of use for [`RECENT`]; returns whether less than half the table is
    /// taken after that (so that a sixth of it fills before the next sweep: a sweep walks the
    /// whole table).
    fn sweep(&mut self, now: Timestamp) -> bool {
        for e in self.table.iter_mut().filter(|e| e.tag != 0 && e.stale(now)) {
            *e = Entry::default();
            self.used -= 1;
        }
        2 * self.used < self.table.len()
    }

    /// Twice the entries; those younger than [`RECENT`] move to their bucket by their tag.
    fn double(&mut self, now: Timestamp) {
        let bigger = Mapped::new(self.table.len() * 2);
        let old = std::mem::replace(&mut self.table, bigger);
        self.used = 0;
        for e in old.iter().filter(|e| e.tag != 0 && !e.stale(now)) {
            let i = self.bucket(e.tag);
            if let Some(free) = self.table[i..i + WAYS].iter().position(|f| f.tag == 0) {
                self.table[i + free] = *e;
                self.used += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RRQ: &[u8] = b"\x00\x01pxelinux.0\x00octet\x00";

    /// `ms` milliseconds after the clock's origin.
    fn at(ms: u64) -> Timestamp {
        Timestamp::from_micros(ms * 1000)
    }

    /// Client `i` of a storm: an address of its own, port 2000.
    fn client(i: u32) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 2000))
    }

    #[test]
    fn a_client_s_last_port_is_kept_until_its_next_transfer_ends() {
        let mut t = RecentTids::new(0);
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        let b: SocketAddr = "192.0.2.10:2001".parse().unwrap();
        assert_eq!(t.last(&a), None);
        t.remember(&a, 40_000, RRQ, Timestamp::ZERO, Timestamp::ZERO);
        assert_eq!((t.last(&a), t.last(&b)), (Some(40_000), None), "by address and port");
        t.remember(&a, 40_001, RRQ, Timestamp::ZERO, Timestamp::ZERO);
        assert_eq!(t.last(&a), Some(40_001));
        assert!(!t.dallying(&a, Timestamp::ZERO), "a transfer on a port of its own leaves no dally");
    }

    #[test]
    fn a_newer_entry_takes_the_place_of_the_one_that_ended_first() {
        // A table that may not grow.
        let mut t = RecentTids::new(0);
        // A bucket's worth of clients and one more: find them by trying addresses.
        let first: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let bucket = t.bucket(t.tag(&first));
        let same =
            (1001..u16::MAX).map(|p| SocketAddr::from(([192, 0, 2, 1], p))).filter(|c| t.bucket(t.tag(c)) == bucket);
        let others: Vec<SocketAddr> = same.take(WAYS).collect();
        let (second, rest, last) = (others[0], &others[1..WAYS - 1], others[WAYS - 1]);
        t.remember(&first, 0, RRQ, at(100), at(100));
        t.remember(&second, 0, RRQ, at(200), at(200));
        for c in rest {
            t.remember(c, 0, RRQ, at(220), at(220));
        }
        let all = |t: &RecentTids| rest.iter().all(|c| t.dallying(c, at(300)));
        assert!(t.dallying(&first, at(300)) && t.dallying(&second, at(300)) && all(&t), "they share a bucket");
        t.remember(&first, 0, RRQ, at(250), at(250));
        t.remember(&last, 0, RRQ, at(300), at(300));
        assert!(!t.dallying(&second, at(300)), "the one that ended first gave way");
        assert!(t.dallying(&first, at(300)) && t.dallying(&last, at(300)) && all(&t));
    }

    #[test]
    fn a_single_port_transfer_dallies_for_a_while() {
        let mut t = RecentTids::new(0);
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        let b: SocketAddr = "192.0.2.11:2000".parse().unwrap();
        let ended = Timestamp::from_micros(5_000_000);
        t.remember(&a, 0, RRQ, ended, ended);
        assert_eq!(t.last(&a), None, "the listening port is no port to avoid");
        assert!(t.dallying(&a, ended + Duration::from_millis(1999)));
        assert!(!t.dallying(&a, ended + DALLY));
        assert!(!t.dallying(&b, ended), "by address and port");
    }

    #[test]
    fn a_copy_that_arrived_before_the_answer_is_known_for_one() {
        let mut t = RecentTids::new(0);
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        assert!(!t.is_copy(&a, RRQ, at(0), at(10)), "nothing answered yet");
        // Answered (its transfer started) at 1,000 ms, ended at 1,200.
        t.remember(&a, 40_000, RRQ, at(1000), at(1200));
        assert!(t.is_copy(&a, RRQ, at(999), at(1300)), "sent before the answer could be seen");
        assert!(!t.is_copy(&a, RRQ, at(1000), at(1300)), "arrived once the answer had left");
        assert!(!t.is_copy(&a, RRQ, at(1250), at(1300)), "asked again after the transfer: a new request");
        assert!(!t.is_copy(&a, b"\x00\x01other\x00octet\x00", at(999), at(1300)), "another request");
        assert!(!t.is_copy(&"192.0.2.10:2001".parse().unwrap(), RRQ, at(999), at(1300)), "another port");
        assert!(!t.is_copy(&a, RRQ, at(999), at(999) + COPY_HORIZON + Duration::from_millis(1)), "too old");
    }

    #[test]
    fn a_refusal_is_an_answer_and_keeps_the_last_transfer_s_port() {
        let mut t = RecentTids::new(0);
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        let miss = b"\x00\x01pxelinux.cfg/01-aa\x00octet\x00";
        t.refused(&a, miss, at(500));
        assert_eq!(t.last(&a), None, "a refusal is no transfer");
        assert!(!t.dallying(&a, at(600)), "and leaves no dally");
        assert!(t.is_copy(&a, miss, at(400), at(700)));
        t.remember(&a, 40_000, RRQ, at(1000), at(1200));
        t.refused(&a, miss, at(1300));
        assert_eq!(t.last(&a), Some(40_000), "the transfer's port is kept");
        assert!(t.is_copy(&a, miss, at(1299), at(1400)) && !t.is_copy(&a, RRQ, at(999), at(1400)), "the last answer");
    }

    #[test]
    fn a_storm_of_clients_keeps_its_entries() {
        // 10,000 clients refused within a second by a worker that may hold as many transfers:
        // a copy from nearly every one is still known as one.
        let clients = 10_000u32;
        let mut t = RecentTids::new(clients as usize);
        for i in 0..clients {
            t.refused(&client(i), RRQ, at(1000 + u64::from(i) / 10));
        }
        let known = (0..clients).filter(|&i| t.is_copy(&client(i), RRQ, at(999), at(2500))).count();
        assert!(known as u32 >= clients * 97 / 100, "{known} of {clients} known");
    }

    #[test]
    fn an_answer_is_timed_when_it_leaves() {
        // The turn that answered began at 1,000 ms; its sends left at 1,080 (a long turn: a
        // storm's, or a CPU quota's pause). A copy that arrived meanwhile is one.
        let mut t = RecentTids::new(0);
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        t.answers_sent(at(990), at(990), false);
        t.refused(&a, RRQ, at(1000));
        t.answers_sent(at(1000), at(1080), false);
        assert!(t.is_copy(&a, RRQ, at(1050), at(1100)), "arrived before the answer left");
        assert!(!t.is_copy(&a, RRQ, at(1080), at(1100)), "arrived once it had left");
        // A transfer that started in that turn, and has ended since.
        t.answers_sent(at(1080), at(1080), false);
        assert!(t.before_start(at(1050), at(1000)) && !t.before_start(at(1080), at(1000)));
        t.remember(&a, 40_000, RRQ, at(1000), at(1500));
        assert!(t.is_copy(&a, RRQ, at(1050), at(1600)));
        // A short turn is not kept; its answers left when it began.
        t.refused(&a, RRQ, at(1700));
        t.answers_sent(at(1700), at(1700), false);
        assert!(!t.is_copy(&a, RRQ, at(1700), at(1800)) && t.is_copy(&a, RRQ, at(1699), at(1800)));
        // Many long turns: each is found, and those past the horizon are forgotten.
        for k in 0..5_000u64 {
            t.answers_sent(at(2000 + 10 * k), at(2000 + 10 * k + 5), false);
        }
        assert!(t.before_start(at(2000 + 10 * 1234 + 4), at(2000 + 10 * 1234)));
        assert!(!t.before_start(at(2000 + 10 * 1234 + 5), at(2000 + 10 * 1234)));
        t.answers_sent(at(120_000), at(120_001), false);
        assert_eq!(t.long_turns.turns.len(), 1, "older than the horizon: forgotten");
    }

    #[test]
    fn the_table_doubles_for_recent_clients_and_keeps_them() {
        // A few clients: the first entries are enough.
        let mut t = RecentTids::new(100_000);
        for i in 0..1000 {
            t.remember(&client(i), 40_000, RRQ, at(0), at(1));
        }
        assert_eq!(t.table.len(), MIN_ENTRIES);
        // Many at once: it doubles, and every client keeps its entry through each doubling.
        for i in 1000..20_000 {
            t.remember(&client(i), 40_000 + (i % 1000) as u16, RRQ, at(0), at(1));
        }
        assert!(t.table.len() > MIN_ENTRIES && t.table.len() <= 65_536, "{}", t.table.len());
        let kept = (0..20_000).filter(|&i| t.last(&client(i)).is_some()).count();
        assert!(kept >= 19_500, "{kept} of 20,000 kept");
        assert_eq!(t.last(&client(1234)), Some(40_234));
        // Clients long gone make room rather than more doubling.
        let len = t.table.len();
        let later = at(1 + RECENT.as_millis() as u64);
        for i in 20_000..40_000 {
            t.remember(&client(i), 40_000, RRQ, later, later);
        }
        assert_eq!(t.table.len(), len, "no doubling for entries older than RECENT");
    }

    #[test]
    fn an_answer_a_month_old_makes_no_copy() {
        // Millisecond counts wrap: without a limit on the answer's age, a request a month later
        // would compare as arriving before it.
        let mut t = RecentTids::new(0);
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        t.refused(&a, RRQ, at(1000));
        assert!(t.is_copy(&a, RRQ, at(999), at(2000)));
        let month = at(1000 + 30 * 86_400_000);
        t.housekeeping(month);
        assert!(!t.is_copy(&a, RRQ, month, month));
    }

    #[test]
    fn an_entry_idle_for_a_while_is_swept_before_its_millisecond_count_wraps() {
        assert_eq!(std::mem::size_of::<Entry>(), 12);
        let mut t = RecentTids::new(0);
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        t.refused(&a, RRQ, at(1000));
        let wrap = at(1000 + (1 << 22));
        // 70 minutes later the count reads as a moment ago: only the sweep tells.
        t.housekeeping(at(1000 + 8 * 60_000));
        assert!(t.find(&a).is_some(), "no sweep due yet");
        t.housekeeping(at(1000 + 11 * 60_000));
        assert!(t.find(&a).is_none(), "swept");
        assert!(!t.is_copy(&a, RRQ, wrap, wrap + Duration::from_millis(1)));
    }

    #[test]
    fn times_far_apart_read_as_long_ago() {
        let mut t = RecentTids::new(0);
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        // A transfer of 70 s: its answer is past the horizon when it ends.
        t.remember(&a, 40_000, RRQ, at(0), at(70_000));
        assert!(!t.is_copy(&a, RRQ, at(69_999), at(70_001)));
        // A refusal 70 s after a single-port transfer ended: no dally, the port kept.
        let b: SocketAddr = "192.0.2.11:2000".parse().unwrap();
        t.remember(&b, 0, RRQ, at(0), at(1000));
        assert!(t.dallying(&b, at(2999)));
        t.refused(&b, b"\x00\x01x\x00octet\x00", at(71_000));
        assert!(!t.dallying(&b, at(71_001)));
        assert!(t.is_copy(&b, b"\x00\x01x\x00octet\x00", at(70_999), at(71_001)));
        let c: SocketAddr = "192.0.2.12:2000".parse().unwrap();
        t.remember(&c, 40_001, RRQ, at(0), at(1000));
        t.refused(&c, RRQ, at(80_000));
        assert_eq!(t.last(&c), Some(40_001));
    }

    #[test]
    fn answers_left_waiting_for_room_are_timed_when_they_go() {
        // The turn that began at 1,000 ms left some sends waiting for room (every send slot
        // taken); they went in the turn that ended at 1,300 with none left waiting.
        let mut t = RecentTids::new(0);
        let a: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        t.answers_sent(at(990), at(990), false);
        t.answers_sent(at(1000), at(1001), true);
        t.answers_sent(at(1100), at(1150), true);
        assert!(!t.before_start(at(1200), at(1000)), "not yet known: timed by the turn's beginning");
        t.answers_sent(at(1200), at(1300), false);
        assert!(t.before_start(at(1250), at(1000)) && t.before_start(at(1250), at(1100)));
        assert!(!t.before_start(at(1300), at(1000)));
        t.remember(&a, 40_000, RRQ, at(1000), at(1400));
        assert!(t.is_copy(&a, RRQ, at(1299), at(1500)));
    }
}
