//! The start-up check that io_uring is usable: not merely that a ring can be created, but that
//! it completes work.
//!
//! Docker's default seccomp profile (since 25), `kernel.io_uring_disabled` and kernels without
//! io_uring make `io_uring_setup` fail with `EPERM` or `ENOSYS`. A policy may also allow setup
//! but deny `io_uring_enter`, after which every operation would silently never complete: so a
//! NOP is submitted and waited for, with a timeout. The operations the backend needs are checked
//! too, and so is the provided-buffer ring it receives into (Linux 5.19).

use io_uring::{IoUring, Probe, opcode, types};

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
    let ts = types::Timespec::new().sec(1);
    ring.submitter()
        .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))
        .map_err(|e| format!("io_uring_enter: {e}"))?;
    match ring.completion().next() {
        Some(c) if c.user_data() == 42 => {}
        _ => return Err("a NOP did not complete".into()),
    }
    crate::ring::BufRing::new(&ring, 16, 64, 0).map(drop).map_err(|e| format!("provided-buffer ring: {e}"))
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
