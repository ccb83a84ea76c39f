//! One load-generator thread: its clients, each with its own UDP socket (its own port, as real
//! clients have), all served by one io_uring ring.
//!
//! Every socket keeps one multishot receive armed into a shared provided-buffer ring; every
//! request, ACK and ERROR is a `SENDMSG` from a preallocated slot, and all the sends of a loop
//! turn go to the kernel in the one `io_uring_enter` that also waits for the next completions.
//! So the load generator pays no system call per datagram in either direction, like the server
//! it measures. Client logic is the shared [`ReadClient`] state machine; deadlines (retransmits,
//! held ACKs, storm arrivals) live in a [`TimerWheel`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bootstorm::net::{RAW_ADDR_LEN, RawAddr, decode_sockaddr};
use bootstorm::proto::wire::{self, Mode, Packet};
use bootstorm::proto::{ClientOutcome, ClientTransmit, ErrorCode, ReadClient, Timestamp, UploadTransmit, WriteClient};
use bootstorm::ring::BufRing;
use bootstorm::sys::clock::Clock;
use bootstorm::sys::cmsg::{GRO_SPACE, gro_segment};
use bootstorm::sys::uring::{Drain, build_ring, submit_and_wait};
use bootstorm::sys::{send, sockopt};
use bootstorm::timer::{Links, TimerLink, TimerWheel};
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::plan::{Arrivals, Plan, Step};
use crate::stats::Stats;

const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const SEND_SLOTS: usize = 4096;
const SEND_BUF: usize = 640;

/// What every thread shares: progress counters for the live line, the session budget and the
/// common clock origin.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) clock: Clock,
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) sessions_started: AtomicU64,
    /// Set when a duration-bound run is over: no new sessions.
    pub(crate) closing: AtomicBool,
    /// Time (µs after origin) the last session ended.
    pub(crate) last_end_us: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            clock: Clock::new(),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            sessions_started: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            last_end_us: AtomicU64::new(0),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// The step in progress.
/// The client state machine of a step: a download, or an upload (`--upload`).
enum StepClient {
    Read(ReadClient),
    Write(WriteClient),
}

impl StepClient {
    fn outcome(&self) -> Option<ClientOutcome> {
        match self {
            Self::Read(c) => c.outcome(),
            Self::Write(c) => c.outcome(),
        }
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        match self {
            Self::Read(c) => c.poll_timeout(),
            Self::Write(c) => c.poll_timeout(),
        }
    }

    fn retransmits(&self) -> u32 {
        match self {
            Self::Read(c) => c.retransmits(),
            Self::Write(c) => c.retransmits(),
        }
    }

    fn first_data(&self) -> Option<Timestamp> {
        match self {
            Self::Read(c) => c.first_data(),
            Self::Write(_) => None,
        }
    }
}

struct StepRun {
    step: Step,
    client: StepClient,
    tid: Option<SocketAddr>,
    started: Timestamp,
    received: u64,
    /// An ACK being held back (`--hold`): block and when to send it.
    held: Option<(u16, Timestamp)>,
}

struct Session {
    number: u64,
    started: Timestamp,
    step: usize,
    run: Option<StepRun>,
}

struct Client {
    /// The client's number across all threads.
    global: u64,
    sock: UdpSocket,
    link: TimerLink,
    armed: bool,
    /// Storm arrival time of this client's session.
    start_at: Option<Timestamp>,
    session: Option<Session>,
    /// The server port of the client's previous transfer. The client reuses its own port for
    /// every step and session, so a late retransmission of the previous transfer's last block
    /// can arrive before the next transfer's first answer; it must not be taken for the new
    /// transfer's ID.
    previous_tid: Option<SocketAddr>,
}

struct Clients(Vec<Client>);

impl Links for Clients {
    fn link(&mut self, idx: u32) -> &mut TimerLink {
        &mut self.0[idx as usize].link
    }
}

struct SendSlot {
    msg: libc::msghdr,
    /// The bytes in `buf`, then (upload DATA only) a slice of `keep`.
    iov: [libc::iovec; 2],
    /// The uploaded file the second iovec points into, held until the completion.
    keep: Option<Arc<[u8]>>,
    addr: RawAddr,
    buf: [u8; SEND_BUF],
}

/// splitmix64, for deliberate drops.
struct Rng(u64);

