//! The io_uring backend: one ring per worker, built on the `io-uring` crate.
//!
//! - Receives: one multishot `RECVMSG` per socket into a provided-buffer ring shared by all of
//!   the worker's sockets. No buffer is handed over per datagram; each is returned to the ring
//!   as soon as the engine has looked at it. A multishot receive that ends (buffers ran out,
//!   completion queue overflowed) is armed again at the end of the loop turn.
//! - Sends: one `SENDMSG` of `[header, slice of the mapping]` per datagram, from a pool of
//!   preallocated send slots (message header, iovecs, address, control message, header bytes),
//!   all submitted together by the single `io_uring_enter` of each loop turn. A slot holds a
//!   reference to its file version until the completion, so the mapping outlives the send.
//!   When every slot is taken, a datagram is sent at once instead. Either way a failed send of
//!   a transfer's packet reaches the engine (`Engine::on_send_error`).
//!   The DATA packets of a window go out as one `SENDMSG` of `[header, slice]` pairs with a
//!   UDP segment size (GSO), from a smaller pool of run slots, and the kernel cuts it into
//!   datagrams; where the kernel or the route refuses that, sends fall back to one per datagram.
//! - Timers: the wait itself (`io_uring_enter` with a timeout) wakes the loop for the engine's
//!   next deadline; no operation is ever dropped to make a timeout happen.
//! - Closing a transfer socket cancels its receive; the descriptor is closed once the receive's
//!   last completion has arrived, so no operation ever refers to a reused descriptor.
//!
//! The ring is set up with `SINGLE_ISSUER`, `COOP_TASKRUN` and `DEFER_TASKRUN` where the kernel
//! has them (6.1+), with fewer flags on older kernels.

//! The receive side is in `recv.rs`, the send side in `send.rs`; this file holds the ring, the
//! state both share, and the loop.

use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{IoUring, cqueue, squeue};
use tracing::warn;

use self::recv::{Rearm, Rx};
use self::send::{RunSlot, SendSlot};
use super::control::WorkerControl;
use super::engine::Engine;
use super::io::{DataRun, GsoLimit, Io, Outgoing, RX_SIZE, SendErrors, SockRef, Token};
use super::rx_batch::RxBatch;
use super::socket::{PortPicker, RAW_ADDR_LEN};
use super::transfer_sockets::{MAX_DESCRIPTORS, TransferSockets};
use super::turn::{self, LoopIo};
use crate::config::IoConfig;
use crate::proto::Timestamp;
use crate::ring::BufRing;
use crate::sys::clock::Clock;
use crate::sys::cmsg::RECV_CONTROL_SPACE;
use crate::sys::uring::{self, Drain};

mod recv;
mod send;

const KIND_LISTEN: u64 = 1;
const KIND_XFER: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_WAKE: u64 = 4;
const KIND_CANCEL: u64 = 5;
const KIND_RUN: u64 = 6;
/// Buffer group of the provided-buffer ring.
const BGID: u16 = 0;

/// The user data of an operation: its kind, a 28-bit tag (a transfer socket's descriptor) and
/// an index (of a listening socket, a send slot, or the slot of the transfer a receive is for).
fn ud(kind: u64, tag: u32, idx: u32) -> u64 {
    (kind << 60) | (u64::from(tag & 0x0fff_ffff) << 32) | u64::from(idx)
}

// A transfer socket's descriptor fits the tag of its operations.
const _: () = assert!(MAX_DESCRIPTORS <= 1 << 28);

/// A worker's io_uring backend: the [`Io`] half and the receive half, which the loop keeps apart
/// so that a datagram borrowed from the receive buffers can be handed to the engine together
/// with the [`Io`].
pub(crate) struct Uring {
    io: UringIo,
    /// Freed only when no operation is in flight (see `Drop`).
    rx: ManuallyDrop<Box<Rx>>,
}

impl Drop for Uring {
    fn drop(&mut self) {
        if self.io.in_flight == 0 {
            // SAFETY: dropped once, here; no operation refers to the buffers any more.
            unsafe { ManuallyDrop::drop(&mut self.rx) };
        }
        // Otherwise the kernel may still write into them: leak rather than free.
    }
}

