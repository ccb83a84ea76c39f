//! io_uring helpers both ring owners need: building a ring on older kernels, pushing when the
//! submission queue is full, waiting without failing on harmless errors, and draining the
//! operations still in flight at exit.

use std::io;
use std::time::{Duration, Instant};

use io_uring::{IoUring, squeue, types};

/// Builds a ring of `entries` submission entries and four times as many completion entries,
/// with the fastest setup flags the kernel accepts: single issuer with deferred task running
/// (Linux 6.1+), else cooperative task running (5.19+), else none.
pub fn build_ring(entries: u32) -> io::Result<IoUring> {
    let cq = entries.saturating_mul(4);
    let attempts: [fn(&mut io_uring::Builder); 3] = [
        |b| {
            b.setup_single_issuer().setup_coop_taskrun().setup_defer_taskrun();
        },
        |b| {
            b.setup_coop_taskrun();
        },
        |_| {},
    ];
    let mut last = None;
    for f in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq);
        f(&mut b);
        match b.build(entries) {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
}

/// Pushes `sqe`, first handing the queue to the kernel while it is full.
///
/// # Safety
/// As [`io_uring::SubmissionQueue::push`]: every buffer, descriptor and structure `sqe` names
/// must stay valid until the operation's last completion.
pub unsafe fn push(ring: &mut IoUring, sqe: &squeue::Entry) {
    loop {
        // SAFETY: the caller vouches for what the entry points at.
        if unsafe { ring.submission().push(sqe) }.is_ok() {
            return;
        }
        // The submission queue is full: hand it to the kernel and try again.
        let _ = ring.submit();
    }
}

/// Whether a failed submit-and-wait is only the wait ending early: the timeout passed
/// (`ETIME`), a signal (`EINTR`), or the completion queue is full (`EBUSY`) or the kernel is
/// short of memory for now (`EAGAIN`), both of which the caller's reaping of completions cures.
pub fn is_harmless_wait_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN))
}

/// Submits what is queued and waits up to `timeout` for at least one completion; errors that
/// only end the wait early are no errors (see [`is_harmless_wait_error`]).
pub fn submit_and_wait(ring: &IoUring, timeout: Duration) -> io::Result<()> {
    let ts = types::Timespec::from(timeout);
    match ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts)) {
        Ok(_) => Ok(()),
        Err(e) if is_harmless_wait_error(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A bounded wait for the operations in flight at exit, so that nothing the kernel may still
/// write to is freed:
///
/// ```ignore
/// let drain = Drain::new(Duration::from_secs(2), Duration::from_millis(50));
/// while in_flight > 0 && drain.wait(&ring) {
///     // reap the completions
/// }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Drain {
    deadline: Instant,
    poll: Duration,
}

impl Drain {
    /// Waits at most `limit` in all, `poll` at a time.
    pub fn new(limit: Duration, poll: Duration) -> Self {
        Self { deadline: Instant::now() + limit, poll }
    }

    /// Before the deadline: submits what is queued, waits up to the poll interval for a
    /// completion and returns true (reap, then call again). At or past it: returns false.
    pub fn wait(&self, ring: &IoUring) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        // Errors end this wait early; the next one, or the deadline, follows.
        let _ = submit_and_wait(ring, self.poll);
        true
    }
}

#[cfg(test)]
mod tests {
    use io_uring::opcode;

    use super::*;

    #[test]
    fn a_full_queue_is_submitted_and_drained() {
        let mut ring = build_ring(4).unwrap();
        // Twice the queue's size: the pushes past the fourth submit first.
        for i in 0..8u64 {
            // SAFETY: a no-op names no memory.
            unsafe { push(&mut ring, &opcode::Nop::new().build().user_data(i)) };
        }
        let mut seen = 0;
        let drain = Drain::new(Duration::from_secs(2), Duration::from_millis(10));
        while seen < 8 && drain.wait(&ring) {
            seen += ring.completion().count();
        }
        assert_eq!(seen, 8);
        // With nothing in flight, a wait ends by its timeout, which is no error.
        submit_and_wait(&ring, Duration::from_millis(1)).unwrap();
        assert!(!Drain::new(Duration::ZERO, Duration::from_millis(1)).wait(&ring));
    }

    #[test]
    fn only_early_ends_of_a_wait_are_harmless() {
        for errno in [libc::ETIME, libc::EINTR, libc::EBUSY, libc::EAGAIN] {
            assert!(is_harmless_wait_error(&io::Error::from_raw_os_error(errno)));
        }
        assert!(!is_harmless_wait_error(&io::Error::from_raw_os_error(libc::EBADF)));
    }
}
