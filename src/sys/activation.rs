//! Sockets passed by the service manager (systemd socket activation, `sd_listen_fds(3)`): when
//! `LISTEN_PID` names this process, `LISTEN_FDS` descriptors from 3 on are sockets bound for it,
//! here taken once, checked to be UDP listening sockets the server can serve from, and the
//! variables removed so that no child process takes them for its own.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Protocol, Socket, Type};

/// Why the sockets the service manager passed cannot be served from.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_PID` or `LISTEN_FDS` is malformed, or a descriptor cannot be marked close-on-exec.
    #[error("cannot take the sockets the service manager passed (LISTEN_PID, LISTEN_FDS)")]
    Environment(#[source] io::Error),
    /// A descriptor is not a UDP socket bound to an IP address and port.
    #[error(
        "descriptor {fd} passed by the service manager is {what}, not a UDP socket bound to an address and port: \
         the .socket unit must have only ListenDatagram= lines, each with an IP address and port"
    )]
    NotUdp {
        /// The descriptor.
        fd: RawFd,
        /// What it is instead.
        what: String,
    },
    /// An IPv6 socket on the wildcard (or an IPv4-mapped) address that also receives IPv4, which
    /// the server does not serve from: its clients would be IPv4-mapped addresses that allow
    /// lists, transfer sockets and logs do not expect.
    #[error(
        "the socket passed for {addr} also receives IPv4 (IPV6_V6ONLY is off): set BindIPv6Only=ipv6-only in the \
         .socket unit, and give IPv4 its own line (ListenDatagram=0.0.0.0:{})",
        .addr.port()
    )]
    DualStack {
        /// The socket's address.
        addr: SocketAddr,
    },
}

/// A socket the service manager passed, checked: UDP, bound to an address and port, and
/// IPv6-only wherever that matters.
#[derive(Debug)]
pub struct Inherited {
    /// The socket (close-on-exec).
    pub socket: Socket,
    /// The address and port it is bound to.
    pub addr: SocketAddr,
    /// Whether it has `SO_REUSEPORT` (`ReusePort=yes`), so that more sockets may join it.
    pub reuse_port: bool,
    /// Whether it is IPv6-only (`false` for IPv4).
    pub only_v6: bool,
}

/// Takes the sockets the service manager passed to this process, in the order it passed them;
/// none when `LISTEN_PID` is not this process or `LISTEN_FDS` is absent. Once taken, the
/// variables are removed: a second call finds none.
pub fn take() -> Result<Vec<Inherited>, ActivationError> {
    let fds: Vec<RawFd> = sd_notify::listen_fds().map_err(ActivationError::Environment)?.collect();
    if fds.is_empty() {
        return Ok(Vec::new());
    }
    // SAFETY: the standard library serialises its own reads and writes of the environment; what
    // removing could race with is a read from C code on another thread. This runs once, while
    // the server starts, before its workers exist and before anything else of the server reads
    // the environment.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    // Every descriptor is owned (and closed, should one be refused) before any is checked.
    let owned: Vec<(RawFd, OwnedFd)> = fds
        .into_iter()
        // SAFETY: the service manager passed these descriptors to this process (`LISTEN_PID`)
        // for it to own; nothing else in the process owns them, and they are taken once, as
        // the variables that name them are removed above.
        .map(|fd| (fd, unsafe { OwnedFd::from_raw_fd(fd) }))
        .collect();
    owned.into_iter().map(|(fd, owned)| check(fd, Socket::from(owned))).collect()
}

/// Checks that `socket` (descriptor `fd`) is one the server can listen on.
fn check(fd: RawFd, socket: Socket) -> Result<Inherited, ActivationError> {
    let not_udp = |what: &str| ActivationError::NotUdp { fd, what: what.to_string() };
    match socket.r#type() {
        Ok(t) if t == Type::DGRAM => {}
        Ok(t) if t == Type::STREAM => return Err(not_udp("a stream socket (ListenStream=)")),
        Ok(_) => return Err(not_udp("a socket of another type")),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => return Err(not_udp("not a socket")),
        Err(e) => return Err(not_udp(&format!("unreadable ({e})"))),
    }
    let addr = socket.local_addr().ok().and_then(|a| a.as_socket());
    let Some(addr) = addr else { return Err(not_udp("a datagram socket of another family (not IPv4 or IPv6)")) };
    if socket.protocol().ok().flatten() != Some(Protocol::UDP) {
        return Err(not_udp("a datagram socket of another protocol"));
    }
    if addr.port() == 0 {
        return Err(not_udp("an unbound UDP socket"));
    }
    let only_v6 = addr.is_ipv6() && socket.only_v6().map_err(|e| not_udp(&format!("unreadable ({e})")))?;
    if let SocketAddr::V6(v6) = addr {
        let takes_v4 = v6.ip().is_unspecified() || v6.ip().to_ipv4_mapped().is_some();
        if takes_v4 && !only_v6 {
            return Err(ActivationError::DualStack { addr });
        }
    }
    let reuse_port = socket.reuse_port().unwrap_or(false);
    Ok(Inherited { socket, addr, reuse_port, only_v6 })
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use socket2::{Domain, Socket, Type};

    use super::*;

    #[test]
    fn udp_sockets_are_taken_and_others_refused() {
        let s = Socket::from(OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap()));
        let want = s.local_addr().unwrap().as_socket().unwrap();
        let got = check(3, s).unwrap();
        assert_eq!((got.addr, got.reuse_port, got.only_v6), (want, false, false));

        let tcp = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        tcp.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        let e = check(4, tcp).unwrap_err().to_string();
        assert!(e.contains("descriptor 4") && e.contains("stream socket"), "{e}");

        let unbound = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        assert!(check(5, unbound).unwrap_err().to_string().contains("unbound"));

        let file = Socket::from(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        assert!(check(6, file).unwrap_err().to_string().contains("not a socket"));
    }

    #[test]
    fn a_dual_stack_wildcard_socket_is_refused() {
        let dual = Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
        dual.set_only_v6(false).unwrap();
        dual.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        let e = check(3, dual).unwrap_err().to_string();
        assert!(e.contains("BindIPv6Only=ipv6-only") && e.contains("ListenDatagram=0.0.0.0:"), "{e}");

        let only = Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
        only.set_only_v6(true).unwrap();
        only.set_reuse_port(true).unwrap();
        only.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        let got = check(3, only).unwrap();
        assert!(got.only_v6 && got.reuse_port);

        // A specific IPv6 address never receives IPv4, whatever the option says.
        let specific = Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
        specific.set_only_v6(false).unwrap();
        specific.bind(&"[::1]:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        assert!(check(3, specific).is_ok());
    }
}