/// The io_uring implementation of [`Io`].
pub(crate) struct UringIo {
    ring: IoUring,
    /// The receive templates inside the worker's boxed [`Rx`].
    listen_msg: *const libc::msghdr,
    xfer_msg: *const libc::msghdr,
    /// Each listening socket and how many multishot receives it has armed.
    listens: Vec<(Option<UdpSocket>, u8)>,
    close_listens_on_stop: bool,
    /// The transfer sockets, by descriptor.
    socks: TransferSockets,
    /// Freed only when no operation is in flight (see `Drop`).
    sends: ManuallyDrop<Box<[SendSlot]>>,
    free_sends: Vec<u32>,
    /// Freed only when no operation is in flight (see `Drop`).
    runs: ManuallyDrop<Box<[RunSlot]>>,
    free_runs: Vec<u32>,
    /// Which runs of DATA go out as one send (UDP GSO).
    gso: GsoLimit,
    ports: PortPicker,
    /// Failed sends, for the engine.
    errors: SendErrors,
    wake_fd: RawFd,
    wake_buf: ManuallyDrop<Box<u64>>,
    /// Operations submitted whose last completion has not arrived.
    in_flight: usize,
    rearm: Vec<Rearm>,
    /// The listening sockets are being closed (stop): their receives are not armed again.
    listens_closing: bool,
    /// The loop is over: nothing new is armed or opened.
    draining: bool,
    /// Receives ended by an error other than running out of buffers, in a row.
    recv_failures: u32,
    /// Listening sockets drained with `recvmmsg` at the end of a turn in which they received
    /// (not in single-port mode: see [`recv::LISTEN_DRAIN`]).
    drain_listens: bool,
    /// The listening sockets that received in this turn, each once.
    listens_heard: Vec<u32>,
}

impl Drop for UringIo {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            // SAFETY: dropped once, here; no operation refers to them any more.
            unsafe {
                ManuallyDrop::drop(&mut self.sends);
                ManuallyDrop::drop(&mut self.runs);
                ManuallyDrop::drop(&mut self.wake_buf);
            }
        }
    }
}

impl Uring {
    /// Sets up the ring, the buffer ring and the send slots, and arms the receives.
    pub(crate) fn new(
        cfg: &IoConfig,
        listens: Vec<UdpSocket>,
        ports: PortPicker,
        wake_fd: RawFd,
        clock: Clock,
    ) -> io::Result<Self> {
        let gso = cfg.gso;
        let ring = uring::build_ring(cfg.ring_entries)?;
        let count = u16::try_from(cfg.rx_buffers).map_err(|_| io::Error::other("--rx-buffers too large"))?;
        // SAFETY: the buffers live in `Rx`, which `Uring` frees only once no operation is in
        // flight (see its `Drop`; `run` cancels every receive and waits for their last
        // completions), and leaks otherwise.
        let bufs = unsafe { BufRing::new(&ring, count, RX_SIZE, BGID)? };
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut listen_msg: libc::msghdr = unsafe { std::mem::zeroed() };
        listen_msg.msg_namelen = RAW_ADDR_LEN;
        listen_msg.msg_controllen = RECV_CONTROL_SPACE;
        // SAFETY: as above.
        let mut xfer_msg: libc::msghdr = unsafe { std::mem::zeroed() };
        xfer_msg.msg_namelen = RAW_ADDR_LEN;
        let sends = send::send_slots(cfg.send_slots);
        let runs = send::run_slots(gso);
        let rx = Box::new(Rx { bufs, listen_msg, xfer_msg, batch: RxBatch::new(RX_SIZE, clock) });
        let mut io = UringIo {
            ring,
            listen_msg: &rx.listen_msg,
            xfer_msg: &rx.xfer_msg,
            listens: listens.into_iter().map(|s| (Some(s), 0)).collect(),
            close_listens_on_stop: !cfg.single_port,
            socks: TransferSockets::new(),
            sends: ManuallyDrop::new(sends),
            free_sends: (0..cfg.send_slots).rev().collect(),
            free_runs: (0..runs.len() as u32).rev().collect(),
            runs: ManuallyDrop::new(runs),
            gso: GsoLimit::new(gso),
            ports,
            errors: SendErrors::default(),
            wake_fd,
            wake_buf: ManuallyDrop::new(Box::new(0)),
            in_flight: 0,
            rearm: Vec::new(),
            listens_closing: false,
            draining: false,
            recv_failures: 0,
            drain_listens: !cfg.single_port,
            listens_heard: Vec::new(),
        };
        for i in 0..io.listens.len() as u32 {
            for _ in 0..recv::LISTEN_RECEIVES {
                io.arm(Rearm::Listen(i));
            }
        }
        io.arm_wake();
        Ok(Self { io, rx: ManuallyDrop::new(rx) })
    }
}

impl UringIo {
    /// Pushes an SQE, submitting first if the queue is full.
    fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: every SQE built here refers to memory owned by `self` (send and run slots,
        // receive templates, wake buffer) or by a file version a slot holds, all of which stay
        // valid until the operation's last completion: they are freed only with nothing in
        // flight (see `Drop`).
        unsafe { uring::push(&mut self.ring, sqe) };
        self.in_flight += 1;
    }
}

impl Io for UringIo {
    fn open_transfer(&mut self, local: SocketAddr, avoid: Option<u16>, token: Token) -> io::Result<(SockRef, u16)> {
        self.open_sock(local, avoid, token)
    }

    fn close_transfer(&mut self, sock: SockRef, token: Token) {
        self.close_sock(sock, token);
    }

