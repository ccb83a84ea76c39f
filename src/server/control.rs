//! How the main thread tells a worker's loop to stop: the runtime primitive both backends and
//! the worker threads share.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Flags for a worker to stop (no new transfers) or abort (end every transfer), plus an eventfd
/// the worker waits on so that it notices them at once.
#[derive(Debug)]
pub(crate) struct WorkerControl {
    stop: AtomicBool,
    abort: AtomicBool,
    wake: OwnedFd,
}

impl WorkerControl {
    /// A control with neither flag set.
    pub(crate) fn new() -> io::Result<Self> {
        // Blocking: io_uring reads of a non-blocking eventfd complete with EAGAIN on some kernels
        // instead of waiting; epoll reads it only when it is readable.
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { stop: AtomicBool::new(false), abort: AtomicBool::new(false), wake })
    }

    /// The eventfd the worker waits on (readable after each [`poke`](Self::poke)).
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Wakes the worker.
    pub(crate) fn poke(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the eventfd's count; call only when epoll reported it readable.
    pub(crate) fn drain_wake(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our eventfd. The eventfd is blocking, so the
        // read would wait on a zero count: the caller reads only once epoll reported it readable.
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// Asks the worker to accept no new requests, and wakes it.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.poke();
    }

    /// Asks the worker to end every transfer now (a stop too), and wakes it.
    pub(crate) fn request_abort(&self) {
        self.stop.store(true, Ordering::Release);
        self.abort.store(true, Ordering::Release);
        self.poke();
    }

    /// Whether a stop was asked for.
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Whether an abort was asked for.
    pub(crate) fn abort_requested(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }
}
