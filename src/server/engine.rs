//! A worker's logic, independent of the I/O backend.
//!
//! The engine owns the worker's transfers and everything about them: the table of transfers
//! (a slab indexed by slot, generations to recognise stale events), an index by client address
//! and port, the timer wheel, the queue of transfers with something to send, and the file cache.
//! A backend feeds it datagrams, send errors and the passing of time, and carries out the sends
//! and socket operations it asks for through [`Io`].
//!
//! Architecture invariants:
//! - Nothing here allocates per packet. Allocation happens per transfer (a socket, a slab slot
//!   on first use) or per file version (a mapping), and the tables keep their capacity.
//! - Nothing here blocks: file opens are `openat2` on the page cache, everything else is memory.
//! - A transfer lives and dies on the worker whose socket received its request.
//! - Every request datagram gets at most two answers: the first, and one resend on a timer while
//!   the client has acknowledged nothing (see [`crate::proto::read`]).
//! - Uploads write to a temporary file as blocks arrive; syncing and renaming it into place waits
//!   for the disk, so it happens on the commit thread (`commit.rs`), and the final ACK leaves
//!   only once it succeeded.
//!
//! Before a request becomes a transfer it passes, in order: the broadcast check, the allow list
//! (others are ignored silently), the repeat check (a repeat is never a second transfer), the
//! refusals (mode, writes, stopping), the per-source rate limit (only under pressure unless
//! configured otherwise; dropped and counted) and the capacity check (ERROR 0 "server busy",
//! never silence).

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use hashbrown::{DefaultHashBuilder, HashTable};
use tracing::{debug, info, warn};

use super::commit::{CommitJob, CommitLink};
use super::io::{
    Body, DataRun, Datagram, Io, MAX_HEAD, MAX_RUN, MAX_RUN_BYTES, MAX_UPLOAD_BLKSIZE, Outgoing, Segment, Token, Via,
};
use super::limits::{SourceLimiter, source_key};
use super::reply_budget::ReplyBudget;
use super::socket::{LocalEnd, broadcast_addresses, interface_mtu};
use super::stats::{Counters, Latencies};
use crate::config::{ServePolicy, ServerConfig};
use crate::fs::{FileCache, OpenError, Root, UploadRoot, normalize};
use crate::proto::options::{Limits, Negotiated, blksize_for_mtu, negotiate};
use crate::proto::read::{AbortReason, Repeat};
use crate::proto::wire::{self, MAX_FILENAME_LEN, Mode, Packet, Request, RequestKind};
use crate::proto::{
    ErrorCode, Outcome, ReadTransfer, RetransmitConfig, Timestamp, Transmit, WriteTransfer, WriteTransmit,
};
use crate::timer::{Links, TimerLink, TimerWheel};

mod kind;

use kind::{Kind, WriteState, upload_error};

/// Timer wheel resolution.
const TICK_US: u64 = 1_000;
/// How often idle files are dropped and interface MTUs re-read.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
const MTU_MAX_AGE: Duration = Duration::from_secs(10);
/// How often the interfaces' broadcast addresses are re-read.
const BROADCAST_MAX_AGE: Duration = Duration::from_secs(10);
/// How long a failure to open a transfer socket counts as pressure.
const PRESSURE_MEMORY: Duration = Duration::from_secs(1);
/// `locals` index meaning "none".
const NO_LOCAL: u16 = u16::MAX;

/// One transfer.
#[derive(Debug)]
struct Transfer {
    peer: SocketAddr,
    via: Via,
    /// Index in `Engine::locals` of the address to send from (single-port mode).
    local: u16,
    /// In the ready queue.
    queued: bool,
    /// Hash of the request datagram, to tell a repeat from a new request.
    req_hash: u32,
    kind: Kind,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    timer: TimerLink,
    transfer: Option<Transfer>,
}

/// The slots' timer links, for the wheel.
struct SlotLinks<'a>(&'a mut Vec<Slot>);

impl Links for SlotLinks<'_> {
    fn link(&mut self, idx: u32) -> &mut TimerLink {
        &mut self.0[idx as usize].timer
    }
}

/// The worker's logic. See the module documentation.
pub(crate) struct Engine {
    worker: usize,
    /// The serving policy (a reload may later swap it between two turns of the loop).
    policy: Arc<ServePolicy>,
    /// What stays fixed while the server runs.
    settings: EngineSettings,
    counters: Arc<CachePadded<Counters>>,
    latencies: Latencies,
    files: FileCache,
    slots: Vec<Slot>,
    free: Vec<u32>,
    peers: HashTable<u32>,
    hasher: DefaultHashBuilder,
    wheel: TimerWheel,
    due: Vec<u32>,
    ready: VecDeque<u32>,
    locals: Vec<LocalEnd>,
    mtus: Vec<(u32, Option<u32>, Timestamp)>,
    active: usize,
    stop: Option<Timestamp>,
    aborted: bool,
    next_housekeeping: Timestamp,
    uploads: Option<Arc<UploadRoot>>,
    commits: Option<CommitLink>,
    limiter: Option<SourceLimiter>,
    broadcasts: Vec<Ipv4Addr>,
    broadcasts_read: Option<Timestamp>,
    /// When a transfer socket last failed to open.
    open_failed: Option<Timestamp>,
    /// ERRORs sent unasked (to malformed and foreign datagrams).
    unasked: ReplyBudget,
    /// Transfers the worker may hold at once.
    capacity: usize,
    /// Transfers held per source (IPv4 address, IPv6 /64), for the fair share under pressure.
    sources: HashTable<(u128, u32)>,
    /// Transfers in the order they started, to find the oldest whose client has shown nothing
    /// (entries of transfers since confirmed or ended are skipped, and dropped now and then).
    unconfirmed: VecDeque<Token>,
    path: [u8; MAX_FILENAME_LEN],
    head: [u8; MAX_HEAD],
    /// DATA packets gathered for one send (capacity [`MAX_RUN`], reused).
    run: Vec<Segment>,
}

