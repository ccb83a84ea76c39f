//! A worker's logic, independent of the I/O backend.
//! (Near 500 lines: the engine's state, its construction and every entry point with its
//! dispatch; each concern they call is a module of its own.)
//!
//! The engine owns the worker's transfers and everything about them: the table of transfers
//! (`table.rs`: a slab indexed by slot, generations to recognise stale events, an index by
//! client address and port), the timer wheel, the queue of transfers with something to send,
//! and the file cache. A backend feeds it datagrams, send errors and the passing of time, and
//! carries out the sends and socket operations it asks for through [`Io`]. What it asks of the
//! host besides is behind [`HostInfo`] (interface MTUs, broadcast addresses) and
//! [`Resolve`] (which file a request names).
//!
//! The modules, one concern each: `admit.rs` decides whether a request may become a transfer
//! (a value, from the policy and a few facts), `sources.rs` counts transfers per source,
//! `open.rs` opens the file or begins the upload and negotiates, `emit.rs` encodes what leaves,
//! `record.rs` turns a finished transfer into counters and its log line, `tids.rs` keeps the
//! port of each client's last transfer so that the next one gets another, `events.rs` handles
//! timers, the stop, commits and failed sends, `kind.rs` puts reads and writes behind one
//! interface, `policy.rs` takes a new serving policy (a reload) and keeps the retransmission
//! settings transfers started with; this file holds the entry points and the dispatch.
//!
//! Architecture invariants:
//! - Nothing here allocates per packet. Allocation happens per transfer (a socket, a slab slot
//!   on first use) or per file version (a mapping), and the tables keep their capacity.
//! - Nothing here blocks: file opens are `openat2` on the page cache, everything else is memory.
//! - A transfer lives and dies on the worker whose socket received its request.
//! - Every request datagram gets at most two answers: the first, and one resend on a timer while
//!   the client has acknowledged nothing (see [`crate::proto::read`]).
//! - A repeated request is answered from what its transfer kept of the negotiation, never
//!   negotiated again.
//! - Uploads write to a temporary file as blocks arrive; syncing and renaming it into place waits
//!   for the disk, so it happens on the commit thread (`commit.rs`), and the final ACK leaves
//!   only once it succeeded.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use super::commit::{CommitJob, CommitLink};
use super::io::{Datagram, Io, MAX_HEAD, MAX_RUN, Segment, Token, Via};
use super::limits::SourceLimiter;
use super::reply_budget::ReplyBudget;
use super::socket::LocalEnd;
use super::stats::{Counter, Counters, Latencies};
use crate::config::{ServePolicy, ServerConfig};
use crate::fs::{FileCache, Root, UploadRoot};
use crate::proto::wire::{self, MAX_FILENAME_LEN, Packet, Request};
use crate::proto::{ErrorCode, LocalFailure, Outcome, Repeat, Timestamp};
use crate::timer::TimerWheel;
use crossbeam_utils::CachePadded;

mod admit;
mod emit;
mod events;
mod fold;
mod host;
mod kind;
mod lookup;
mod open;
mod peer;
mod policy;
mod record;
mod resolve;
mod sources;
mod table;
mod tids;

use admit::{Admission, Facts, Refusal, admit, screen};
use emit::{local_end, transmit_read_run, transmit_write};
use fold::Fold;
use host::{HostInfo, KernelHost};
use kind::Kind;
use lookup::Macs;
use policy::Retransmits;
use record::PeerMessage;
use resolve::{Decided, OneRoot, Resolve};
use sources::Sources;
use table::Table;
use tids::RecentTids;

/// Timer wheel resolution.
const TICK_US: u64 = 1_000;
/// How often idle files are dropped.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How long a failure to open a transfer socket counts as pressure.
const PRESSURE_MEMORY: Duration = Duration::from_secs(1);

