//! A lossy link in virtual time between the real engine and protocol clients.
//!
//! [`LinkIo`] is the engine's backend: every datagram the engine sends (a run of DATA cut into
//! its datagrams, as the kernel's UDP GSO would) goes onto a [`Link`] that loses, duplicates,
//! reorders and delays it with a seeded generator. Clients from [`crate::proto::client`]
//! ([`ReadClient`] for downloads, [`WriteClient`] for uploads) sit at the other end, several at
//! once, each from its own address. The engine is driven the way a worker drives it: a datagram
//! is `on_datagram` then `flush`, expired timers are `on_timers` then `flush`, and a backend
//! whose send queue filled up calls `flush` again once sends complete. Time jumps to the next
//! event: a packet's arrival, the engine's `next_wakeup`, a client's timeout or start.
//!
//! So repeat handling, the ready queue, run boundaries and the timer wheel all see the losses;
//! every byte of every file is checked, and every loop is bounded in steps and virtual time so
//! that a bug fails a test instead of hanging it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::{Engine, EngineParts, EngineSettings};
use crate::config::{ServerConfig, WriteConfig};
use crate::fs::{Root, UploadRoot};
use crate::proto::wire::{self, Mode, Packet};
use crate::proto::{
    ClientConfig, ClientOutcome, ClientTransmit, ErrorCode, ReadClient, RequestOptions, RetransmitConfig, RtoBounds,
    Timestamp, UploadTransmit, WriteClient,
};
use crate::server::commit::{CommitDone, CommitJob, CommitLink};
use crate::server::io::{DataRun, Datagram, Io, MAX_RUN, MAX_RUN_BYTES, Outgoing, SockRef, Token, Via};
use crate::server::socket::LocalEnd;
use crate::server::stats::Counters;

/// The server's address, and its listening socket.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(SERVER_IP), 69);

/// Most simulation steps of one case, and most virtual time: a bug fails, never hangs.
const MAX_STEPS: u64 = 20_000_000;
const MAX_VIRTUAL: Duration = Duration::from_secs(1800);

/// The server's retransmission policy in the simulation: the default timeout bounds, patient
/// enough that 20% loss in both directions ends in completed transfers.
const SERVER_RETRANSMIT: RetransmitConfig = RetransmitConfig {
    rto: RtoBounds { initial: Duration::from_secs(1), min: Duration::from_millis(10), max: Duration::from_secs(2) },
    max_retries: 12,
    patience: Duration::from_secs(30),
    max_silence: Duration::from_secs(60),
};

/// 200 ms like the load generator; 40 retries = 8 s of silence before giving up.
const CLIENT_CFG: ClientConfig = ClientConfig { timeout: Duration::from_millis(200), max_retries: 40 };

/// splitmix64: a tiny seeded generator, so that every run sees the same losses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// What the link does to each datagram, in either direction.
#[derive(Clone, Copy, Debug)]
struct LinkParams {
    loss: f64,
    dup: f64,
    reorder: f64,
    latency: Duration,
}

const CLEAN: LinkParams = LinkParams { loss: 0.0, dup: 0.0, reorder: 0.0, latency: Duration::from_micros(500) };

#[derive(Debug, Default, Clone, Copy)]
struct LinkStats {
    sent: u64,
    dropped: u64,
    duplicated: u64,
    reordered: u64,
}

/// A datagram in flight: arrival, sequence (a stable order), source, destination, bytes.
type InFlight = Reverse<(Timestamp, u64, SocketAddr, SocketAddr, Vec<u8>)>;

struct Link {
    p: LinkParams,
    rng: Rng,
    seq: u64,
    queue: BinaryHeap<InFlight>,
    stats: LinkStats,
    /// From this time on every datagram is lost (a client that goes away, a cable pulled).
    dead_after: Timestamp,
}

impl Link {
    fn new(p: LinkParams, seed: u64) -> Self {
        Self {
            p,
            rng: Rng(seed ^ 0xdead_beef),
            seq: 0,
            queue: BinaryHeap::new(),
            stats: LinkStats::default(),
            dead_after: Timestamp::NEVER,
        }
    }

