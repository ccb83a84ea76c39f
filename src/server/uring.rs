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

use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::engine::Engine;
use super::io::{DataRun, Datagram, GsoLimit, Io, MAX_HEAD, MAX_RUN, Outgoing, SendErrors, SockRef, Token, Via};
use super::sendmsg;
use super::socket::{PKTINFO_SPACE, PortPicker, RAW_ADDR_LEN, RawAddr, decode_sockaddr, gso_refused, parse_pktinfo};
use super::worker::{Clock, RX_SIZE, WorkerControl};
use crate::config::IoConfig;
use crate::fs::FileVersion;
use crate::ring::BufRing;
use tracing::warn;

const KIND_LISTEN: u64 = 1;
const KIND_XFER: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_WAKE: u64 = 4;
const KIND_CANCEL: u64 = 5;
const KIND_RUN: u64 = 6;
/// Run slots per worker: runs in flight at once (each carries a whole window).
const RUN_SLOTS: usize = 64;
/// Buffer group of the provided-buffer ring.
const BGID: u16 = 0;

fn ud(kind: u64, generation: u32, idx: u32) -> u64 {
    (kind << 60) | (u64::from(generation & 0x0fff_ffff) << 32) | u64::from(idx)
}

/// What a send slot holds until its completion.
struct SendSlot {
    msg: libc::msghdr,
    iov: [libc::iovec; 2],
    addr: RawAddr,
    cmsg: [u8; PKTINFO_SPACE],
    head: [u8; MAX_HEAD],
    keep: Option<Rc<FileVersion>>,
    token: Option<Token>,
}

