//! The kernel's neighbour table: the hardware address of a client on the link, for per-client
//! views by MAC (`--client-dir` with `{mac}`).
//!
//! The address is asked of the kernel over rtnetlink with the interface the request came in on
//! (`RTM_GETNEIGH` for one entry, Linux 4.20+): one hash lookup in the kernel, however many
//! machines the table holds (a fleet booting at once puts thousands there, and each new client
//! asks). Without the interface, or from an older kernel, the whole table is read instead: IPv4
//! from `/proc/thread-self/net/arp` (the table of the reading thread's network namespace;
//! `/proc/net` is the process's first thread's, which differs when a thread was moved into
//! another namespace), or `/proc/net/arp` before Linux 3.17; IPv6 as a dump (`RTM_GETNEIGH`
//! with `NLM_F_DUMP`). Netlink sockets are opened in the asking thread's namespace. Only
//! complete entries count (a valid state, flag `ATF_COM` in the text table): an incomplete one
//! has no address yet. A client behind a DHCP relay or a router is not on the link and has no
//! entry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `ATF_COM` of `<net/if_arp.h>`: the entry is complete.
const ATF_COM: u32 = 0x02;

/// The hardware address of `ip`, seen on interface `ifindex` (0: unknown), in the neighbour
/// table, when it has a complete Ethernet entry. An IPv4 client seen through an IPv6 socket
/// (`::ffff:a.b.c.d`) is looked up as IPv4.
pub fn mac_of(ip: IpAddr, ifindex: u32) -> Option<[u8; 6]> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ifindex != 0 {
        if let Some(answer) = ask_for_entry(ip, ifindex) {
            return answer;
        }
    }
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => return ipv6_neighbour(v6),
    };
    let table = std::fs::read("/proc/thread-self/net/arp").or_else(|_| std::fs::read("/proc/net/arp")).ok()?;
    find_in_arp_table(&table, v4)
}

/// The address of `ip` in the text of `/proc/net/arp`.
fn find_in_arp_table(table: &[u8], ip: Ipv4Addr) -> Option<[u8; 6]> {
    let text = std::str::from_utf8(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let mut f = line.split_ascii_whitespace();
        let (addr, _hw_type, flags, hw) = (f.next()?, f.next()?, f.next()?, f.next()?);
        if addr.parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        if flags & ATF_COM == 0 {
            return None;
        }
        parse_mac(hw)
    })
}

/// `struct nlmsghdr`'s size, and the `struct ndmsg` after it.
const NLMSG_HDR: usize = 16;
const NDMSG: usize = 12;
/// `RTM_NEWNEIGH`: one entry of the dump.
const RTM_NEWNEIGH: u16 = 28;
/// `NLMSG_ERROR` and `NLMSG_DONE`: the dump failed, or ended.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NDA_DST` (the neighbour's address) and `NDA_LLADDR` (its hardware address).
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// `NUD_VALID`: the states in which an entry's hardware address is known.
const NUD_VALID: u16 = 0x80 | 0x40 | 0x02 | 0x10 | 0x04 | 0x08;

