//! Synchronous `sendmsg(2)` and `sendmmsg(2)`: for sends that cannot wait for an io_uring slot,
//! and for the epoll backend.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::net::RawAddr;

/// The flags of every synchronous send: never block (a full socket buffer is an error the
/// caller handles, `EAGAIN`), never raise `SIGPIPE`.
pub const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// Sends `msg` on `fd` now with [`SEND_FLAGS`]; returns the bytes sent.
///
/// # Safety
/// Every pointer in `msg` (name, iovecs and what they point at, control data) must be valid
/// for reads of the length given next to it for the duration of the call.
pub unsafe fn sendmsg_now(fd: RawFd, msg: &libc::msghdr) -> io::Result<usize> {
    // SAFETY: the caller vouches for the memory `msg` points at; the call is synchronous.
    let rc = unsafe { libc::sendmsg(fd, msg, SEND_FLAGS) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Sends `msgs` on `fd` now with [`SEND_FLAGS`], in one `sendmmsg(2)`; returns how many
/// messages left (fewer than `msgs.len()` when one fails after the first: the call reports the
/// error of a failure at the first message only).
///
/// # Safety
/// As for [`sendmsg_now`], for every message of `msgs`.
pub unsafe fn sendmmsg_now(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let count = libc::c_uint::try_from(msgs.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the caller vouches for the memory the messages point at; the kernel writes only
    // each message's `msg_len`, inside `msgs`; the call is synchronous.
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), count, SEND_FLAGS) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Sends one datagram of `head` then `body` (either may be empty) to `to` on `fd` now, with
/// `control` as its control data (empty: none); returns the bytes sent.
pub fn send_to_now(fd: RawFd, to: &SocketAddr, head: &[u8], body: &[u8], control: &[u8]) -> io::Result<usize> {
    let (addr, addr_len) = RawAddr::new(to);
    let mut iov = [
        libc::iovec { iov_base: head.as_ptr() as *mut _, iov_len: head.len() },
        libc::iovec { iov_base: body.as_ptr() as *mut _, iov_len: body.len() },
    ];
    // SAFETY: plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&addr as *const RawAddr).cast_mut().cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = if body.is_empty() { 1 } else { 2 };
    if !control.is_empty() {
        // The kernel only reads the control data of a send.
        msg.msg_control = control.as_ptr().cast_mut().cast();
        msg.msg_controllen = control.len();
    }
    // SAFETY: every pointer in `msg` refers to a local or a borrowed slice that outlives the call.
    unsafe { sendmsg_now(fd, &msg) }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn head_and_body_arrive_as_one_datagram() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        assert_eq!(send_to_now(tx.as_raw_fd(), &to, b"\0\x03\0\x01", b"data", &[]).unwrap(), 8);
        assert_eq!(send_to_now(tx.as_raw_fd(), &to, b"\0\x04\0\x01", &[], &[]).unwrap(), 4);
        let mut buf = [0u8; 64];
        assert_eq!(rx.recv(&mut buf).unwrap(), 8);
        assert_eq!(&buf[..8], b"\0\x03\0\x01data");
        assert_eq!(rx.recv(&mut buf).unwrap(), 4);
        let err = send_to_now(-1, &to, b"x", &[], &[]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn one_call_sends_every_message_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let payloads: [&[u8]; 2] = [b"first", b"second"];
        let mut iovs = payloads.map(|p| libc::iovec { iov_base: p.as_ptr() as *mut _, iov_len: p.len() });
        // SAFETY: plain data; all-zero is valid.
        let mut msgs: [libc::mmsghdr; 2] = unsafe { std::mem::zeroed() };
        for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each message points at an iovec of a static payload, alive for the call.
        assert_eq!(unsafe { sendmmsg_now(tx.as_raw_fd(), &mut msgs) }.unwrap(), 2);
        let mut buf = [0u8; 16];
        for p in payloads {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], p);
        }
        // SAFETY: as above; the descriptor is invalid, which the call reports.
        let err = unsafe { sendmmsg_now(-1, &mut msgs) }.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