/// What a run slot holds until its completion: DATA packets of one transfer as one message
/// that the kernel cuts into datagrams.
struct RunSlot {
    msg: libc::msghdr,
    iov: [libc::iovec; 2 * MAX_RUN],
    hdrs: [[u8; 4]; MAX_RUN],
    addr: RawAddr,
    cmsg: [u8; PKTINFO_SPACE],
    keep: Option<Rc<FileVersion>>,
    token: Option<Token>,
    /// Segment length of the send.
    seg: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SockState {
    Open,
    Closing,
}

struct SockEntry {
    sock: Option<UdpSocket>,
    token: Token,
    generation: u32,
    state: SockState,
    armed: bool,
}

/// Receive-side state the loop reads while the engine holds the [`UringIo`].
struct Rx {
    bufs: BufRing,
    /// Templates for multishot receives: name (and control for listening sockets). The kernel
    /// reads them at submission; they also tell [`types::RecvMsgOut::parse`] the layout.
    listen_msg: libc::msghdr,
    xfer_msg: libc::msghdr,
}

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

/// What a multishot receive that ended must be armed again for.
#[derive(Clone, Copy, Debug)]
enum Rearm {
    Listen(u32),
    Transfer { idx: u32, generation: u32 },
}

/// The io_uring implementation of [`Io`].
pub(crate) struct UringIo {
    ring: IoUring,
    /// The receive templates inside the worker's boxed [`Rx`].
    listen_msg: *const libc::msghdr,
    xfer_msg: *const libc::msghdr,
    listens: Vec<(Option<UdpSocket>, bool)>,
    close_listens_on_stop: bool,
    socks: Vec<SockEntry>,
    free_socks: Vec<u32>,
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
    /// Sockets to close once the submissions that may name them have been made.
    to_close: Vec<UdpSocket>,
    /// The listening sockets are being closed (stop): their receives are not armed again.
    listens_closing: bool,
    /// The loop is over: nothing new is armed or opened.
    draining: bool,
    /// Receives ended by an error other than running out of buffers, in a row.
    recv_failures: u32,
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

fn build_ring(entries: u32) -> io::Result<IoUring> {
    let cq = entries.saturating_mul(4);
    let attempts: [fn(&mut io_uring::Builder); 3] = [
        |b| {
            b.setup_single_issuer().setup_coop_taskrun().setup_defer_taskrun();
        },
        |b| {
            b.setup_coop_taskrun();
        },
        |_| {},
    ];
    let mut last = None;
    for f in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq);
        f(&mut b);
        match b.build(entries) {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
}

impl Uring {
    /// Sets up the ring, the buffer ring and the send slots, and arms the receives.
    pub(crate) fn new(cfg: &IoConfig, listens: Vec<UdpSocket>, ports: PortPicker, wake_fd: RawFd) -> io::Result<Self> {
        let gso = cfg.gso;
        let ring = build_ring(cfg.ring_entries)?;
        let count = u16::try_from(cfg.rx_buffers).map_err(|_| io::Error::other("--rx-buffers too large"))?;
        // SAFETY: the buffers live in `Rx`, which `Uring` drops after `UringIo` (and its ring),
        // and the worker drains every receive before that (see `run`).
        let bufs = unsafe { BufRing::new(&ring, count, RX_SIZE, BGID)? };
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut listen_msg: libc::msghdr = unsafe { std::mem::zeroed() };
        listen_msg.msg_namelen = RAW_ADDR_LEN;
        listen_msg.msg_controllen = PKTINFO_SPACE;
        // SAFETY: as above.
        let mut xfer_msg: libc::msghdr = unsafe { std::mem::zeroed() };
        xfer_msg.msg_namelen = RAW_ADDR_LEN;
        let sends = (0..cfg.send_slots)
            .map(|_| SendSlot {
                // SAFETY: plain data; all-zero is valid.
                msg: unsafe { std::mem::zeroed() },
                iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2],
                addr: RawAddr::zeroed(),
                cmsg: [0; PKTINFO_SPACE],
                head: [0; MAX_HEAD],
                keep: None,
                token: None,
            })
            .collect();
        let runs = (0..if gso { RUN_SLOTS } else { 0 })
            .map(|_| RunSlot {
                // SAFETY: plain data; all-zero is valid.
                msg: unsafe { std::mem::zeroed() },
                iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2 * MAX_RUN],
                hdrs: [[0; 4]; MAX_RUN],
                addr: RawAddr::zeroed(),
                cmsg: [0; PKTINFO_SPACE],
                keep: None,
                token: None,
                seg: 0,
            })
            .collect::<Box<[RunSlot]>>();
        let rx = Box::new(Rx { bufs, listen_msg, xfer_msg });
        let mut io = UringIo {
            ring,
            listen_msg: &rx.listen_msg,
            xfer_msg: &rx.xfer_msg,
            listens: listens.into_iter().map(|s| (Some(s), false)).collect(),
            close_listens_on_stop: !cfg.single_port,
            // Reserved for the worker's limit: address space only until used, and never moved.
            socks: Vec::with_capacity(if cfg.single_port { 0 } else { cfg.max_transfers }),
            free_socks: Vec::new(),
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
            to_close: Vec::new(),
            listens_closing: false,
            draining: false,
            recv_failures: 0,
        };
        for i in 0..io.listens.len() as u32 {
            io.arm(Rearm::Listen(i));
        }
        io.arm_wake();
        Ok(Self { io, rx: ManuallyDrop::new(rx) })
    }
}

