//! The send queue of the epoll backend: the datagrams of a turn, handed to the kernel with one
//! `sendmmsg` per socket when the queue is flushed.
//!
//! Each slot holds what the kernel reads during the call: the destination, the source address
//! control data, a copy of the head and the `[head, slice of the mapping]` iovecs, with the file
//! version that keeps the mapping alive until the flush. The slots and the message array are
//! allocated once per worker.
//!
//! A flush sends each socket's datagrams in the order they were queued. `sendmmsg` returns how
//! many went; after a partial send the failing datagram's errno is lost, so the rest is sent
//! again: the next call fails on that datagram at once with its errno, which is recorded for its
//! transfer, and the flush continues with the datagrams after it.

use std::os::fd::RawFd;
use std::rc::Rc;

use crate::fs::FileVersion;
use crate::net::RawAddr;
use crate::server::io::{MAX_HEAD, Outgoing, SendErrors, Token};
use crate::server::sendmsg;
use crate::sys::cmsg::PKTINFO_SPACE;
use crate::sys::send;

/// Datagrams queued at most; a full queue is flushed before the next datagram is queued.
pub(super) const TX_SLOTS: usize = 64;
const _: () = assert!(TX_SLOTS <= 64, "a flush marks the slots it batched in a u64");

/// One queued datagram.
struct TxSlot {
    fd: RawFd,
    iov: [libc::iovec; 2],
    iov_len: usize,
    addr: RawAddr,
    addr_len: libc::socklen_t,
    cmsg: [u8; PKTINFO_SPACE],
    cmsg_len: usize,
    head: [u8; MAX_HEAD],
    keep: Option<Rc<FileVersion>>,
    token: Option<Token>,
}

/// A `sendmmsg` on a socket: sends a prefix of the messages and returns its length, or fails on
/// the first with an errno.
type SendBatch<'a> = &'a mut dyn FnMut(RawFd, &mut [libc::mmsghdr]) -> Result<usize, i32>;

/// The datagrams queued since the last flush, in order.
pub(super) struct TxQueue {
    slots: Box<[TxSlot]>,
    len: usize,
    /// The messages of one socket's `sendmmsg`, built at the flush.
    msgs: Box<[libc::mmsghdr]>,
    /// The slot of each message in `msgs`.
    order: [u8; TX_SLOTS],
    /// `sendmmsg` calls made so far.
    calls: u64,
}

impl std::fmt::Debug for TxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxQueue").field("len", &self.len).field("calls", &self.calls).finish_non_exhaustive()
    }
}

impl TxQueue {
    /// An empty queue of [`TX_SLOTS`] slots.
    pub(super) fn new() -> Self {
        let slots = (0..TX_SLOTS)
            .map(|_| TxSlot {
                fd: -1,
                iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2],
                iov_len: 0,
                addr: RawAddr::zeroed(),
                addr_len: 0,
                cmsg: [0; PKTINFO_SPACE],
                cmsg_len: 0,
                head: [0; MAX_HEAD],
                keep: None,
                token: None,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; all-zero is valid.
        let msgs = (0..TX_SLOTS).map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() }).collect();
        Self { slots, len: 0, msgs, order: [0; TX_SLOTS], calls: 0 }
    }

    /// Whether no datagram waits.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every slot is taken.
    pub(super) fn is_full(&self) -> bool {
        self.len == TX_SLOTS
    }

    /// Whether a datagram for `fd` waits.
    pub(super) fn has(&self, fd: RawFd) -> bool {
        self.slots[..self.len].iter().any(|s| s.fd == fd)
    }

    /// `sendmmsg` calls made so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn calls(&self) -> u64 {
        self.calls
    }

    /// Queues `out` for `fd`; the queue must not be full.
    pub(super) fn push(&mut self, fd: RawFd, out: &Outgoing<'_>) {
        debug_assert!(!self.is_full());
        let slot = &mut self.slots[self.len];
        self.len += 1;
        slot.fd = fd;
        let n = out.head.len().min(MAX_HEAD);
        slot.head[..n].copy_from_slice(&out.head[..n]);
        // The slots live in a boxed slice that never moves: the iovec may point at the head.
        slot.iov_len = sendmsg::datagram_iov(&slot.head[..n], out.body, &mut slot.iov);
        slot.keep = out.body.map(|b| Rc::clone(b.file));
        slot.cmsg_len = sendmsg::source_control(out.via, out.from, &mut slot.cmsg);
        (slot.addr, slot.addr_len) = RawAddr::new(&out.to);
        slot.token = out.token;
    }

    /// Sends every queued datagram, one `sendmmsg` per socket, recording each failure.
    pub(super) fn flush(&mut self, errors: &mut SendErrors) {
        self.flush_with(errors, &mut sendmmsg_now);
    }

    /// [`TxQueue::flush`] with `send` in place of `sendmmsg`.
    fn flush_with(&mut self, errors: &mut SendErrors, send: SendBatch<'_>) {
        // Bit i: slot i is in a batch already (TX_SLOTS bits).
        let mut done = 0u64;
        for first in 0..self.len {
            if done & (1 << first) != 0 {
                continue;
            }
            let fd = self.slots[first].fd;
            let mut m = 0;
            for i in first..self.len {
                if done & (1 << i) != 0 || self.slots[i].fd != fd {
                    continue;
                }
                done |= 1 << i;
                self.order[m] = i as u8;
                let s = &mut self.slots[i];
                let msg = &mut self.msgs[m];
                sendmsg::set_message(
                    &mut msg.msg_hdr,
                    &mut s.addr,
                    s.addr_len,
                    &mut s.iov,
                    s.iov_len,
                    &mut s.cmsg,
                    s.cmsg_len,
                );
                msg.msg_len = 0;
                m += 1;
            }
            let mut start = 0;
            while start < m {
                self.calls += 1;
                match send(fd, &mut self.msgs[start..m]) {
                    Ok(n) if n > 0 => start += n,
                    // No datagram went and no errno came: the rest is lost like on the network.
                    Ok(_) => break,
                    Err(errno) => {
                        let s = &self.slots[self.order[start] as usize];
                        errors.record(s.token, Err(errno));
                        start += 1;
                    }
                }
            }
        }
        for s in &mut self.slots[..self.len] {
            s.keep = None;
            s.token = None;
        }
        self.len = 0;
    }
}