    fn send(&mut self, now: Timestamp, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.stats.sent += 1;
        if now >= self.dead_after || self.rng.chance(self.p.loss) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.p.dup) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + self.p.latency;
            if self.rng.chance(self.p.reorder) {
                self.stats.reordered += 1;
                at = at + self.p.latency * 3;
            }
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq, from, to, bytes.to_vec())));
        }
    }

    fn next_arrival(&self) -> Timestamp {
        self.queue.peek().map_or(Timestamp::NEVER, |Reverse((t, ..))| *t)
    }
}

/// A transfer socket the engine opened.
struct Sock {
    addr: SocketAddr,
    token: Token,
    open: bool,
}

/// What the server put on the wire, besides the link's own counts.
#[derive(Debug, Default, Clone, Copy)]
struct ServerSends {
    /// DATA datagrams (runs cut into theirs).
    data: u64,
    /// Runs handed over (one send each, or one per datagram where GSO is off), and the
    /// datagrams in them.
    runs: u64,
    run_segments: u64,
}

/// The engine's backend in the simulation: sends go onto the link.
struct LinkIo {
    link: Link,
    socks: Vec<Sock>,
    /// DATA sends the backend accepts before its send queue is full (refilled as sends
    /// "complete", after each `flush`).
    room: usize,
    room_cap: usize,
    sends: ServerSends,
}

impl LinkIo {
    fn source(&self, via: Via) -> SocketAddr {
        match via {
            Via::Listen(_) => LISTEN,
            Via::Transfer(SockRef(i)) => self.socks[i as usize].addr,
        }
    }

    fn put(&mut self, now: Timestamp, via: Via, to: SocketAddr, packet: &[u8]) {
        if packet.get(..2) == Some(&[0, 3]) {
            self.sends.data += 1;
        }
        let from = self.source(via);
        self.link.send(now, from, to, packet);
    }
}

/// The clock the link uses for the engine's sends: the engine does not pass its `now` to `Io`,
/// so the simulation sets it before every call into the engine.
struct Clocked<'a> {
    io: &'a mut LinkIo,
    now: Timestamp,
}

impl Io for Clocked<'_> {
    fn open_transfer(&mut self, local: SocketAddr, token: Token) -> std::io::Result<SockRef> {
        let ip = if local.ip().is_unspecified() { IpAddr::V4(SERVER_IP) } else { local.ip() };
        let port = 40_000 + self.io.socks.len() as u16;
        self.io.socks.push(Sock { addr: SocketAddr::new(ip, port), token, open: true });
        Ok(SockRef(self.io.socks.len() as u32 - 1))
    }

    fn close_transfer(&mut self, sock: SockRef) {
        let s = &mut self.io.socks[sock.0 as usize];
        assert!(s.open, "socket {sock:?} closed twice");
        s.open = false;
    }

    fn can_send(&self) -> bool {
        self.io.room > 0
    }

    fn send(&mut self, out: Outgoing<'_>) {
        let mut p = out.head.to_vec();
        if let Some(b) = out.body {
            self.io.room = self.io.room.saturating_sub(1);
            // SAFETY: the simulation's files are never truncated while served; the engine
            // bounds-checked the slice against the mapping that `b.file` keeps alive.
            p.extend_from_slice(unsafe { std::slice::from_raw_parts(b.slice.ptr, b.slice.len) });
        }
        self.io.put(self.now, out.via, out.to, &p);
    }

    fn send_run(&mut self, run: DataRun<'_>) {
        // What the kernel would refuse or the engine must never build.
        let segs = run.segs;
        assert!(!segs.is_empty() && segs.len() <= MAX_RUN, "run of {} segments", segs.len());
        let bytes: usize = segs.iter().map(|s| 4 + s.slice.len).sum();
        assert!(bytes <= MAX_RUN_BYTES, "run of {bytes} bytes");
        let len = run.segment_len();
        for (i, s) in segs.iter().enumerate() {
            let block = u16::from_be_bytes([s.hdr[2], s.hdr[3]]);
            let first = u16::from_be_bytes([segs[0].hdr[2], segs[0].hdr[3]]);
            assert_eq!(block, first.wrapping_add(i as u16), "run blocks not consecutive");
            let last = i + 1 == segs.len();
            assert!(if last { 4 + s.slice.len <= len } else { 4 + s.slice.len == len }, "segment lengths");
        }
        self.io.sends.runs += 1;
        self.io.sends.run_segments += segs.len() as u64;
        self.io.room = self.io.room.saturating_sub(1);
        // Cut into datagrams as GSO does; each meets the link on its own.
        let mut p = Vec::with_capacity(len);
        for s in segs {
            p.clear();
            p.extend_from_slice(&s.hdr);
            // SAFETY: as in `send`.
            p.extend_from_slice(unsafe { std::slice::from_raw_parts(s.slice.ptr, s.slice.len) });
            self.io.put(self.now, run.via, run.to, &p);
        }
    }
}

