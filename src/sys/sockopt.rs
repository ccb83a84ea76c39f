//! Socket options that socket2 does not wrap: packet info, UDP GSO and GRO, a receive buffer
//! past `rmem_max` and the one granted, binding an address not configured yet. (Options socket2 has, such as `SO_REUSEPORT` or `IPV6_V6ONLY`, are set
//! through it.)

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd};

/// Sets an integer socket option.
pub fn set_int(sock: &impl AsFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size, on a descriptor `sock` keeps open.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Turns on `IP_PKTINFO` (or `IPV6_RECVPKTINFO` for an IPv6 socket): each receive reports the
/// address the datagram was sent to and the interface it came in on (see
/// [`cmsg::pktinfo`](super::cmsg::pktinfo)).
pub fn enable_pktinfo(sock: &impl AsFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
    } else {
        set_int(sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

/// Turns on `SO_TIMESTAMPNS`: each datagram received comes with the time it arrived (the
/// real-time clock), read as [`crate::sys::cmsg::ControlMessage::Arrival`].
pub fn enable_arrival_times(sock: &impl AsFd) -> io::Result<()> {
    set_int(sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Sets the receive buffer to `bytes` past the `rmem_max` ceiling (`SO_RCVBUFFORCE`, which
/// needs `CAP_NET_ADMIN`).
pub fn force_recv_buffer(sock: &impl AsFd, bytes: usize) -> io::Result<()> {
    set_int(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, i32::try_from(bytes).unwrap_or(i32::MAX))
}

/// Turns on `IP_FREEBIND` (or `IPV6_FREEBIND` for an IPv6 socket): the socket may bind an
/// address this host does not have yet (an interface still coming up, a floating address), and
/// receives on it once the address is configured.
pub fn enable_freebind(sock: &impl AsFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1)
    } else {
        set_int(sock, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)
    }
}

/// The receive buffer the kernel granted the socket, in the bytes asked for: `SO_RCVBUF` reads
/// back twice the size set (the kernel doubles it for its bookkeeping), so it is halved here.
pub fn recv_buffer_granted(sock: &impl AsFd) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a pointer to a live c_int and its size, on a descriptor `sock` keeps open.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(value).unwrap_or(0) / 2)
}

/// Turns on UDP GRO (Linux 5.0+): one receive may hold several datagrams of one size, which
/// [`cmsg::gro_segment`](super::cmsg::gro_segment) reports.
pub fn enable_udp_gro(sock: &impl AsFd) -> io::Result<()> {
    set_int(sock, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Makes every send on the socket a UDP GSO send (Linux 4.18+) cut into datagrams of `size`
/// bytes.
pub fn set_udp_segment(sock: &impl AsFd, size: u16) -> io::Result<()> {
    set_int(sock, libc::SOL_UDP, libc::UDP_SEGMENT, libc::c_int::from(size))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    #[test]
    fn options_are_set_on_loopback_sockets() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_pktinfo(&s, false).unwrap();
        enable_udp_gro(&s).unwrap();
        set_udp_segment(&s, 1400).unwrap();
        enable_freebind(&s, false).unwrap();
        let v6 = UdpSocket::bind("[::1]:0").unwrap();
        enable_freebind(&v6, true).unwrap();
        set_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, 300_000).unwrap();
        assert_eq!(recv_buffer_granted(&s).unwrap(), 300_000, "halved back to what was asked");
        let err = set_int(&s, libc::SOL_SOCKET, -1, 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
