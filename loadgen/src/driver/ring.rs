//! The ring: what goes in (multishot receives, sends from preallocated slots, cancels) and
//! what comes out (send completions free their slot; receive completions hand their buffer on
//! and re-arm a receive that ended), and the drain at the end of the thread.
//!
//! A completion's user data says what it is: the kind in the high 8 bits, for a receive the
//! generation of the client's socket in the next 24 (a client that moves to a new port cancels
//! the old socket's receive, whose last completions still come), and the client or send-slot
//! index in the low 32.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use bootstorm::net::RawAddr;
use bootstorm::proto::Timestamp;
use bootstorm::ring::BufRing;
use bootstorm::sys::send;
use bootstorm::sys::uring::Drain;
use io_uring::{cqueue, opcode, squeue, types};

use super::Driver;
use super::client::client_socket;

/// User-data kind of a client's multishot receive.
const KIND_RECV: u64 = 1;
/// User-data kind of a send from a slot.
const KIND_SEND: u64 = 2;
/// User-data kind of a cancel (its own completion says nothing).
const KIND_CANCEL: u64 = 3;
/// Socket generations wrap at 24 bits.
pub(super) const GEN_MASK: u32 = 0xff_ffff;

/// The user data of client `idx`'s receive on the socket of generation `generation`.
fn recv_data(idx: u32, generation: u32) -> u64 {
    (KIND_RECV << 56) | (u64::from(generation & GEN_MASK) << 32) | u64::from(idx)
}

/// What a completion's user data says: kind, generation, index.
fn split(user_data: u64) -> (u64, u32, u32) {
    (user_data >> 56, (user_data >> 32) as u32 & GEN_MASK, user_data as u32)
}
/// Send slots per thread.
pub(super) const SEND_SLOTS: usize = 4096;
/// Bytes a send slot copies (requests, ACKs, errors, DATA headers).
pub(super) const SEND_BUF: usize = 640;

/// One send in flight: its header, vectors, destination and copied bytes, which the kernel
/// reads until the completion.
pub(super) struct SendSlot {
    msg: libc::msghdr,
    /// The bytes in `buf`, then (upload DATA only) a slice of `keep`.
    iov: [libc::iovec; 2],
    /// The uploaded file the second iovec points into, held until the completion.
    keep: Option<Arc<[u8]>>,
    addr: RawAddr,
    buf: [u8; SEND_BUF],
}

impl SendSlot {
    /// An empty slot.
    pub(super) fn new() -> Self {
        Self {
            // SAFETY: plain data; all-zero is valid.
            msg: unsafe { std::mem::zeroed() },
            iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2],
            keep: None,
            addr: RawAddr::zeroed(),
            buf: [0; SEND_BUF],
        }
    }
}