/// A client's side of its transfer.
enum Role {
    Read { c: ReadClient, got: Vec<u8> },
    Write { c: WriteClient },
}

/// One client: its address, its transfer, what it must end with.
struct Client {
    addr: SocketAddr,
    name: String,
    /// The file's contents: what a download must receive, what an upload sends.
    want: Vec<u8>,
    role: Role,
    /// The server's transfer ID, from its first answer.
    server: Option<SocketAddr>,
    start: Timestamp,
    started: bool,
    /// The request goes out this many extra times when first sent.
    extra_requests: u8,
    /// The request goes out once more after the first answer came (a client that repeats it).
    repeat_after_answer: bool,
    /// Answers from another address than the server's transfer ID (answered with ERROR 5).
    strays: u32,
    done_at: Option<Timestamp>,
}

impl Client {
    fn outcome(&self) -> Option<ClientOutcome> {
        match &self.role {
            Role::Read { c, .. } => c.outcome(),
            Role::Write { c } => c.outcome(),
        }
    }

    /// Requests, ACKs and DATA the client sent again on its own timer.
    fn retransmits(&self) -> u32 {
        match &self.role {
            Role::Read { c, .. } => c.retransmits(),
            Role::Write { c } => c.retransmits(),
        }
    }

    fn timeout(&self) -> Timestamp {
        if !self.started {
            return self.start;
        }
        match &self.role {
            Role::Read { c, .. } => c.poll_timeout(),
            Role::Write { c } => c.poll_timeout(),
        }
        .unwrap_or(Timestamp::NEVER)
    }

    fn request(&self, out: &mut [u8]) -> usize {
        let r = match &self.role {
            Role::Read { c, .. } => c.encode_request(self.name.as_bytes(), Mode::Octet, out),
            Role::Write { c } => c.encode_request(self.name.as_bytes(), Mode::Octet, out),
        };
        r.expect("a request fits")
    }

