//! The start-up check that io_uring is usable: not merely that a ring can be created, but that
//! it completes work.
//!
//! Docker's default seccomp profile (since 25), `kernel.io_uring_disabled` and kernels without
//! io_uring make `io_uring_setup` fail with `EPERM` or `ENOSYS`. A policy may also allow setup
//! but deny `io_uring_enter`, after which every operation would silently never complete: so a
//! NOP is submitted and waited for, with a timeout. The operations the backend needs are checked
//! too, and a multishot receive into a provided-buffer ring is run for real (multishot needs
//! Linux 6.0, buffer rings 5.19): a kernel that has the opcodes but not the behaviour would
//! otherwise leave the backend re-arming a receive that ends at once, forever.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, Probe, opcode, types};

use crate::ring::BufRing;

/// Why io_uring cannot be used. The `Display` texts are the reasons the server logs when it falls
/// back to epoll; with `--io uring` it is the cause of [`StartError::Uring`](super::StartError).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UringUnusable {
    /// The administrator switched io_uring off for everyone.
    #[error("kernel.io_uring_disabled is 2")]
    Disabled,
    /// No ring could be created (no io_uring in the kernel, or a seccomp policy).
    #[error("io_uring_setup: {0}")]
    Setup(io::Error),
    /// The kernel would not say which operations it supports.
    #[error("io_uring_register(PROBE): {0}")]
    RegisterProbe(io::Error),
    /// An operation the backend needs is missing.
    #[error("operation {0} is not supported")]
    Unsupported(&'static str),
    /// The probe's own submission did not fit (cannot happen with an empty ring).
    #[error("submission queue full")]
    QueueFull,
    /// `io_uring_enter` failed (a policy that allows setup but not work).
    #[error("io_uring_enter: {0}")]
    Enter(io::Error),
    /// A NOP was submitted and never completed.
    #[error("a NOP did not complete")]
    NopLost,
    /// The socket of the receive check could not be made.
    #[error("probe socket: {0}")]
    Socket(io::Error),
    /// The provided-buffer ring (Linux 5.19) could not be registered.
    #[error("provided-buffer ring: {0}")]
    BufRing(io::Error),
    /// The address of that socket could not be read.
    #[error("{0}")]
    Address(io::Error),
    /// The datagram of the receive check could not be sent.
    #[error("probe send: {0}")]
    Send(io::Error),
    /// The multishot receive (Linux 6.0) never completed.
    #[error("a multishot receive did not complete")]
    RecvLost,
    /// The multishot receive completed without a provided buffer; the kernel's result.
    #[error("multishot receive into a provided buffer failed ({0})")]
    RecvFailed(i32),
    /// The receive ended after one datagram instead of staying armed.
    #[error("multishot receive is not supported (it ended after one datagram)")]
    NotMultishot,
    /// The received buffer does not hold a `io_uring_recvmsg_out` header.
    #[error("bad receive layout")]
    BadLayout,
    /// The receive delivered other bytes than were sent.
    #[error("multishot receive delivered the wrong bytes")]
    WrongBytes,
}

/// Returns why io_uring cannot be used, or `Ok`. Takes well under a millisecond.
pub(crate) fn check() -> Result<(), UringUnusable> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() == "2" {
            return Err(UringUnusable::Disabled);
        }
    }
    let mut ring = IoUring::new(8).map_err(UringUnusable::Setup)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(UringUnusable::RegisterProbe)?;
    for (name, code) in [
        ("SENDMSG", opcode::SendMsg::CODE),
        ("RECVMSG", opcode::RecvMsgMulti::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
        ("READ", opcode::Read::CODE),
    ] {
        if !probe.is_supported(code) {
            return Err(UringUnusable::Unsupported(name));
        }
    }
    // SAFETY: a NOP references no memory.
    unsafe { ring.submission().push(&opcode::Nop::new().build().user_data(42)) }
        .map_err(|_| UringUnusable::QueueFull)?;
    wait(&mut ring)?;
    match ring.completion().next() {
        Some(c) if c.user_data() == 42 => {}
        _ => return Err(UringUnusable::NopLost),
    }
    // The receive path the backend depends on, for real: a multishot RECVMSG (Linux 6.0) into a
    // provided-buffer ring (5.19) must deliver a datagram in a buffer and stay armed.
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(UringUnusable::Socket)?;
    // SAFETY: `bufs` outlives every receive: `ring` is dropped explicitly before it below.
    let bufs = unsafe { BufRing::new(&ring, 16, 256, 0) }.map_err(UringUnusable::BufRing)?;
    let result = recv_check(&mut ring, &sock, &bufs);
    drop(ring);
    drop(bufs);
    result
}

fn wait(ring: &mut IoUring) -> Result<(), UringUnusable> {
    let ts = types::Timespec::new().sec(1);
    ring.submitter()
        .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))
        .map(drop)
        .or_else(|e| if e.raw_os_error() == Some(libc::ETIME) { Ok(()) } else { Err(UringUnusable::Enter(e)) })
}

fn recv_check(ring: &mut IoUring, sock: &UdpSocket, bufs: &BufRing) -> Result<(), UringUnusable> {
    // SAFETY: plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_namelen = crate::net::RAW_ADDR_LEN;
    let sqe = opcode::RecvMsgMulti::new(types::Fd(sock.as_raw_fd()), &msg, 0).build().user_data(7);
    // SAFETY: `msg` and the socket outlive the receive: the ring is dropped before they are.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| UringUnusable::QueueFull)?;
    ring.submit().map_err(UringUnusable::Enter)?;
    let addr = sock.local_addr().map_err(UringUnusable::Address)?;
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.send_to(b"probe", addr)).map_err(UringUnusable::Send)?;
    wait(ring)?;
    let Some(c) = ring.completion().next() else {
        return Err(UringUnusable::RecvLost);
    };
    let Some(bid) = io_uring::cqueue::buffer_select(c.flags()).filter(|_| c.result() > 0) else {
        return Err(UringUnusable::RecvFailed(c.result()));
    };
    if !io_uring::cqueue::more(c.flags()) {
        return Err(UringUnusable::NotMultishot);
    }
    let out =
        types::RecvMsgOut::parse(bufs.get(bid, c.result() as usize), &msg).map_err(|()| UringUnusable::BadLayout)?;
    if out.payload_data() != b"probe" {
        return Err(UringUnusable::WrongBytes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn usable_on_this_machine() {
        // The development and CI machines run kernels with io_uring enabled; the integration
        // tests cover the fallback by denying io_uring with seccomp.
        super::check().unwrap();
    }

    #[test]
    fn reasons_read_as_before() {
        use super::UringUnusable;
        let enosys = || std::io::Error::from_raw_os_error(libc::ENOSYS);
        assert_eq!(UringUnusable::Disabled.to_string(), "kernel.io_uring_disabled is 2");
        assert_eq!(UringUnusable::Unsupported("READ").to_string(), "operation READ is not supported");
        assert_eq!(UringUnusable::Setup(enosys()).to_string(), format!("io_uring_setup: {}", enosys()));
        assert_eq!(UringUnusable::RecvFailed(-22).to_string(), "multishot receive into a provided buffer failed (-22)");
    }
}
