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

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, Probe, opcode, types};

use crate::ring::BufRing;

/// Returns why io_uring cannot be used, or `Ok`. Takes well under a millisecond.
pub(crate) fn io_uring_usable() -> Result<(), String> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() == "2" {
            return Err("kernel.io_uring_disabled is 2".into());
        }
    }
    let mut ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| format!("io_uring_register(PROBE): {e}"))?;
    for (name, code) in [
        ("SENDMSG", opcode::SendMsg::CODE),
        ("RECVMSG", opcode::RecvMsgMulti::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
        ("READ", opcode::Read::CODE),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("operation {name} is not supported"));
        }
    }
    // SAFETY: a NOP references no memory.
    unsafe { ring.submission().push(&opcode::Nop::new().build().user_data(42)) }
        .map_err(|_| "submission queue full".to_string())?;
    wait(&mut ring)?;
    match ring.completion().next() {
        Some(c) if c.user_data() == 42 => {}
        _ => return Err("a NOP did not complete".into()),
    }
    // The receive path the backend depends on, for real: a multishot RECVMSG (Linux 6.0) into a
    // provided-buffer ring (5.19) must deliver a datagram in a buffer and stay armed.
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("probe socket: {e}"))?;
    // SAFETY: `bufs` is dropped after `ring` (declared later, dropped first at the end of this
    // function), so no receive can outlive it.
    let bufs = unsafe { BufRing::new(&ring, 16, 256, 0) }.map_err(|e| format!("provided-buffer ring: {e}"))?;
    let result = recv_check(&mut ring, &sock, &bufs);
    drop(ring);
    drop(bufs);
    result
}

fn wait(ring: &mut IoUring) -> Result<(), String> {
    let ts = types::Timespec::new().sec(1);
    ring.submitter()
        .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))
        .map(drop)
        .or_else(|e| if e.raw_os_error() == Some(libc::ETIME) { Ok(()) } else { Err(format!("io_uring_enter: {e}")) })
}

fn recv_check(ring: &mut IoUring, sock: &UdpSocket, bufs: &BufRing) -> Result<(), String> {
    // SAFETY: plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_namelen = crate::net::RAW_ADDR_LEN;
    let sqe = opcode::RecvMsgMulti::new(types::Fd(sock.as_raw_fd()), &msg, 0).build().user_data(7);
    // SAFETY: `msg` and the socket outlive the receive: the ring is dropped before they are.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| "submission queue full".to_string())?;
    ring.submit().map_err(|e| format!("io_uring_enter: {e}"))?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.send_to(b"probe", addr)).map_err(|e| format!("probe send: {e}"))?;
    wait(ring)?;
    let Some(c) = ring.completion().next() else {
        return Err("a multishot receive did not complete".into());
    };
    let Some(bid) = io_uring::cqueue::buffer_select(c.flags()).filter(|_| c.result() > 0) else {
        return Err(format!("multishot receive into a provided buffer failed ({})", c.result()));
    };
    if !io_uring::cqueue::more(c.flags()) {
        return Err("multishot receive is not supported (it ended after one datagram)".into());
    }
    let out = types::RecvMsgOut::parse(bufs.get(bid, c.result() as usize), &msg).map_err(|()| "bad receive layout")?;
    if out.payload_data() != b"probe" {
        return Err("multishot receive delivered the wrong bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn usable_on_this_machine() {
        // The development and CI machines run kernels with io_uring enabled; the integration
        // tests cover the fallback by denying io_uring with seccomp.
        super::io_uring_usable().unwrap();
    }
}
