//! The receive side of the io_uring backend: one multishot `RECVMSG` per socket into the
//! provided-buffer ring, armed again when it ends; transfer sockets opened and closed around
//! their receives; each datagram received handed to the engine.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{cqueue, opcode, types};

use super::{BGID, KIND_CANCEL, KIND_LISTEN, KIND_WAKE, KIND_XFER, UringIo, ud};
use crate::proto::Timestamp;
use crate::ring::BufRing;
use crate::server::engine::Engine;
use crate::server::io::{Datagram, SockRef, Token, Via};
use crate::server::rx_batch::{RxBatch, listen_control};
use crate::server::socket::decode_sockaddr;
use crate::server::turn;
use crate::sys::clock::Arrivals;

/// Receive-side state the loop reads while the engine holds the [`UringIo`].
pub(super) struct Rx {
    pub(super) bufs: BufRing,
    /// Templates for multishot receives: name (and control for listening sockets). The kernel
    /// reads them at submission; they also tell [`types::RecvMsgOut::parse`] the layout.
    pub(super) listen_msg: libc::msghdr,
    pub(super) xfer_msg: libc::msghdr,
    /// Buffers for draining a listening socket (see [`LISTEN_DRAIN`]), and the arrival times
    /// of requests.
    pub(super) batch: Box<RxBatch>,
}

/// [`TransferSockets`] bits of a transfer socket: a multishot receive is armed.
const ARMED: u8 = 2;
/// [`TransferSockets`] bits of a transfer socket: its receive is being cancelled, and the
/// socket closes once the receive's last completion has arrived.
const CLOSING: u8 = 4;

/// Multishot receives armed at once on each listening socket. The kernel serves the receives
/// armed on a ring in turn, a bounded number of datagrams each, so one receive on the listening
/// socket gets as much as the receive of one transfer's socket: in a storm of thousands of
/// transfers the requests waited in the listening socket's buffer for seconds (an 8 MiB buffer
/// filled up, measured with `ss`), the clients repeated them and the repeats added to the load.
/// With four, the 10,000-client storm of `docs/benchmarks.md` kept that buffer empty most of
/// the time and the clients repeated a tenth as many requests.
pub(super) const LISTEN_RECEIVES: u8 = 4;

/// Datagrams a turn takes from a listening socket with `recvmmsg` after its completions, when
/// the socket received in that turn. The kernel serves the multishot receives of a ring in turn,
/// so with thousands of transfer sockets the requests got their answers seconds late even with
/// four receives on the listening socket (the 10,000-client storm of `docs/benchmarks.md`:
/// first answers at 1 s median, 4.9 s at worst, where single-port mode, whose every datagram
/// comes through the listening socket, answered within 150 ms), and clients repeated them. A
/// turn that heard a request now also takes what else is queued there, up to this many. Not in
/// single-port mode, where the listening socket's receives are all there is.
pub(super) const LISTEN_DRAIN: usize = 256;

/// What a multishot receive that ended must be armed again for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Rearm {
    Listen(u32),
    Transfer { sock: SockRef, slot: u32 },
}

