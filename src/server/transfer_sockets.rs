//! The transfer sockets a backend holds, named by their descriptors: a byte of state per
//! descriptor, in pages of their own reserved for the descriptor limit, so that a held transfer
//! costs its socket one byte here (the engine's slot keeps the descriptor, as its [`SockRef`]).
//!
//! A descriptor names one socket while it is open, and a backend closes a socket only once no
//! operation or event it has yet to handle can name it (the io_uring backend after the receive's
//! last completion, both after the turn's submissions), so a descriptor read back from an
//! operation is the socket it was made for. The sockets let go of wait here for that moment
//! ([`TransferSockets::release_later`], [`TransferSockets::close_later`] for the backend's other
//! sockets, [`TransferSockets::close_released`]).

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};

use super::io::SockRef;
use crate::sys::pages::Mapped;
use crate::sys::rlimit;

/// Descriptors a transfer socket may have: below 2^24, so that a backend can keep one beside a
/// slot in the 64 bits of an operation's or event's data.
pub(crate) const MAX_DESCRIPTORS: u64 = 1 << 24;

/// The socket is open and held here.
const OPEN: u8 = 1;

/// Transfer sockets by descriptor. See the module documentation.
pub(crate) struct TransferSockets {
    /// [`OPEN`] and the backend's own bits, by descriptor.
    state: Mapped<u8>,
    /// One past the highest descriptor held so far.
    end: usize,
    /// Sockets let go of whose descriptors may still be named: closed by
    /// [`Self::close_released`].
    closing: Vec<UdpSocket>,
}

impl TransferSockets {
    /// Room for every descriptor the process's limit allows (at most [`MAX_DESCRIPTORS`]).
    pub(crate) fn new() -> Self {
        Self::with_limit(rlimit::fd_limit())
    }

    /// Room for descriptors below `limit` (at most [`MAX_DESCRIPTORS`]).
    pub(crate) fn with_limit(limit: u64) -> Self {
        Self { state: Mapped::new(limit.min(MAX_DESCRIPTORS) as usize), end: 0, closing: Vec::new() }
    }

    /// Holds `sock` from now on; it is closed after [`Self::release_later`] or when this is
    /// dropped. A descriptor beyond the room is refused (the socket is closed).
    pub(crate) fn hold(&mut self, sock: UdpSocket) -> io::Result<SockRef> {
        let fd = sock.as_raw_fd() as usize;
        if fd >= self.state.len() {
            return Err(io::Error::other("transfer socket descriptor beyond the descriptor limit"));
        }
        self.state[fd] = OPEN;
        self.end = self.end.max(fd + 1);
        Ok(SockRef(sock.into_raw_fd() as u32))
    }

    /// The descriptor of `sock` while it is held.
    pub(crate) fn fd(&self, sock: SockRef) -> Option<RawFd> {
        (self.state.get(sock.0 as usize)? & OPEN != 0).then_some(sock.0 as RawFd)
    }

    /// The backend's bits of held socket `sock` (none for a socket not held).
    pub(crate) fn bits(&self, sock: SockRef) -> u8 {
        let s = self.state.get(sock.0 as usize).copied().unwrap_or(0);
        if s & OPEN != 0 { s & !OPEN } else { 0 }
    }

    /// Sets the backend's bits of held socket `sock` (nothing for a socket not held). [`OPEN`]'s
    /// bit is not among them.
    pub(crate) fn set_bits(&mut self, sock: SockRef, bits: u8) {
        if let Some(s) = self.state.get_mut(sock.0 as usize).filter(|s| **s & OPEN != 0) {
            *s = OPEN | (bits & !OPEN);
        }
    }

    /// Stops holding `sock`; it is closed at the next [`Self::close_released`] (nothing for a
    /// socket not held).
    pub(crate) fn release_later(&mut self, sock: SockRef) {
        if let Some(s) = self.release(sock) {
            self.closing.push(s);
        }
    }

    /// Closes `sock`, if any, another of the backend's sockets (a listening one), at the next
    /// [`Self::close_released`].
    pub(crate) fn close_later(&mut self, sock: Option<UdpSocket>) {
        self.closing.extend(sock);
    }

    /// Closes the sockets let go of since the last call: the backend calls it once nothing it
    /// has yet to submit or handle can name their descriptors.
    pub(crate) fn close_released(&mut self) {
        self.closing.clear();
    }