    fn on_datagram(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8], link: &mut Link) {
        let tid = *self.server.get_or_insert(from);
        if from != tid {
            // RFC 1350: another source is answered with ERROR 5 and the transfer goes on.
            self.strays += 1;
            let mut buf = [0u8; 64];
            let n = wire::encode_error(ErrorCode::UNKNOWN_TID, b"unknown transfer ID", &mut buf).expect("fits");
            link.send(now, self.addr, from, &buf[..n]);
            return;
        }
        let p = Packet::decode(bytes).unwrap_or_else(|e| panic!("{}: server sent garbage: {e}", self.name));
        let first = self.outcome().is_none() && self.repeat_after_answer;
        match &mut self.role {
            Role::Read { c, got } => {
                if let Some((offset, data)) = c.handle_packet(now, &p, &CLIENT_CFG) {
                    let offset = offset as usize;
                    assert_eq!(offset, got.len(), "{}: delivery out of order", self.name);
                    let end = offset + data.len();
                    assert!(end <= self.want.len(), "{}: DATA past the end of the file", self.name);
                    assert!(data == &self.want[offset..end], "{}: bytes at {offset} differ from the file", self.name);
                    got.extend_from_slice(data);
                }
            }
            Role::Write { c } => c.handle_packet(now, &p),
        }
        if first {
            self.repeat_after_answer = false;
            let mut buf = [0u8; 600];
            let n = self.request(&mut buf);
            link.send(now, self.addr, LISTEN, &buf[..n]);
        }
        if self.done_at.is_none() && self.outcome().is_some() {
            self.done_at = Some(now);
        }
    }

    fn on_timer(&mut self, now: Timestamp) {
        if !self.started {
            return;
        }
        match &mut self.role {
            Role::Read { c, .. } => c.handle_timeout(now, &CLIENT_CFG),
            Role::Write { c } => c.handle_timeout(now),
        }
        if self.done_at.is_none() && self.outcome().is_some() {
            self.done_at = Some(now);
        }
    }

    fn transmit(&mut self, now: Timestamp, link: &mut Link) {
        if now < self.start {
            return;
        }
        self.started = true;
        let mut buf = vec![0u8; 70_000];
        loop {
            let (n, to, request) = match &mut self.role {
                Role::Read { c, .. } => match c.poll_transmit(now, &CLIENT_CFG) {
                    None => break,
                    Some(ClientTransmit::Request) => (0, LISTEN, true),
                    Some(ClientTransmit::Ack(b)) => {
                        buf[..4].copy_from_slice(&wire::ack(b));
                        (4, self.server.unwrap_or(LISTEN), false)
                    }
                    Some(ClientTransmit::Error { code, message }) => {
                        let n = wire::encode_error(code, message.as_bytes(), &mut buf).expect("fits");
                        (n, self.server.unwrap_or(LISTEN), false)
                    }
                },
                Role::Write { c } => match c.poll_transmit(now) {
                    None => break,
                    Some(UploadTransmit::Request) => (0, LISTEN, true),
                    Some(UploadTransmit::Data { block, offset, len }) => {
                        buf[..4].copy_from_slice(&wire::data_header(block));
                        let offset = offset as usize;
                        buf[4..4 + len].copy_from_slice(&self.want[offset..offset + len]);
                        (4 + len, self.server.unwrap_or(LISTEN), false)
                    }
                    Some(UploadTransmit::Error { code, message }) => {
                        let n = wire::encode_error(code, message.as_bytes(), &mut buf).expect("fits");
                        (n, self.server.unwrap_or(LISTEN), false)
                    }
                },
            };
            if request {
                let n = self.request(&mut buf);
                for _ in 0..=std::mem::take(&mut self.extra_requests) {
                    link.send(now, self.addr, LISTEN, &buf[..n]);
                }
            } else {
                link.send(now, self.addr, to, &buf[..n]);
            }
        }
        if self.done_at.is_none() && self.outcome().is_some() {
            self.done_at = Some(now);
        }
    }
}

/// One simulation: an engine serving a temporary root, its link, its clients.
struct Sim {
    dir: tempfile::TempDir,
    engine: Engine,
    io: LinkIo,
    counters: Arc<CachePadded<Counters>>,
    commits: Option<(crossbeam_channel::Receiver<CommitJob>, crossbeam_channel::Sender<CommitDone>)>,
    clients: Vec<Client>,
    single_port: bool,
    now: Timestamp,
    steps: u64,
    /// Delivered to a transfer socket already closed (a kernel would answer ICMP).
    unreachable: u64,
}

/// How one simulation is set up.
#[derive(Clone, Copy, Debug)]
struct Setup {
    link: LinkParams,
    single_port: bool,
    uploads: bool,
    /// DATA sends the backend takes between completions.
    room: usize,
    seed: u64,
}

impl Setup {
    fn new(link: LinkParams, single_port: bool, seed: u64) -> Self {
        Self { link, single_port, uploads: false, room: 1024, seed }
    }
}

fn file_of(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed);
    (0..len).map(|_| r.next() as u8).collect()
}

fn opts(blksize: u16, window: u16) -> RequestOptions {
    RequestOptions { blksize: Some(blksize), windowsize: (window > 1).then_some(window), tsize: true, timeout: None }
}