/// The settings of an engine that stay fixed while the server runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EngineSettings {
    /// Every transfer is served from the listening port.
    pub(crate) single_port: bool,
    /// On stop, how long transfers in progress may take to finish.
    pub(crate) grace: Duration,
    /// Workers of the server: each holds its share of the per-source rate.
    pub(crate) workers: usize,
    /// Idle files kept open per worker.
    pub(crate) file_cache: usize,
}

impl EngineSettings {
    /// The engine's settings in `cfg`.
    pub(crate) fn of(cfg: &ServerConfig) -> Self {
        Self { single_port: cfg.io.single_port, grace: cfg.grace, workers: cfg.workers, file_cache: cfg.file_cache }
    }
}

/// What a worker's engine is given besides its policy and settings.
#[derive(Debug)]
pub(crate) struct EngineParts {
    pub(crate) root: Arc<Root>,
    pub(crate) uploads: Option<Arc<UploadRoot>>,
    pub(crate) commits: Option<CommitLink>,
    pub(crate) counters: Arc<CachePadded<Counters>>,
    /// Transfers the worker may hold at once: `--max-transfers`, or less when descriptors are
    /// short (see `worker.rs`).
    pub(crate) capacity: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("worker", &self.worker).field("active", &self.active).finish()
    }
}

impl Engine {
    pub(crate) fn new(
        worker: usize,
        policy: Arc<ServePolicy>,
        settings: EngineSettings,
        parts: EngineParts,
        now: Timestamp,
    ) -> Self {
        let EngineParts { root, uploads, commits, counters, capacity } = parts;
        Self {
            worker,
            files: FileCache::new(root, settings.file_cache),
            limiter: policy.source_limit().map(|rate| SourceLimiter::worker_share(rate, settings.workers)),
            policy,
            settings,
            counters,
            uploads,
            commits,
            broadcasts: Vec::new(),
            broadcasts_read: None,
            open_failed: None,
            unasked: ReplyBudget::new(now),
            latencies: Latencies::new(),
            // Reserved for the worker's limit up front: address space only (pages become resident
            // as slots are first used), and the table never moves or leaves old copies behind.
            slots: Vec::with_capacity(capacity),
            capacity,
            // Reserved for the worker's limit up front: never more sources than transfers.
            sources: HashTable::with_capacity(capacity),
            // Compacted when it reaches twice the table (see `on_request`): it never grows past that.
            unconfirmed: VecDeque::with_capacity(2 * capacity.max(64) + 1),
            free: Vec::new(),
            peers: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            wheel: TimerWheel::new(TICK_US, now),
            due: Vec::new(),
            ready: VecDeque::new(),
            locals: Vec::new(),
            mtus: Vec::new(),
            active: 0,
            stop: None,
            aborted: false,
            next_housekeeping: now + HOUSEKEEPING,
            path: [0; MAX_FILENAME_LEN],
            head: [0; MAX_HEAD],
            run: Vec::with_capacity(MAX_RUN),
        }
    }

    /// The worker's latency histograms.
    pub(crate) fn latencies(&self) -> &Latencies {
        &self.latencies
    }

    /// Stop accepting requests; transfers in progress get the grace period.
    pub(crate) fn begin_stop(&mut self, now: Timestamp) {
        if self.stop.is_none() {
            self.stop = Some(now + self.settings.grace);
        }
    }

    /// Ends every transfer now: each gets an ERROR on the next timer pass.
    pub(crate) fn abort_now(&mut self, now: Timestamp) {
        self.stop = Some(now);
    }

    /// Stopping and nothing left to do.
    pub(crate) fn is_finished(&self) -> bool {
        self.stop.is_some() && self.active == 0
    }