impl UringIo {
    /// Arms the multishot receive of a socket (unless the loop is over or the socket is gone).
    pub(super) fn arm(&mut self, what: Rearm) {
        if self.draining {
            return;
        }
        let (fd, msg, data) = match what {
            Rearm::Listen(idx) => {
                let Some((Some(s), armed)) = self.listens.get_mut(idx as usize) else {
                    return;
                };
                *armed += 1;
                (s.as_raw_fd(), self.listen_msg, ud(KIND_LISTEN, 0, idx))
            }
            Rearm::Transfer { sock, slot } => {
                let Some(fd) = self.socks.fd(sock) else { return };
                // Closing, or armed already: a receive that ended is armed again once.
                if self.socks.bits(sock) != 0 {
                    return;
                }
                self.socks.set_bits(sock, ARMED);
                (fd, self.xfer_msg, ud(KIND_XFER, sock.0, slot))
            }
        };
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), msg, BGID).build().user_data(data);
        self.push(&sqe);
    }

    /// Arms the read of the wake-up eventfd.
    pub(super) fn arm_wake(&mut self) {
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

    /// Cancels every receive armed on listening socket `idx` (one cancel by `user_data` finds
    /// only one of several, and a second may find the same one still being cancelled).
    fn cancel_listen(&mut self, idx: usize) {
        let target = types::CancelBuilder::user_data(ud(KIND_LISTEN, 0, idx as u32)).all();
        let sqe = opcode::AsyncCancel2::new(target).build().user_data(ud(KIND_CANCEL, 0, 0));
        self.push(&sqe);
    }

    /// Closes the listening sockets (not in single-port mode): those with receives armed once
    /// the last has ended.
    pub(super) fn stop_listening(&mut self) {
        if !self.close_listens_on_stop || self.listens_closing {
            return;
        }
        self.listens_closing = true;
        for i in 0..self.listens.len() {
            match self.listens[i] {
                (Some(_), 0) => self.socks.close_later(self.listens[i].0.take()),
                (Some(_), _) => self.cancel_listen(i),
                (None, _) => {}
            }
        }
    }

    /// Cancels every receive (for the end of the loop).
    pub(super) fn cancel_all(&mut self) {
        for i in 0..self.listens.len() {
            if self.listens[i].1 > 0 {
                self.cancel_listen(i);
            }
        }
        // By descriptor: the loop is over, so a send still in flight on one may go too.
        let armed: Vec<SockRef> = self.socks.held().filter(|&s| self.socks.bits(s) == ARMED).collect();
        for sock in armed {
            self.socks.set_bits(sock, ARMED | CLOSING);
            let target = types::CancelBuilder::fd(types::Fd(sock.0 as RawFd)).all();
            let sqe = opcode::AsyncCancel2::new(target).build().user_data(ud(KIND_CANCEL, 0, 0));
            self.push(&sqe);
        }
        self.cancel(ud(KIND_WAKE, 0, 0));
    }

    /// The descriptor to send through `via`, while it is open.
    pub(super) fn fd_of(&self, via: Via) -> Option<RawFd> {
        match via {
            Via::Listen(i) => self.listens.get(i as usize)?.0.as_ref().map(AsRawFd::as_raw_fd),
            Via::Transfer(sock) => self.socks.fd(sock).filter(|_| self.socks.bits(sock) & CLOSING == 0),
        }
    }

    /// Binds a transfer socket on `local` (on a port other than `avoid`) for transfer `token`
    /// and arms its receive; returns it and its port.
    pub(super) fn open_sock(
        &mut self,
        local: SocketAddr,
        avoid: Option<u16>,
        token: Token,
    ) -> io::Result<(SockRef, u16)> {
        if self.draining {
            return Err(io::Error::other("worker is stopping"));
        }
        let scope = match local {
            SocketAddr::V6(a) => a.scope_id(),
            SocketAddr::V4(_) => 0,
        };
        let (sock, port) = self.ports.bind(local.ip(), scope, avoid)?;
        let sock = self.socks.hold(sock)?;
        self.arm(Rearm::Transfer { sock, slot: token.slot() });
        Ok((sock, port))
    }

    /// Closes transfer `token`'s socket: after the next submission when no receive is armed,
    /// else after the one following the cancelled receive's last completion.
    pub(super) fn close_sock(&mut self, sock: SockRef, token: Token) {
        match self.socks.fd(sock).map(|_| self.socks.bits(sock)) {
            Some(0) => self.socks.release_later(sock),
            Some(ARMED) => {
                self.socks.set_bits(sock, ARMED | CLOSING);
                self.cancel(ud(KIND_XFER, sock.0, token.slot()));
            }
            // Closing already, or not held.
            _ => {}
        }
    }
}