/// `NDA_DST` of `ip`: its octets, 4 or 16.
fn octets(ip: IpAddr) -> ([u8; 16], usize) {
    let mut o = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            o[..4].copy_from_slice(&v4.octets());
            (o, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

/// A request for the neighbour table: `nlmsghdr` with `flags`, `ndmsg` of `ip`'s family on
/// interface `ifindex`, then `NDA_DST` of `ip` when `with_dst`; returns the buffer and its length.
fn neighbour_request(ip: IpAddr, ifindex: u32, flags: u16, with_dst: bool) -> ([u8; NLMSG_HDR + NDMSG + 20], usize) {
    let mut req = [0u8; NLMSG_HDR + NDMSG + 20];
    let (dst, dst_len) = octets(ip);
    let len = NLMSG_HDR + NDMSG + if with_dst { 4 + dst_len } else { 0 };
    req[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_GETNEIGH.to_ne_bytes());
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[NLMSG_HDR] = if ip.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
    req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&ifindex.to_ne_bytes());
    if with_dst {
        let a = NLMSG_HDR + NDMSG;
        req[a..a + 2].copy_from_slice(&((4 + dst_len) as u16).to_ne_bytes());
        req[a + 2..a + 4].copy_from_slice(&NDA_DST.to_ne_bytes());
        req[a + 4..a + 4 + dst_len].copy_from_slice(&dst[..dst_len]);
    }
    (req, len)
}

/// A route netlink socket of the calling thread's namespace that gives up on an answer after
/// 200 ms, with `req` sent on it.
fn netlink_asked(req: &[u8]) -> Option<OwnedFd> {
    // SAFETY: plain syscall; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
    // SAFETY: `timeout` is a valid timeval for the call's duration, its size given.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // SAFETY: `req` is valid for its length; an unbound netlink socket sends to the kernel.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return None;
    }
    Some(sock)
}

/// Asks the kernel for the entry of `ip` on interface `ifindex`: `Some` with its answer (`None`
/// inside when it has no complete entry), or `None` when it gave no answer (a kernel before
/// 4.20 has no such request).
fn ask_for_entry(ip: IpAddr, ifindex: u32) -> Option<Option<[u8; 6]>> {
    let (req, len) = neighbour_request(ip, ifindex, libc::NLM_F_REQUEST as u16, true);
    let sock = netlink_asked(&req[..len])?;
    let mut buf = [0u8; 1024];
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let n = usize::try_from(n).ok()?;
    entry_answer(&buf[..n], ip)
}

/// What the answer to a request for one entry says of `ip` (see [`ask_for_entry`]).
fn entry_answer(msg: &[u8], ip: IpAddr) -> Option<Option<[u8; 6]>> {
    if msg.len() < NLMSG_HDR {
        return None;
    }
    let len = (u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize).min(msg.len());
    match u16::from_ne_bytes([msg[4], msg[5]]) {
        RTM_NEWNEIGH if len >= NLMSG_HDR + NDMSG => Some(neighbour_entry(&msg[NLMSG_HDR..len], ip)),
        // The error code after the header: no entry is an answer; anything else (an older
        // kernel's EOPNOTSUPP, EINVAL) is none.
        NLMSG_ERROR if len >= NLMSG_HDR + 4 => {
            let code = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
            (code == -libc::ENOENT).then_some(None)
        }
        _ => None,
    }
}

/// The hardware address of `ip` in the kernel's IPv6 neighbour table, read whole.
fn ipv6_neighbour(ip: Ipv6Addr) -> Option<[u8; 6]> {
    // A dump request for the IPv6 table: nlmsghdr, then ndmsg with only the family set.
    let (req, len) = neighbour_request(IpAddr::V6(ip), 0, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16, false);
    let sock = netlink_asked(&req[..len])?;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).ok().filter(|&n| n > 0)?;
        match find_in_dump(&buf[..n], ip) {
            Dump::Found(mac) => return Some(mac),
            Dump::End => return None,
            Dump::More => {}
        }
    }
}

/// What one datagram of a neighbour dump says about an address.
#[derive(Debug, PartialEq, Eq)]
enum Dump {
    /// Its hardware address.
    Found([u8; 6]),
    /// The dump ended (or failed) without it.
    End,
    /// Not in this part; more follows.
    More,
}