    /// When the backend must call [`on_timers`](Self::on_timers) next, if ever.
    pub(crate) fn next_wakeup(&self) -> Option<Timestamp> {
        let grace = self.stop.filter(|_| !self.aborted);
        match (self.wheel.next_due(), grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn hash_peer(&self, peer: &SocketAddr) -> u64 {
        self.hasher.hash_one(peer)
    }

    fn find_peer(&self, peer: &SocketAddr) -> Option<u32> {
        let slots = &self.slots;
        self.peers
            .find(self.hash_peer(peer), |&i| slots[i as usize].transfer.as_ref().is_some_and(|t| t.peer == *peer))
            .copied()
    }

    fn live(&mut self, token: Token) -> Option<&mut Transfer> {
        let slot = self.slots.get_mut(token.slot() as usize)?;
        if slot.generation != token.generation() {
            return None;
        }
        slot.transfer.as_mut()
    }

    fn token(&self, idx: u32) -> Token {
        Token::new(idx, self.slots[idx as usize].generation)
    }

    /// Handles a received datagram.
    pub(crate) fn on_datagram<I: Io>(&mut self, now: Timestamp, d: &Datagram<'_>, io: &mut I) {
        match d.via {
            Via::Transfer(_) => self.on_transfer_datagram(now, d, io),
            Via::Listen(listen) => self.on_listen_datagram(now, listen, d, io),
        }
    }

    fn on_transfer_datagram<I: Io>(&mut self, now: Timestamp, d: &Datagram<'_>, io: &mut I) {
        let Some(token) = d.token else { return };
        let Some(t) = self.live(token) else { return };
        if d.peer != t.peer {
            //= https://www.rfc-editor.org/rfc/rfc1350#section-4
            //# If a source TID does not match, the packet should be discarded as erroneously sent
            //# from somewhere else. An error packet should be sent to the source of the incorrect
            //# packet, while not disturbing the transfer.
            Counters::add(&self.counters.foreign, 1);
            if !is_error(d.payload) {
                self.reply_unasked(now, io, d, ErrorCode::UNKNOWN_TID, "unknown transfer ID");
            }
            return;
        }
        match Packet::decode(d.payload) {
            Ok(p) if !d.truncated => self.handle_packet(token.slot(), now, &p),
            _ => Counters::add(&self.counters.malformed, 1),
        }
        self.after_event(token.slot(), now, io);
    }

    /// Feeds a packet from its client to transfer `idx`, writing upload data as it arrives and
    /// handing a finished upload to the commit thread.
    fn handle_packet(&mut self, idx: u32, now: Timestamp, p: &Packet<'_>) {
        let retransmit = self.policy.retransmit;
        let token = self.token(idx);
        let Some(t) = self.slots[idx as usize].transfer.as_mut() else { return };
        match &mut t.kind {
            Kind::Read { xfer, .. } => xfer.handle_packet(now, p, &retransmit),
            Kind::Write(w) => {
                if let Some((_, data)) = w.xfer.handle_packet(now, p, &retransmit) {
                    if let Some(Err(e)) = w.upload.as_mut().map(|u| u.write(data)) {
                        let (code, msg) = upload_error(&e);
                        w.xfer.abort(code, msg);
                        return;
                    }
                }
                if w.xfer.wants_commit() {
                    if let (Some(upload), Some(link)) = (w.upload.take(), &self.commits) {
                        let job = CommitJob { worker: self.worker, token, upload };
                        if link.jobs.send(job).is_err() {
                            w.xfer.commit_done(now, Err((ErrorCode::NOT_DEFINED, "cannot commit upload")), &retransmit);
                        }
                    }
                }
            }
        }
    }

    fn on_listen_datagram<I: Io>(&mut self, now: Timestamp, listen: u32, d: &Datagram<'_>, io: &mut I) {
        if let Some(local) = d.local {
            //= https://www.rfc-editor.org/rfc/rfc1123#section-4.2.3.5
            //# A TFTP request directed to a broadcast address SHOULD be silently ignored.
            if self.is_broadcast(local.ip, now) {
                Counters::add(&self.counters.ignored, 1);
                return;
            }
        }
        if !self.policy.allow.is_empty() && !self.policy.allow.iter().any(|c| c.contains(d.peer.ip())) {
            Counters::add(&self.counters.ignored, 1);
            return;
        }
        let packet = if d.truncated { Err(None) } else { Packet::decode(d.payload).map_err(Some) };
        match packet {
            Ok(Packet::Request(r)) => self.on_request(now, listen, d, &r, io),
            Ok(p) => {
                if self.settings.single_port {
                    if let Some(idx) = self.find_peer(&d.peer) {
                        self.handle_packet(idx, now, &p);
                        self.after_event(idx, now, io);
                        return;
                    }
                }
                // DATA, ACK or OACK that belongs to no transfer of ours. Never answer an ERROR.
                if !matches!(p, Packet::Error { .. }) {
                    Counters::add(&self.counters.foreign, 1);
                    self.reply_unasked(now, io, d, ErrorCode::UNKNOWN_TID, "unknown transfer ID");
                }
            }
            Err(e) => {
                Counters::add(&self.counters.malformed, 1);
                if self.settings.single_port && self.find_peer(&d.peer).is_some() {
                    return;
                }
                let msg = e.map_or("request too long", |e| e.message());
                self.reply_unasked(now, io, d, ErrorCode::ILLEGAL_OPERATION, msg);
            }
        }
    }

    fn on_request<I: Io>(&mut self, now: Timestamp, listen: u32, d: &Datagram<'_>, r: &Request<'_>, io: &mut I) {
        Counters::add(&self.counters.requests, 1);
        let req_hash = self.hasher.hash_one(d.payload) as u32;
        if let Some(idx) = self.find_peer(&d.peer) {
            let retransmit = self.policy.retransmit;
            let t = self.slots[idx as usize].transfer.as_mut().expect("indexed slots are live");
            let repeat = (t.req_hash == req_hash).then(|| t.kind.handle_repeated_request(now, &retransmit));
            match repeat {
                // The client repeated its request: the same transfer, never a second one.
                Some(Repeat::ResendFirst | Repeat::Ignored) => {
                    Counters::add(&self.counters.duplicate_requests, 1);
                    if repeat == Some(Repeat::ResendFirst) {
                        // Same options as the first answer, with the values this transfer uses
                        // (a fresh negotiation could differ once the MTU cache is refreshed).
                        let (size, blksize, window) = match &t.kind {
                            Kind::Read { xfer, .. } => {
                                let s = xfer.sender();
                                (Some(s.size()), s.blksize(), s.window())
                            }
                            Kind::Write(w) => (None, w.xfer.blksize(), 0),
                        };
                        let mut neg = self.negotiate(r, size, d.local, now);
                        neg.blksize = blksize;
                        if window != 0 {
                            neg.windowsize = window;
                        }
                        self.send_first(idx, now, r, &neg, io);
                    }
                    self.after_event(idx, now, io);
                    return;
                }
                // The client has the whole file and asks again: the old transfer is complete.
                Some(Repeat::Finished) => {}
                // Another request from the same address and port: the client has moved on.
                None => t.kind.cancel(Outcome::PeerError(ErrorCode::NOT_DEFINED)),
            }
            self.after_event(idx, now, io);
        }
        let refusal = if r.mode == Mode::Mail {
            Some((ErrorCode::ILLEGAL_OPERATION, "mail mode is not supported"))
        } else if self.stop.is_some() {
            Some((ErrorCode::NOT_DEFINED, "server is shutting down"))
        } else if r.kind == RequestKind::Write && self.uploads.is_none() {
            Some((ErrorCode::ACCESS_VIOLATION, "writes are disabled on this server"))
        } else if r.kind == RequestKind::Write
            && !self.policy.allow_write_from.is_empty()
            && !self.policy.allow_write_from.iter().any(|c| c.contains(d.peer.ip()))
        {
            Some((ErrorCode::ACCESS_VIOLATION, "uploads are not allowed from this address"))
        } else {
            None
        };
        if let Some((code, msg)) = refusal {
            Counters::add(&self.counters.refused, 1);
            self.reply(io, d.via, d.peer, d.local, code, msg);
            return;
        }
        // Every new transfer spends a token, so the heaviest sources are the ones held back
        // once pressure starts; an idle server serves them all.
        let pressed = self.policy.rate_limit_always || self.under_pressure(now);
        if let Some(l) = self.limiter.as_mut() {
            if !l.allow(d.peer.ip(), now) && pressed {
                Counters::add(&self.counters.rate_limited, 1);
                return;
            }
        }
        // Under pressure no source holds more than its share of the table: a slow or hostile
        // client holding transfers open cannot lock the others out.
        if self.under_pressure(now) && self.held_by(d.peer.ip()) >= self.fair_share() {
            Counters::add(&self.counters.busy, 1);
            self.reply(io, d.via, d.peer, d.local, ErrorCode::NOT_DEFINED, "server busy, try again");
            return;
        }
        let prepared = match r.kind {
            RequestKind::Read => self.prepare_read(now, d, r, io),
            RequestKind::Write => self.prepare_write(now, d, r, io),
        };
        let Some((kind, neg)) = prepared else { return };
        // Full: a transfer whose client has shown nothing (perhaps a forged request's) makes
        // room, but only for a request that becomes a transfer (a miss or a refusal takes no
        // room); only a table of transfers that all progress is busy.
        if self.active >= self.capacity && !self.evict_unconfirmed(now, io) {
            Counters::add(&self.counters.busy, 1);
            self.reply(io, d.via, d.peer, d.local, ErrorCode::NOT_DEFINED, "server busy, try again");
            return;
        }

        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let token = self.token(idx);
        let (via, local) = if self.settings.single_port {
            (Via::Listen(listen), self.intern_local(d.local))
        } else {
            match io.open_transfer(transfer_bind_addr(&d.peer, d.local), token) {
                Ok(sock) => (Via::Transfer(sock), NO_LOCAL),
                Err(e) => {
                    self.free.push(idx);
                    self.open_failed = Some(now);
                    Counters::add(&self.counters.busy, 1);
                    warn!(worker = self.worker, error = %e, "cannot open a transfer socket");
                    self.reply(io, d.via, d.peer, d.local, ErrorCode::NOT_DEFINED, "server busy, try again");
                    return;
                }
            }
        };
        self.slots[idx as usize].transfer = Some(Transfer { peer: d.peer, via, local, queued: false, req_hash, kind });
        let slots = &self.slots;
        let hasher = &self.hasher;
        // Rehashing on growth must hash exactly what lookups hash: the peer address.
        self.peers.insert_unique(self.hash_peer(&d.peer), idx, |&i| {
            slots[i as usize].transfer.as_ref().map_or(0, |t| hasher.hash_one(t.peer))
        });
        self.active += 1;
        Counters::set(&self.counters.active, self.active as u64);
        if self.unconfirmed.len() >= 2 * self.capacity.max(64) {
            let slots = &self.slots;
            self.unconfirmed.retain(|tok| live_unconfirmed(slots, *tok));
        }
        self.unconfirmed.push_back(token);
        self.count_source(d.peer.ip(), true);
        self.send_first(idx, now, r, &neg, io);
        self.after_event(idx, now, io);
    }

    /// Opens the file of a read request; answers the client itself when refusing.
    fn prepare_read<I: Io>(
        &mut self,
        now: Timestamp,
        d: &Datagram<'_>,
        r: &Request<'_>,
        io: &mut I,
    ) -> Option<(Kind, Negotiated)> {
        let file = match normalize(r.filename, &mut self.path) {
            Err(e) => Err(match e {
                crate::fs::PathError::Empty => OpenError::NotFound,
                _ => OpenError::Denied,
            }),
            Ok(rel) => self.files.get(rel, now),
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                let (code, msg) = match e {
                    OpenError::NotFound => {
                        Counters::add(&self.counters.not_found, 1);
                        debug!(worker = self.worker, client = %d.peer, file = %r.filename.escape_ascii(), "file not found");
                        (ErrorCode::FILE_NOT_FOUND, "file not found")
                    }
                    OpenError::Denied | OpenError::NotRegular => {
                        Counters::add(&self.counters.refused, 1);
                        info!(worker = self.worker, client = %d.peer, file = %r.filename.escape_ascii(), reason = %e, "request refused");
                        (ErrorCode::ACCESS_VIOLATION, "access violation")
                    }
                    OpenError::Io(err) => {
                        Counters::add(&self.counters.refused, 1);
                        warn!(worker = self.worker, client = %d.peer, file = %r.filename.escape_ascii(), error = %err, "cannot open file");
                        (ErrorCode::NOT_DEFINED, "cannot read file")
                    }
                };
                self.reply(io, d.via, d.peer, d.local, code, msg);
                return None;
            }
        };
        let netascii = r.mode == Mode::Netascii;
        let size = if netascii {
            match file.netascii_len() {
                Ok(n) => n,
                Err(e) => {
                    Counters::add(&self.counters.refused, 1);
                    let msg = match e {
                        crate::fs::cache::NetasciiError::TooLarge => "file too large for netascii, use octet",
                        crate::fs::cache::NetasciiError::Read => "cannot read file",
                    };
                    self.reply(io, d.via, d.peer, d.local, ErrorCode::NOT_DEFINED, msg);
                    return None;
                }
            }
        } else {
            file.len()
        };
        let neg = self.negotiate(r, Some(size), d.local, now);
        let mut xfer = ReadTransfer::new(now, size, &neg, &self.policy.retransmit);
        if let Some(bytes) = self.policy.limits.max_window_bytes {
            xfer.limit_blind_sends(bytes);
        }
        Some((Kind::Read { file, netascii, xfer }, neg))
    }

    /// Starts the temporary file of an upload; answers the client itself when refusing.
    fn prepare_write<I: Io>(
        &mut self,
        now: Timestamp,
        d: &Datagram<'_>,
        r: &Request<'_>,
        io: &mut I,
    ) -> Option<(Kind, Negotiated)> {
        // Uploads are on when the worker was given their directory.
        let uploads = self.uploads.clone()?;
        let policy = self.policy.upload;
        let neg = self.negotiate(r, None, d.local, now);
        let netascii = r.mode == Mode::Netascii;
        let started = match normalize(r.filename, &mut self.path) {
            Err(crate::fs::PathError::Empty) => Err(crate::fs::UploadError::NotFound),
            Err(_) => Err(crate::fs::UploadError::Denied),
            Ok(rel) => uploads.begin(rel, &policy, neg.tsize, netascii).map(|u| (u, String::from_utf8_lossy(rel))),
        };
        match started {
            Ok((upload, name)) => {
                let xfer = WriteTransfer::new(now, &neg, policy.max_size, &self.policy.retransmit);
                let state = WriteState { xfer, upload: Some(upload), name: name.into(), netascii };
                Some((Kind::Write(Box::new(state)), neg))
            }
            Err(e) => {
                Counters::add(&self.counters.refused, 1);
                info!(worker = self.worker, client = %d.peer, file = %r.filename.escape_ascii(), reason = %e, "upload refused");
                let (code, msg) = upload_error(&e);
                self.reply(io, d.via, d.peer, d.local, code, msg);
                None
            }
        }
    }

    /// Whether this worker is short of room for transfers: its table at least half full, or a
    /// transfer socket failed to open (descriptors or ports exhausted) within [`PRESSURE_MEMORY`].
    /// Only then do per-source limits apply (unless configured to apply always).
    fn under_pressure(&self, now: Timestamp) -> bool {
        self.active >= self.capacity.div_ceil(2)
            || self.open_failed.is_some_and(|t| now.saturating_since(t) < PRESSURE_MEMORY)
    }

    fn is_broadcast(&mut self, ip: IpAddr, now: Timestamp) -> bool {
        match ip {
            IpAddr::V6(v6) => v6.is_multicast(),
            IpAddr::V4(v4) if v4.is_broadcast() || v4.is_multicast() => true,
            IpAddr::V4(v4) => {
                if self.broadcasts_read.is_none_or(|t| now.saturating_since(t) >= BROADCAST_MAX_AGE) {
                    self.broadcasts = broadcast_addresses();
                    self.broadcasts_read = Some(now);
                }
                self.broadcasts.contains(&v4)
            }
        }
    }

    /// Negotiates a request's options. `size` is the file's size for a read; uploads are also
    /// capped at the blksize a receive buffer holds.
    fn negotiate(&mut self, r: &Request<'_>, size: Option<u64>, local: Option<LocalEnd>, now: Timestamp) -> Negotiated {
        let mtu = local.and_then(|l| self.mtu_blksize(l, now));
        let mut limits = self.policy.limits;
        if r.kind == RequestKind::Write {
            limits = Limits { max_blksize: limits.max_blksize.min(MAX_UPLOAD_BLKSIZE), ..limits };
        }
        let file_size = size.filter(|_| r.mode == Mode::Octet);
        negotiate(r.kind, r.mode, &r.options, file_size, limits, mtu)
    }

    /// Sends the first answer (OACK or DATA 1), which only exists with the request at hand.
    fn send_first<I: Io>(&mut self, idx: u32, now: Timestamp, r: &Request<'_>, neg: &Negotiated, io: &mut I) {
        let retransmit = self.policy.retransmit;
        let token = self.token(idx);
        let Some(t) = self.slots[idx as usize].transfer.as_mut() else {
            return;
        };
        // A first DATA waits for room like any DATA: the transfer is queued by `after_event`
        // and `flush` sends it. Only an OACK, which exists only now, goes out at once.
        if matches!(t.kind, Kind::Read { .. }) && !neg.has_oack() && !io.can_send() {
            return;
        }
        let oack = match &mut t.kind {
            Kind::Read { xfer, .. } => match xfer.poll_transmit(now, &retransmit) {
                Some(Transmit::Oack) => true,
                Some(tx) => {
                    transmit_read(t, tx, token, &self.locals, &mut self.head, io);
                    false
                }
                None => false,
            },
            Kind::Write(w) => match w.xfer.poll_transmit() {
                Some(WriteTransmit::Oack) => true,
                Some(tx) => {
                    transmit_write(t.via, t.peer, local_end(&self.locals, t.local), tx, &mut self.head, io);
                    false
                }
                None => false,
            },
        };
        if oack {
            // The OACK of a request this server accepted always fits MAX_HEAD.
            let n = neg.encode_oack(&r.options, &mut self.head).unwrap_or(0);
            let from = local_end(&self.locals, t.local);
            io.send(Outgoing { via: t.via, to: t.peer, from, head: &self.head[..n], body: None, token: Some(token) });
        }
    }

    fn intern_local(&mut self, local: Option<LocalEnd>) -> u16 {
        let Some(l) = local else { return NO_LOCAL };
        if let Some(i) = self.locals.iter().position(|x| *x == l) {
            return i as u16;
        }
        if self.locals.len() >= usize::from(NO_LOCAL) {
            return NO_LOCAL;
        }
        self.locals.push(l);
        (self.locals.len() - 1) as u16
    }

    fn mtu_blksize(&mut self, local: LocalEnd, now: Timestamp) -> Option<u16> {
        let pos = self.mtus.iter().position(|(i, ..)| *i == local.ifindex);
        let mtu = match pos {
            Some(p) if now.saturating_since(self.mtus[p].2) < MTU_MAX_AGE => self.mtus[p].1,
            _ => {
                let mtu = interface_mtu(local.ifindex);
                match pos {
                    Some(p) => self.mtus[p] = (local.ifindex, mtu, now),
                    None => self.mtus.push((local.ifindex, mtu, now)),
                }
                mtu
            }
        };
        mtu.map(|m| blksize_for_mtu(m, local.ip.is_ipv6()))
    }

    /// Sends an ERROR that belongs to no transfer.
    fn reply<I: Io>(
        &mut self,
        io: &mut I,
        via: Via,
        to: SocketAddr,
        from: Option<LocalEnd>,
        code: ErrorCode,
        msg: &str,
    ) {
        let n = wire::encode_error(code, msg.as_bytes(), &mut self.head).unwrap_or(0);
        io.send(Outgoing { via, to, from, head: &self.head[..n], body: None, token: None });
    }

    /// The most transfers one source may hold while the worker is under pressure: an even share
    /// of half the table among the sources holding transfers, and never less than a sixteenth
    /// of it (a rack of machines behind one NAT address still boots during a storm).
    fn fair_share(&self) -> usize {
        (self.capacity / 2 / self.sources.len().max(1)).max(self.capacity / 16).max(1)
    }

    /// Transfers `ip`'s source holds.
    fn held_by(&self, ip: IpAddr) -> usize {
        let key = source_key(ip);
        self.sources.find(self.hasher.hash_one(key), |e| e.0 == key).map_or(0, |e| e.1 as usize)
    }

    /// Counts a transfer of `ip`'s source in (`started`) or out.
    fn count_source(&mut self, ip: IpAddr, started: bool) {
        let key = source_key(ip);
        let hasher = &self.hasher;
        let hash = hasher.hash_one(key);
        match self.sources.find_entry(hash, |e| e.0 == key) {
            Ok(mut e) if started => e.get_mut().1 += 1,
            Ok(mut e) if e.get().1 > 1 => e.get_mut().1 -= 1,
            Ok(e) => drop(e.remove()),
            Err(_) if started => drop(self.sources.insert_unique(hash, (key, 1), |e| hasher.hash_one(e.0))),
            Err(_) => {}
        }
    }

    /// Ends the oldest transfer whose client has shown nothing yet, without a word (a real client
    /// repeats its request); returns whether there was one.
    fn evict_unconfirmed<I: Io>(&mut self, now: Timestamp, io: &mut I) -> bool {
        while let Some(tok) = self.unconfirmed.pop_front() {
            if live_unconfirmed(&self.slots, tok) {
                if let Some(t) = self.slots[tok.slot() as usize].transfer.as_mut() {
                    t.kind.cancel(Outcome::TimedOut);
                }
                Counters::add(&self.counters.evicted, 1);
                self.finish(tok.slot(), Outcome::TimedOut, now, io);
                return true;
            }
        }
        false
    }

    /// Sends an ERROR to a datagram that was no request and belongs to no transfer, within the
    /// budget for such replies (the datagram's source may be forged); beyond it, nothing.
    fn reply_unasked<I: Io>(&mut self, now: Timestamp, io: &mut I, d: &Datagram<'_>, code: ErrorCode, msg: &str) {
        if self.unasked.take(now) {
            self.reply(io, d.via, d.peer, d.local, code, msg);
        } else {
            Counters::add(&self.counters.errors_withheld, 1);
        }
    }

    /// Queues, arms or ends a transfer after anything happened to it.
    fn after_event<I: Io>(&mut self, idx: u32, now: Timestamp, io: &mut I) {
        let Some(t) = self.slots[idx as usize].transfer.as_mut() else {
            return;
        };
        if let Some(outcome) = t.kind.outcome() {
            self.finish(idx, outcome, now, io);
            return;
        }
        if t.kind.wants_transmit() && !t.queued {
            t.queued = true;
            self.ready.push_back(idx);
        }
        match t.kind.poll_timeout() {
            Some(deadline) => self.wheel.arm(&mut SlotLinks(&mut self.slots), idx, deadline),
            None => self.wheel.cancel(&mut SlotLinks(&mut self.slots), idx),
        }
    }

    /// Sends what queued transfers have to send, as far as the backend has room.
    pub(crate) fn flush<I: Io>(&mut self, now: Timestamp, io: &mut I) {
        let retransmit = self.policy.retransmit;
        while let Some(idx) = self.ready.pop_front() {
            let token = self.token(idx);
            let Some(t) = self.slots[idx as usize].transfer.as_mut() else {
                continue;
            };
            loop {
                if !io.can_send() {
                    self.ready.push_front(idx);
                    return;
                }
                match &mut t.kind {
                    Kind::Read { .. } => {
                        if !transmit_read_run(
                            t,
                            now,
                            &retransmit,
                            token,
                            &self.locals,
                            &mut self.head,
                            &mut self.run,
                            io,
                        ) {
                            break;
                        }
                    }
                    Kind::Write(w) => {
                        let Some(tx) = w.xfer.poll_transmit() else { break };
                        transmit_write(t.via, t.peer, local_end(&self.locals, t.local), tx, &mut self.head, io);
                    }
                }
            }
            t.queued = false;
            self.after_event(idx, now, io);
        }
    }

    /// Handles expired timers and housekeeping.
    pub(crate) fn on_timers<I: Io>(&mut self, now: Timestamp, io: &mut I) {
        let retransmit = self.policy.retransmit;
        self.due.clear();
        self.wheel.expire(now, &mut SlotLinks(&mut self.slots), &mut self.due);
        for i in 0..self.due.len() {
            let idx = self.due[i];
            let Some(t) = self.slots[idx as usize].transfer.as_mut() else {
                continue;
            };
            t.kind.handle_timeout(now, &retransmit);
            self.after_event(idx, now, io);
        }
        self.poll_commits(now, io);
        if self.stop.is_some() {
            // Stopping: committed uploads need not wait for a lost final ACK. (A scan per loop
            // turn, but only while stopping.)
            for idx in 0..self.slots.len() as u32 {
                if let Some(t) = self.slots[idx as usize].transfer.as_mut() {
                    if t.kind.is_dallying() {
                        t.kind.abort(ErrorCode::NOT_DEFINED, AbortReason::ShuttingDown);
                        self.after_event(idx, now, io);
                    }
                }
            }
        }
        if let Some(deadline) = self.stop {
            if now >= deadline && !self.aborted {
                self.aborted = true;
                for idx in 0..self.slots.len() as u32 {
                    if let Some(t) = self.slots[idx as usize].transfer.as_mut() {
                        t.kind.abort(ErrorCode::NOT_DEFINED, AbortReason::ShuttingDown);
                        self.after_event(idx, now, io);
                    }
                }
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.files.sweep(now, false);
        }
    }

    /// Takes the results of finished commits: the final ACK, or the ERROR.
    fn poll_commits<I: Io>(&mut self, now: Timestamp, io: &mut I) {
        let retransmit = self.policy.retransmit;
        loop {
            let Some(done) = self.commits.as_ref().and_then(|l| l.done.try_recv().ok()) else { return };
            let worker = self.worker;
            let Some(t) = self.live(done.token) else { continue };
            let Kind::Write(w) = &mut t.kind else { continue };
            let result = match &done.result {
                Ok(_) => Ok(()),
                Err(e) => {
                    warn!(worker, client = %t.peer, file = %w.name, error = %e, "upload not committed");
                    Err(upload_error(e))
                }
            };
            w.xfer.commit_done(now, result, &retransmit);
            self.after_event(done.token.slot(), now, io);
        }
    }

    /// A send of transfer `token` failed with `errno`.
    pub(crate) fn on_send_error<I: Io>(&mut self, now: Timestamp, token: Token, errno: i32, io: &mut I) {
        Counters::add(&self.counters.send_errors, 1);
        let worker = self.worker;
        let Some(t) = self.live(token) else { return };
        if errno == libc::EFAULT {
            // The file shrank under its mapping: the kernel could not read the pages.
            warn!(worker, client = %t.peer, file = %t.kind.name(), "file truncated while being served");
            t.kind.abort(ErrorCode::NOT_DEFINED, AbortReason::FileChanged);
        } else {
            debug!(worker, client = %t.peer, errno, "send failed");
        }
        self.after_event(token.slot(), now, io);
    }

    fn finish<I: Io>(&mut self, idx: u32, outcome: Outcome, now: Timestamp, io: &mut I) {
        self.wheel.cancel(&mut SlotLinks(&mut self.slots), idx);
        let slot = &mut self.slots[idx as usize];
        let Some(t) = slot.transfer.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(idx);
        if let Ok(e) = self.peers.find_entry(self.hasher.hash_one(t.peer), |&i| i == idx) {
            e.remove();
        }
        self.count_source(t.peer.ip(), false);
        if let Via::Transfer(sock) = t.via {
            io.close_transfer(sock);
        }
        self.active -= 1;
        let c = &self.counters;
        Counters::set(&c.active, self.active as u64);
        let bytes = t.kind.bytes();
        Counters::add(if matches!(t.kind, Kind::Write(_)) { &c.uploaded } else { &c.bytes }, bytes);
        Counters::add(&c.retransmits, u64::from(t.kind.retransmits()));
        Counters::add(
            match outcome {
                Outcome::Complete => &c.ok,
                Outcome::Probe => &c.probes,
                Outcome::TimedOut => &c.timeouts,
                Outcome::PeerError(_) | Outcome::Aborted(_) => &c.errors,
            },
            1,
        );
        let elapsed = t.kind.completed().unwrap_or(now).saturating_since(t.kind.started());
        if outcome == Outcome::Complete {
            self.latencies.record_transfer(elapsed);
        }
        let code = match outcome {
            Outcome::PeerError(c) | Outcome::Aborted(c) => Some(c.0),
            _ => None,
        };
        info!(
            worker = self.worker,
            client = %t.peer,
            file = %t.kind.name(),
            direction = %t.kind.direction(),
            mode = %t.kind.mode(),
            bytes,
            ms = elapsed.as_secs_f64() * 1000.0,
            retransmits = t.kind.retransmits(),
            outcome = %outcome.label(),
            code,
            "transfer finished"
        );
    }
}

/// Gathers what read transfer `t` has to send into DATA runs and hands each to the backend as
/// one send; an ERROR goes after the run before it. Returns whether anything was sent.
#[allow(clippy::too_many_arguments)]
fn transmit_read_run<I: Io>(
    t: &mut Transfer,
    now: Timestamp,
    retransmit: &RetransmitConfig,
    token: Token,
    locals: &[LocalEnd],
    head: &mut [u8; MAX_HEAD],
    run: &mut Vec<Segment>,
    io: &mut I,
) -> bool {
    let from = local_end(locals, t.local);
    let (via, to) = (t.via, t.peer);
    let Kind::Read { file, netascii, xfer } = &mut t.kind else { return false };
    run.clear();
    // netascii blocks are translated into scratch: the run's all lie in this chunk, which its
    // send keeps alive instead of the file.
    let mut text = None;
    let mut sent = false;
    loop {
        // A short DATA ends the transfer's data, and a run holds what one send may carry.
        if let Some(first) = run.first() {
            let seg = 4 + first.slice.len;
            let last_short = run.last().is_some_and(|l| l.slice.len < first.slice.len);
            if last_short || run.len() == MAX_RUN || (run.len() + 1) * seg > MAX_RUN_BYTES {
                break;
            }
        }
        let Some(tx) = xfer.poll_transmit(now, retransmit) else { break };
        match tx {
            Transmit::Data { block, offset, len } => {
                let slice = if *netascii {
                    match file.netascii_block(offset, len) {
                        Ok(Some((chunk, slice))) => {
                            if text.as_ref().is_some_and(|c| !std::rc::Rc::ptr_eq(c, &chunk)) && !run.is_empty() {
                                io.send_run(DataRun {
                                    via,
                                    to,
                                    from,
                                    file: text.as_ref().unwrap_or(file),
                                    segs: run,
                                    token,
                                });
                                run.clear();
                                sent = true;
                            }
                            text = Some(chunk);
                            Some(slice)
                        }
                        // No scratch free: not sent now, like a datagram lost on the way.
                        Ok(None) => continue,
                        Err(_) => None,
                    }
                } else {
                    file.raw_slice(offset, len)
                };
                let Some(slice) = slice else {
                    // The file shrank under the mapping: what was gathered is not sent.
                    run.clear();
                    xfer.abort(ErrorCode::NOT_DEFINED, AbortReason::FileChanged);
                    continue;
                };
                if run.first().is_some_and(|f| slice.len > f.slice.len) {
                    io.send_run(DataRun { via, to, from, file: text.as_ref().unwrap_or(file), segs: run, token });
                    run.clear();
                    sent = true;
                }
                run.push(Segment { hdr: wire::data_header(block), slice });
            }
            Transmit::Error { code, message } => {
                if !run.is_empty() {
                    io.send_run(DataRun { via, to, from, file: text.as_ref().unwrap_or(file), segs: run, token });
                    run.clear();
                }
                let n = wire::encode_error(code, message.as_bytes(), head).unwrap_or(0);
                io.send(Outgoing { via, to, from, head: &head[..n], body: None, token: None });
                return true;
            }
            // The first answer sent again on its timer (`send_first` sends it the first time,
            // from the request): written from what the transfer kept of its negotiation.
            Transmit::Oack => {
                let n = xfer.oack().encode_oack_again(head).unwrap_or(0);
                io.send(Outgoing { via, to, from, head: &head[..n], body: None, token: Some(token) });
                sent = true;
            }
        }
    }
    if !run.is_empty() {
        io.send_run(DataRun { via, to, from, file: text.as_ref().unwrap_or(file), segs: run, token });
        run.clear();
        sent = true;
    }
    sent
}

/// Encodes and hands one transmit of read transfer `t` to the backend.
fn transmit_read<I: Io>(
    t: &mut Transfer,
    tx: Transmit,
    token: Token,
    locals: &[LocalEnd],
    head: &mut [u8; MAX_HEAD],
    io: &mut I,
) {
    let from = local_end(locals, t.local);
    let Kind::Read { file, netascii, xfer } = &mut t.kind else { return };
    match tx {
        Transmit::Data { block, offset, len } => {
            // netascii: translated into a chunk of scratch, which the send keeps alive.
            let (text, slice) = match *netascii {
                true => match file.netascii_block(offset, len) {
                    Ok(Some((chunk, slice))) => (Some(chunk), Some(slice)),
                    Ok(None) => return, // no scratch free: resent on the timer
                    Err(_) => (None, None),
                },
                false => (None, file.raw_slice(offset, len)),
            };
            let Some(slice) = slice else {
                xfer.abort(ErrorCode::NOT_DEFINED, AbortReason::FileChanged);
                return;
            };
            let hdr = wire::data_header(block);
            let body = Some(Body { file: text.as_ref().unwrap_or(file), slice });
            io.send(Outgoing { via: t.via, to: t.peer, from, head: &hdr, body, token: Some(token) });
        }
        Transmit::Error { code, message } => {
            let n = wire::encode_error(code, message.as_bytes(), head).unwrap_or(0);
            io.send(Outgoing { via: t.via, to: t.peer, from, head: &head[..n], body: None, token: None });
        }
        // Only ever produced as a first answer, which `send_first` handles.
        Transmit::Oack => {}
    }
}

/// Encodes and hands one transmit of a write transfer (ACK or ERROR: control packets) to the
/// backend.
fn transmit_write<I: Io>(
    via: Via,
    to: SocketAddr,
    from: Option<LocalEnd>,
    tx: WriteTransmit,
    head: &mut [u8; MAX_HEAD],
    io: &mut I,
) {
    let n = match tx {
        WriteTransmit::Ack(b) => {
            head[..4].copy_from_slice(&wire::ack(b));
            4
        }
        WriteTransmit::Error { code, message } => wire::encode_error(code, message.as_bytes(), head).unwrap_or(0),
        // Only ever produced as a first answer, which `send_first` handles.
        WriteTransmit::Oack => return,
    };
    io.send(Outgoing { via, to, from, head: &head[..n], body: None, token: None });
}

/// Whether `tok` names a transfer still held whose client has shown nothing yet.
fn live_unconfirmed(slots: &[Slot], tok: Token) -> bool {
    slots.get(tok.slot() as usize).is_some_and(|s| {
        s.generation == tok.generation() && s.transfer.as_ref().is_some_and(|t| t.kind.is_unconfirmed())
    })
}

fn local_end(locals: &[LocalEnd], idx: u16) -> Option<LocalEnd> {
    locals.get(usize::from(idx)).copied()
}

fn is_error(payload: &[u8]) -> bool {
    payload.len() >= 2 && u16::from_be_bytes([payload[0], payload[1]]) == wire::Opcode::Error as u16
}

/// The address a transfer socket binds to: the address the request was sent to (so that replies
/// come from it), with a port chosen later.
fn transfer_bind_addr(peer: &SocketAddr, local: Option<LocalEnd>) -> SocketAddr {
    match (local, peer) {
        (Some(LocalEnd { ip: IpAddr::V6(ip), ifindex }), _) => {
            let scope = if ip.is_unicast_link_local() { ifindex } else { 0 };
            SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, scope))
        }
        (Some(l), _) => SocketAddr::new(l.ip, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        (None, SocketAddr::V6(_)) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

#[cfg(test)]
mod fake_io;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