/// Handles a completion of the multishot receive `kind`: on listening socket `idx`
/// (`KIND_LISTEN`), or on transfer socket `tag` (its descriptor) for the transfer in slot `idx`
/// (`KIND_XFER`). Delivers its datagram, and when the receive ended, closes the socket or arms
/// it again.
#[allow(clippy::too_many_arguments)]
pub(super) fn recv_completed(
    kind: u64,
    idx: u32,
    tag: u32,
    cqe: &cqueue::Entry,
    io: &mut UringIo,
    rx: &mut Rx,
    engine: &mut Engine,
    now: Timestamp,
) {
    let (res, flags) = (cqe.result(), cqe.flags());
    let more = cqueue::more(flags);
    if !more {
        io.in_flight -= 1;
    }
    let sock = SockRef(tag);
    let (via, slot, msg, live) = if kind == KIND_LISTEN {
        let live = io.listens.get(idx as usize).is_some_and(|l| l.0.is_some());
        (Via::Listen(idx), None, &rx.listen_msg, live)
    } else {
        // A socket stays held until its receive's last completion: this is the socket the
        // receive was armed on.
        (Via::Transfer(sock), Some(idx), &rx.xfer_msg, io.fd_of(Via::Transfer(sock)).is_some())
    };
    if res >= 0 {
        io.recv_failures = 0;
    } else if res != -libc::ENOBUFS && res != -libc::ECANCELED {
        io.recv_failures += 1;
    }
    if res >= 0 {
        if let Some(bid) = cqueue::buffer_select(flags) {
            if live {
                let buf = rx.bufs.get(bid, res as usize);
                deliver(buf, msg, &mut rx.batch.arrivals, via, slot, io, engine, now);
                if kind == KIND_LISTEN && io.drain_listens && !io.listens_heard.contains(&idx) {
                    io.listens_heard.push(idx);
                }
            }
            rx.bufs.push(bid);
        }
    }
    if more {
        return;
    }
    if kind == KIND_LISTEN {
        if let Some(l) = io.listens.get_mut(idx as usize) {
            l.1 = l.1.saturating_sub(1);
            if res == -libc::ECANCELED || io.listens_closing {
                // Closed once its last receive has ended: no operation names it any more.
                if l.1 == 0 {
                    io.socks.close_later(l.0.take());
                }
            } else if l.0.is_some() {
                io.rearm.push(Rearm::Listen(idx));
            }
        }
    } else if io.socks.fd(sock).is_some() {
        let bits = io.socks.bits(sock);
        io.socks.set_bits(sock, bits & !ARMED);
        if bits & CLOSING != 0 {
            io.socks.release_later(sock);
        } else {
            io.rearm.push(Rearm::Transfer { sock, slot: idx });
        }
    }
}

/// Drains each listening socket that received in this turn (see [`LISTEN_DRAIN`]).
pub(super) fn drain_listens(io: &mut UringIo, rx: &mut Rx, engine: &mut Engine, now: Timestamp) {
    while let Some(idx) = io.listens_heard.pop() {
        let Some(fd) = io.fd_of(Via::Listen(idx)).filter(|_| !io.listens_closing) else {
            continue;
        };
        rx.batch.drain(fd, Via::Listen(idx), None, LISTEN_DRAIN, engine, io, now);
        turn::report_send_errors(engine, io, now);
    }
}

#[allow(clippy::too_many_arguments)]
fn deliver(
    buf: &[u8],
    msg: &libc::msghdr,
    arrivals: &mut Arrivals,
    via: Via,
    slot: Option<u32>,
    io: &mut UringIo,
    engine: &mut Engine,
    now: Timestamp,
) {
    let Ok(out) = types::RecvMsgOut::parse(buf, msg) else {
        return;
    };
    let name = out.name_data();
    let Some(peer) = decode_sockaddr(&name[..name.len().min(out.incoming_name_len() as usize)]) else {
        return;
    };
    let (local, arrived) = listen_control(via, out.control_data(), arrivals, now);
    let d = Datagram {
        via,
        slot,
        peer,
        local,
        arrived,
        payload: out.payload_data(),
        truncated: out.is_payload_truncated(),
    };
    engine.on_datagram(now, &d, io);
}
