//! The portable backend: readiness from epoll, `recvmmsg` batches, `sendmmsg` batches.
//!
//! Used where io_uring is unavailable (old kernels, container seccomp profiles,
//! `kernel.io_uring_disabled`) or when chosen with `--io epoll`. It drives the same
//! [`Engine`](super::engine::Engine) as the io_uring backend and sends DATA the same way:
//! `[header, slice of the mapping]`, no copy of the file data in user space.
//!
//! The datagrams of a turn are queued ([`tx::TxQueue`]: the head copied into a slot, the file
//! version held until the send) and handed to the kernel with one `sendmmsg` per socket that has
//! some, each socket's in the order queued. In single-port mode every datagram leaves from the
//! listening socket, so a turn's answers to a batch of ACKs go out in one call. The queue is
//! flushed when it is full, before a socket with queued datagrams is closed or sends a GSO run
//! (which goes out at once, as one `sendmsg` of `[header, slice]` pairs with a UDP segment size,
//! where the kernel takes it), before the zero-timeout wait that takes what arrived before
//! timers resend, and at the end of each turn, before the worker waits again; the failures of a
//! flush are handed to the engine like those of an immediate send.

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::control::WorkerControl;
use super::engine::Engine;
use super::io::{DataRun, GsoLimit, Io, Outgoing, RX_SIZE, SendErrors, SockRef, Token, Via};
use super::rx_batch::RxBatch;
use super::sendmsg;
use super::socket::{PortPicker, RawAddr, gso_refused};
use super::transfer_sockets::{MAX_DESCRIPTORS, TransferSockets};
use super::turn::{self, LoopIo};
use crate::config::IoConfig;
use crate::sys::clock::Clock;
use crate::sys::epoll::{Epoll, NO_EVENT};
use tx::TxQueue;

mod tx;

const KIND_LISTEN: u64 = 0;
const KIND_TRANSFER: u64 = 1;
const KIND_WAKE: u64 = 2;
/// Datagrams taken from one socket per readiness event before moving on (fairness).
const BUDGET: usize = 256;

/// An event's data: its kind, a 24-bit tag (a transfer socket's descriptor, below
/// [`MAX_DESCRIPTORS`]) and an index (of a listening socket, or the slot of the transfer a
/// transfer socket is for).
fn ev_data(kind: u64, tag: u32, idx: u32) -> u64 {
    (kind << 56) | (u64::from(tag & 0x00ff_ffff) << 32) | u64::from(idx)
}

/// The epoll implementation of [`Io`].
#[derive(Debug)]
pub(crate) struct EpollIo {
    ep: Epoll,
    listens: Vec<Option<UdpSocket>>,
    /// The transfer sockets, by descriptor. Those closed in a turn give their descriptors back
    /// at the start of the next: until then no new socket takes one, so an event of this turn
    /// read for a descriptor is for the socket it was registered for.
    socks: TransferSockets,
    ports: PortPicker,
    /// Failed sends, for the engine.
    errors: SendErrors,
    keep_listens: bool,
    /// Which runs of DATA go out as one send (UDP GSO).
    gso: GsoLimit,
    /// The datagrams of this turn not yet sent.
    tx: TxQueue,
}

impl EpollIo {
    /// Sets up the epoll instance and registers the listening sockets and the wake-up
    /// descriptor. Of `cfg`, only `single_port`, `max_transfers` and `gso` apply.
    pub(crate) fn new(cfg: &IoConfig, listens: Vec<UdpSocket>, ports: PortPicker, wake: RawFd) -> io::Result<Self> {
        let io = Self {
            ep: Epoll::new()?,
            listens: listens.into_iter().map(Some).collect(),
            socks: TransferSockets::new(),
            ports,
            errors: SendErrors::default(),
            keep_listens: cfg.single_port,
            gso: GsoLimit::new(cfg.gso),
            tx: TxQueue::new(),
        };
        for (i, l) in io.listens.iter().enumerate() {
            if let Some(l) = l {
                io.ep.add(l.as_raw_fd(), ev_data(KIND_LISTEN, 0, i as u32))?;
            }
        }
        io.ep.add(wake, ev_data(KIND_WAKE, 0, 0))?;
        Ok(io)
    }

    fn fd_of(&self, via: Via) -> Option<RawFd> {
        match via {
            Via::Listen(i) => self.listens.get(i as usize)?.as_ref().map(AsRawFd::as_raw_fd),
            Via::Transfer(sock) => self.socks.fd(sock),
        }
    }

    /// Sends the queued datagrams, recording their failures for the engine.
    fn flush_sends(&mut self) {
        if !self.tx.is_empty() {
            self.tx.flush(&mut self.errors);
        }
    }

