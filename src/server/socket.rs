//! Sockets and the raw socket structures both I/O backends share.
//!
//! - Listening sockets: one per worker per listen address, all with `SO_REUSEPORT` so that the
//!   kernel spreads clients over workers by address hash, each with a large receive buffer and
//!   packet info turned on so that a reply can come from the address the request was sent to.
//! - Transfer sockets: one per transfer in the default mode, bound to that address and a fresh
//!   port (the RFC 1350 transfer ID), without `SO_REUSEPORT` so that ports are never shared.
//! - The address helpers the backends take from here, re-exported from [`crate::net`], and
//!   [`LocalEnd`] from [`crate::sys::cmsg`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

pub(crate) use crate::net::{RAW_ADDR_LEN, RawAddr, decode_sockaddr};
// The engine names the local end of a datagram from here.
pub(crate) use crate::sys::cmsg::LocalEnd;
use crate::sys::sockopt;

/// A listening socket for `addr`: `SO_REUSEPORT`, IPv6-only for IPv6, packet info on, a receive
/// buffer of `recv_buffer` bytes (forced past `rmem_max` when privileged), non-blocking, and
/// `IP_FREEBIND` when `addr` is a specific address, so that the server starts before that
/// address is up (an interface configured later, a floating address) and serves on it once it is.
///
/// Port 0 (the kernel's choice, for the first worker's socket): `SO_REUSEPORT` is set once the
/// socket is bound. Asked for with it, the kernel may choose a port that another socket of the
/// same user holds with `SO_REUSEPORT` (another server, a test's), which the two would then
/// share, each taking a part of the other's requests; without it, only a port no one holds.
/// The other workers' sockets then join with `SO_REUSEPORT` on the port chosen.
pub(crate) fn listen_socket(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP))?;
    let chosen = addr.port() == 0;
    if !chosen {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if !addr.ip().is_unspecified() {
        sockopt::enable_freebind(&s, addr.is_ipv6())?;
    }
    sockopt::enable_pktinfo(&s, addr.is_ipv6())?;
    // Without arrival times (a sandbox that refuses the option) requests are taken as they
    // come: copies of answered ones are not told apart.
    let _ = sockopt::enable_arrival_times(&s);
    if sockopt::force_recv_buffer(&s, recv_buffer).is_err() {
        s.set_recv_buffer_size(recv_buffer)?;
    }
    s.bind(&addr.into())?;
    if chosen {
        s.set_reuse_port(true)?;
    }
    Ok(s.into())
}

/// Random draws of a port from `--port-range` before the whole range is walked.
const RANDOM_TRIES: u32 = 8;

/// Random numbers from the kernel (`getrandom(2)`), fetched a buffer at a time.
struct KernelRandom {
    buf: [u8; 256],
    used: usize,
    /// State of the stand-in generator, used only where the kernel gives no random bytes.
    fallback: u64,
}

impl KernelRandom {
    fn new() -> Self {
        let here = &0u8 as *const u8 as u64;
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Self { buf: [0; 256], used: 256, fallback: here ^ clock as u64 }
    }

    /// Fills the buffer: from the kernel's generator (blocking never; before its first seeding,
    /// during early boot, from `GRND_INSECURE` on Linux 5.6+), else from a SplitMix64 stand-in
    /// seeded by the clock (kernels before 3.17 only).
    fn refill(&mut self) {
        if !self.fill_from_kernel() {
            self.fill_stand_in();
        }
        self.used = 0;
    }

    fn fill_from_kernel(&mut self) -> bool {
        let len = self.buf.len();
        [libc::GRND_NONBLOCK, libc::GRND_INSECURE].into_iter().any(|flags| {
            // SAFETY: the kernel writes at most `len` bytes into our buffer of `len` bytes.
            let n = unsafe { libc::getrandom(self.buf.as_mut_ptr().cast(), len, flags) };
            usize::try_from(n) == Ok(len)
        })
    }