impl UringIo {
    /// Pushes an SQE, submitting first if the queue is full.
    fn push(&mut self, sqe: &squeue::Entry) {
        loop {
            // SAFETY: every SQE built here refers to memory owned by `self` (send slots, receive
            // templates, wake buffer) or by a file version a send slot holds, all of which stay
            // valid until the operation's last completion.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                self.in_flight += 1;
                return;
            }
            // The submission queue is full: hand it to the kernel and try again.
            let _ = self.ring.submit();
        }
    }

    fn arm(&mut self, what: Rearm) {
        if self.draining {
            return;
        }
        let (fd, msg, data) = match what {
            Rearm::Listen(idx) => {
                let Some((Some(s), armed)) = self.listens.get_mut(idx as usize) else {
                    return;
                };
                *armed = true;
                (s.as_raw_fd(), self.listen_msg, ud(KIND_LISTEN, 0, idx))
            }
            Rearm::Transfer { idx, generation } => {
                let Some(e) = self.socks.get_mut(idx as usize) else {
                    return;
                };
                let Some(s) = e.sock.as_ref() else { return };
                if e.state != SockState::Open || e.generation != generation {
                    return;
                }
                e.armed = true;
                (s.as_raw_fd(), self.xfer_msg, ud(KIND_XFER, generation, idx))
            }
        };
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), msg, BGID).build().user_data(data);
        self.push(&sqe);
    }

    fn arm_wake(&mut self) {
        if self.draining {
            return;
        }
        let buf = (&mut **self.wake_buf as *mut u64).cast::<u8>();
        let sqe = opcode::Read::new(types::Fd(self.wake_fd), buf, 8).build().user_data(ud(KIND_WAKE, 0, 0));
        self.push(&sqe);
    }

    fn cancel(&mut self, target: u64) {
        let sqe = opcode::AsyncCancel::new(target).build().user_data(ud(KIND_CANCEL, 0, 0));
        self.push(&sqe);
    }

    fn close_listens(&mut self) {
        if !self.close_listens_on_stop || self.listens_closing {
            return;
        }
        self.listens_closing = true;
        for i in 0..self.listens.len() {
            match self.listens[i] {
                (Some(_), true) => self.cancel(ud(KIND_LISTEN, 0, i as u32)),
                (Some(_), false) => self.to_close.extend(self.listens[i].0.take()),
                (None, _) => {}
            }
        }
    }

    /// Cancels every receive (for the end of the loop).
    fn cancel_all(&mut self) {
        for i in 0..self.listens.len() {
            if self.listens[i].1 {
                self.cancel(ud(KIND_LISTEN, 0, i as u32));
            }
        }
        for i in 0..self.socks.len() {
            let e = &self.socks[i];
            if e.armed && e.state == SockState::Open {
                let t = ud(KIND_XFER, e.generation, i as u32);
                self.socks[i].state = SockState::Closing;
                self.cancel(t);
            }
        }
        self.cancel(ud(KIND_WAKE, 0, 0));
    }

    fn free_sock(&mut self, idx: u32) {
        let e = &mut self.socks[idx as usize];
        // A send queued but not yet submitted may still name this descriptor.
        self.to_close.extend(e.sock.take());
        e.armed = false;
        e.generation = e.generation.wrapping_add(1) & 0x0fff_ffff;
        self.free_socks.push(idx);
    }

    fn fd_of(&self, via: Via) -> Option<RawFd> {
        match via {
            Via::Listen(i) => self.listens.get(i as usize)?.0.as_ref().map(AsRawFd::as_raw_fd),
            Via::Transfer(SockRef(i)) => {
                let e = self.socks.get(i as usize)?;
                (e.state == SockState::Open).then_some(())?;
                e.sock.as_ref().map(AsRawFd::as_raw_fd)
            }
        }
    }
}

impl Io for UringIo {
    fn open_transfer(&mut self, local: SocketAddr, token: Token) -> io::Result<SockRef> {
        if self.draining {
            return Err(io::Error::other("worker is stopping"));
        }
        let scope = match local {
            SocketAddr::V6(a) => a.scope_id(),
            SocketAddr::V4(_) => 0,
        };
        let sock = self.ports.bind(local.ip(), scope)?;
        let idx = match self.free_socks.pop() {
            Some(i) => i,
            None => {
                self.socks.push(SockEntry { sock: None, token, generation: 0, state: SockState::Open, armed: false });
                (self.socks.len() - 1) as u32
            }
        };
        let e = &mut self.socks[idx as usize];
        e.sock = Some(sock);
        e.token = token;
        e.state = SockState::Open;
        let generation = e.generation;
        self.arm(Rearm::Transfer { idx, generation });
        Ok(SockRef(idx))
    }

    fn close_transfer(&mut self, sock: SockRef) {
        let Some(e) = self.socks.get_mut(sock.0 as usize) else {
            return;
        };
        if e.state != SockState::Open || e.sock.is_none() {
            return;
        }
        if e.armed {
            // Closed when the receive's last completion arrives.
            e.state = SockState::Closing;
            let target = ud(KIND_XFER, e.generation, sock.0);
            self.cancel(target);
        } else {
            self.free_sock(sock.0);
        }
    }

    fn can_send(&self) -> bool {
        !self.free_sends.is_empty()
    }

