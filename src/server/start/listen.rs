//! The listening sockets each worker serves from: bound here, one per worker and listen address
//! with `SO_REUSEPORT`, or made of those the service manager passed (socket activation).

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Socket, Type};
use tracing::{debug, info, warn};

use super::StartError;
use crate::config::ServerConfig;
use crate::server::socket::{self, listen_socket};
use crate::sys::activation::Inherited;
use crate::sys::sockopt;

/// Addresses, comma-separated.
pub(super) fn list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Whether binding an IPv6 wildcard address failed because the host has IPv6 turned off
/// (`ipv6.disable=1`: no IPv6 sockets; or no IPv6 address at all).
fn ipv6_unavailable(addr: SocketAddr, e: &io::Error) -> bool {
    addr.is_ipv6()
        && addr.ip().is_unspecified()
        && matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL))
}

/// The listen addresses this host can take: each checked to be held by no one else; an IPv6
/// wildcard address the host cannot bind dropped with a warning where the configuration allows
/// ([`ServerConfig::ipv6_optional`]) and another address remains.
fn usable_listen(cfg: &ServerConfig) -> Result<Vec<SocketAddr>, StartError> {
    let mut listen = Vec::new();
    let mut dropped = None;
    // Checked for all of them before binding any, as the server's own addresses may overlap
    // (0.0.0.0:69 and 10.0.0.1:69). Port 0 is the kernel's choice, never held.
    for &addr in &cfg.listen {
        let checked = if addr.port() == 0 { Ok(()) } else { socket::check_unheld(addr) };
        match checked {
            Ok(()) => listen.push(addr),
            Err(e) if cfg.ipv6_optional && ipv6_unavailable(addr, &e) => dropped = Some((addr, e)),
            Err(e) => return Err(StartError::bind(addr, e)),
        }
    }
    if let Some((addr, e)) = dropped {
        if listen.is_empty() {
            return Err(StartError::bind(addr, e));
        }
        warn!(addr = %addr, error = %e, "IPv6 is unavailable on this host: listening on IPv4 only");
    }
    Ok(listen)
}

/// Each worker's listening sockets, one per listen address, bound here in worker order (so that
/// a port 0 resolves once for all); and the addresses as bound.
pub(super) fn bind_listen(cfg: &ServerConfig) -> Result<(Vec<Vec<UdpSocket>>, Vec<SocketAddr>), StartError> {
    let mut per_worker: Vec<Vec<UdpSocket>> = (0..cfg.workers).map(|_| Vec::new()).collect();
    let mut local_addrs = Vec::new();
    for mut addr in usable_listen(cfg)? {
        for sockets in per_worker.iter_mut() {
            let s = listen_socket(addr, cfg.io.recv_buffer).map_err(|e| StartError::bind(addr, e))?;
            if addr.port() == 0 {
                addr = s.local_addr().map_err(|source| StartError::Bind { addr, source })?;
            }
            sockets.push(s);
        }
        local_addrs.push(addr);
    }
    Ok((per_worker, local_addrs))
}

/// Each worker's listening sockets made of those the service manager passed (socket
/// activation), one per passed socket, in its order; and their addresses. The configured
/// listen addresses must be the default ones (none asked for) or exactly the passed ones.
///
/// A passed socket with `SO_REUSEPORT` goes to worker 0, and the other workers bind their own to
/// its address, joining its group, as they do without socket activation. Where they cannot (no
/// `SO_REUSEPORT`, or the socket belongs to another user: the kernel groups only one user's
/// sockets), the workers share the passed socket and each request goes to whichever worker takes
/// it first; `--single-port`, where a transfer's ACKs come back to the listening port and must
/// reach the worker that holds it, is then refused with more than one worker.
pub(super) fn adopt_listen(
    cfg: &ServerConfig,
    inherited: Vec<Inherited>,
) -> Result<(Vec<Vec<UdpSocket>>, Vec<SocketAddr>), StartError> {
    let passed: Vec<SocketAddr> = inherited.iter().map(|i| i.addr).collect();
    let (mut wanted, mut got) = (cfg.listen.clone(), passed.clone());
    wanted.sort_unstable();
    got.sort_unstable();
    got.dedup();
    if cfg.listen != ServerConfig::default().listen && wanted != got {
        return Err(StartError::ListenNotPassed { passed, configured: cfg.listen.clone() });
    }
    let mut per_worker: Vec<Vec<UdpSocket>> = (0..cfg.workers).map(|_| Vec::new()).collect();
    for Inherited { socket, addr, reuse_port, only_v6 } in inherited {
        let first = adopt_listen_socket(socket, addr.is_ipv6(), cfg.io.recv_buffer)
            .map_err(|source| StartError::Bind { addr, source })?;
        // Joining needs the passed socket's options: SO_REUSEPORT, and IPv6-only as ours are.
        let joinable = cfg.workers > 1 && reuse_port && (addr.is_ipv4() || only_v6);
        let joined = if joinable { join_group(addr, cfg) } else { None };
        let how = if let Some(own) = joined {
            per_worker[1..].iter_mut().zip(own).for_each(|(sockets, s)| sockets.push(s));
            "joined by each worker's own socket (SO_REUSEPORT)"
        } else if cfg.workers > 1 && cfg.io.single_port {
            return Err(StartError::SinglePortShared { addr, workers: cfg.workers, reuse_port });
        } else {
            for sockets in &mut per_worker[1..] {
                sockets.push(first.try_clone().map_err(|source| StartError::Bind { addr, source })?);
            }
            if cfg.workers > 1 { "shared by the workers" } else { "served by the one worker" }
        };
        per_worker[0].push(first);
        info!(addr = %addr, reuse_port, "listening on a socket passed by the service manager, {how}");
    }
    Ok((per_worker, passed))
}

/// Sockets of workers 1.. bound to `addr` with `SO_REUSEPORT`, joining the group of a passed
/// socket; `None` when the kernel refuses (another user's socket, a privileged port without the
/// privilege).
fn join_group(addr: SocketAddr, cfg: &ServerConfig) -> Option<Vec<UdpSocket>> {
    let own: Result<Vec<UdpSocket>, io::Error> =
        (1..cfg.workers).map(|_| listen_socket(addr, cfg.io.recv_buffer)).collect();
    own.inspect_err(|e| debug!(addr = %addr, error = %e, "cannot join the passed socket's SO_REUSEPORT group")).ok()
}

/// Makes a listening socket of one bound elsewhere (passed by the service manager), set up as
/// [`listen_socket`] sets up its own: non-blocking, close-on-exec, packet info on, and a
/// receive buffer of at least `recv_buffer` bytes (one the service manager made larger, with
/// `ReceiveBuffer=`, is kept).
fn adopt_listen_socket(s: Socket, ipv6: bool, recv_buffer: usize) -> io::Result<UdpSocket> {
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    sockopt::enable_pktinfo(&s, ipv6)?;
    // Without arrival times (a sandbox that refuses the option) requests are taken as they
    // come: copies of answered ones are not told apart.
    let _ = sockopt::enable_arrival_times(&s);
    let had = sockopt::recv_buffer_granted(&s)?;
    if had < recv_buffer && sockopt::force_recv_buffer(&s, recv_buffer).is_err() {
        // Without the privilege the kernel caps the size at `rmem_max`, which may be below what
        // the socket has: set only what a scratch socket shows to be more.
        let scratch = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        scratch.set_recv_buffer_size(recv_buffer)?;
        if sockopt::recv_buffer_granted(&scratch)? > had {
            s.set_recv_buffer_size(recv_buffer)?;
        }
    }
    Ok(s.into())
}