    fn fill_stand_in(&mut self) {
        for chunk in self.buf.chunks_mut(8) {
            self.fallback = self.fallback.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.fallback;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_ne_bytes()[..chunk.len()]);
        }
    }

    /// A uniformly random number below `n` (bias below `n` / 2^32), `n` above 0.
    fn below(&mut self, n: u32) -> u32 {
        if self.used + 4 > self.buf.len() {
            self.refill();
        }
        let mut r = [0u8; 4];
        r.copy_from_slice(&self.buf[self.used..self.used + 4]);
        self.used += 4;
        ((u64::from(u32::from_ne_bytes(r)) * u64::from(n)) >> 32) as u32
    }
}

impl std::fmt::Debug for KernelRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelRandom")
    }
}

/// Checks that no other socket holds `addr` (a port above 0), or the same port on an address
/// that overlaps it (the wildcard address and a specific one, an IPv6 socket that also takes
/// IPv4): binds and closes a socket without `SO_REUSEPORT` or `SO_REUSEADDR`, which the kernel
/// refuses with `EADDRINUSE` in every such case, whatever the options of the other socket.
///
/// The listening sockets, with `SO_REUSEPORT`, would otherwise join a group with any socket of
/// the same user on that address and port, which then silently takes a share of the requests.
/// What this cannot see: a socket bound after the check (a process of the same user that sets
/// `SO_REUSEPORT` can still join once the server listens).
pub(crate) fn check_unheld(addr: SocketAddr) -> io::Result<()> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // As the listening socket will be: an IPv4 socket on the same port is no conflict.
        s.set_only_v6(true)?;
    }
    if !addr.ip().is_unspecified() {
        // As the listening socket will be: an address not configured yet is no error.
        sockopt::enable_freebind(&s, addr.is_ipv6())?;
    }
    s.bind(&addr.into())
}

/// The receive buffer the kernel granted a listening socket (`rmem_max` unless the process may
/// force more, with `CAP_NET_ADMIN`).
pub(crate) fn recv_buffer_granted(s: &UdpSocket) -> io::Result<usize> {
    sockopt::recv_buffer_granted(s)
}

/// Picks ports for transfer sockets: any free one from the kernel (which draws ephemeral ports
/// at random), or a free one drawn at random from a range, so that one transfer of an attacker's
/// own does not tell the port of the next one (as tftp-hpa does with `--port-range`).
#[derive(Debug)]
pub(crate) struct PortPicker {
    range: Option<(u16, u16)>,
    random: KernelRandom,
}

impl PortPicker {
    /// `range` is inclusive.
    pub(crate) fn new(range: Option<(u16, u16)>) -> Self {
        Self { range, random: KernelRandom::new() }
    }

    /// Binds a transfer socket to `ip` (with `scope` for IPv6 link-local) and a port other than
    /// `avoid`. Returns the socket and its port.
    ///
    /// `avoid` is the port of the same client's previous transfer. A client keeps its port from
    /// one transfer to the next (a PXE loader fetching file after file) and, as RFC 1350 asks,
    /// ignores answers from the transfer ID it has just finished with (a late retransmission of
    /// the previous transfer's last block must not be taken for the new transfer's first
    /// answer). A new transfer given that same port again would never be heard: the client
    /// drops every answer, repeats its request, and each repeat is answered from that port.
    pub(crate) fn bind(&mut self, ip: IpAddr, scope: u32, avoid: Option<u16>) -> io::Result<(UdpSocket, u16)> {
        let domain = if ip.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
        let socket = || -> io::Result<Socket> {
            let s = Socket::new(domain, Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP))?;
            if ip.is_ipv6() {
                s.set_only_v6(true)?;
            }
            Ok(s)
        };
        let addr = |port| match ip {
            IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
            IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope)),
        };
        let port_of = |s: &Socket| s.local_addr().ok().and_then(|a| a.as_socket()).map_or(0, |a| a.port());
        let s = socket()?;
        let Some((lo, hi)) = self.range else {
            s.bind(&addr(0).into())?;
            let port = port_of(&s);
            if avoid != Some(port) {
                return Ok((s.into(), port));
            }
            // The kernel drew the avoided port (it had just become free): draw again while it is
            // still held here, so that the next draw cannot be it. With no other port free, it
            // serves after all.
            let again = socket()?;
            return match again.bind(&addr(0).into()) {
                Ok(()) => {
                    let port = port_of(&again);
                    Ok((again.into(), port))
                }
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok((s.into(), port)),
                Err(e) => Err(e),
            };
        };
        let span = u32::from(hi - lo) + 1;
        // Random draws first; a port in use costs another draw. Should they all hit ports in
        // use (a range nearly full), the whole range is walked from a random start, so that a
        // free port is found whenever there is one and exhaustion is reported only when real.
        // The avoided port comes last of all: a range of one port still serves.
        let random = &mut self.random;
        let start = random.below(span);
        let draws = (0..RANDOM_TRIES.min(span)).map(|_| random.below(span));
        let ports = draws.chain((0..span).map(|i| (start + i) % span)).map(|offset| lo + offset as u16);
        for port in ports.filter(|p| avoid != Some(*p)).chain(avoid.filter(|p| (lo..=hi).contains(p))) {
            match s.bind(&addr(port).into()) {
                Ok(()) => return Ok((s.into(), port)),
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(io::ErrorKind::AddrInUse, "every port of --port-range is in use"))
    }
}