    fn can_send(&self) -> bool {
        !self.free_sends.is_empty()
    }

    fn send(&mut self, out: Outgoing<'_>) {
        self.queue_send(out);
    }

    fn send_run(&mut self, run: DataRun<'_>) {
        self.queue_run(run);
    }
}

impl LoopIo for UringIo {
    fn close_listens(&mut self) {
        self.stop_listening();
    }

    fn send_errors(&mut self) -> &mut SendErrors {
        &mut self.errors
    }
}

/// Handles one completion.
fn complete(
    cqe: &cqueue::Entry,
    io: &mut UringIo,
    rx: &mut Rx,
    engine: &mut Engine,
    now: Timestamp,
    control: &WorkerControl,
) {
    let data = cqe.user_data();
    let kind = data >> 60;
    let tag = ((data >> 32) & 0x0fff_ffff) as u32;
    let idx = data as u32;
    match kind {
        KIND_LISTEN | KIND_XFER => recv::recv_completed(kind, idx, tag, cqe, io, rx, engine, now),
        KIND_SEND => io.send_completed(idx, cqe.result()),
        KIND_RUN => io.run_completed(idx, cqe.result()),
        KIND_WAKE => {
            io.in_flight -= 1;
            if cqe.result() == -libc::ECANCELED {
                return;
            }
            turn::on_wake(engine, io, control, now);
            io.arm_wake();
        }
        _ => io.in_flight -= 1,
    }
}

/// Runs a worker on io_uring until the engine has finished after a stop.
pub(crate) fn run(engine: &mut Engine, uring: &mut Uring, clock: &Clock, control: &WorkerControl) -> io::Result<()> {
    let Uring { io, rx } = uring;
    let rx: &mut Rx = rx;
    let result = run_loop(engine, io, rx, clock, control);
    // Drain: cancel every receive and wait for all operations, so that nothing the kernel may
    // still write to is freed. Nothing is armed again meanwhile; whatever is still in flight at
    // the deadline keeps its memory (leaked in `Drop`).
    io.draining = true;
    io.cancel_all();
    let drain = Drain::new(Duration::from_secs(2), Duration::from_millis(50));
    while io.in_flight > 0 && drain.wait(&io.ring) {
        // The wait submitted what the last round queued: nothing left to submit names these
        // descriptors (closed any earlier, a reply queued in that round could leave through
        // another socket given the same number).
        io.socks.close_released();
        let cqes: Vec<cqueue::Entry> = io.ring.completion().collect();
        for c in &cqes {
            complete(c, io, rx, engine, clock.now(), control);
        }
        rx.bufs.publish();
    }
    if io.in_flight > 0 {
        warn!(operations = io.in_flight, "io_uring operations still in flight at exit; their memory is kept");
    }
    result
}

/// Handles every completion posted so far, then re-arms the receives that ended.
fn reap(
    cqes: &mut Vec<cqueue::Entry>,
    io: &mut UringIo,
    rx: &mut Rx,
    engine: &mut Engine,
    now: Timestamp,
    control: &WorkerControl,
) {
    loop {
        cqes.clear();
        cqes.extend(io.ring.completion().take(512));
        if cqes.is_empty() {
            break;
        }
        for c in cqes.iter() {
            complete(c, io, rx, engine, now, control);
        }
        rx.bufs.publish();
        turn::report_send_errors(engine, io, now);
    }
    recv::drain_listens(io, rx, engine, now);
    while let Some(what) = io.rearm.pop() {
        io.arm(what);
    }
}

fn run_loop(
    engine: &mut Engine,
    io: &mut UringIo,
    rx: &mut Rx,
    clock: &Clock,
    control: &WorkerControl,
) -> io::Result<()> {
    let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(512);
    let mut began = clock.now();
    loop {
        let before = clock.now();
        // The turn's sends leave with this submission (those that left earlier in the turn, the
        // queue being full or a resend due, are timed as leaving now too: see `tids.rs`).
        engine.answers_sent(began, before);
        uring::submit_and_wait(&io.ring, turn::next_wait(engine, before))?;
        // Every submission that could name these descriptors has been made.
        io.socks.close_released();
        if io.recv_failures > 10_000 {
            return Err(io::Error::other("io_uring receives keep failing; restart with --io epoll"));
        }
        let now = clock.now();
        began = now;
        reap(&mut cqes, io, rx, engine, now, control);
        if engine.timer_due(now) {
            // Receive before resend: a datagram that arrived during this turn is posted only
            // when the ring is entered (DEFER_TASKRUN); enter without waiting and take it, so
            // that a final ACK or a client's next request already here is never answered by a
            // retransmission of the transfer it ends.
            uring::submit_and_wait(&io.ring, Duration::ZERO)?;
            reap(&mut cqes, io, rx, engine, now, control);
        }
        if turn::after_completions(engine, io, now) {
            return Ok(());
        }
    }
}