impl Rng {
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

struct Driver<'p> {
    plan: &'p Plan,
    shared: &'p Shared,
    ring: IoUring,
    msg: Box<libc::msghdr>,
    clients: Clients,
    wheel: TimerWheel,
    due: Vec<u32>,
    sends: Box<[SendSlot]>,
    free_sends: Vec<u32>,
    stats: Stats,
    rng: Rng,
    active: usize,
    pending_starts: usize,
    rearm: Vec<u32>,
    scratch: [u8; SEND_BUF],
}

/// Runs thread `thread` of the plan to the end and returns what it measured.
pub(crate) fn run(plan: &Plan, shared: &Shared, thread: usize) -> anyhow::Result<Stats> {
    // 4096 submission entries, 16384 completion entries.
    let ring = build_ring(4096).context("io_uring setup (the load generator needs io_uring)")?;
    let blksize = usize::from(plan.options.blksize.unwrap_or(512).max(512));
    let datagram = if plan.gro { 65_536 } else { blksize + 4 };
    let buf_size = (datagram + 16 + RAW_ADDR_LEN as usize + GRO_SPACE).next_multiple_of(64);
    // SAFETY: the buffers are dropped only after the driver (and its ring) at the end of this
    // function, once every receive has been cancelled and drained.
    let bufs = unsafe { BufRing::new(&ring, plan.rx_buffers, buf_size, 0) }.context("provided-buffer ring")?;
    // SAFETY: plain data; all-zero is valid.
    let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    msg.msg_namelen = RAW_ADDR_LEN;
    if plan.gro {
        msg.msg_controllen = GRO_SPACE;
    }

    let count = match plan.arrivals {
        Arrivals::Closed { clients, .. } => share(clients as u64, plan.threads, thread),
        Arrivals::Storm { total, .. } => share(total, plan.threads, thread),
    };
    let mut clients = Vec::with_capacity(count as usize);
    for i in 0..count {
        let global = i * plan.threads as u64 + thread as u64;
        let sock = client_socket(plan, global).with_context(|| format!("client socket {global}"))?;
        let start_at = match plan.arrivals {
            Arrivals::Storm { total, ramp } => {
                Some(Timestamp::from_micros(ramp.as_micros() as u64 * global / total.max(1)))
            }
            Arrivals::Closed { .. } => None,
        };
        clients.push(Client {
            global,
            sock,
            link: TimerLink::default(),
            armed: false,
            start_at,
            session: None,
            previous_tid: None,
        });
    }
    let sends = (0..SEND_SLOTS)
        .map(|_| SendSlot {
            // SAFETY: plain data; all-zero is valid.
            msg: unsafe { std::mem::zeroed() },
            iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2],
            keep: None,
            addr: RawAddr::zeroed(),
            buf: [0; SEND_BUF],
        })
        .collect();
    let now = shared.now();
    let mut d = Driver {
        plan,
        shared,
        ring,
        msg,
        clients: Clients(clients),
        wheel: TimerWheel::new(250, now),
        due: Vec::new(),
        sends,
        free_sends: (0..SEND_SLOTS as u32).rev().collect(),
        stats: Stats::new(),
        rng: Rng(plan.seed ^ (thread as u64).wrapping_mul(0x9e37_79b9)),
        active: 0,
        pending_starts: 0,
        rearm: Vec::new(),
        scratch: [0; SEND_BUF],
    };
    for i in 0..d.clients.0.len() as u32 {
        d.arm_recv(i);
        match d.clients.0[i as usize].start_at {
            Some(at) => {
                d.pending_starts += 1;
                d.wheel.arm(&mut d.clients, i, at);
            }
            None => d.start_session(i, now),
        }
    }
    let mut bufs = bufs;
    let result = d.run_loop(&mut bufs);
    d.drain(&mut bufs);
    let stats = std::mem::replace(&mut d.stats, Stats::new());
    // The ring (inside `d`) goes before the buffers its receives write into.
    drop(d);
    drop(bufs);
    result.map(|()| stats)
}

/// Thread `thread`'s share of `n` items.
fn share(n: u64, threads: usize, thread: usize) -> u64 {
    let t = threads as u64;
    n / t + u64::from((thread as u64) < n % t)
}