impl Driver<'_> {
    /// Queues `sqe` for the next `io_uring_enter`.
    fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: the SQEs built here point into `self.msg` (boxed, lives as long as the
        // ring), send slots (boxed slice, a slot is reused only after its completion) and
        // the sockets (closed only when the driver is dropped, after the ring).
        unsafe { bootstorm::sys::uring::push(&mut self.ring, sqe) };
    }

    /// Arms client `idx`'s multishot receive into the provided-buffer ring, unless one is armed.
    pub(super) fn arm_recv(&mut self, idx: u32) {
        let c = &mut self.clients.0[idx as usize];
        if c.armed {
            return;
        }
        c.armed = true;
        let (fd, generation) = (c.sock.as_raw_fd(), c.generation);
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.msg, 0).build().user_data(recv_data(idx, generation));
        self.push(&sqe);
    }

    /// Moves client `idx` to a new socket (a new port, on the same source address): the old
    /// socket's receive is cancelled and the socket closed once what was queued on it has gone
    /// to the kernel; the new one gets its receive.
    pub(super) fn new_port(&mut self, idx: u32) -> std::io::Result<()> {
        let c = &mut self.clients.0[idx as usize];
        let sock = client_socket(self.plan, c.global)?;
        let old = std::mem::replace(&mut c.sock, sock);
        let cancel = c.armed.then(|| recv_data(idx, c.generation));
        c.generation = c.generation.wrapping_add(1) & GEN_MASK;
        c.armed = false;
        c.carried = false;
        self.retired.push(old);
        if let Some(target) = cancel {
            self.retiring += 1;
            self.push(&opcode::AsyncCancel::new(target).build().user_data(KIND_CANCEL << 56));
        }
        self.arm_recv(idx);
        Ok(())
    }

    /// Sends `bytes` (copied) from socket `fd` to `to`.
    pub(super) fn send(&mut self, fd: RawFd, to: SocketAddr, bytes: &[u8]) {
        self.send_with(fd, to, bytes, None);
    }

    /// Sends `head` (copied) followed by `body`: `len` bytes of `file` at `offset`, without a
    /// copy; the slot holds the file until the send completes.
    pub(super) fn send_with(
        &mut self,
        fd: RawFd,
        to: SocketAddr,
        head: &[u8],
        body: Option<(&Arc<[u8]>, usize, usize)>,
    ) {
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
            opcode::SendMsg::new(types::Fd(fd), &slot.msg).build().user_data((KIND_SEND << 56) | u64::from(slot_idx));
        self.push(&sqe);
    }

    /// Handles every completion there is, 1024 at a time through `cqes`: frees the slots of
    /// finished sends, hands received buffers to [`on_recv_buffer`](Self::on_recv_buffer) and
    /// returns them to the ring, and queues for re-arming the receives that ended.
    pub(super) fn reap(&mut self, bufs: &mut BufRing, cqes: &mut Vec<cqueue::Entry>, now: Timestamp) {
        loop {
            cqes.clear();
            cqes.extend(self.ring.completion().take(1024));
            if cqes.is_empty() {
                break;
            }
            for c in cqes.iter() {
                let (kind, generation, idx) = split(c.user_data());
                match kind {
                    KIND_SEND => {
                        self.sends[idx as usize].keep = None;
                        self.free_sends.push(idx);
                        continue;
                    }
                    KIND_RECV => {}
                    _ => continue,
                }
                let current = self.clients.0[idx as usize].generation == generation;
                let res = c.result();
                if res >= 0
                    && let Some(bid) = cqueue::buffer_select(c.flags())
                {
                    if current {
                        let buf = bufs.get(bid, res as usize);
                        self.on_recv_buffer(idx, buf, now);
                    }
                    bufs.push(bid);
                }
                if !cqueue::more(c.flags()) {
                    if current {
                        self.clients.0[idx as usize].armed = false;
                        self.rearm.push(idx);
                    } else {
                        // The cancelled receive of a socket the client left.
                        self.retiring -= 1;
                    }
                }
            }
            bufs.publish();
        }
    }

    /// Sends what is queued (the final ACKs), cancels every receive and waits until no
    /// operation is left, so that nothing the kernel may still write to is freed.
    pub(super) fn drain(&mut self, bufs: &mut BufRing) {
        for i in 0..self.clients.0.len() {
            let c = &self.clients.0[i];
            if c.armed {
                let sqe =
                    opcode::AsyncCancel::new(recv_data(i as u32, c.generation)).build().user_data(KIND_CANCEL << 56);
                self.push(&sqe);
            }
        }
        let drain = Drain::new(Duration::from_secs(2), Duration::from_millis(10));
        loop {
            let busy =
                self.free_sends.len() < SEND_SLOTS || self.retiring > 0 || self.clients.0.iter().any(|c| c.armed);
            if !busy || !drain.wait(&self.ring) {
                return;
            }
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for c in cqes {
                let (kind, generation, idx) = split(c.user_data());
                match kind {
                    KIND_SEND => self.free_sends.push(idx),
                    KIND_RECV => {
                        if let Some(bid) = cqueue::buffer_select(c.flags()) {
                            bufs.push(bid);
                        }
                        if !cqueue::more(c.flags()) {
                            if self.clients.0[idx as usize].generation == generation {
                                self.clients.0[idx as usize].armed = false;
                            } else {
                                self.retiring -= 1;
                            }
                        }
                    }
                    _ => {}
                }
            }
            bufs.publish();
        }
    }
}
