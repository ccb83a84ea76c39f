//! How the main thread tells a worker's loop to stop, or to take a new serving policy: the
//! runtime primitive both backends and the worker threads share.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::ServePolicy;

/// A serving policy posted by a reload, shared by every worker's control.
#[derive(Debug)]
pub(crate) struct Posted {
    /// Reloads of the server so far, this one included (1 for the first).
    pub(crate) generation: u64,
    /// The policy as configured (what [`Server::config`](super::Server::config) reports).
    pub(crate) serve: ServePolicy,
    /// The policy the workers run with (`serve` with the blind budget of the port settings).
    pub(crate) policy: Arc<ServePolicy>,
}

/// Flags for a worker to stop (no new transfers) or abort (end every transfer), the serving
/// policy a reload posted for it, plus an eventfd the worker waits on so that it notices them at
/// once.
#[derive(Debug)]
pub(crate) struct WorkerControl {
    stop: AtomicBool,
    abort: AtomicBool,
    wake: OwnedFd,
    /// The latest policy posted, if any reload happened.
    posted: Mutex<Option<Arc<Posted>>>,
    /// Generation of the latest policy posted: read without the lock at each wake-up.
    posted_generation: AtomicU64,
    /// Generation of the policy the worker runs with (0: the one it started with).
    applied_generation: AtomicU64,
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
        Ok(Self {
            stop: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            wake,
            posted: Mutex::new(None),
            posted_generation: AtomicU64::new(0),
            applied_generation: AtomicU64::new(0),
        })
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

    /// The latest policy posted, locked: a reload posts through it ([`post`](Self::post)); the
    /// first worker's orders the reloads of a server.
    pub(crate) fn posted(&self) -> MutexGuard<'_, Option<Arc<Posted>>> {
        // A panic while holding the lock left a whole value behind: the lock guards no invariant
        // beyond one assignment.
        self.posted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts `p` for the worker, through `slot` (this control's [`posted`](Self::posted)), unless
    /// a later reload already posted; [`poke`](Self::poke) it afterwards.
    pub(crate) fn post(&self, slot: &mut Option<Arc<Posted>>, p: &Arc<Posted>) {
        if slot.as_ref().is_none_or(|old| old.generation < p.generation) {
            *slot = Some(Arc::clone(p));
            self.posted_generation.store(p.generation, Ordering::Release);
        }
    }

    /// The policy posted since the worker last took one, if any: one atomic load when there is
    /// none. The worker calls [`applied`](Self::applied) once it runs with it.
    pub(crate) fn new_policy(&self) -> Option<Arc<Posted>> {
        let posted = self.posted_generation.load(Ordering::Acquire);
        if posted == self.applied_generation.load(Ordering::Relaxed) {
            return None;
        }
        self.posted().clone()
    }

    /// The worker runs with the policy of `generation`.
    pub(crate) fn applied(&self, generation: u64) {
        self.applied_generation.store(generation, Ordering::Release);
    }

    /// Generation of the policy the worker runs with (0: the one it started with).
    pub(crate) fn applied_generation(&self) -> u64 {
        self.applied_generation.load(Ordering::Acquire)
    }
}
