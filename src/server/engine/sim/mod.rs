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
//!
//! This module holds the driver ([`Sim`]); [`link`] the link and the engine's backend on it,
//! [`client`] the clients; the cases are in [`downloads`], [`recovery`] and [`uploads`].

mod client;
mod downloads;
mod link;
mod recovery;
mod uploads;

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use self::client::{Client, Role};
use self::link::{Clocked, Link, LinkIo, LinkParams, LinkStats, ServerSends};
use super::{Engine, EngineParts, EngineSettings};
use crate::config::{ServerConfig, WriteConfig};
use crate::fs::{Root, UploadRoot};
use crate::proto::{
    ClientConfig, ClientOutcome, ReadClient, RequestOptions, RetransmitConfig, RtoBounds, Timestamp, WriteClient,
};
use crate::server::commit::{CommitDone, CommitJob, CommitLink};
use crate::server::io::{Datagram, SockRef, Via};
use crate::server::socket::LocalEnd;
use crate::server::stats::{Counter, Counters};

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

/// `len` seeded bytes: a file's contents.
fn file_of(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes
}

/// Options as a client asks for them: `blksize`, `windowsize` past 1, and `tsize`.
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

    fn counter(&self, c: Counter) -> u64 {
        self.counters.get(c)
    }

    /// `flush`, then again while the send queue filled up: what a worker does as its sends
    /// complete.
    fn flush(&mut self) {
        let now = self.now;
        for _ in 0..100_000 {
            self.io.room = self.io.room_cap;
            self.engine.flush(now, &mut Clocked { io: &mut self.io, now });
            if self.io.room > 0 {
                self.engine.answers_sent(now, now);
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
        let (via, slot, local) = if to == LISTEN {
            (Via::Listen(0), None, Some(LocalEnd { ip: IpAddr::V4(SERVER_IP), ifindex: 0 }))
        } else {
            let Some(i) = self.io.socks.iter().position(|s| s.open && s.addr == to) else {
                self.unreachable += 1;
                return;
            };
            (Via::Transfer(SockRef(i as u32)), Some(self.io.socks[i].token.slot()), None)
        };
        // Delivered as it arrives: a listening socket's datagram arrived now.
        let arrived = local.map(|_| self.now);
        let d = Datagram { via, slot, peer: from, local, arrived, payload: bytes, truncated: false };
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
        while self.counter(Counter::Active) > 0 || !self.io.link.queue.is_empty() {
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
        let ended = [Counter::Ok, Counter::Timeouts, Counter::Errors, Counter::Probes].map(|k| self.counter(k));
        assert_eq!(ended.iter().sum::<u64>(), n, "transfers ended (ok, timeouts, errors, probes): {ended:?}");
        assert_eq!(self.counter(Counter::Errors) + self.counter(Counter::Probes), 0, "no transfer ends in an ERROR");
        if !self.single_port {
            assert_eq!(self.io.socks.len() as u64, n, "one transfer socket per client");
        }
        if self.io.link.stats.dropped == 0 {
            assert_eq!(self.counter(Counter::Ok), n, "every final ACK arrived");
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