/// The worker's logic. See the module documentation.
pub(crate) struct Engine {
    worker: usize,
    /// The serving policy of new requests (a reload replaces it: `policy.rs`).
    policy: Arc<ServePolicy>,
    /// The retransmission settings of the transfers held, by the index each transfer keeps.
    retransmits: Retransmits,
    /// What stays fixed while the server runs.
    settings: EngineSettings,
    counters: Arc<CachePadded<Counters>>,
    latencies: Latencies,
    files: FileCache,
    resolver: Box<dyn Resolve>,
    host: Box<dyn HostInfo>,
    table: Table,
    /// Transfers held per source, for the fair share under pressure.
    sources: Sources,
    /// The port of each client's last transfer: its next one is given another.
    tids: RecentTids,
    wheel: TimerWheel,
    due: Vec<u32>,
    ready: VecDeque<u32>,
    locals: Vec<LocalEnd>,
    active: usize,
    stop: Option<Timestamp>,
    aborted: bool,
    next_housekeeping: Timestamp,
    uploads: Option<Arc<UploadRoot>>,
    commits: Option<CommitLink>,
    limiter: Option<SourceLimiter>,
    /// When a transfer socket last failed to open.
    open_failed: Option<Timestamp>,
    /// ERRORs sent unasked (to malformed and foreign datagrams).
    unasked: ReplyBudget,
    /// Repeated refusals and ignores folded into one record per client and window.
    fold: Fold,
    /// The message of the ERROR a client just sent, for its transfer's record.
    peer_message: PeerMessage,
    /// Transfers the worker may hold at once.
    capacity: usize,
    /// Scratch for a request's relative path.
    path: [u8; MAX_FILENAME_LEN],
    /// Scratch for the path in a client's view, and for a name found with case ignored.
    view: [u8; MAX_FILENAME_LEN],
    found: [u8; MAX_FILENAME_LEN],
    /// What decided the name of the request being prepared, and the length of its resolved
    /// path in `path`, for its records.
    decided: Decided,
    resolved: usize,
    /// The message of the map file rule that refused the request being prepared.
    rule_message: Option<String>,
    /// Hardware addresses of clients, for `{mac}` views.
    macs: Macs,
    /// Scratch for control packets and DATA headers.
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
    /// An engine on the kernel's view of the host (tests give it another with `with_host`).
    pub(crate) fn new(
        worker: usize,
        policy: Arc<ServePolicy>,
        settings: EngineSettings,
        parts: EngineParts,
        now: Timestamp,
    ) -> Self {
        let EngineParts { root, uploads, commits, counters, capacity } = parts;
        let resolver = Box::new(OneRoot::new(&root));
        let mut files = FileCache::new(root, settings.file_cache);
        files.set_world_readable_only(policy.world_readable_only);
        Self {
            worker,
            resolver,
            files,
            host: Box::new(KernelHost::default()),
            limiter: policy.source_limit().map(|rate| SourceLimiter::worker_share(rate, settings.workers)),
            retransmits: Retransmits::new(policy.retransmit),
            policy,
            settings,
            counters,
            uploads,
            commits,
            open_failed: None,
            unasked: ReplyBudget::new(now),
            fold: Fold::default(),
            peer_message: PeerMessage::default(),
            latencies: Latencies::new(),
            table: Table::new(capacity),
            capacity,
            sources: Sources::new(capacity),
            tids: RecentTids::new(capacity),
            wheel: TimerWheel::new(TICK_US, now),
            due: Vec::new(),
            ready: VecDeque::new(),
            locals: Vec::new(),
            active: 0,
            stop: None,
            aborted: false,
            next_housekeeping: now + HOUSEKEEPING,
            path: [0; MAX_FILENAME_LEN],
            view: [0; MAX_FILENAME_LEN],
            found: [0; MAX_FILENAME_LEN],
            decided: Decided::default(),
            resolved: 0,
            rule_message: None,
            macs: Macs::default(),
            head: [0; MAX_HEAD],
            run: Vec::with_capacity(MAX_RUN),
        }
    }