impl Sim {
    /// An engine as `Server::start` builds it, over the link `setup` describes.
    fn new(setup: Setup) -> Self {
        let dir = tempfile::tempdir().expect("temporary root");
        let mut cfg = ServerConfig { root: dir.path().to_path_buf(), ..Default::default() };
        cfg.io.single_port = setup.single_port;
        cfg.serve.retransmit = SERVER_RETRANSMIT;
        if setup.uploads {
            cfg.write = Some(WriteConfig {
                dir: None,
                in_served_tree: true,
                overwrite_served_files: false,
                allow_single_port: setup.single_port,
            });
            cfg.serve.upload.create = true;
        }
        cfg.validate().expect("a valid configuration");
        let root = Arc::new(Root::open(&cfg.root, cfg.follow_symlinks).expect("root opens"));
        let counters = Arc::new(CachePadded::new(Counters::default()));
        let uploads = cfg.upload_dir().map(|d| Arc::new(UploadRoot::open(d).expect("upload root opens")));
        let (mut link, mut commits) = (None, None);
        if uploads.is_some() {
            let (jtx, jrx) = crossbeam_channel::unbounded();
            let (dtx, drx) = crossbeam_channel::unbounded();
            link = Some(CommitLink { jobs: jtx, done: drx });
            commits = Some((jrx, dtx));
        }
        let capacity = cfg.io.max_transfers;
        let parts = EngineParts { root, uploads, commits: link, counters: Arc::clone(&counters), capacity };
        let policy = Arc::new(cfg.effective_policy());
        let engine = Engine::new(0, policy, EngineSettings::of(&cfg), parts, Timestamp::ZERO);
        let io = LinkIo {
            link: Link::new(setup.link, setup.seed),
            socks: Vec::new(),
            room: setup.room,
            room_cap: setup.room,
            sends: ServerSends::default(),
        };
        let single_port = setup.single_port;
        Self {
            dir,
            engine,
            io,
            counters,
            commits,
            clients: Vec::new(),
            single_port,
            now: Timestamp::ZERO,
            steps: 0,
            unreachable: 0,
        }
    }

