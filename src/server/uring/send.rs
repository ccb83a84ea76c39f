//! The send side of the io_uring backend: send slots for single datagrams and run slots for
//! DATA runs sent with a UDP segment size, and the completions of both.

use std::rc::Rc;

use io_uring::{opcode, types};

use super::{KIND_RUN, KIND_SEND, UringIo, ud};
use crate::fs::FileVersion;
use crate::net::RawAddr;
use crate::server::io::{DataRun, MAX_HEAD, MAX_RUN, Outgoing, Token};
use crate::server::sendmsg;
use crate::server::socket::gso_refused;
use crate::sys::cmsg::PKTINFO_SPACE;

/// Run slots per worker: runs in flight at once (each carries a whole window).
const RUN_SLOTS: usize = 64;

/// What a send slot holds until its completion.
pub(super) struct SendSlot {
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
pub(super) struct RunSlot {
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

/// `count` empty send slots.
pub(super) fn send_slots(count: u32) -> Box<[SendSlot]> {
    (0..count)
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
        .collect()
}

/// The run slots of a worker: none without GSO.
pub(super) fn run_slots(gso: bool) -> Box<[RunSlot]> {
    (0..if gso { RUN_SLOTS } else { 0 })
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
        .collect()
}

impl UringIo {
    /// Queues `out` in a send slot, or sends it at once when every slot is taken.
    pub(super) fn queue_send(&mut self, out: Outgoing<'_>) {
        let Some(fd) = self.fd_of(out.via) else {
            return;
        };
        let Some(idx) = self.free_sends.pop() else {
            // No slot: send at once rather than lose the datagram. The engine checks for room
            // once per run of DATA, so this carries DATA too: the rest of a run sent one
            // datagram at a time (no GSO), besides control packets. Its failure is recorded like
            // a completion's, so the engine sees it (a fault from a truncated file ends the
            // transfer).
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

    /// Queues `run` as one GSO send in a run slot; sends it one datagram at a time where GSO is
    /// off for its segment length or every run slot is taken.
    pub(super) fn queue_run(&mut self, run: DataRun<'_>) {
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

    /// The send in slot `idx` completed with `res`: frees the slot, records a failure.
    pub(super) fn send_completed(&mut self, idx: u32, res: i32) {
        self.in_flight -= 1;
        let slot = &mut self.sends[idx as usize];
        slot.keep = None;
        let token = slot.token.take();
        self.free_sends.push(idx);
        if res < 0 {
            self.errors.record(token, Err(-res));
        }
    }

    /// The run in slot `idx` completed with `res`: frees the slot, records a failure, and lowers
    /// the GSO limit where the kernel refused the segment length.
    pub(super) fn run_completed(&mut self, idx: u32, res: i32) {
        self.in_flight -= 1;
        let slot = &mut self.runs[idx as usize];
        slot.keep = None;
        let token = slot.token.take();
        let seg = slot.seg;
        self.free_runs.push(idx);
        if res < 0 {
            if gso_refused(-res) {
                // The window is lost like on the network; the retransmission timer resends it
                // one datagram at a time.
                self.gso.refused(seg, -res);
            }
            self.errors.record(token, Err(-res));
        }
    }
}