/// [`send::sendmmsg_now`] of `msgs`, its error as an errno.
fn sendmmsg_now(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> Result<usize, i32> {
    // SAFETY: every message points into a slot of the queue (destination, iovecs, head, control
    // data) or at a file slice whose mapping the slot's FileVersion keeps alive.
    unsafe { send::sendmmsg_now(fd, msgs) }.map_err(|e| e.raw_os_error().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;
    use crate::server::io::{SockRef, Via};

    fn out<'a>(to: SocketAddr, head: &'a [u8], token: u64) -> Outgoing<'a> {
        Outgoing { via: Via::Transfer(SockRef(0)), to, from: None, head, body: None, token: Some(Token(token)) }
    }

    fn receiver() -> UdpSocket {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        rx
    }

    /// What `rx` received, each datagram with its source port.
    fn received(rx: &UdpSocket, count: usize) -> Vec<(u16, Vec<u8>)> {
        let mut buf = [0u8; 64];
        (0..count)
            .map(|_| {
                let (n, from) = rx.recv_from(&mut buf).unwrap();
                (from.port(), buf[..n].to_vec())
            })
            .collect()
    }

    fn all_errors(errors: &mut SendErrors) -> Vec<(Token, i32)> {
        std::iter::from_fn(|| errors.pop()).collect()
    }

    #[test]
    fn one_call_per_socket_in_queue_order() {
        let rx = receiver();
        let to = rx.local_addr().unwrap();
        let (a, b) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        let (pa, pb) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
        let mut q = TxQueue::new();
        let mut errors = SendErrors::default();
        for (i, fd) in
            [a.as_raw_fd(), b.as_raw_fd(), a.as_raw_fd(), b.as_raw_fd(), a.as_raw_fd()].into_iter().enumerate()
        {
            q.push(fd, &out(to, &[b'0' + i as u8], i as u64));
        }
        assert!(q.has(a.as_raw_fd()) && !q.is_empty());
        q.flush(&mut errors);
        assert_eq!(q.calls(), 2, "one sendmmsg per socket");
        assert!(q.is_empty() && all_errors(&mut errors).is_empty());
        let got = received(&rx, 5);
        let from = |p: u16| got.iter().filter(|(port, _)| *port == p).map(|(_, d)| d.clone()).collect::<Vec<_>>();
        assert_eq!(from(pa), [b"0".to_vec(), b"2".to_vec(), b"4".to_vec()]);
        assert_eq!(from(pb), [b"1".to_vec(), b"3".to_vec()]);
    }

    #[test]
    fn a_full_queue_goes_in_one_call() {
        let rx = receiver();
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut q = TxQueue::new();
        let mut errors = SendErrors::default();
        for i in 0..TX_SLOTS {
            q.push(tx.as_raw_fd(), &out(to, &(i as u16).to_be_bytes(), 1));
        }
        assert!(q.is_full());
        q.flush(&mut errors);
        assert_eq!(q.calls(), 1);
        let got = received(&rx, TX_SLOTS);
        assert!(got.iter().enumerate().all(|(i, (_, d))| d[..] == (i as u16).to_be_bytes()), "in order");
    }

    #[test]
    fn a_failing_datagram_is_recorded_and_the_rest_still_goes() {
        // An IPv6 destination on an IPv4 socket fails alone (EAFNOSUPPORT): the kernel's partial
        // send hides its errno, which the retry of the rest brings back.
        let rx = receiver();
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = tx.as_raw_fd();
        let mut q = TxQueue::new();
        let mut errors = SendErrors::default();
        q.push(fd, &out(to, b"a", 1));
        q.push(fd, &out("[::1]:9".parse().unwrap(), b"b", 2));
        q.push(fd, &out(to, b"c", 3));
        q.flush(&mut errors);
        assert_eq!(all_errors(&mut errors), [(Token(2), libc::EAFNOSUPPORT)]);
        assert_eq!(q.calls(), 3, "partial send, the failure, the rest");
        let got: Vec<Vec<u8>> = received(&rx, 2).into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, [b"a".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn partial_sends_resume_after_the_datagrams_that_went() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut q = TxQueue::new();
        let mut errors = SendErrors::default();
        for i in 0..6u8 {
            q.push(7, &out(to, &[i], u64::from(i)));
        }
        // Two go, the third fails, one goes, then the rest.
        let mut script = vec![Ok(2), Err(libc::EAGAIN), Ok(1), Ok(2)].into_iter();
        let mut sent = Vec::new();
        q.flush_with(&mut errors, &mut |fd, msgs| {
            assert_eq!(fd, 7);
            let r = script.next().expect("no more calls than scripted");
            let n = *r.as_ref().unwrap_or(&0);
            for m in &msgs[..n] {
                // SAFETY: the iovec points at the slot's head, alive during the flush.
                sent.push(unsafe { *(*m.msg_hdr.msg_iov).iov_base.cast::<u8>() });
            }
            r
        });
        assert_eq!(sent, [0, 1, 3, 4, 5]);
        assert_eq!(all_errors(&mut errors), [(Token(2), libc::EAGAIN)]);
        assert!(q.is_empty());
    }
}