    /// Stops holding `sock` and hands it back, to be closed when dropped.
    fn release(&mut self, sock: SockRef) -> Option<UdpSocket> {
        let s = self.state.get_mut(sock.0 as usize).filter(|s| **s & OPEN != 0)?;
        *s = 0;
        // SAFETY: the descriptor came from `hold`'s `into_raw_fd` and was marked open there;
        // nothing else closes it, and the mark is cleared here, so it is taken back once.
        Some(unsafe { UdpSocket::from_raw_fd(sock.0 as RawFd) })
    }

    /// The sockets held now.
    pub(crate) fn held(&self) -> impl Iterator<Item = SockRef> + '_ {
        (0..self.end).filter(|&fd| self.state[fd] & OPEN != 0).map(|fd| SockRef(fd as u32))
    }
}

impl Drop for TransferSockets {
    fn drop(&mut self) {
        let held: Vec<SockRef> = self.held().collect();
        for sock in held {
            drop(self.release(sock));
        }
    }
}

impl std::fmt::Debug for TransferSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferSockets").field("end", &self.end).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    /// The local address of the socket `fd` names now, if any (another test's socket may take
    /// a descriptor closed here, but not with the same address while this one held it).
    fn addr_of(fd: RawFd) -> Option<std::net::SocketAddr> {
        // SAFETY: plain data; all-zero is valid.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: getsockname writes at most `len` bytes into `sa`, which we own; a descriptor
        // that is closed (or not a socket) only makes it fail.
        let rc = unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len) };
        let ip = std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        (rc == 0 && sa.sin_family == libc::AF_INET as libc::sa_family_t)
            .then(|| std::net::SocketAddr::from((ip, u16::from_be(sa.sin_port))))
    }

    #[test]
    fn a_socket_held_is_named_by_its_descriptor_and_closed_once_released() {
        let mut t = TransferSockets::new();
        let s = sock();
        let (fd, addr) = (s.as_raw_fd(), s.local_addr().unwrap());
        let r = t.hold(s).unwrap();
        assert_eq!((r, t.fd(r)), (SockRef(fd as u32), Some(fd)));
        t.set_bits(r, 6);
        assert_eq!(t.bits(r), 6);
        assert_eq!(t.held().collect::<Vec<_>>(), [r]);
        let back = t.release(r).unwrap();
        assert_eq!((t.fd(r), t.bits(r), t.held().count()), (None, 0, 0));
        assert!(t.release(r).is_none(), "released once");
        t.set_bits(r, 2);
        assert_eq!(t.bits(r), 0, "no bits for a socket not held");
        assert_eq!(addr_of(fd), Some(addr), "open until the socket handed back is dropped");
        drop(back);
        assert_ne!(addr_of(fd), Some(addr));
    }

    #[test]
    fn a_socket_let_go_of_stays_open_until_the_released_are_closed() {
        let mut t = TransferSockets::new();
        let (s, l) = (sock(), sock());
        let (fd, addr) = (s.as_raw_fd(), s.local_addr().unwrap());
        let (lfd, laddr) = (l.as_raw_fd(), l.local_addr().unwrap());
        let r = t.hold(s).unwrap();
        t.release_later(r);
        t.close_later(Some(l));
        assert_eq!((t.fd(r), t.held().count()), (None, 0), "no longer held");
        assert_eq!((addr_of(fd), addr_of(lfd)), (Some(addr), Some(laddr)), "not closed yet");
        t.close_released();
        assert_ne!(addr_of(fd), Some(addr));
        assert_ne!(addr_of(lfd), Some(laddr));
    }

    #[test]
    fn dropping_closes_the_sockets_held_and_a_descriptor_beyond_the_room_is_refused() {
        let mut t = TransferSockets::with_limit(1 << 20);
        let held: Vec<_> = (0..3)
            .map(|_| {
                let s = sock();
                let addr = s.local_addr().unwrap();
                (t.hold(s).unwrap().0 as RawFd, addr)
            })
            .collect();
        assert!(held.iter().all(|&(fd, addr)| addr_of(fd) == Some(addr)));
        drop(t);
        assert!(held.iter().all(|&(fd, addr)| addr_of(fd) != Some(addr)));
        let mut small = TransferSockets::with_limit(1);
        let s = sock();
        let (fd, addr) = (s.as_raw_fd(), s.local_addr().unwrap());
        assert!(small.hold(s).is_err());
        assert_ne!(addr_of(fd), Some(addr), "the refused socket is closed");
    }
}