    fn client_addr(&self) -> SocketAddr {
        let n = self.clients.len();
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + n as u8)), 2000 + n as u16)
    }

    /// A client that downloads `name` (created in the root with `len` seeded bytes), starting
    /// at `start`.
    fn add_read(&mut self, name: &str, len: usize, options: RequestOptions, start: Duration) -> usize {
        let want = file_of(len, self.clients.len() as u64 * 7919 + len as u64);
        std::fs::write(self.dir.path().join(name), &want).expect("test file written");
        let start = Timestamp::ZERO + start;
        let role = Role::Read { c: ReadClient::new(start, options), got: Vec::with_capacity(len) };
        self.push(name, want, role, start)
    }

    /// A client that uploads `len` seeded bytes as `name`, starting at `start`.
    fn add_write(&mut self, name: &str, len: usize, options: RequestOptions, start: Duration) -> usize {
        let want = file_of(len, self.clients.len() as u64 * 104_729 + len as u64);
        let start = Timestamp::ZERO + start;
        let role = Role::Write { c: WriteClient::new(start, len as u64, options, &CLIENT_CFG) };
        self.push(name, want, role, start)
    }

    fn push(&mut self, name: &str, want: Vec<u8>, role: Role, start: Timestamp) -> usize {
        let addr = self.client_addr();
        self.clients.push(Client {
            addr,
            name: name.to_owned(),
            want,
            role,
            server: None,
            start,
            started: false,
            extra_requests: 0,
            repeat_after_answer: false,
            strays: 0,
            done_at: None,
        });
        self.clients.len() - 1
    }

    fn counter(&self, name: &str) -> u64 {
        let all = self.counters.snapshot();
        all.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// `flush`, then again while the send queue filled up: what a worker does as its sends
    /// complete.
    fn flush(&mut self) {
        let now = self.now;
        for _ in 0..100_000 {
            self.io.room = self.io.room_cap;
            self.engine.flush(now, &mut Clocked { io: &mut self.io, now });
            if self.io.room > 0 {
                return;
            }
        }
        panic!("flush never drains its ready queue");
    }

    fn timers(&mut self) {
        let now = self.now;
        self.engine.on_timers(now, &mut Clocked { io: &mut self.io, now });
        self.flush();
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) {
            c.on_datagram(self.now, from, bytes, &mut self.io.link);
            return;
        }
        let (via, token, local) = if to == LISTEN {
            (Via::Listen(0), None, Some(LocalEnd { ip: IpAddr::V4(SERVER_IP), ifindex: 0 }))
        } else {
            let Some(i) = self.io.socks.iter().position(|s| s.open && s.addr == to) else {
                self.unreachable += 1;
                return;
            };
            (Via::Transfer(SockRef(i as u32)), Some(self.io.socks[i].token), None)
        };
        let d = Datagram { via, token, peer: from, local, payload: bytes, truncated: false };
        let now = self.now;
        self.engine.on_datagram(now, &d, &mut Clocked { io: &mut self.io, now });
        self.flush();
    }

    /// Finished uploads go through the commit "thread" at once; the engine takes the result on
    /// its next timer pass.
    fn run_commits(&mut self) {
        let Some((jobs, done)) = &self.commits else { return };
        let mut any = false;
        while let Ok(job) = jobs.try_recv() {
            let result = job.upload.commit();
            done.send(CommitDone { token: job.token, result }).expect("the engine holds the receiver");
            any = true;
        }
        if any {
            self.timers();
        }
    }

    /// One event time: deliver what arrives, run due timers, let clients act.
    fn step(&mut self) {
        self.steps += 1;
        assert!(self.steps < MAX_STEPS, "simulation does not converge after {} steps", self.steps);
        let wake = self.engine.next_wakeup().unwrap_or(Timestamp::NEVER);
        let client = self.clients.iter().map(Client::timeout).min().unwrap_or(Timestamp::NEVER);
        let next = self.io.link.next_arrival().min(wake).min(client);
        assert!(next != Timestamp::NEVER, "nothing left to happen, yet the simulation is not over");
        self.now = self.now.max(next);
        assert!(self.now.saturating_since(Timestamp::ZERO) < MAX_VIRTUAL, "stuck at {:?}", self.now);
        while self.io.link.next_arrival() <= self.now {
            let Some(Reverse((_, _, from, to, bytes))) = self.io.link.queue.pop() else { break };
            self.deliver(from, to, &bytes);
            self.run_commits();
        }
        if self.engine.next_wakeup().is_some_and(|w| w <= self.now) {
            self.timers();
            self.run_commits();
        }
        let now = self.now;
        for c in &mut self.clients {
            if c.timeout() <= now {
                c.on_timer(now);
            }
            c.transmit(now, &mut self.io.link);
        }
    }

    /// Runs until every client is done and the engine has ended every transfer; then stops the
    /// engine.
    fn run(&mut self) -> Report {
        while self.clients.iter().any(|c| c.outcome().is_none()) {
            self.step();
        }
        // What is still in flight (final ACKs, duplicates), and the server's own timers for
        // transfers whose last ACK was lost.
        while self.counter("active") > 0 || !self.io.link.queue.is_empty() {
            self.step();
        }
        let now = self.now;
        self.engine.begin_stop(now);
        while !self.engine.is_finished() {
            self.step();
        }
        Report {
            elapsed: self.now.saturating_since(Timestamp::ZERO),
            link: self.io.link.stats,
            sends: self.io.sends,
            opened: self.io.socks.len(),
        }
    }

    /// Every client completed with the exact bytes within `limit` of virtual time, and the
    /// engine counted one transfer per client and no repeat as a second one.
    fn check_all_complete(&self, limit: Duration) {
        for c in &self.clients {
            assert_eq!(c.outcome(), Some(ClientOutcome::Complete), "{}: {:?}", c.name, self.io.link.stats);
            let took = c.done_at.expect("done").saturating_since(c.start);
            assert!(took <= limit, "{}: took {took:?}, more than {limit:?}", c.name);
            assert_eq!(c.strays, 0, "{}: answers from a second transfer", c.name);
            match &c.role {
                Role::Read { got, .. } => assert!(*got == c.want, "{}: download differs from the file", c.name),
                Role::Write { .. } => {
                    let stored = std::fs::read(self.dir.path().join(&c.name)).expect("upload stored");
                    assert!(stored == c.want, "{}: stored upload differs from what was sent", c.name);
                }
            }
        }
        let n = self.clients.len() as u64;
        let ended = ["ok", "timeouts", "errors", "probes"].map(|k| self.counter(k));
        assert_eq!(ended.iter().sum::<u64>(), n, "transfers ended (ok, timeouts, errors, probes): {ended:?}");
        assert_eq!(self.counter("errors") + self.counter("probes"), 0, "no transfer ends in an ERROR");
        if !self.single_port {
            assert_eq!(self.io.socks.len() as u64, n, "one transfer socket per client");
        }
        if self.io.link.stats.dropped == 0 {
            assert_eq!(self.counter("ok"), n, "every final ACK arrived");
        }
    }
}

#[derive(Debug)]
struct Report {
    elapsed: Duration,
    link: LinkStats,
    sends: ServerSends,
    opened: usize,
}

