//! One load-generator thread: its clients, each with its own UDP socket (its own port, as real
//! clients have), all served by one io_uring ring.
//!
//! Every socket keeps one multishot receive armed into a shared provided-buffer ring; every
//! request, ACK and ERROR is a `SENDMSG` from a preallocated slot, and all the sends of a loop
//! turn go to the kernel in the one `io_uring_enter` that also waits for the next completions.
//! So the load generator pays no system call per datagram in either direction, like the server
//! it measures. Client logic is the shared [`ReadClient`] state machine; deadlines (retransmits,
//! held ACKs, storm arrivals) live in a [`TimerWheel`].
//!
//! This module holds the thread's entry ([`run`]), the [`Driver`] and its loop; the rest is cut
//! by job:
//! - [`client`]: the per-client slots (socket, timer link, session and step in progress);
//! - [`ring`]: submissions (receives, sends from preallocated slots), completions and the drain;
//! - [`receive`]: a received buffer, split by GRO, to the step's client state machine;
//! - [`transmit`]: what the state machine wants sent, encoded and queued;
//! - [`session`]: the session and step lifecycle and what a finished step counts as;
//! - [`deadline`]: what a client's timer does when it fires.
//!
//! [`ReadClient`]: bootstorm::proto::ReadClient

mod client;
mod deadline;
mod receive;
mod ring;
mod session;
mod transmit;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use anyhow::Context;
use bootstorm::net::RAW_ADDR_LEN;
use bootstorm::proto::Timestamp;
use bootstorm::ring::BufRing;
use bootstorm::sys::clock::Clock;
use bootstorm::sys::cmsg::GRO_SPACE;
use bootstorm::sys::uring::{build_ring, submit_and_wait};
use bootstorm::timer::{TimerLink, TimerWheel};
use io_uring::{IoUring, cqueue};

use self::client::{Client, Clients, client_socket};
use self::ring::{SEND_BUF, SEND_SLOTS, SendSlot};
use crate::plan::{Arrivals, Plan};
use crate::stats::Stats;

/// What every thread shares: progress counters for the live line, the session budget and the
/// common clock origin.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The common clock; its origin is the start of the run.
    pub(crate) clock: Clock,
    /// Transfers that ended well.
    pub(crate) ok: AtomicU64,
    /// Sessions that failed.
    pub(crate) failed: AtomicU64,
    /// Bytes transferred by the transfers that ended well.
    pub(crate) bytes: AtomicU64,
    /// Sessions numbered so far (also those refused because the budget was spent).
    pub(crate) sessions_started: AtomicU64,
    /// Set when a duration-bound run is over: no new sessions.
    pub(crate) closing: AtomicBool,
    /// Time (µs after origin) the last session ended.
    pub(crate) last_end_us: AtomicU64,
}

impl Shared {
    /// Counters at zero and a clock starting now.
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

    /// Now, on the common clock.
    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// One thread's load: its clients, its ring and send slots, its timers and what it measured.
struct Driver<'p> {
    /// What to run.
    plan: &'p Plan,
    /// Counters and the clock shared with the other threads.
    shared: &'p Shared,
    /// The thread's io_uring.
    ring: IoUring,
    /// The header every multishot receive is described by (name and control space).
    msg: Box<libc::msghdr>,
    /// The thread's clients, indexed by the low half of a receive's user data.
    clients: Clients,
    /// Every client's next deadline.
    wheel: TimerWheel,
    /// Clients whose deadline passed, filled by the wheel each turn.
    due: Vec<u32>,
    /// The send slots, indexed by the low half of a send's user data.
    sends: Box<[SendSlot]>,
    /// Send slots not in flight.
    free_sends: Vec<u32>,
    /// What this thread measured.
    stats: Stats,
    /// Decides the deliberate drops: seeded, so the same seed drops the same DATA.
    rng: fastrand::Rng,
    /// Sessions in progress.
    active: usize,
    /// Storm arrivals still to come.
    pending_starts: usize,
    /// Clients whose multishot receive ended, to arm again after the completions.
    rearm: Vec<u32>,
    /// Where requests and errors are encoded before they are copied into a send slot.
    scratch: [u8; SEND_BUF],
    /// Sockets clients left for a new port, closed once what was queued on them has been
    /// submitted (until then their descriptor numbers must not be reused).
    retired: Vec<UdpSocket>,
    /// Cancelled receives of left sockets whose last completion has not come yet.
    retiring: usize,
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
        let sock = client_socket(plan, global)
            .with_context(|| format!("client socket {global} on {} (is the address local?)", plan.source_ip(global)))?;
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
            generation: 0,
            start_at,
            session: None,
            previous_tid: None,
            carried: false,
        });
    }
    let sends = (0..SEND_SLOTS).map(|_| SendSlot::new()).collect();
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
        rng: fastrand::Rng::with_seed(plan.seed ^ (thread as u64).wrapping_mul(0x9e37_79b9)),
        active: 0,
        pending_starts: 0,
        rearm: Vec::new(),
        scratch: [0; SEND_BUF],
        retired: Vec::new(),
        retiring: 0,
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

impl Driver<'_> {
    /// Whether the thread is done: no session in progress and no storm arrival to come.
    fn finished(&self) -> bool {
        self.active == 0 && self.pending_starts == 0
    }

    /// The thread's loop: submit and wait (at most until the next deadline, or 50 ms), handle
    /// every completion, arm again the receives that ended, then fire the due timers.
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
            if self.ring.submission().is_empty() {
                self.retired.clear();
            }
            let now = self.shared.now();
            self.reap(bufs, &mut cqes, now);
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
}