    /// Sends the queued datagrams if one of them leaves from `fd`.
    fn flush_sends_of(&mut self, fd: RawFd) {
        if self.tx.has(fd) {
            self.tx.flush(&mut self.errors);
        }
    }

    /// Ends a turn: sends the queue and hands the engine the failures, with the sends they lead
    /// to, until the queue is empty.
    fn end_turn(&mut self, engine: &mut Engine, now: crate::proto::Timestamp) {
        loop {
            self.flush_sends();
            let mut failed = false;
            while let Some((token, errno)) = self.errors.pop() {
                engine.on_send_error(now, token, errno, self);
                failed = true;
            }
            if !failed {
                return;
            }
            engine.flush(now, self);
        }
    }
}

impl Io for EpollIo {
    fn open_transfer(&mut self, local: SocketAddr, avoid: Option<u16>, token: Token) -> io::Result<(SockRef, u16)> {
        let scope = match local {
            SocketAddr::V6(a) => a.scope_id(),
            SocketAddr::V4(_) => 0,
        };
        let (sock, port) = self.ports.bind(local.ip(), scope, avoid)?;
        let sock = self.socks.hold(sock)?;
        let fd = sock.0 as RawFd;
        if let Err(e) = self.ep.add(fd, ev_data(KIND_TRANSFER, sock.0, token.slot())) {
            self.close_transfer(sock, token);
            return Err(e);
        }
        Ok((sock, port))
    }

    fn close_transfer(&mut self, sock: SockRef, _token: Token) {
        let Some(fd) = self.socks.fd(sock) else { return };
        // Queued datagrams leave before their socket closes.
        self.flush_sends_of(fd);
        self.ep.delete(fd);
        self.socks.release_later(sock);
    }

    fn can_send(&self) -> bool {
        true
    }

    fn send(&mut self, out: Outgoing<'_>) {
        let Some(fd) = self.fd_of(out.via) else {
            return;
        };
        // Queued until the end of the turn, or sent now to make room. Every failure goes to
        // the engine, which decides: a full socket buffer loses the datagram like the network
        // would, and the retransmission timer recovers it; a fault (`EFAULT`: the file shrank
        // under its mapping) ends the transfer.
        if self.tx.is_full() {
            self.flush_sends();
        }
        self.tx.push(fd, &out);
    }

    fn send_run(&mut self, run: DataRun<'_>) {
        if !self.gso.allows(&run) {
            return run.send_each(self);
        }
        let Some(fd) = self.fd_of(run.via) else {
            return;
        };
        // The run goes at once: what the socket has queued goes first.
        self.flush_sends_of(fd);
        if let Err(errno) = sendmsg::send_run_now(fd, &run) {
            if gso_refused(errno) {
                self.gso.refused(run.segment_len(), errno);
                return run.send_each(self);
            }
            self.errors.record(Some(run.token), Err(errno));
        }
    }
}

impl LoopIo for EpollIo {
    /// Closes the listening sockets; in single-port mode they stay, as transfers in progress use
    /// them.
    fn close_listens(&mut self) {
        if self.keep_listens {
            return;
        }
        self.flush_sends();
        for i in 0..self.listens.len() {
            if let Some(s) = self.listens[i].take() {
                self.ep.delete(s.as_raw_fd());
            }
        }
    }

    fn send_errors(&mut self) -> &mut SendErrors {
        &mut self.errors
    }
}

/// Receives from every socket in `events`, handing each datagram to the engine.
fn handle_events(
    events: &[libc::epoll_event],
    rx: &mut RxBatch,
    engine: &mut Engine,
    io: &mut EpollIo,
    control: &WorkerControl,
    now: crate::proto::Timestamp,
) {
    for ev in events {
        let data = ev.u64;
        let idx = data as u32;
        match data >> 56 {
            KIND_WAKE => {
                control.drain_wake();
                turn::on_wake(engine, io, control, now);
            }
            KIND_LISTEN => {
                if let Some(fd) = io.fd_of(Via::Listen(idx)) {
                    rx.drain(fd, Via::Listen(idx), None, BUDGET, engine, io, now);
                }
            }
            _ => {
                let sock = SockRef(((data >> 32) & 0x00ff_ffff) as u32);
                // Not held: closed in this turn, after the wait returned its event.
                if let Some(fd) = io.socks.fd(sock) {
                    rx.drain(fd, Via::Transfer(sock), Some(idx), BUDGET, engine, io, now);
                }
            }
        }
        turn::report_send_errors(engine, io, now);
    }
}