fn client_socket(plan: &Plan, global: u64) -> std::io::Result<UdpSocket> {
    let ip = match plan.server.ip() {
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        IpAddr::V4(server) if plan.source_ips > 1 && server.is_loopback() => {
            // Spread clients over 127.1.0.1 and up, so that the server sees many addresses.
            IpAddr::V4(Ipv4Addr::from(0x7f01_0001u32 + (global % u64::from(plan.source_ips)) as u32))
        }
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let s = UdpSocket::bind(SocketAddr::new(ip, 0))?;
    s.set_nonblocking(true)?;
    if plan.gro {
        sockopt::enable_udp_gro(&s)?;
    }
    Ok(s)
}

impl Driver<'_> {
    fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: the SQEs built here point into `self.msg` (boxed, lives as long as the
        // ring), send slots (boxed slice, a slot is reused only after its completion) and
        // the sockets (closed only when the driver is dropped, after the ring).
        unsafe { bootstorm::sys::uring::push(&mut self.ring, sqe) };
    }

    fn arm_recv(&mut self, idx: u32) {
        let fd = self.clients.0[idx as usize].sock.as_raw_fd();
        self.clients.0[idx as usize].armed = true;
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.msg, 0)
            .build()
            .user_data((KIND_RECV << 32) | u64::from(idx));
        self.push(&sqe);
    }

    fn send(&mut self, fd: RawFd, to: SocketAddr, bytes: &[u8]) {
        self.send_with(fd, to, bytes, None);
    }

    /// Sends `head` (copied) followed by `body`: `len` bytes of `file` at `offset`, without a
    /// copy; the slot holds the file until the send completes.
    fn send_with(&mut self, fd: RawFd, to: SocketAddr, head: &[u8], body: Option<(&Arc<[u8]>, usize, usize)>) {
        let bytes = body.and_then(|(f, off, len)| f.get(off..off + len)).unwrap_or(&[]);
        let Some(slot_idx) = self.free_sends.pop() else {
            // Every slot is in flight: send directly rather than wait.
            let _ = send::send_to_now(fd, &to, head, bytes, &[]);
            return;
        };
        let slot = &mut self.sends[slot_idx as usize];
        let n = head.len().min(SEND_BUF);
        slot.buf[..n].copy_from_slice(&head[..n]);
        let (addr, len) = RawAddr::new(&to);
        slot.addr = addr;
        slot.iov[0] = libc::iovec { iov_base: slot.buf.as_mut_ptr().cast(), iov_len: n };
        slot.iov[1] = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
        slot.keep = body.map(|(f, ..)| Arc::clone(f));
        slot.msg.msg_name = (&mut slot.addr as *mut RawAddr).cast();
        slot.msg.msg_namelen = len;
        slot.msg.msg_iov = slot.iov.as_mut_ptr();
        slot.msg.msg_iovlen = if bytes.is_empty() { 1 } else { 2 };
        let sqe =
            opcode::SendMsg::new(types::Fd(fd), &slot.msg).build().user_data((KIND_SEND << 32) | u64::from(slot_idx));
        self.push(&sqe);
    }

    fn start_session(&mut self, idx: u32, now: Timestamp) {
        let number = self.shared.sessions_started.fetch_add(1, Ordering::Relaxed);
        let allowed = match self.plan.arrivals {
            Arrivals::Closed { total, .. } => {
                total.is_none_or(|t| number < t) && !self.shared.closing.load(Ordering::Relaxed)
            }
            Arrivals::Storm { .. } => true,
        };
        if !allowed {
            return;
        }
        self.active += 1;
        self.clients.0[idx as usize].session = Some(Session { number, started: now, step: 0, run: None });
        self.begin_step(idx, now);
    }

    fn begin_step(&mut self, idx: u32, now: Timestamp) {
        let Some(sess) = self.clients.0[idx as usize].session.as_mut() else { return };
        match self.plan.step(sess.step) {
            None => self.end_session(idx, now),
            Some(step) => {
                let options = self.plan.options_for(step);
                let client = match (step, self.plan.upload) {
                    (Step::Fetch(f), true) => {
                        let size = self.plan.files[f].expect.as_ref().map_or(0, |e| e.len() as u64);
                        StepClient::Write(WriteClient::new(now, size, options, &self.plan.client))
                    }
                    _ => StepClient::Read(ReadClient::new(now, options)),
                };
                sess.run = Some(StepRun { step, client, tid: None, started: now, received: 0, held: None });
                self.pump(idx, now);
            }
        }
    }

    fn end_session(&mut self, idx: u32, now: Timestamp) {
        let c = &mut self.clients.0[idx as usize];
        let Some(sess) = c.session.take() else { return };
        self.wheel.cancel(&mut self.clients, idx);
        self.active -= 1;
        self.stats.session_done(now.saturating_since(sess.started));
        self.shared.last_end_us.fetch_max(now.as_micros(), Ordering::Relaxed);
        if matches!(self.plan.arrivals, Arrivals::Closed { .. }) {
            self.start_session(idx, now);
        }
    }

    /// Sends what the step's client wants sent, and arms its timer.
    fn pump(&mut self, idx: u32, now: Timestamp) {
        let cfg = self.plan.client;
        let hold = self.plan.hold;
        let fd = self.clients.0[idx as usize].sock.as_raw_fd();
        loop {
            let global = self.clients.0[idx as usize].global;
            let Some(sess) = self.clients.0[idx as usize].session.as_mut() else { return };
            let Some(run) = sess.run.as_mut() else { return };
            let number = sess.number;
            let t = match &mut run.client {
                StepClient::Read(c) => c.poll_transmit(now, &cfg),
                StepClient::Write(c) => {
                    let Some(t) = c.poll_transmit(now) else { break };
                    let Step::Fetch(f) = run.step else { break };
                    let file = self.plan.files[f].expect.clone().unwrap_or_else(|| Arc::from(&[][..]));
                    match t {
                        UploadTransmit::Request => {
                            let name = format!("{}.{global}", self.plan.files[f].name);
                            let n = c.encode_request(name.as_bytes(), Mode::Octet, &mut self.scratch).unwrap_or(0);
                            let (server, bytes) = (self.plan.server, self.scratch);
                            self.send(fd, server, &bytes[..n]);
                        }
                        UploadTransmit::Data { block, offset, len } => {
                            let Some(tid) = run.tid else { continue };
                            self.send_with(fd, tid, &wire::data_header(block), Some((&file, offset as usize, len)));
                        }
                        UploadTransmit::Error { code, message } => {
                            let Some(tid) = run.tid else { continue };
                            let n = wire::encode_error(code, message.as_bytes(), &mut self.scratch).unwrap_or(0);
                            let bytes = self.scratch;
                            self.send(fd, tid, &bytes[..n]);
                        }
                    }
                    continue;
                }
            };
            let Some(t) = t else { break };
            let StepClient::Read(client) = &run.client else { break };
            match t {
                ClientTransmit::Request => {
                    let name_buf;
                    let name: &[u8] = match run.step {
                        Step::Miss(n) => {
                            name_buf = self.plan.miss_name(number, n);
                            name_buf.as_bytes()
                        }
                        Step::Probe(f) | Step::Fetch(f) => self.plan.files[f].name.as_bytes(),
                    };
                    let n = client.encode_request(name, Mode::Octet, &mut self.scratch).unwrap_or(0);
                    let (server, bytes) = (self.plan.server, self.scratch);
                    self.send(fd, server, &bytes[..n]);
                }
                ClientTransmit::Ack(b) => {
                    let Some(tid) = run.tid else { continue };
                    if hold.is_zero() {
                        self.send(fd, tid, &wire::ack(b));
                    } else {
                        run.held = Some((b, now + hold));
                    }
                }
                ClientTransmit::Error { code, message } => {
                    let Some(tid) = run.tid else { continue };
                    let n = wire::encode_error(code, message.as_bytes(), &mut self.scratch).unwrap_or(0);
                    let bytes = self.scratch;
                    self.send(fd, tid, &bytes[..n]);
                }
            }
        }
        let Some(run) = self.clients.0[idx as usize].session.as_ref().and_then(|s| s.run.as_ref()) else { return };
        // A held final ACK is still sent (when its time comes) before the step ends.
        if let Some(o) = run.client.outcome()
            && run.held.is_none()
        {
            self.finish_step(idx, Ok(o), now);
            return;
        }
        let deadline = match (run.client.poll_timeout(), run.held) {
            (Some(a), Some((_, b))) => Some(a.min(b)),
            (a, b) => a.or(b.map(|(_, t)| t)),
        };
        if let Some(d) = deadline {
            self.wheel.arm(&mut self.clients, idx, d);
        }
    }

    /// Ends the current step: `Ok(outcome)` from the client state machine, or `Err(cause)`.
    fn finish_step(&mut self, idx: u32, result: Result<ClientOutcome, String>, now: Timestamp) {
        let client = &mut self.clients.0[idx as usize];
        let Some(sess) = client.session.as_mut() else { return };
        let Some(run) = sess.run.take() else { return };
        client.previous_tid = run.tid.or(client.previous_tid);
        self.stats.retransmits += u64::from(run.client.retransmits());
        let failure = match (run.step, result) {
            (Step::Fetch(f), Ok(ClientOutcome::Complete)) => {
                let expect = self.plan.files[f].expect.as_ref().map(|e| e.len() as u64);
                if self.plan.upload {
                    // An upload's bytes are the file's; the server's final ACK says it has them.
                    let size = expect.unwrap_or(0);
                    self.stats.transfer_done(size, now.saturating_since(run.started), None);
                    self.shared.ok.fetch_add(1, Ordering::Relaxed);
                    self.shared.bytes.fetch_add(size, Ordering::Relaxed);
                    None
                } else if expect.is_some_and(|len| len != run.received) {
                    Some(format!("short file ({} of {} bytes)", run.received, expect.unwrap_or(0)))
                } else {
                    let first = run.client.first_data().map(|t| t.saturating_since(run.started));
                    self.stats.transfer_done(run.received, now.saturating_since(run.started), first);
                    self.shared.ok.fetch_add(1, Ordering::Relaxed);
                    self.shared.bytes.fetch_add(run.received, Ordering::Relaxed);
                    None
                }
            }
            (Step::Miss(_), Ok(ClientOutcome::ServerError(ErrorCode::FILE_NOT_FOUND))) => {
                self.stats.misses += 1;
                None
            }
            (Step::Probe(_), Ok(ClientOutcome::Complete)) => {
                self.stats.probes += 1;
                None
            }
            (Step::Miss(_), Ok(ClientOutcome::Complete)) => Some("expected a miss, got the file".into()),
            (_, Ok(ClientOutcome::ServerError(code))) => Some(format!("server error {}", code.0)),
            (_, Ok(ClientOutcome::TimedOut)) => Some("timeout".into()),
            (_, Ok(ClientOutcome::ProtocolError(why))) => Some(format!("protocol: {why}")),
            (_, Err(cause)) => Some(cause),
        };
        match failure {
            None => {
                sess.step += 1;
                self.begin_step(idx, now);
            }
            Some(cause) => {
                self.stats.fail(cause);
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                self.end_session(idx, now);
            }
        }
    }

    fn on_datagram(&mut self, idx: u32, from: SocketAddr, payload: &[u8], now: Timestamp) {
        let cfg = self.plan.client;
        let client = &mut self.clients.0[idx as usize];
        let fd = client.sock.as_raw_fd();
        let previous = client.previous_tid;
        let Some(sess) = client.session.as_mut() else { return };
        // Answers from the listening port itself (refusals, --single-port) are always welcome.
        if run_tid_is_none(sess) && previous == Some(from) && from != self.plan.server {
            return;
        }
        let Some(run) = sess.run.as_mut() else { return };
        let tid = *run.tid.get_or_insert(from);
        if from != tid {
            return;
        }
        let Ok(p) = Packet::decode(payload) else { return };
        match (run.step, p) {
            (Step::Probe(_), Packet::Oack(_) | Packet::Data { .. }) => {
                // EDK2 reads the size from the OACK and aborts.
                let n = wire::encode_error(ErrorCode::OPTION_REFUSED, b"User aborted the transfer", &mut self.scratch)
                    .unwrap_or(0);
                let bytes = self.scratch;
                self.send(fd, tid, &bytes[..n]);
                self.finish_step(idx, Ok(ClientOutcome::Complete), now);
                return;
            }
            (_, Packet::Data { .. }) if self.rng.chance(self.plan.drop) => {
                self.stats.dropped += 1;
                return;
            }
            _ => {}
        }
        let client = match &mut run.client {
            StepClient::Read(c) => c,
            StepClient::Write(c) => {
                c.handle_packet(now, &p);
                self.pump(idx, now);
                return;
            }
        };
        let delivered = client.handle_packet(now, &p, &cfg);
        if let (Some((offset, data)), Step::Fetch(f)) = (delivered, run.step) {
            if let Some(expect) = &self.plan.files[f].expect {
                let end = offset as usize + data.len();
                if expect.get(offset as usize..end) != Some(data) {
                    self.finish_step(idx, Err("corrupt data".into()), now);
                    return;
                }
            }
            run.received += data.len() as u64;
        }
        self.pump(idx, now);
    }

    fn on_timer(&mut self, idx: u32, now: Timestamp) {
        let cfg = self.plan.client;
        let c = &mut self.clients.0[idx as usize];
        if c.session.is_none() {
            if c.start_at.take().is_some() {
                self.pending_starts -= 1;
                self.start_session(idx, now);
            }
            return;
        }
        let fd = c.sock.as_raw_fd();
        let Some(run) = c.session.as_mut().and_then(|s| s.run.as_mut()) else { return };
        if let Some((b, at)) = run.held
            && at <= now
        {
            run.held = None;
            if let Some(tid) = run.tid {
                self.send(fd, tid, &wire::ack(b));
            }
        }
        let Some(run) = self.clients.0[idx as usize].session.as_mut().and_then(|s| s.run.as_mut()) else { return };
        match &mut run.client {
            StepClient::Read(c) => c.handle_timeout(now, &cfg),
            StepClient::Write(c) => c.handle_timeout(now),
        }
        self.pump(idx, now);
    }

    fn finished(&self) -> bool {
        self.active == 0 && self.pending_starts == 0
    }

    fn run_loop(&mut self, bufs: &mut BufRing) -> anyhow::Result<()> {
        let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(1024);
        while !self.finished() {
            let now = self.shared.now();
            let wait = self
                .wheel
                .next_due()
                .map_or(Duration::from_millis(50), |t| t.saturating_since(now))
                .min(Duration::from_millis(50));
            submit_and_wait(&self.ring, wait).context("io_uring_enter")?;
            let now = self.shared.now();
            loop {
                cqes.clear();
                cqes.extend(self.ring.completion().take(1024));
                if cqes.is_empty() {
                    break;
                }
                for c in &cqes {
                    let kind = c.user_data() >> 32;
                    let idx = c.user_data() as u32;
                    if kind == KIND_SEND {
                        self.sends[idx as usize].keep = None;
                        self.free_sends.push(idx);
                        continue;
                    }
                    let res = c.result();
                    if res >= 0
                        && let Some(bid) = cqueue::buffer_select(c.flags())
                    {
                        let buf = bufs.get(bid, res as usize);
                        if let Ok(out) = types::RecvMsgOut::parse(buf, &self.msg) {
                            let name = out.name_data();
                            let name = &name[..name.len().min(out.incoming_name_len() as usize)];
                            if let Some(from) = decode_sockaddr(name)
                                && !out.is_payload_truncated()
                            {
                                let payload = out.payload_data();
                                match gro_segment(out.control_data()) {
                                    Some(seg) => {
                                        for d in payload.chunks(seg) {
                                            self.on_datagram(idx, from, d, now);
                                        }
                                    }
                                    None => self.on_datagram(idx, from, payload, now),
                                }
                            }
                        }
                        bufs.push(bid);
                    }
                    if !cqueue::more(c.flags()) {
                        self.clients.0[idx as usize].armed = false;
                        self.rearm.push(idx);
                    }
                }
                bufs.publish();
            }
            while let Some(i) = self.rearm.pop() {
                self.arm_recv(i);
            }
            self.due.clear();
            self.wheel.expire(now, &mut self.clients, &mut self.due);
            for i in 0..self.due.len() {
                let idx = self.due[i];
                self.on_timer(idx, now);
            }
        }
        Ok(())
    }

    /// Sends what is queued (the final ACKs), cancels every receive and waits until no
    /// operation is left, so that nothing the kernel may still write to is freed.
    fn drain(&mut self, bufs: &mut BufRing) {
        for i in 0..self.clients.0.len() {
            if self.clients.0[i].armed {
                let sqe = opcode::AsyncCancel::new((KIND_RECV << 32) | i as u64).build().user_data(0);
                self.push(&sqe);
            }
        }
        let drain = Drain::new(Duration::from_secs(2), Duration::from_millis(10));
        loop {
            let busy = self.free_sends.len() < SEND_SLOTS || self.clients.0.iter().any(|c| c.armed);
            if !busy || !drain.wait(&self.ring) {
                return;
            }
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for c in cqes {
                let idx = c.user_data() as u32;
                match c.user_data() >> 32 {
                    KIND_SEND => self.free_sends.push(idx),
                    KIND_RECV => {
                        if let Some(bid) = cqueue::buffer_select(c.flags()) {
                            bufs.push(bid);
                        }
                        if !cqueue::more(c.flags()) {
                            self.clients.0[idx as usize].armed = false;
                        }
                    }
                    _ => {}
                }
            }
            bufs.publish();
        }
    }
}

fn run_tid_is_none(sess: &Session) -> bool {
    sess.run.as_ref().is_some_and(|r| r.tid.is_none())
}