/// Whether the kernel accepts UDP GSO (Linux 4.18+): a socket takes the segment-size option.
pub(crate) fn gso_supported() -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else { return false };
    sockopt::set_udp_segment(&s, 1400).is_ok()
}

/// Whether a failed GSO send says the path cannot take it (no checksum offload, a segment
/// larger than the route's MTU, an old kernel): such sends go out one datagram each from then.
pub(crate) fn gso_refused(errno: i32) -> bool {
    matches!(errno, libc::EINVAL | libc::EIO | libc::EMSGSIZE | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
}

/// The MTU of interface `ifindex`, if it can be read.
pub(crate) fn interface_mtu(ifindex: u32) -> Option<u32> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has IF_NAMESIZE bytes, as if_indextoname requires.
    if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
        return None;
    }
    // SAFETY: plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = name;
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_mtu of the ifreq we own.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc != 0 {
        return None;
    }
    // SAFETY: after SIOCGIFMTU the union holds the MTU.
    u32::try_from(unsafe { req.ifr_ifru.ifru_mtu }).ok()
}

/// One IPv4 address of an interface, as `getifaddrs` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InterfaceAddr {
    pub(crate) ip: Ipv4Addr,
    pub(crate) prefix: u8,
    /// The broadcast address configured with the address, as reported. glibc reports the
    /// address itself when none was configured (`ip addr add 198.18.7.1/24 dev x`, no `brd`).
    pub(crate) broadcast: Option<Ipv4Addr>,
}

/// The IPv4 broadcast addresses of this host's interfaces (requests sent to them are ignored).
pub(crate) fn broadcast_addresses() -> Vec<Ipv4Addr> {
    broadcasts_of(&interface_addrs())
}

/// The broadcast addresses of `addrs`: the directed broadcast of each prefix that has one (not
/// /31 or /32, RFC 3021), and each configured broadcast address; never an address of this host,
/// whatever an interface reports.
pub(crate) fn broadcasts_of(addrs: &[InterfaceAddr]) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for a in addrs {
        if a.prefix <= 30 {
            let host_mask = u32::MAX >> a.prefix;
            out.push(Ipv4Addr::from(u32::from(a.ip) | host_mask));
        }
        out.extend(a.broadcast);
    }
    out.retain(|b| !b.is_unspecified() && !addrs.iter().any(|a| a.ip == *b));
    out.sort_unstable();
    out.dedup();
    out
}

/// The IPv4 addresses of this host's interfaces with their prefixes.
fn interface_addrs() -> Vec<InterfaceAddr> {
    let mut out = Vec::new();
    let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut ifs) } != 0 {
        return out;
    }
    let v4 = |sa: *const libc::sockaddr| -> Option<Ipv4Addr> {
        // SAFETY: a non-null sockaddr from getifaddrs; its family says how long it is.
        if sa.is_null() || unsafe { i32::from((*sa).sa_family) } != libc::AF_INET {
            return None;
        }
        // SAFETY: an AF_INET sockaddr is a sockaddr_in.
        let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
        Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
    };
    let mut cur = ifs;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if let (Some(ip), Some(mask)) = (v4(ifa.ifa_addr), v4(ifa.ifa_netmask)) {
            // With IFF_BROADCAST, ifa_ifu is the broadcast address (else the point-to-point peer).
            let has_broadcast = ifa.ifa_flags & libc::IFF_BROADCAST as u32 != 0;
            let broadcast = if has_broadcast { v4(ifa.ifa_ifu) } else { None };
            out.push(InterfaceAddr { ip, prefix: u32::from(mask).leading_ones() as u8, broadcast });
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(ifs) };
    out
}

