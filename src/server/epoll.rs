//! The portable backend: readiness from epoll, `recvmmsg` batches, one `sendmsg` per datagram.
//!
//! Used where io_uring is unavailable (old kernels, container seccomp profiles,
//! `kernel.io_uring_disabled`) or when chosen with `--io epoll`. It drives the same
//! [`Engine`](super::engine::Engine) as the io_uring backend and sends DATA the same way: one
//! `sendmsg` of `[header, slice of the mapping]`, no copy in user space; the DATA packets of a
//! window go out as one `sendmsg` of `[header, slice]` pairs with a UDP segment size (GSO) where
//! the kernel takes it.

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::engine::Engine;
use super::io::{DataRun, Datagram, GsoLimit, Io, Outgoing, SendErrors, SockRef, Token, Via};
use super::sendmsg;
use super::socket::{PKTINFO_SPACE, PortPicker, RAW_ADDR_LEN, RawAddr, decode_sockaddr, gso_refused, parse_pktinfo};
use super::worker::{Clock, WorkerControl};
use crate::config::IoConfig;

const KIND_LISTEN: u64 = 0;
const KIND_TRANSFER: u64 = 1;
const KIND_WAKE: u64 = 2;
/// Datagrams per `recvmmsg`.
const BATCH: usize = 32;
/// Datagrams taken from one socket per readiness event before moving on (fairness).
const BUDGET: usize = 256;

fn ev_data(kind: u64, generation: u32, idx: u32) -> u64 {
    (kind << 56) | (u64::from(generation & 0x00ff_ffff) << 32) | u64::from(idx)
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

#[derive(Debug)]
struct SockSlot {
    sock: Option<UdpSocket>,
    token: Token,
    generation: u32,
}

/// The epoll implementation of [`Io`].
#[derive(Debug)]
pub(crate) struct EpollIo {
    epfd: OwnedFd,
    listens: Vec<Option<UdpSocket>>,
    socks: Vec<SockSlot>,
    free: Vec<u32>,
    ports: PortPicker,
    /// Failed sends, for the engine.
    errors: SendErrors,
    keep_listens: bool,
    /// Which runs of DATA go out as one send (UDP GSO).
    gso: GsoLimit,
}

impl EpollIo {
    /// Sets up the epoll instance and registers the listening sockets and the wake-up
    /// descriptor. Of `cfg`, only `single_port` and `gso` apply.
    pub(crate) fn new(cfg: &IoConfig, listens: Vec<UdpSocket>, ports: PortPicker, wake: RawFd) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: a new descriptor we own.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let io = Self {
            epfd,
            listens: listens.into_iter().map(Some).collect(),
            socks: Vec::new(),
            free: Vec::new(),
            ports,
            errors: SendErrors::default(),
            keep_listens: cfg.single_port,
            gso: GsoLimit::new(cfg.gso),
        };
        for (i, l) in io.listens.iter().enumerate() {
            if let Some(l) = l {
                io.register(l.as_raw_fd(), ev_data(KIND_LISTEN, 0, i as u32))?;
            }
        }
        io.register(wake, ev_data(KIND_WAKE, 0, 0))?;
        Ok(io)
    }

    fn register(&self, fd: RawFd, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: data };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    fn unregister(&self, fd: RawFd) {
        // SAFETY: removing a descriptor from our epoll set; errors are harmless here.
        unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Stops accepting requests: closes the listening sockets (kept in single-port mode, where
    /// transfers in progress use them).
    pub(crate) fn close_listens(&mut self) {
        if self.keep_listens {
            return;
        }
        for i in 0..self.listens.len() {
            if let Some(s) = self.listens[i].take() {
                self.unregister(s.as_raw_fd());
            }
        }
    }

    fn fd_of(&self, via: Via) -> Option<RawFd> {
        match via {
            Via::Listen(i) => self.listens.get(i as usize)?.as_ref().map(AsRawFd::as_raw_fd),
            Via::Transfer(SockRef(i)) => self.socks.get(i as usize)?.sock.as_ref().map(AsRawFd::as_raw_fd),
        }
    }
}

impl Io for EpollIo {
    fn open_transfer(&mut self, local: SocketAddr, token: Token) -> io::Result<SockRef> {
        let scope = match local {
            SocketAddr::V6(a) => a.scope_id(),
            SocketAddr::V4(_) => 0,
        };
        let sock = self.ports.bind(local.ip(), scope)?;
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.socks.push(SockSlot { sock: None, token, generation: 0 });
                (self.socks.len() - 1) as u32
            }
        };
        let slot = &mut self.socks[idx as usize];
        let data = ev_data(KIND_TRANSFER, slot.generation, idx);
        let fd = sock.as_raw_fd();
        slot.sock = Some(sock);
        slot.token = token;
        if let Err(e) = self.register(fd, data) {
            self.close_transfer(SockRef(idx));
            return Err(e);
        }
        Ok(SockRef(idx))
    }

    fn close_transfer(&mut self, sock: SockRef) {
        let Some(slot) = self.socks.get_mut(sock.0 as usize) else {
            return;
        };
        if let Some(s) = slot.sock.take() {
            slot.generation = slot.generation.wrapping_add(1) & 0x00ff_ffff;
            let fd = s.as_raw_fd();
            self.unregister(fd);
            drop(s);
            self.free.push(sock.0);
        }
    }

    fn can_send(&self) -> bool {
        true
    }

    fn send(&mut self, out: Outgoing<'_>) {
        let Some(fd) = self.fd_of(out.via) else {
            return;
        };
        // Every failure goes to the engine, which decides: a full socket buffer loses the
        // datagram like the network would, and the retransmission timer recovers it; a fault
        // (`EFAULT`: the file shrank under its mapping) ends the transfer.
        self.errors.record(out.token, sendmsg::send_now(fd, &out));
    }

    fn send_run(&mut self, run: DataRun<'_>) {
        if !self.gso.allows(&run) {
            return run.send_each(self);
        }
        let Some(fd) = self.fd_of(run.via) else {
            return;
        };
        if let Err(errno) = sendmsg::send_run_now(fd, &run) {
            if gso_refused(errno) {
                self.gso.refused(run.segment_len(), errno);
                return run.send_each(self);
            }
            self.errors.record(Some(run.token), Err(errno));
        }
    }
}

