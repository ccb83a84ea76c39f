//! The `sendmsg` messages both backends send: one datagram of `[head, body]`, or a run of DATA
//! as `[header, slice]` pairs with a UDP segment size that the kernel cuts into datagrams (GSO),
//! each with the control data it needs. The io_uring backend builds them in its send slots and
//! submits them; the epoll backend (and io_uring's fallback) sends them at once with
//! [`send_now`] and [`send_run_now`].

use std::os::fd::RawFd;

use super::io::{Body, DataRun, MAX_RUN, Outgoing, Segment, Via};
use crate::net::RawAddr;
use crate::sys::cmsg::{LocalEnd, PKTINFO_SPACE, write_pktinfo, write_segment_size};
use crate::sys::send::sendmsg_now;

/// Writes the control data of a send through `via`: the source address when it leaves from a
/// listening socket (`from`); returns its length (0: none).
pub(crate) fn source_control(via: Via, from: Option<LocalEnd>, buf: &mut [u8; PKTINFO_SPACE]) -> usize {
    match (from, via) {
        (Some(from), Via::Listen(_)) => write_pktinfo(&from, buf),
        _ => 0,
    }
}

/// Writes the control data of `run`: its source, as [`source_control`], and its segment length.
pub(crate) fn run_control(run: &DataRun<'_>, buf: &mut [u8; PKTINFO_SPACE]) -> usize {
    let used = source_control(run.via, run.from, buf);
    // A run's segment length is a DATA packet's: at most 4 + 65464 bytes.
    let seg = u16::try_from(run.segment_len()).unwrap_or(u16::MAX);
    write_segment_size(buf, used, seg)
}

/// Points `iov` at a datagram's head and body; returns how many iovecs it uses.
pub(crate) fn datagram_iov(head: &[u8], body: Option<Body<'_>>, iov: &mut [libc::iovec; 2]) -> usize {
    iov[0] = libc::iovec { iov_base: head.as_ptr() as *mut _, iov_len: head.len() };
    match body {
        Some(b) => {
            iov[1] = libc::iovec { iov_base: b.slice.ptr as *mut _, iov_len: b.slice.len };
            2
        }
        None => 1,
    }
}

/// Points `iov` at the run's segments, each header taken from `hdrs` (filled here from `segs`);
/// returns how many iovecs it uses.
pub(crate) fn run_iov(segs: &[Segment], hdrs: &mut [[u8; 4]; MAX_RUN], iov: &mut [libc::iovec; 2 * MAX_RUN]) -> usize {
    for (i, s) in segs.iter().enumerate().take(MAX_RUN) {
        hdrs[i] = s.hdr;
        iov[2 * i] = libc::iovec { iov_base: hdrs[i].as_mut_ptr().cast(), iov_len: 4 };
        iov[2 * i + 1] = libc::iovec { iov_base: s.slice.ptr as *mut _, iov_len: s.slice.len };
    }
    2 * segs.len().min(MAX_RUN)
}

/// Points `msg` at a destination, `iov_len` iovecs and `control_len` bytes of control data
/// (none when 0).
pub(crate) fn set_message(
    msg: &mut libc::msghdr,
    addr: &mut RawAddr,
    addr_len: libc::socklen_t,
    iov: &mut [libc::iovec],
    iov_len: usize,
    control: &mut [u8; PKTINFO_SPACE],
    control_len: usize,
) {
    msg.msg_name = (addr as *mut RawAddr).cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov_len;
    if control_len > 0 {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_len;
    } else {
        msg.msg_control = std::ptr::null_mut();
        msg.msg_controllen = 0;
    }
}

fn sendmsg(fd: RawFd, msg: &libc::msghdr) -> Result<(), i32> {
    // SAFETY: the callers point every field of `msg` at memory that lives until this synchronous
    // call returns: their locals, the head they borrow, and file slices that the FileVersion they
    // borrow keeps mapped.
    match unsafe { sendmsg_now(fd, msg) } {
        Ok(_) => Ok(()),
        Err(e) => Err(e.raw_os_error().unwrap_or(0)),
    }
}

/// Sends `out` on `fd` now; the error is the errno.
pub(crate) fn send_now(fd: RawFd, out: &Outgoing<'_>) -> Result<(), i32> {
    let (mut addr, addr_len) = RawAddr::new(&out.to);
    let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2];
    let n = datagram_iov(out.head, out.body, &mut iov);
    let mut control = [0u8; PKTINFO_SPACE];
    let control_len = source_control(out.via, out.from, &mut control);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    set_message(&mut msg, &mut addr, addr_len, &mut iov, n, &mut control, control_len);
    sendmsg(fd, &msg)
}

/// Sends `run` on `fd` now as one message the kernel cuts into datagrams; the error is the
/// errno.
pub(crate) fn send_run_now(fd: RawFd, run: &DataRun<'_>) -> Result<(), i32> {
    let (mut addr, addr_len) = RawAddr::new(&run.to);
    let mut hdrs = [[0u8; 4]; MAX_RUN];
    let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2 * MAX_RUN];
    let n = run_iov(run.segs, &mut hdrs, &mut iov);
    let mut control = [0u8; PKTINFO_SPACE];
    let control_len = run_control(run, &mut control);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    set_message(&mut msg, &mut addr, addr_len, &mut iov, n, &mut control, control_len);
    sendmsg(fd, &msg)
}