    /// The engine asking `host` about interfaces instead of the kernel.
    #[cfg(test)]
    pub(crate) fn with_host(mut self, host: impl HostInfo + 'static) -> Self {
        self.host = Box::new(host);
        self
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

    /// Whether a transfer's timer is due at `now`: the backend then receives once more before
    /// [`on_timers`](Self::on_timers), so that a resend never answers an ACK or a new request
    /// already waiting in a socket.
    pub(crate) fn timer_due(&self, now: Timestamp) -> bool {
        self.wheel.next_due().is_some_and(|t| t <= now)
    }

    /// When the backend must call [`on_timers`](Self::on_timers) next, if ever.
    pub(crate) fn next_wakeup(&self) -> Option<Timestamp> {
        let grace = self.stop.filter(|_| !self.aborted);
        match (self.wheel.next_due(), grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The token of slot `idx`.
    fn token(&self, idx: u32) -> Token {
        self.table.token(idx)
    }

    /// Handles a received datagram.
    pub(crate) fn on_datagram<I: Io>(&mut self, now: Timestamp, d: &Datagram<'_>, io: &mut I) {
        match d.via {
            Via::Transfer(_) => self.on_transfer_datagram(now, d, io),
            Via::Listen(listen) => self.on_listen_datagram(now, listen, d, io),
        }
    }

    fn on_transfer_datagram<I: Io>(&mut self, now: Timestamp, d: &Datagram<'_>, io: &mut I) {
        let Some(slot) = d.slot else { return };
        // The transfer the socket was opened for, if it still holds it: a datagram read late from
        // a socket since closed, or meant for a transfer that ended, is dropped.
        let Some(t) = self.table.get_mut(slot).filter(|t| t.route.via() == d.via) else { return };
        if !t.client.is(&d.peer) {
            //= https://www.rfc-editor.org/rfc/rfc1350#section-4
            //# If a source TID does not match, the packet should be discarded as erroneously sent
            //# from somewhere else. An error packet should be sent to the source of the incorrect
            //# packet, while not disturbing the transfer.
            self.counters.add(Counter::Foreign, 1);
            if !is_error(d.payload) {
                self.reply_unasked(now, io, d, ErrorCode::UNKNOWN_TID, "unknown transfer ID");
            }
            return;
        }
        match Packet::decode(d.payload) {
            Ok(p) if !d.truncated => self.handle_packet(slot, now, &p),
            _ => self.counters.add(Counter::Malformed, 1),
        }
        self.after_event(slot, now, io);
        self.peer_message.clear();
    }

    /// Feeds a packet from its client to transfer `idx`, writing upload data as it arrives and
    /// handing a finished upload to the commit thread.
    fn handle_packet(&mut self, idx: u32, now: Timestamp, p: &Packet<'_>) {
        match p {
            Packet::Error { message, .. } => self.peer_message.set(message),
            _ => self.peer_message.clear(),
        }
        let token = self.token(idx);
        let Some(t) = self.table.get_mut(idx) else { return };
        let retransmit = self.retransmits.get(t.route.retransmit());
        match &mut t.kind {
            Kind::Read { xfer, .. } => {
                // The first ACK (ACK 0 of an OACK, ACK 1 in lockstep) is what confirms a read.
                let unconfirmed = !xfer.is_confirmed() && matches!(p, Packet::Ack { .. });
                xfer.handle_packet(now, p, retransmit);
                if unconfirmed && xfer.is_confirmed() {
                    record::first_ack(&self.counters, t, now);
                }
            }
            Kind::Write(w) => {
                if let Some((_, data)) = w.xfer.handle_packet(now, p, retransmit) {
                    if let Some(Err(e)) = w.upload.as_mut().map(|u| u.write(data)) {
                        w.xfer.fail(LocalFailure::from(&e));
                        return;
                    }
                }
                if w.xfer.wants_commit() {
                    if let (Some(upload), Some(link)) = (w.upload.take(), &self.commits) {
                        let job = CommitJob { worker: self.worker, token, upload };
                        if link.jobs.send(job).is_err() {
                            w.xfer.commit_result(now, Err(LocalFailure::CommitFailed.into()), retransmit);
                        }
                    }
                }
            }
        }
    }

    fn on_listen_datagram<I: Io>(&mut self, now: Timestamp, listen: u32, d: &Datagram<'_>, io: &mut I) {
        let to_broadcast = d.local.is_some_and(|local| self.is_broadcast(local.ip, now));
        if let Admission::Ignore(reason) = screen(to_broadcast, d.peer.ip(), &self.policy) {
            self.counters.add(reason.ignore_counter(), 1);
            // Only a request is recorded: the file it named, if it decodes.
            if let (false, Ok(Packet::Request(r))) = (d.truncated, Packet::decode(d.payload)) {
                self.record_no_transfer(now, d, Some(&r), reason, None);
            }
            return;
        }
        let packet = if d.truncated { Err(None) } else { Packet::decode(d.payload).map_err(Some) };
        match packet {
            Ok(Packet::Request(r)) => {
                self.log_request(d, &r);
                self.on_request(now, listen, d, &r, io)
            }
            Ok(p) => {
                if self.settings.single_port {
                    if let Some(idx) = self.table.find_peer(&d.peer) {
                        self.handle_packet(idx, now, &p);
                        self.after_event(idx, now, io);
                        self.peer_message.clear();
                        return;
                    }
                    // A duplicate of a transfer that has just ended: an ERROR 5 from this port
                    // would reach a client already waiting for its next request's answer here.
                    if self.tids.dallying(&d.peer, now) {
                        self.counters.add(Counter::Late, 1);
                        return;
                    }
                }
                // DATA, ACK or OACK that belongs to no transfer of ours. Never answer an ERROR.
                if !matches!(p, Packet::Error { .. }) {
                    self.counters.add(Counter::Foreign, 1);
                    self.reply_unasked(now, io, d, ErrorCode::UNKNOWN_TID, "unknown transfer ID");
                }
            }
            Err(e) => {
                self.counters.add(Counter::Malformed, 1);
                if self.settings.single_port
                    && (self.table.find_peer(&d.peer).is_some() || self.tids.dallying(&d.peer, now))
                {
                    return;
                }
                let msg = e.map_or("request too long", |e| e.message());
                self.reply_unasked(now, io, d, ErrorCode::ILLEGAL_OPERATION, msg);
            }
        }
    }

    /// A request: a copy of one already answered is dropped, a repeat is answered by its
    /// transfer (never a second one); anything else passes admission, then the file, then the
    /// room in the table.
    fn on_request<I: Io>(&mut self, now: Timestamp, listen: u32, d: &Datagram<'_>, r: &Request<'_>, io: &mut I) {
        self.counters.add(Counter::Requests, 1);
        let live = self.table.find_peer(&d.peer);
        if self.is_copy(now, d, live) {
            // Sent before the answer to it could reach the client: nothing to start or resend.
            self.counters.add(Counter::DuplicateRequests, 1);
            return;
        }
        if let Some(idx) = live {
            let t = self.table.get_mut(idx).expect("indexed slots are live");
            let retransmit = self.retransmits.get(t.route.retransmit());
            // The same bytes as the transfer's request: a repeat.
            let repeat = (t.asked.request() == d.payload).then(|| t.kind.handle_repeated_request(now, retransmit));
            match repeat {
                // The client repeated its request: the same transfer, never a second one.
                Some(Repeat::ResendFirst | Repeat::Ignored) => {
                    self.counters.add(Counter::DuplicateRequests, 1);
                    if repeat == Some(Repeat::ResendFirst) {
                        // The first answer again, from what the transfer kept of its negotiation.
                        self.send_first(idx, now, &r.options, io);
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
        let ip = d.peer.ip();
        let under_pressure = self.under_pressure(now);
        let table = &self.table;
        let facts = Facts {
            stopping: self.stop.is_some(),
            uploads: self.uploads.is_some(),
            under_pressure,
            // Read only under pressure, where it counts.
            at_share: under_pressure && self.sources.at_share(ip, || table.transfers().map(|t| t.client.ip())),
        };
        let admission = admit(r.kind, r.mode, ip, &self.policy, &facts, self.limiter.as_mut(), now);
        let admission = match admission {
            Admission::Accept => match self.prepare(now, d, r) {
                // Full: a transfer whose client has shown nothing (perhaps a forged request's)
                // makes room, but only for a request that becomes a transfer (a miss or a
                // refusal takes no room); only a table of transfers that all progress is busy.
                Ok(_) if self.active >= self.capacity && !self.evict_unconfirmed(now, io) => {
                    Admission::refuse(Refusal::Busy)
                }
                Ok(prepared) => match self.start(now, listen, d, prepared, io) {
                    Some(idx) => {
                        self.send_first(idx, now, &r.options, io);
                        self.after_event(idx, now, io);
                        return;
                    }
                    None => Admission::refuse(Refusal::Busy),
                },
                Err(refused) => refused,
            },
            other => other,
        };
        match admission {
            Admission::Ignore(reason) => {
                self.counters.add(reason.ignore_counter(), 1);
                self.record_no_transfer(now, d, Some(r), reason, None);
            }
            Admission::Refuse { refusal, counter } => {
                self.counters.add(counter, 1);
                match self.rule_message.take() {
                    // A map file rule's own message (tftp-hpa's `a` rule).
                    Some(message) => self.reply(io, d.via, d.peer, d.local, refusal.code(), &message),
                    None => self.refuse(io, d.via, d.peer, d.local, refusal),
                }
                self.tids.refused(&d.peer, d.payload, now);
                self.record_no_transfer(now, d, Some(r), refusal.reason(), Some(refusal.code()));
            }
            Admission::Accept => {}
        }
        self.decided = Decided::default();
    }

    /// Whether request `d` arrived before the answer to the client's last request, the same as
    /// it, was sent: a copy the client sent before it could see that answer, which waited in
    /// the listening socket's queue (see `tids.rs`). That answer's transfer may be running or
    /// over, or the request may have been refused. A client with a transfer running for
    /// another request has moved on: its request is new. `live` is the slot of the client's
    /// transfer, if it has one.
    fn is_copy(&self, now: Timestamp, d: &Datagram<'_>, live: Option<u32>) -> bool {
        let Some(arrived) = d.arrived else { return false };
        match live.and_then(|idx| self.table.get(idx)) {
            Some(t) => t.asked.request() == d.payload && self.tids.before_start(arrived, t.kind.started()),
            None => self.tids.is_copy(&d.peer, d.payload, arrived, now),
        }
    }

    /// Whether this worker is short of room for transfers: its table at least half full, or a
    /// transfer socket failed to open (descriptors or ports exhausted) within [`PRESSURE_MEMORY`].
    /// Only then do per-source limits apply (unless configured to apply always).
    fn under_pressure(&self, now: Timestamp) -> bool {
        self.active >= self.capacity.div_ceil(2)
            || self.open_failed.is_some_and(|t| now.saturating_since(t) < PRESSURE_MEMORY)
    }

    /// Ends the oldest transfer whose client has shown nothing yet, without a word (a real client
    /// repeats its request); returns whether there was one.
    fn evict_unconfirmed<I: Io>(&mut self, now: Timestamp, io: &mut I) -> bool {
        let Some(idx) = self.table.pop_oldest_unconfirmed() else { return false };
        if let Some(t) = self.table.get_mut(idx) {
            t.kind.cancel(Outcome::TimedOut);
        }
        self.counters.add(Counter::Evicted, 1);
        self.finish(idx, Outcome::TimedOut, now, io);
        true
    }

    /// Sends an ERROR to a datagram that was no request and belongs to no transfer, within the
    /// budget for such replies (the datagram's source may be forged); beyond it, nothing.
    fn reply_unasked<I: Io>(&mut self, now: Timestamp, io: &mut I, d: &Datagram<'_>, code: ErrorCode, msg: &str) {
        if self.unasked.take(now) {
            self.reply(io, d.via, d.peer, d.local, code, msg);
        } else {
            self.counters.add(Counter::ErrorsWithheld, 1);
        }
    }

    /// Queues, arms or ends a transfer after anything happened to it.
    fn after_event<I: Io>(&mut self, idx: u32, now: Timestamp, io: &mut I) {
        let Some(t) = self.table.get_mut(idx) else { return };
        if let Some(outcome) = t.kind.outcome() {
            self.finish(idx, outcome, now, io);
            return;
        }
        if t.kind.wants_transmit() && !t.route.queued() {
            t.route.set_queued(true);
            self.ready.push_back(idx);
        }
        match t.kind.poll_timeout() {
            Some(deadline) => self.wheel.arm(&mut self.table.links(), idx, deadline),
            None => self.wheel.cancel(&mut self.table.links(), idx),
        }
    }

    /// The answers of the loop turn that began at `began` went to the kernel at `sent` (the
    /// backend calls this as its wait begins, which is when its queued sends go, or went): when
    /// each request answered in the turn was answered, against which a copy of it is told (see
    /// `tids.rs`).
    pub(crate) fn answers_sent(&mut self, began: Timestamp, sent: Timestamp) {
        // With sends left waiting for room (every send slot taken), a first answer given in
        // this turn may leave in a later one: its turn is timed when the queue has emptied.
        self.tids.answers_sent(began, sent, !self.ready.is_empty());
    }

    /// Sends what queued transfers have to send, as far as the backend has room.
    pub(crate) fn flush<I: Io>(&mut self, now: Timestamp, io: &mut I) {
        while let Some(idx) = self.ready.pop_front() {
            let token = self.table.token(idx);
            let Some(t) = self.table.get_mut(idx) else { continue };
            let retransmit = self.retransmits.get(t.route.retransmit());
            let from = local_end(&self.locals, t.route.local());
            loop {
                if !io.can_send() {
                    self.ready.push_front(idx);
                    return;
                }
                match &mut t.kind {
                    Kind::Read { .. } => {
                        if !transmit_read_run(t, now, retransmit, token, from, &mut self.head, &mut self.run, io) {
                            break;
                        }
                    }
                    Kind::Write(w) => {
                        let Some(tx) = w.xfer.poll_transmit() else { break };
                        transmit_write(t.route.via(), t.peer(), from, tx, None, token, &mut self.head, io);
                    }
                }
            }
            t.route.set_queued(false);
            self.after_event(idx, now, io);
        }
    }
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