/// Receive buffers for one `recvmmsg` batch, allocated once per worker.
struct RxBatch {
    bufs: Vec<u8>,
    size: usize,
    names: [RawAddr; BATCH],
    cmsgs: [[u8; PKTINFO_SPACE]; BATCH],
    iovs: [libc::iovec; BATCH],
    msgs: [libc::mmsghdr; BATCH],
}

impl RxBatch {
    fn new(size: usize) -> Box<Self> {
        Box::new(Self {
            bufs: vec![0; size * BATCH],
            size,
            names: [RawAddr::zeroed(); BATCH],
            cmsgs: [[0; PKTINFO_SPACE]; BATCH],
            iovs: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            // SAFETY: mmsghdr is plain data; all-zero is valid.
            msgs: unsafe { std::mem::zeroed() },
        })
    }

    /// Receives from `fd` until it is empty or the budget is spent, handing each datagram to the
    /// engine.
    fn drain(
        &mut self,
        fd: RawFd,
        via: Via,
        token: Option<Token>,
        engine: &mut Engine,
        io: &mut EpollIo,
        now: crate::proto::Timestamp,
    ) {
        let mut taken = 0;
        while taken < BUDGET {
            for i in 0..BATCH {
                self.iovs[i] =
                    libc::iovec { iov_base: self.bufs[i * self.size..].as_mut_ptr().cast(), iov_len: self.size };
                let m = &mut self.msgs[i].msg_hdr;
                m.msg_name = (&mut self.names[i] as *mut RawAddr).cast();
                m.msg_namelen = RAW_ADDR_LEN;
                m.msg_iov = &mut self.iovs[i];
                m.msg_iovlen = 1;
                m.msg_control = self.cmsgs[i].as_mut_ptr().cast();
                m.msg_controllen = PKTINFO_SPACE;
                m.msg_flags = 0;
            }
            // SAFETY: every mmsghdr points into buffers owned by `self`, valid for the call.
            let n = unsafe {
                libc::recvmmsg(fd, self.msgs.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
            };
            if n <= 0 {
                return;
            }
            for i in 0..n as usize {
                let h = &self.msgs[i].msg_hdr;
                // SAFETY: the kernel wrote `msg_namelen` bytes of address into names[i]; clamped to its size.
                let name = unsafe {
                    std::slice::from_raw_parts(
                        (&self.names[i] as *const RawAddr).cast::<u8>(),
                        (h.msg_namelen as usize).min(RAW_ADDR_LEN as usize),
                    )
                };
                let Some(peer) = decode_sockaddr(name) else {
                    continue;
                };
                let local = match via {
                    Via::Listen(_) => parse_pktinfo(&self.cmsgs[i][..h.msg_controllen.min(PKTINFO_SPACE)]),
                    Via::Transfer(_) => None,
                };
                let len = (self.msgs[i].msg_len as usize).min(self.size);
                let d = Datagram {
                    via,
                    token,
                    peer,
                    local,
                    payload: &self.bufs[i * self.size..i * self.size + len],
                    truncated: h.msg_flags & libc::MSG_TRUNC != 0,
                };
                engine.on_datagram(now, &d, io);
            }
            taken += n as usize;
            if (n as usize) < BATCH {
                return;
            }
        }
    }
}

/// Runs a worker on epoll until the engine has finished after a stop.
pub(crate) fn run(
    engine: &mut Engine,
    io: &mut EpollIo,
    clock: &Clock,
    control: &WorkerControl,
    rx_size: usize,
) -> io::Result<()> {
    let mut rx = RxBatch::new(rx_size);
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        let now = clock.now();
        let timeout = match engine.next_wakeup() {
            Some(t) => t.saturating_since(now).as_micros().div_ceil(1000).min(1000) as i32,
            None => 1000,
        };
        // SAFETY: `events` is a valid array of the length given.
        let n = unsafe { libc::epoll_wait(io.epfd.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = clock.now();
        for ev in &events[..n as usize] {
            let data = ev.u64;
            let idx = data as u32;
            match data >> 56 {
                KIND_WAKE => {
                    control.drain_wake();
                    if control.stop_requested() {
                        engine.begin_stop(now);
                        io.close_listens();
                    }
                    if control.abort_requested() {
                        engine.abort_now(now);
                    }
                }
                KIND_LISTEN => {
                    if let Some(fd) = io.fd_of(Via::Listen(idx)) {
                        rx.drain(fd, Via::Listen(idx), None, engine, io, now);
                    }
                }
                _ => {
                    let generation = ((data >> 32) & 0x00ff_ffff) as u32;
                    let Some(slot) = io.socks.get(idx as usize) else {
                        continue;
                    };
                    if slot.generation != generation {
                        continue;
                    }
                    let (Some(fd), token) = (slot.sock.as_ref().map(AsRawFd::as_raw_fd), slot.token) else {
                        continue;
                    };
                    rx.drain(fd, Via::Transfer(SockRef(idx)), Some(token), engine, io, now);
                }
            }
            while let Some((token, errno)) = io.errors.pop() {
                engine.on_send_error(now, token, errno, io);
            }
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

const _: () = assert!(size_of::<RawAddr>() >= size_of::<libc::sockaddr_in6>());