/// The loopback interface's index, for tests.
#[cfg(test)]
pub(crate) fn loopback_index() -> u32 {
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(c"lo".as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_are_directed_broadcasts_never_local_addresses() {
        let a = |ip: &str, prefix, brd: Option<&str>| InterfaceAddr {
            ip: ip.parse().unwrap(),
            prefix,
            broadcast: brd.map(|b| b.parse().unwrap()),
        };
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        // `ip addr add 198.18.7.1/24` without `brd`: glibc reports the address itself.
        assert_eq!(broadcasts_of(&[a("198.18.7.1", 24, Some("198.18.7.1"))]), [ip("198.18.7.255")]);
        // With `brd +`.
        assert_eq!(broadcasts_of(&[a("198.18.7.1", 24, Some("198.18.7.255"))]), [ip("198.18.7.255")]);
        // /31 and /32 have none (RFC 3021): both ends of a /31 are hosts.
        assert!(broadcasts_of(&[a("198.18.10.0", 31, Some("198.18.10.0")), a("198.18.11.1", 32, None)]).is_empty());
        assert!(broadcasts_of(&[a("198.18.10.1", 31, Some("198.18.10.1"))]).is_empty());
        // Several addresses: another address's broadcast is never a local address.
        let several = [a("198.18.7.1", 24, Some("198.18.7.1")), a("198.18.7.255", 32, None), a("198.18.9.1", 23, None)];
        assert_eq!(broadcasts_of(&several), [ip("198.18.9.255")]);
        // An explicit broadcast address other than the directed one is kept.
        assert_eq!(
            broadcasts_of(&[a("198.18.7.1", 24, Some("198.18.7.127"))]),
            [ip("198.18.7.127"), ip("198.18.7.255")]
        );
        // This host's addresses are never among them.
        let here = interface_addrs();
        assert!(here.iter().any(|x| x.ip == Ipv4Addr::LOCALHOST));
        assert!(broadcast_addresses().iter().all(|b| !here.iter().any(|x| x.ip == *b)));
    }

    #[test]
    fn a_chosen_listening_port_is_one_no_other_socket_holds() {
        // Sockets of this user holding ports with SO_REUSEPORT (other servers' listening
        // sockets): the kernel's choice must never be one of their ports. (With 2,000 held, a
        // choice that ignored them would meet one in about one call of fifteen.)
        let room = crate::sys::rlimit::raise_fd_limit().saturating_sub(300).min(2000);
        let held: Vec<UdpSocket> = (0..room)
            .filter_map(|_| {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).ok()?;
                s.set_reuse_port(true).ok()?;
                s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).ok()?;
                Some(s.into())
            })
            .collect();
        let ports: std::collections::HashSet<u16> =
            held.iter().filter_map(|s| Some(s.local_addr().ok()?.port())).collect();
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mine: Vec<UdpSocket> = (0..200).map(|_| listen_socket(any, 4096).unwrap()).collect();
        let shared: Vec<u16> =
            mine.iter().map(|s| s.local_addr().unwrap().port()).filter(|p| ports.contains(p)).collect();
        assert!(shared.is_empty(), "ports chosen that other sockets hold: {shared:?}");
        // The other workers still join the chosen port.
        let port = mine[0].local_addr().unwrap().port();
        let joined = listen_socket(SocketAddr::from(([127, 0, 0, 1], port)), 4096).unwrap();
        assert_eq!(joined.local_addr().unwrap().port(), port);
    }

    #[test]
    fn loopback_mtu_is_known() {
        assert!(interface_mtu(loopback_index()).unwrap() >= 1500);
        assert_eq!(interface_mtu(999_999), None);
    }

    #[test]
    fn port_range_is_respected_and_exhaustion_reported() {
        // Two adjacent free ports: other processes on the host use ephemeral ports too.
        let base = (0..100)
            .find_map(|_| {
                let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
                let base = probe.local_addr().ok()?.port();
                let _next = UdpSocket::bind(("127.0.0.1", base.checked_add(1)?)).ok()?;
                Some(base)
            })
            .expect("two adjacent free ports");
        let (lo, hi) = (base, base + 1);
        let mut p = PortPicker::new(Some((lo, hi)));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = p.bind(ip, 0, None).unwrap().0;
        let b = p.bind(ip, 0, None).unwrap().0;
        let ports = [a.local_addr().unwrap().port(), b.local_addr().unwrap().port()];
        assert!(ports.iter().all(|&x| (lo..=hi).contains(&x)), "{ports:?}");
        assert_ne!(ports[0], ports[1]);
        assert_eq!(p.bind(ip, 0, None).unwrap_err().kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn the_last_free_port_of_a_full_range_is_found() {
        // 256 ports below the ephemeral ones, all held here but one: the random draws miss it
        // almost surely, and the walk over the range finds it.
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (lo, mut held) = (0..40u16)
            .find_map(|i| {
                let lo = 10_000 + ((std::process::id() as u16 % 40 + i) % 40) * 500;
                let held: Option<Vec<UdpSocket>> = (lo..lo + 256).map(|p| UdpSocket::bind((ip, p)).ok()).collect();
                Some((lo, held?))
            })
            .expect("256 adjacent free ports");
        let hi = lo + 255;
        for free in [lo + 100, hi, lo] {
            held.remove(usize::from(free - lo));
            let mut p = PortPicker::new(Some((lo, hi)));
            let s = p.bind(ip, 0, None).unwrap().0;
            assert_eq!(s.local_addr().unwrap().port(), free);
            assert_eq!(p.bind(ip, 0, None).unwrap_err().kind(), io::ErrorKind::AddrInUse, "exhausted");
            held.insert(usize::from(free - lo), s);
        }
    }

    #[test]
    fn the_port_of_the_previous_transfer_is_avoided() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // The kernel's draw: whatever port it hands out, asked to avoid it, it gets another.
        let mut p = PortPicker::new(None);
        for _ in 0..20 {
            let (s, port) = p.bind(ip, 0, None).unwrap();
            assert_eq!(s.local_addr().unwrap().port(), port);
            drop(s);
            let (again, other) = p.bind(ip, 0, Some(port)).unwrap();
            assert_ne!(other, port);
            assert_eq!(again.local_addr().unwrap().port(), other);
        }
        // A range: never the avoided port while another is free; a range of one port still serves.
        let (lo, _held) = (0..100)
            .find_map(|_| {
                let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
                let base = probe.local_addr().ok()?.port();
                drop(probe);
                let _next = UdpSocket::bind(("127.0.0.1", base.checked_add(1)?)).ok()?;
                Some((base, ()))
            })
            .expect("two adjacent free ports");
        let mut p = PortPicker::new(Some((lo, lo + 1)));
        for _ in 0..20 {
            assert_eq!(p.bind(ip, 0, Some(lo)).unwrap().1, lo + 1);
        }
        let mut one = PortPicker::new(Some((lo, lo)));
        assert_eq!(one.bind(ip, 0, Some(lo)).unwrap().1, lo);
    }

    #[test]
    fn ports_are_drawn_at_random() {
        let check = |draws: Vec<u32>| {
            assert!(draws.iter().all(|&d| d < 1000));
            let sequential = draws.windows(2).filter(|w| w[1] == w[0] + 1).count();
            assert!(sequential < 10, "{sequential} of 999 draws were the previous one + 1");
            let mut distinct = draws;
            distinct.sort_unstable();
            distinct.dedup();
            assert!(distinct.len() > 500, "{} distinct draws of 1000", distinct.len());
        };
        let mut r = KernelRandom::new();
        assert!(r.fill_from_kernel(), "getrandom(2) works here");
        check((0..1000).map(|_| r.below(1000)).collect());
        assert_eq!(r.below(1), 0);
        // The stand-in, where the kernel gives nothing, is no counter either.
        let mut draws = Vec::new();
        for _ in 0..16 {
            r.fill_stand_in();
            r.used = 0;
            draws.extend((0..64).map(|_| r.below(1000)));
        }
        check(draws[..1000].to_vec());
    }
}