/// Blocks of a file of `len` bytes in `blksize` blocks (the last one short, maybe empty).
fn blocks(len: usize, blksize: u16) -> u64 {
    (len / usize::from(blksize) + 1) as u64
}

/// The matrix: loss × duplication and reordering × blksize and windowsize × port mode, three
/// downloads of different sizes sharing the engine, and a send queue of two sends so that the
/// ready queue holds transfers back all the time. Every byte is checked; on a clean link every
/// block goes out once, and duplication alone causes no retransmission.
#[test]
fn lossy_matrix() {
    for single_port in [false, true] {
        for (blksize, window) in [(512u16, 1u16), (1024, 4), (1468, 16)] {
            for loss in [0.0, 0.01, 0.05, 0.2] {
                for noisy in [false, true] {
                    let mix = if noisy { 0.05 } else { 0.0 };
                    let link = LinkParams { loss, dup: mix, reorder: mix, ..CLEAN };
                    let seed = u64::from(blksize) * 1000 + u64::from(window) * 10 + (loss * 100.0) as u64;
                    let mut setup = Setup::new(link, single_port, seed + u64::from(noisy));
                    setup.room = 2;
                    let mut sim = Sim::new(setup);
                    let lens = [usize::from(blksize) * 100 + 17, usize::from(blksize) * 40, 3000];
                    for (i, len) in lens.into_iter().enumerate() {
                        sim.add_read(&format!("f{i}"), len, opts(blksize, window), Duration::from_millis(i as u64));
                    }
                    let r = sim.run();
                    let case = format!("port {single_port} blk {blksize} win {window} loss {loss} noisy {noisy}");
                    sim.check_all_complete(Duration::from_secs(120));
                    let total: u64 = lens.iter().map(|&l| blocks(l, blksize)).sum();
                    if loss == 0.0 && !noisy {
                        assert_eq!(r.sends.data, total, "{case}: every block once: {r:?}");
                        assert_eq!(sim.counter("retransmits"), 0, "{case}");
                    }
                    if loss == 0.0 {
                        assert!(r.sends.data >= total, "{case}: {r:?}");
                    }
                    // Each lost or late datagram costs at most one window; repeated requests
                    // one first answer each.
                    let caused = r.link.dropped + r.link.reordered;
                    let resent = sim.counter("retransmits");
                    let explained = u64::from(window) * caused + sim.counter("duplicate_requests");
                    assert!(resent <= explained, "{case}: {resent} retransmissions: {r:?}");
                    // With one port (a blind budget), recovery from a loss often waits for the
                    // client's own timer (see the report of this test's commit): only checked
                    // with per-transfer ports.
                    if loss <= 0.05 && !single_port {
                        for c in &sim.clients {
                            let n = c.retransmits();
                            assert!(n <= 1, "{case}: {} stalled on its own timer ({n} resends): {r:?}", c.name);
                        }
                    }
                    if window > 1 && loss == 0.0 {
                        assert!(r.sends.runs > 0, "{case}: windows go out as runs: {r:?}");
                    }
                }
            }
        }
    }
}

/// Sorcerer's Apprentice through the engine: duplicated ACKs and requests never make it send
/// a block twice.
#[test]
fn duplication_alone_causes_no_retransmission() {
    for single_port in [false, true] {
        for window in [1u16, 4, 16] {
            let link = LinkParams { dup: 0.3, ..CLEAN };
            let mut sim = Sim::new(Setup::new(link, single_port, 7 + u64::from(window)));
            let len = 1024 * 200 + 3;
            sim.add_read("a", len, opts(1024, window), Duration::ZERO);
            sim.add_read("b", len / 2, opts(1024, window), Duration::ZERO);
            let r = sim.run();
            sim.check_all_complete(Duration::from_secs(10));
            assert!(r.link.duplicated > 20, "{r:?}");
            // Only first answers to duplicated requests go out again (each request datagram may
            // get two); no DATA does. With one port, a transfer not yet confirmed treats a
            // repeated ACK 0 as a lost first window and sends it again, once per transfer.
            let again = if single_port { 2 * u64::from(window) } else { 0 };
            let resent = sim.counter("retransmits");
            let case = format!("window {window} single port {single_port}: {r:?}");
            assert!(resent <= sim.counter("duplicate_requests") + again, "{case}");
            let total = blocks(len, 1024) + blocks(len / 2, 1024);
            assert!(r.sends.data >= total && r.sends.data <= total + again, "{case}");
        }
    }
}