    fn send(&mut self, out: Outgoing<'_>) {
        let Some(fd) = self.fd_of(out.via) else {
            return;
        };
        let Some(idx) = self.free_sends.pop() else {
            // No slot: send at once rather than lose the datagram. The engine checks for room
            // once per run of DATA, so this carries DATA too: the rest of a run sent one
            // datagram at a time (no GSO), besides control packets. Its failure is reported like
            // a completion's.
            self.errors.record(out.token, sendmsg::send_now(fd, &out));
            return;
        };
        let slot = &mut self.sends[idx as usize];
        let n = out.head.len().min(MAX_HEAD);
        slot.head[..n].copy_from_slice(&out.head[..n]);
        let iov_len = sendmsg::datagram_iov(&slot.head[..n], out.body, &mut slot.iov);
        slot.keep = out.body.map(|b| Rc::clone(b.file));
        let control_len = sendmsg::source_control(out.via, out.from, &mut slot.cmsg);
        let addr_len;
        (slot.addr, addr_len) = RawAddr::new(&out.to);
        sendmsg::set_message(
            &mut slot.msg,
            &mut slot.addr,
            addr_len,
            &mut slot.iov,
            iov_len,
            &mut slot.cmsg,
            control_len,
        );
        slot.token = out.token;
        let sqe = opcode::SendMsg::new(types::Fd(fd), &slot.msg).build().user_data(ud(KIND_SEND, 0, idx));
        self.push(&sqe);
    }

    fn send_run(&mut self, run: DataRun<'_>) {
        if !self.gso.allows(&run) {
            return run.send_each(self);
        }
        let Some(fd) = self.fd_of(run.via) else {
            return;
        };
        let Some(idx) = self.free_runs.pop() else {
            return run.send_each(self);
        };
        let slot = &mut self.runs[idx as usize];
        let iov_len = sendmsg::run_iov(run.segs, &mut slot.hdrs, &mut slot.iov);
        slot.keep = Some(Rc::clone(run.file));
        slot.token = Some(run.token);
        slot.seg = run.segment_len();
        let control_len = sendmsg::run_control(&run, &mut slot.cmsg);
        let addr_len;
        (slot.addr, addr_len) = RawAddr::new(&run.to);
        sendmsg::set_message(
            &mut slot.msg,
            &mut slot.addr,
            addr_len,
            &mut slot.iov,
            iov_len,
            &mut slot.cmsg,
            control_len,
        );
        let sqe = opcode::SendMsg::new(types::Fd(fd), &slot.msg).build().user_data(ud(KIND_RUN, 0, idx));
        self.push(&sqe);
    }
}

/// Handles one completion.
fn complete(
    cqe: &cqueue::Entry,
    io: &mut UringIo,
    rx: &mut Rx,
    engine: &mut Engine,
    now: crate::proto::Timestamp,
    control: &WorkerControl,
) {
    let data = cqe.user_data();
    let kind = data >> 60;
    let generation = ((data >> 32) & 0x0fff_ffff) as u32;
    let idx = data as u32;
    let res = cqe.result();
    let flags = cqe.flags();
    match kind {
        KIND_LISTEN | KIND_XFER => {
            let more = cqueue::more(flags);
            if !more {
                io.in_flight -= 1;
            }
            let (via, token, msg, live) = if kind == KIND_LISTEN {
                let live = io.listens.get(idx as usize).is_some_and(|l| l.0.is_some());
                (Via::Listen(idx), None, &rx.listen_msg, live)
            } else {
                let e = io.socks.get(idx as usize);
                let live = e.is_some_and(|e| e.generation == generation && e.state == SockState::Open);
                (Via::Transfer(SockRef(idx)), e.map(|e| e.token), &rx.xfer_msg, live)
            };
            if res >= 0 {
                io.recv_failures = 0;
            } else if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                io.recv_failures += 1;
            }
            if res >= 0 {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    if live {
                        deliver(rx.bufs.get(bid, res as usize), msg, via, token, io, engine, now);
                    }
                    rx.bufs.push(bid);
                }
            }
            if !more {
                if kind == KIND_LISTEN {
                    if let Some(l) = io.listens.get_mut(idx as usize) {
                        l.1 = false;
                        if res == -libc::ECANCELED || io.listens_closing {
                            io.to_close.extend(l.0.take());
                        } else if l.0.is_some() {
                            io.rearm.push(Rearm::Listen(idx));
                        }
                    }
                } else if let Some(e) = io.socks.get_mut(idx as usize) {
                    if e.generation == generation {
                        e.armed = false;
                        match e.state {
                            SockState::Closing => io.free_sock(idx),
                            SockState::Open => io.rearm.push(Rearm::Transfer { idx, generation }),
                        }
                    }
                }
            }
        }
        KIND_SEND => {
            io.in_flight -= 1;
            let slot = &mut io.sends[idx as usize];
            slot.keep = None;
            let token = slot.token.take();
            io.free_sends.push(idx);
            if res < 0 {
                io.errors.record(token, Err(-res));
            }
        }
        KIND_RUN => {
            io.in_flight -= 1;
            let slot = &mut io.runs[idx as usize];
            slot.keep = None;
            let token = slot.token.take();
            let seg = slot.seg;
            io.free_runs.push(idx);
            if res < 0 {
                if gso_refused(-res) {
                    // The window is lost like on the network; the retransmission timer resends it
                    // one datagram at a time.
                    io.gso.refused(seg, -res);
                }
                io.errors.record(token, Err(-res));
            }
        }
        KIND_WAKE => {
            io.in_flight -= 1;
            if res == -libc::ECANCELED {
                return;
            }
            if control.stop_requested() {
                engine.begin_stop(now);
                io.close_listens();
            }
            if control.abort_requested() {
                engine.abort_now(now);
            }
            io.arm_wake();
        }
        _ => io.in_flight -= 1,
    }
}