/// Looks for `ip` among the netlink messages in `buf`.
fn find_in_dump(mut buf: &[u8], ip: Ipv6Addr) -> Dump {
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR || len > buf.len() {
            return Dump::End;
        }
        match kind {
            NLMSG_DONE | NLMSG_ERROR => return Dump::End,
            RTM_NEWNEIGH if len >= NLMSG_HDR + NDMSG => {
                if let Some(mac) = neighbour_entry(&buf[NLMSG_HDR..len], IpAddr::V6(ip)) {
                    return Dump::Found(mac);
                }
            }
            _ => {}
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    Dump::More
}

/// The hardware address in one `ndmsg` and its attributes, when the entry is `ip`'s and valid.
fn neighbour_entry(msg: &[u8], ip: IpAddr) -> Option<[u8; 6]> {
    let state = u16::from_ne_bytes([msg[8], msg[9]]);
    let family = if ip.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    if i32::from(msg[0]) != family || state & NUD_VALID == 0 {
        return None;
    }
    let (mut dst, mut mac) = (None, None);
    let mut attrs = &msg[NDMSG..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match kind {
            NDA_DST => {
                dst = match data.len() {
                    4 => <[u8; 4]>::try_from(data).ok().map(|o| IpAddr::V4(Ipv4Addr::from(o))),
                    _ => <[u8; 16]>::try_from(data).ok().map(|o| IpAddr::V6(Ipv6Addr::from(o))),
                }
            }
            NDA_LLADDR => mac = <[u8; 6]>::try_from(data).ok(),
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    (dst == Some(ip)).then_some(mac?).filter(|m| *m != [0; 6])
}

/// `aa:bb:cc:dd:ee:ff`; `None` for anything else (or the all-zero address).
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && mac != [0; 6]).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_entries_only() {
        let table = b"IP address       HW type     Flags       HW address            Mask     Device\n\
            198.18.0.2       0x1         0x2         52:54:00:ab:cd:ef     *        veth0\n\
            198.18.0.3       0x1         0x0         00:00:00:00:00:00     *        veth0\n\
            198.18.0.4       0x1         0x6         52:54:00:00:00:04     *        veth0\n";
        let at = |s: &str| find_in_arp_table(table, s.parse().unwrap());
        assert_eq!(at("198.18.0.2"), Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
        assert_eq!(at("198.18.0.3"), None, "incomplete");
        assert_eq!(at("198.18.0.4"), Some([0x52, 0x54, 0, 0, 0, 4]), "permanent");
        assert_eq!(at("198.18.0.9"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
    }

    /// One dump datagram: an entry of another address, a valid entry, then the end.
    #[test]
    fn ipv6_entries_from_a_neighbour_dump() {
        fn entry(ip: &str, state: u16, mac: [u8; 6]) -> Vec<u8> {
            let mut m = vec![0u8; NLMSG_HDR + NDMSG];
            m[4..6].copy_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
            m[NLMSG_HDR] = libc::AF_INET6 as u8;
            m[NLMSG_HDR + 8..NLMSG_HDR + 10].copy_from_slice(&state.to_ne_bytes());
            for (kind, data) in
                [(NDA_DST, ip.parse::<Ipv6Addr>().unwrap().octets().to_vec()), (NDA_LLADDR, mac.to_vec())]
            {
                m.extend_from_slice(&(4 + data.len() as u16).to_ne_bytes());
                m.extend_from_slice(&kind.to_ne_bytes());
                m.extend_from_slice(&data);
                while m.len() % 4 != 0 {
                    m.push(0);
                }
            }
            let len = m.len() as u32;
            m[0..4].copy_from_slice(&len.to_ne_bytes());
            m
        }
        let mut dump = entry("2001:db8::3", 0x04, [2, 0, 0, 0, 0, 3]);
        dump.extend(entry("2001:db8::4", 0x01, [2, 0, 0, 0, 0, 4]));
        dump.extend(entry("2001:db8::2", 0x04, [2, 0, 0, 0, 0, 2]));
        let at = |s: &str| find_in_dump(&dump, s.parse().unwrap());
        assert_eq!(at("2001:db8::2"), Dump::Found([2, 0, 0, 0, 0, 2]));
        assert_eq!(at("2001:db8::4"), Dump::More, "incomplete");
        assert_eq!(at("2001:db8::9"), Dump::More);
        let mut done = vec![0u8; NLMSG_HDR];
        done[0..4].copy_from_slice(&(NLMSG_HDR as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        assert_eq!(find_in_dump(&done, "2001:db8::2".parse().unwrap()), Dump::End);
        assert_eq!(find_in_dump(&[1, 2, 3], "2001:db8::2".parse().unwrap()), Dump::More);
        // The host's own table is asked: nothing there for a documentation address.
        assert_eq!(mac_of("2001:db8::1".parse().unwrap(), 0), None);
    }

    /// The kernel's answers to a request for one entry: the entry, or an error.
    #[test]
    fn one_entry_asked_of_the_kernel() {
        fn answer(kind: u16, body: &[u8]) -> Vec<u8> {
            let mut m = vec![0u8; NLMSG_HDR];
            m[4..6].copy_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(body);
            let len = m.len() as u32;
            m[0..4].copy_from_slice(&len.to_ne_bytes());
            m
        }
        fn entry(family: i32, state: u16, dst: &[u8], mac: [u8; 6]) -> Vec<u8> {
            let mut m = vec![0u8; NDMSG];
            m[0] = family as u8;
            m[8..10].copy_from_slice(&state.to_ne_bytes());
            for (kind, data) in [(NDA_DST, dst), (NDA_LLADDR, &mac[..])] {
                m.extend_from_slice(&(4 + data.len() as u16).to_ne_bytes());
                m.extend_from_slice(&kind.to_ne_bytes());
                m.extend_from_slice(data);
                while m.len() % 4 != 0 {
                    m.push(0);
                }
            }
            m
        }
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        let stale = entry(libc::AF_INET, 0x04, &[198, 18, 0, 2], [2, 0, 0, 0, 0, 2]);
        assert_eq!(entry_answer(&answer(RTM_NEWNEIGH, &stale), v4), Some(Some([2, 0, 0, 0, 0, 2])));
        let incomplete = entry(libc::AF_INET, 0x01, &[198, 18, 0, 2], [0; 6]);
        assert_eq!(entry_answer(&answer(RTM_NEWNEIGH, &incomplete), v4), Some(None));
        let v6: IpAddr = "fe80::2".parse().unwrap();
        let reachable = entry(libc::AF_INET6, 0x02, &v6_octets("fe80::2"), [2, 0, 0, 0, 0, 6]);
        assert_eq!(entry_answer(&answer(RTM_NEWNEIGH, &reachable), v6), Some(Some([2, 0, 0, 0, 0, 6])));
        assert_eq!(entry_answer(&answer(RTM_NEWNEIGH, &reachable), v4), Some(None), "another address");
        let error = |errno: i32| answer(NLMSG_ERROR, &[(-errno).to_ne_bytes().as_slice(), &[0; 16]].concat());
        assert_eq!(entry_answer(&error(libc::ENOENT), v4), Some(None), "no entry: an answer");
        assert_eq!(entry_answer(&error(libc::EOPNOTSUPP), v4), None, "an older kernel: no answer");
        assert_eq!(entry_answer(&[0; 3], v4), None);
        // The request carries the family, the interface and the address.
        let (req, len) = neighbour_request(v4, 7, libc::NLM_F_REQUEST as u16, true);
        assert_eq!(len, NLMSG_HDR + NDMSG + 8);
        assert_eq!(req[NLMSG_HDR], libc::AF_INET as u8);
        assert_eq!(req[NLMSG_HDR + 4..NLMSG_HDR + 8], 7u32.to_ne_bytes());
        assert_eq!(req[NLMSG_HDR + NDMSG + 4..len], [198, 18, 0, 2]);
        // This kernel answers: loopback keeps no neighbours, so "none" (Linux 4.20+).
        // SAFETY: a NUL-terminated name.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert_eq!(ask_for_entry("127.0.0.2".parse().unwrap(), lo), Some(None));
    }

    fn v6_octets(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }
}