/// Receives what waits on each listening socket, up to [`BUDGET`] datagrams each.
fn drain_listens(rx: &mut RxBatch, engine: &mut Engine, io: &mut EpollIo, now: crate::proto::Timestamp) {
    for idx in 0..io.listens.len() as u32 {
        if let Some(fd) = io.fd_of(Via::Listen(idx)) {
            rx.drain(fd, Via::Listen(idx), None, BUDGET, engine, io, now);
        }
    }
    turn::report_send_errors(engine, io, now);
}

/// Runs a worker on epoll until the engine has finished after a stop.
pub(crate) fn run(engine: &mut Engine, io: &mut EpollIo, clock: &Clock, control: &WorkerControl) -> io::Result<()> {
    let mut rx = RxBatch::new(RX_SIZE, *clock);
    let mut events = [NO_EVENT; 256];
    let mut began = clock.now();
    // When the last turn's queued sends went to the kernel (`end_turn`).
    let mut sent = began;
    loop {
        // In whole milliseconds, rounded up: a deadline is never woken for early.
        let before = clock.now();
        engine.answers_sent(began, sent);
        // A wait cut short by a signal starts no turn: the next records none.
        (began, sent) = (before, before);
        let wait = turn::next_wait(engine, before);
        // No event of the last turn can name these descriptors any more.
        io.socks.close_released();
        let timeout = wait.as_micros().div_ceil(1000) as i32;
        let n = match io.ep.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let now = clock.now();
        began = now;
        handle_events(&events[..n], &mut rx, engine, io, control, now);
        if n == events.len() && !io.keep_listens {
            // More sockets were ready than one wait returns, and the kernel hands them out in
            // turn: with thousands of transfer sockets receiving, the listening socket's turn
            // came seldom (a 10,000-client storm's first answers took up to a second). Its
            // requests are taken now as well.
            drain_listens(&mut rx, engine, io, now);
        }
        if engine.timer_due(now) {
            // Receive before resend: take what arrived during this turn, so that a final ACK or
            // a client's next request already here is never answered by a retransmission of the
            // transfer it ends. What this turn queued goes first: the answers it brings may be
            // among what arrives.
            io.flush_sends();
            let n = match io.ep.wait(&mut events, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e),
            };
            handle_events(&events[..n], &mut rx, engine, io, control, now);
        }
        if turn::after_completions(engine, io, now) {
            io.flush_sends();
            return Ok(());
        }
        sent = clock.now();
        io.end_turn(engine, now);
    }
}

const _: () = assert!(size_of::<RawAddr>() >= size_of::<libc::sockaddr_in6>());
// A transfer socket's descriptor fits the tag of its events.
const _: () = assert!(MAX_DESCRIPTORS <= 1 << 24);

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;

    fn receiver() -> UdpSocket {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        rx
    }

    /// An epoll backend in single-port mode listening on one loopback socket, and the socket
    /// registered in place of its wake-up descriptor.
    fn backend() -> (EpollIo, UdpSocket) {
        let cfg = IoConfig { single_port: true, ..IoConfig::default() };
        let listen = UdpSocket::bind("127.0.0.1:0").unwrap();
        let wake = UdpSocket::bind("127.0.0.1:0").unwrap();
        let io = EpollIo::new(&cfg, vec![listen], PortPicker::new(None), wake.as_raw_fd()).unwrap();
        (io, wake)
    }

    fn out(via: Via, to: SocketAddr, head: &[u8]) -> Outgoing<'_> {
        Outgoing { via, to, from: None, head, body: None, token: None }
    }

    #[test]
    fn a_turn_of_sends_from_the_listening_socket_is_one_sendmmsg() {
        let rx = receiver();
        let to = rx.local_addr().unwrap();
        let (mut io, _wake) = backend();
        for i in 0..10u8 {
            io.send(out(Via::Listen(0), to, &[i]));
        }
        assert_eq!(io.tx.calls(), 0, "queued until the end of the turn");
        io.flush_sends();
        assert_eq!(io.tx.calls(), 1);
        let mut buf = [0u8; 8];
        for i in 0..10u8 {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], [i], "in the order sent");
        }
    }

    #[test]
    fn a_closing_transfer_socket_sends_what_it_queued_first() {
        let rx = receiver();
        let to = rx.local_addr().unwrap();
        let (mut io, _wake) = backend();
        let (sock, port) = io.open_transfer("127.0.0.1:0".parse().unwrap(), None, Token(1)).unwrap();
        io.send(out(Via::Transfer(sock), to, b"last"));
        io.close_transfer(sock, Token(1));
        let mut buf = [0u8; 8];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.port()), (&b"last"[..], port));
    }
}
