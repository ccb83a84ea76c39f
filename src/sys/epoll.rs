//! A small epoll set: descriptors registered for reading under a caller's 64-bit key.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll instance, closed on drop.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// An empty event, to fill arrays that [`Epoll::wait`] writes into.
pub const NO_EVENT: libc::epoll_event = libc::epoll_event { events: 0, u64: 0 };

impl Epoll {
    /// A new, empty set (close-on-exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Watches `fd` for reading (level-triggered); its events carry `key`.
    pub fn add(&self, fd: RawFd, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: key };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Stops watching `fd`. Errors (not watched, already closed) are harmless and ignored.
    pub fn delete(&self, fd: RawFd) {
        // SAFETY: removing a descriptor from our set; no event structure is needed.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Waits up to `timeout_ms` (-1: without limit) for events into `events`; returns how many
    /// it wrote. A signal is an error of kind `Interrupted`.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
        // SAFETY: `events` is a valid array of at least `max` entries.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    #[test]
    fn a_readable_socket_is_reported_under_its_key() {
        let ep = Epoll::new().unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        ep.add(rx.as_raw_fd(), 42).unwrap();
        let mut events = [NO_EVENT; 4];
        assert_eq!(ep.wait(&mut events, 0).unwrap(), 0);
        UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"x", rx.local_addr().unwrap()).unwrap();
        assert_eq!(ep.wait(&mut events, 1000).unwrap(), 1);
        assert_eq!({ events[0].u64 }, 42);
        ep.delete(rx.as_raw_fd());
        assert_eq!(ep.wait(&mut events, 0).unwrap(), 0);
    }
}