fn deliver(
    buf: &[u8],
    msg: &libc::msghdr,
    via: Via,
    token: Option<Token>,
    io: &mut UringIo,
    engine: &mut Engine,
    now: crate::proto::Timestamp,
) {
    let Ok(out) = types::RecvMsgOut::parse(buf, msg) else {
        return;
    };
    let name = out.name_data();
    let Some(peer) = decode_sockaddr(&name[..name.len().min(out.incoming_name_len() as usize)]) else {
        return;
    };
    let local = match via {
        Via::Listen(_) => parse_pktinfo(out.control_data()),
        Via::Transfer(_) => None,
    };
    let d = Datagram { via, token, peer, local, payload: out.payload_data(), truncated: out.is_payload_truncated() };
    engine.on_datagram(now, &d, io);
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
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while io.in_flight > 0 && std::time::Instant::now() < deadline {
        let ts = types::Timespec::from(Duration::from_millis(50));
        let _ = io.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
        let cqes: Vec<cqueue::Entry> = io.ring.completion().collect();
        for c in &cqes {
            complete(c, io, rx, engine, clock.now(), control);
        }
        rx.bufs.publish();
        io.to_close.clear();
    }
    if io.in_flight > 0 {
        warn!(operations = io.in_flight, "io_uring operations still in flight at exit; their memory is kept");
    }
    result
}

fn run_loop(
    engine: &mut Engine,
    io: &mut UringIo,
    rx: &mut Rx,
    clock: &Clock,
    control: &WorkerControl,
) -> io::Result<()> {
    let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(512);
    loop {
        let now = clock.now();
        let wait = engine
            .next_wakeup()
            .map_or(Duration::from_secs(1), |t| t.saturating_since(now))
            .min(Duration::from_secs(1));
        let ts = types::Timespec::from(wait);
        match io.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts)) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {}
            Err(e) => return Err(e),
        }
        // Every submission that could name these descriptors has been made.
        io.to_close.clear();
        if io.recv_failures > 10_000 {
            return Err(io::Error::other("io_uring receives keep failing; restart with --io epoll"));
        }
        let now = clock.now();
        loop {
            cqes.clear();
            cqes.extend(io.ring.completion().take(512));
            if cqes.is_empty() {
                break;
            }
            for c in &cqes {
                complete(c, io, rx, engine, now, control);
            }
            rx.bufs.publish();
            while let Some((token, errno)) = io.errors.pop() {
                engine.on_send_error(now, token, errno, io);
            }
        }
        while let Some(what) = io.rearm.pop() {
            io.arm(what);
        }
        engine.on_timers(now, io);
        engine.flush(now, io);
        while let Some((token, errno)) = io.errors.pop() {
            engine.on_send_error(now, token, errno, io);
            engine.flush(now, io);
        }
        if engine.is_finished() {
            return Ok(());
        }
    }
}
