//! Synchronous receives in batches (`recvmmsg`): every datagram a socket holds, up to a budget,
//! handed to the engine. The epoll backend receives this way on every readable socket; the
//! io_uring backend drains a listening socket this way in a turn that received requests on it,
//! so that a storm's requests do not wait behind its transfers' datagrams (see
//! `uring/recv.rs`).

use std::os::fd::RawFd;

use super::engine::Engine;
use super::io::{Datagram, Io, Via};
use super::socket::{RAW_ADDR_LEN, RawAddr, decode_sockaddr};
use crate::proto::Timestamp;
use crate::sys::clock::{Arrivals, Clock};
use crate::sys::cmsg::{LocalEnd, RECV_CONTROL_SPACE, received};

/// Datagrams per `recvmmsg`.
pub(crate) const BATCH: usize = 32;

/// Receive buffers for one `recvmmsg` batch, allocated once per worker.
pub(crate) struct RxBatch {
    bufs: Vec<u8>,
    size: usize,
    names: [RawAddr; BATCH],
    cmsgs: [[u8; RECV_CONTROL_SPACE]; BATCH],
    /// The arrival times of requests, brought onto the worker's clock.
    pub(crate) arrivals: Arrivals,
    iovs: [libc::iovec; BATCH],
    msgs: [libc::mmsghdr; BATCH],
}

impl RxBatch {
    /// Buffers for [`BATCH`] datagrams of up to `size` bytes, for a worker whose clock is
    /// `clock`.
    pub(crate) fn new(size: usize, clock: Clock) -> Box<Self> {
        Box::new(Self {
            bufs: vec![0; size * BATCH],
            size,
            names: [RawAddr::zeroed(); BATCH],
            cmsgs: [[0; RECV_CONTROL_SPACE]; BATCH],
            arrivals: Arrivals::new(clock),
            iovs: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            // SAFETY: mmsghdr is plain data; all-zero is valid.
            msgs: unsafe { std::mem::zeroed() },
        })
    }

    /// Receives from `fd` (the socket `via`, of the transfer in `slot`) until it is empty or `budget`
    /// datagrams were taken, handing each datagram to the engine; returns how many were taken.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn drain<I: Io>(
        &mut self,
        fd: RawFd,
        via: Via,
        slot: Option<u32>,
        budget: usize,
        engine: &mut Engine,
        io: &mut I,
        now: Timestamp,
    ) -> usize {
        let mut taken = 0;
        while taken < budget {
            for i in 0..BATCH {
                self.iovs[i] =
                    libc::iovec { iov_base: self.bufs[i * self.size..].as_mut_ptr().cast(), iov_len: self.size };
                let m = &mut self.msgs[i].msg_hdr;
                m.msg_name = (&mut self.names[i] as *mut RawAddr).cast();
                m.msg_namelen = RAW_ADDR_LEN;
                m.msg_iov = &mut self.iovs[i];
                m.msg_iovlen = 1;
                m.msg_control = self.cmsgs[i].as_mut_ptr().cast();
                m.msg_controllen = RECV_CONTROL_SPACE;
                m.msg_flags = 0;
            }
            // SAFETY: every mmsghdr points into buffers owned by `self`, valid for the call.
            let n = unsafe {
                libc::recvmmsg(fd, self.msgs.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
            };
            if n <= 0 {
                return taken;
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
                let control = &self.cmsgs[i][..h.msg_controllen.min(RECV_CONTROL_SPACE)];
                let (local, arrived) = listen_control(via, control, &mut self.arrivals, now);
                let len = (self.msgs[i].msg_len as usize).min(self.size);
                let d = Datagram {
                    via,
                    slot,
                    peer,
                    local,
                    arrived,
                    payload: &self.bufs[i * self.size..i * self.size + len],
                    truncated: h.msg_flags & libc::MSG_TRUNC != 0,
                };
                engine.on_datagram(now, &d, io);
            }
            taken += n as usize;
            if (n as usize) < BATCH {
                return taken;
            }
        }
        taken
    }
}

/// What a receive on `via` reports beside the datagram: on a listening socket, where the
/// datagram was sent to and when it arrived (on the worker's clock, in the loop turn of `now`);
/// on a transfer socket, nothing.
pub(crate) fn listen_control(
    via: Via,
    control: &[u8],
    arrivals: &mut Arrivals,
    now: Timestamp,
) -> (Option<LocalEnd>, Option<Timestamp>) {
    match via {
        Via::Listen(_) => {
            let got = received(control);
            (got.local, got.arrival.map(|stamp| arrivals.arrived(now, stamp)))
        }
        Via::Transfer(_) => (None, None),
    }
}