/// A request delivered twice, and again after the OACK, is answered by the one transfer: the
/// engine counts the repeats, opens one socket, and the client never hears from a second port.
#[test]
fn repeated_request_is_the_same_transfer() {
    for single_port in [false, true] {
        let mut sim = Sim::new(Setup::new(CLEAN, single_port, 11));
        let a = sim.add_read("a", 5000, opts(512, 4), Duration::ZERO);
        let b = sim.add_read("b", 5000, RequestOptions::default(), Duration::ZERO);
        for i in [a, b] {
            sim.clients[i].extra_requests = 1;
            sim.clients[i].repeat_after_answer = true;
        }
        let r = sim.run();
        sim.check_all_complete(Duration::from_secs(1));
        assert_eq!(sim.counter("requests"), 6, "{r:?}");
        assert_eq!(sim.counter("duplicate_requests"), 4, "single port {single_port}");
        assert_eq!(sim.counter("ok"), 2);
        if !single_port {
            assert_eq!(r.opened, 2);
        }
    }
}

/// More than 65,535 blocks: the block number wraps, in lock step and windowed, through the
/// engine's runs.
#[test]
fn rollover_beyond_65535_blocks() {
    for (window, single_port) in [(1u16, false), (8, true)] {
        let mut sim = Sim::new(Setup::new(CLEAN, single_port, 3));
        let len = 70_000 * 8 + 5;
        sim.add_read("big", len, opts(8, window), Duration::ZERO);
        let r = sim.run();
        sim.check_all_complete(Duration::from_secs(600));
        assert_eq!(r.sends.data, 70_001, "window {window}: {r:?}");
    }
    let link = LinkParams { loss: 0.02, reorder: 0.02, ..CLEAN };
    let mut sim = Sim::new(Setup::new(link, false, 5));
    sim.add_read("big", 66_000 * 8, opts(8, 4), Duration::ZERO);
    sim.run();
    sim.check_all_complete(Duration::from_secs(600));
}

/// Uploads and downloads sharing the engine over a lossy link, commits through the commit
/// channel: the stored files are exactly what was sent.
#[test]
fn uploads_over_a_lossy_link() {
    for single_port in [false, true] {
        for (blksize, window) in [(512u16, 1u16), (1024, 8)] {
            for loss in [0.0, 0.05, 0.2] {
                let link = LinkParams { loss, dup: loss / 2.0, reorder: loss / 2.0, ..CLEAN };
                let mut setup = Setup::new(link, single_port, 100 + (loss * 100.0) as u64 + u64::from(window));
                setup.uploads = true;
                let mut sim = Sim::new(setup);
                sim.add_write("up0", usize::from(blksize) * 60 + 9, opts(blksize, window), Duration::ZERO);
                sim.add_write("up1", usize::from(blksize) * 20, opts(blksize, window), Duration::from_millis(3));
                sim.add_read("down", 20_000, opts(blksize, window), Duration::from_millis(1));
                sim.run();
                sim.check_all_complete(Duration::from_secs(120));
                assert_eq!(sim.counter("uploaded"), (usize::from(blksize) * 80 + 9) as u64);
            }
        }
    }
}

/// A link that dies mid-transfer: the client gives up, and the engine ends the transfer as
/// timed out, without an ERROR and within its patience.
#[test]
fn dead_link_ends_cleanly() {
    for single_port in [false, true] {
        let mut sim = Sim::new(Setup::new(CLEAN, single_port, 13));
        sim.io.link.dead_after = Timestamp::ZERO + Duration::from_millis(20);
        sim.add_read("a", 512 * 1000, opts(512, 4), Duration::ZERO);
        let r = sim.run();
        assert_eq!(sim.clients[0].outcome(), Some(ClientOutcome::TimedOut));
        assert_eq!(sim.counter("timeouts"), 1, "{r:?}");
        assert_eq!(sim.counter("ok") + sim.counter("errors"), 0);
        assert!(r.elapsed <= Duration::from_secs(120), "{r:?}");
    }
}
