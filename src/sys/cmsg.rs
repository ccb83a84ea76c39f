//! Control messages (`cmsg(3)`) in caller memory: a walker over received control data that
//! returns typed values, and writers for the messages sent. No allocation.
//!
//! Control data is read and written as `libc::cmsghdr`, `libc::in_pktinfo` and
//! `libc::in6_pktinfo` values with unaligned reads and writes: in an io_uring multishot receive
//! the control data follows the source address in the buffer, at no particular alignment, so
//! the `CMSG_*` macros (which dereference the header in place) cannot be used on it. The layout
//! the walker relies on is checked at compile time below.

use std::mem::{align_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ptr;
use std::time::Duration;

/// The local end of a received datagram: the address the peer sent it to and the interface it
/// came in on (from `IP_PKTINFO` / `IPV6_PKTINFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalEnd {
    /// The datagram's destination address, which a reply must come from.
    pub ip: IpAddr,
    /// The interface it arrived on (0: unknown or any).
    pub ifindex: u32,
}

/// Room for one packet-info message of either family followed by one UDP segment-size message:
/// the most control data a send here carries, and enough for a receive's packet info.
pub const PKTINFO_SPACE: usize = 64;

/// Room for what a listening socket's receive reports: the packet info of either family and the
/// kernel's receive time (`SO_TIMESTAMPNS`), in the order the kernel writes them.
pub const RECV_CONTROL_SPACE: usize = space(size_of::<libc::in6_pktinfo>()) + space(size_of::<libc::timespec>());

/// Room for the segment size a UDP GRO receive reports.
pub const GRO_SPACE: usize = space(size_of::<libc::c_int>());

/// The header before each message's data.
const HDR: usize = size_of::<libc::cmsghdr>();

/// `CMSG_ALIGN`: messages start at multiples of the word size.
const fn align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

/// `CMSG_SPACE`: the room a message of `data` bytes takes, padding included.
const fn space(data: usize) -> usize {
    align(HDR) + align(data)
}

// The layout read and written here, as the kernel has it: a header of one word-aligned size
// (so data starts right after it, at `CMSG_LEN(0)`), and the packet-info structures of
// `ip(7)` and `ipv6(7)` at their C sizes.
const _: () = assert!(align(HDR) == HDR && align_of::<libc::cmsghdr>() <= size_of::<usize>());
const _: () = assert!(size_of::<libc::in_pktinfo>() == 12 && align_of::<libc::in_pktinfo>() == 4);
const _: () = assert!(size_of::<libc::in6_pktinfo>() == 20 && align_of::<libc::in6_pktinfo>() == 4);
const _: () = assert!(space(size_of::<libc::in6_pktinfo>()) + space(size_of::<u16>()) <= PKTINFO_SPACE);
const _: () = assert!(space(size_of::<libc::in_pktinfo>()) + space(size_of::<u16>()) <= PKTINFO_SPACE);
const _: () = assert!(size_of::<libc::timespec>() == 16 && libc::SCM_TIMESTAMPNS == libc::SO_TIMESTAMPNS);

/// One control message, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlMessage<'a> {
    /// `IP_PKTINFO` or `IPV6_PKTINFO`: where the datagram was sent to.
    PacketInfo(LocalEnd),
    /// `UDP_GRO`: the datagrams of the receive are all this long but the last.
    GroSegment(usize),
    /// `SCM_TIMESTAMPNS`: when the datagram arrived, on the real-time clock (since the epoch).
    Arrival(Duration),
    /// Any other message, or a known one too short to decode.
    Other {
        /// `cmsg_level`.
        level: libc::c_int,
        /// `cmsg_type`.
        kind: libc::c_int,
        /// The message's data.
        data: &'a [u8],
    },
}

/// The messages in received control data (`msg_control` as long as `msg_controllen` says), in
/// order; stops at the first malformed header.
#[derive(Clone, Debug)]
pub struct ControlMessages<'a> {
    rest: &'a [u8],
}

impl<'a> ControlMessages<'a> {
    /// Walks `control`.
    pub fn new(control: &'a [u8]) -> Self {
        Self { rest: control }
    }
}

impl<'a> Iterator for ControlMessages<'a> {
    type Item = ControlMessage<'a>;

    fn next(&mut self) -> Option<ControlMessage<'a>> {
        if self.rest.len() < HDR {
            return None;
        }
        // SAFETY: at least HDR bytes are readable; cmsghdr is plain data, read unaligned.
        let hdr: libc::cmsghdr = unsafe { ptr::read_unaligned(self.rest.as_ptr().cast()) };
        let len = hdr.cmsg_len as usize;
        if len < HDR || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let data = &self.rest[HDR..len];
        // The last message may come without its padding.
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(decode(hdr.cmsg_level, hdr.cmsg_type, data))
    }
}

fn decode(level: libc::c_int, kind: libc::c_int, data: &[u8]) -> ControlMessage<'_> {
    match (level, kind) {
        (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= size_of::<libc::in_pktinfo>() => {
            // SAFETY: enough bytes for an in_pktinfo, plain data, read unaligned.
            let info: libc::in_pktinfo = unsafe { ptr::read_unaligned(data.as_ptr().cast()) };
            // ipi_addr is the packet's destination; ipi_spec_dst the address routing would pick.
            let ip = Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes());
            ControlMessage::PacketInfo(LocalEnd { ip: IpAddr::V4(ip), ifindex: info.ipi_ifindex as u32 })
        }
        (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= size_of::<libc::in6_pktinfo>() => {
            // SAFETY: enough bytes for an in6_pktinfo, plain data, read unaligned.
            let info: libc::in6_pktinfo = unsafe { ptr::read_unaligned(data.as_ptr().cast()) };
            let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
            ControlMessage::PacketInfo(LocalEnd { ip: IpAddr::V6(ip), ifindex: info.ipi6_ifindex })
        }
        (libc::SOL_UDP, libc::UDP_GRO) if data.len() >= size_of::<u16>() => {
            // The kernel writes an int; only its value matters.
            let seg = match data.first_chunk::<4>() {
                Some(int) => usize::try_from(i32::from_ne_bytes(*int)).unwrap_or(0),
                None => usize::from(u16::from_ne_bytes([data[0], data[1]])),
            };
            ControlMessage::GroSegment(seg)
        }
        (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) if data.len() >= size_of::<libc::timespec>() => {
            // SAFETY: enough bytes for a timespec, plain data, read unaligned.
            let ts: libc::timespec = unsafe { ptr::read_unaligned(data.as_ptr().cast()) };
            let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
            let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0).min(999_999_999);
            ControlMessage::Arrival(Duration::new(secs, nanos))
        }
        _ => ControlMessage::Other { level, kind, data },
    }
}

/// What a listening socket's receive reports besides the datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Where the datagram was sent to, and through which interface.
    pub local: Option<LocalEnd>,
    /// When it arrived, on the real-time clock (since the epoch).
    pub arrival: Option<Duration>,
}

/// The packet info and the arrival time in received control data, each if present.
pub fn received(control: &[u8]) -> Received {
    let mut got = Received::default();
    for m in ControlMessages::new(control) {
        match m {
            ControlMessage::PacketInfo(local) => got.local = Some(local),
            ControlMessage::Arrival(at) => got.arrival = Some(at),
            _ => {}
        }
    }
    got
}

/// The segment size of a UDP GRO receive, if its control data has one above 0: the datagrams
/// the buffer holds are all that long but the last.
pub fn gro_segment(control: &[u8]) -> Option<usize> {
    ControlMessages::new(control).find_map(|m| match m {
        ControlMessage::GroSegment(seg) if seg > 0 => Some(seg),
        _ => None,
    })
}

/// Writes a message header for `data_len` bytes of data at the start of `at`; returns the
/// message's room, padding included.
fn put_header(at: &mut [u8], level: libc::c_int, kind: libc::c_int, data_len: usize) -> usize {
    assert!(at.len() >= space(data_len), "control buffer too small");
    // SAFETY: cmsghdr is plain data (with private padding on some libcs); all-zero is valid.
    let mut hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
    hdr.cmsg_len = (HDR + data_len) as _;
    hdr.cmsg_level = level;
    hdr.cmsg_type = kind;
    // SAFETY: `at` has at least HDR bytes (checked above); an unaligned write of plain data.
    unsafe { ptr::write_unaligned(at.as_mut_ptr().cast(), hdr) };
    space(data_len)
}

/// Writes a packet-info message that makes a send leave from `local.ip` (and, for an IPv6
/// link-local address, through `local.ifindex`); returns its length.
pub fn write_pktinfo(local: &LocalEnd, buf: &mut [u8; PKTINFO_SPACE]) -> usize {
    buf.fill(0);
    match local.ip {
        IpAddr::V4(ip) => {
            // ipi_ifindex 0: let routing pick the interface; ipi_spec_dst: the source address.
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr { s_addr: u32::from_ne_bytes(ip.octets()) },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            // SAFETY: PKTINFO_SPACE holds the header and an in_pktinfo (asserted above).
            unsafe { ptr::write_unaligned(buf[HDR..].as_mut_ptr().cast(), info) };
            put_header(buf, libc::IPPROTO_IP, libc::IP_PKTINFO, size_of::<libc::in_pktinfo>())
        }
        IpAddr::V6(ip) => {
            let scope = if ip.is_unicast_link_local() { local.ifindex } else { 0 };
            let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: ip.octets() }, ipi6_ifindex: scope };
            // SAFETY: PKTINFO_SPACE holds the header and an in6_pktinfo (asserted above).
            unsafe { ptr::write_unaligned(buf[HDR..].as_mut_ptr().cast(), info) };
            put_header(buf, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, size_of::<libc::in6_pktinfo>())
        }
    }
}

/// Appends to `buf` (control data of `used` bytes) a message that makes the kernel cut a send
/// into datagrams of `size` bytes (UDP GSO); returns the new length of the control data.
pub fn write_segment_size(buf: &mut [u8; PKTINFO_SPACE], used: usize, size: u16) -> usize {
    let at = &mut buf[used..used + space(size_of::<u16>())];
    at.fill(0);
    at[HDR..HDR + 2].copy_from_slice(&size.to_ne_bytes());
    used + put_header(at, libc::SOL_UDP, libc::UDP_SEGMENT, size_of::<u16>())
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::sys::{send, sockopt};

    fn loopback_index() -> u32 {
        // SAFETY: a NUL-terminated name.
        unsafe { libc::if_nametoindex(c"lo".as_ptr()) }
    }

    /// Receives one datagram on `rx` with its control data; returns (payload length, control).
    fn recv_with_control(rx: &UdpSocket, buf: &mut [u8], control: &mut [u8]) -> (usize, usize) {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        // SAFETY: every pointer in `msg` refers to a live local.
        let n = unsafe { libc::recvmsg(rx.as_raw_fd(), &mut msg, 0) };
        assert!(n >= 0, "{}", std::io::Error::last_os_error());
        (n as usize, msg.msg_controllen)
    }

    #[test]
    fn pktinfo_v6_roundtrip() {
        for ip in ["::1", "fe80::2"] {
            let l = LocalEnd { ip: ip.parse().unwrap(), ifindex: 3 };
            let mut buf = [0u8; PKTINFO_SPACE];
            let n = write_pktinfo(&l, &mut buf);
            assert_eq!(n, space(20));
            let got = received(&buf[..n]).local.unwrap();
            assert_eq!(got.ip, l.ip);
            // The scope goes out only with a link-local source.
            assert_eq!(got.ifindex, if ip == "::1" { 0 } else { 3 });
        }
        assert_eq!(received(&[0u8; 8]).local, None);
        assert_eq!(received(&[0xffu8; 40]).local, None);
    }

    #[test]
    fn pktinfo_v4_layouts() {
        // Sending sets the source in ipi_spec_dst (bytes 4..8 of the data).
        let mut buf = [0u8; PKTINFO_SPACE];
        let n = write_pktinfo(&LocalEnd { ip: "127.0.0.2".parse().unwrap(), ifindex: 3 }, &mut buf);
        assert_eq!(n, align(HDR + 12));
        assert_eq!(&buf[HDR + 4..HDR + 8], &[127, 0, 0, 2]);
        // Receiving reads the packet's destination from ipi_addr (bytes 8..12).
        buf[HDR..HDR + 4].copy_from_slice(&7u32.to_ne_bytes());
        buf[HDR + 8..HDR + 12].copy_from_slice(&[10, 0, 0, 1]);
        let got = received(&buf[..n]).local.unwrap();
        assert_eq!((got.ip, got.ifindex), ("10.0.0.1".parse().unwrap(), 7));
    }

    #[test]
    fn messages_are_walked_in_order_at_any_alignment() {
        let mut buf = [0u8; PKTINFO_SPACE];
        let n = write_pktinfo(&LocalEnd { ip: "127.0.0.3".parse().unwrap(), ifindex: 0 }, &mut buf);
        let n = write_segment_size(&mut buf, n, 1200);
        // As in an io_uring receive buffer: the control data after a 28-byte address.
        let mut shifted = [0u8; PKTINFO_SPACE + 3];
        shifted[3..3 + n].copy_from_slice(&buf[..n]);
        let got: Vec<_> = ControlMessages::new(&shifted[3..3 + n]).collect();
        assert_eq!(got.len(), 2);
        // A sent packet info names the source in ipi_spec_dst; ipi_addr, read here, is zero.
        assert_eq!(got[0], ControlMessage::PacketInfo(LocalEnd { ip: "0.0.0.0".parse().unwrap(), ifindex: 0 }));
        assert_eq!(
            got[1],
            ControlMessage::Other { level: libc::SOL_UDP, kind: libc::UDP_SEGMENT, data: &1200u16.to_ne_bytes() }
        );
        assert_eq!(gro_segment(&shifted[3..3 + n]), None);
    }

    #[test]
    fn received_pktinfo_names_the_destination_v4() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        sockopt::enable_pktinfo(&rx, false).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let (mut buf, mut control) = ([0u8; 64], [0u8; PKTINFO_SPACE]);
        let (len, clen) = recv_with_control(&rx, &mut buf, &mut control);
        assert_eq!(&buf[..len], b"hello");
        let got = received(&control[..clen]).local.unwrap();
        assert_eq!(got, LocalEnd { ip: "127.0.0.1".parse().unwrap(), ifindex: loopback_index() });
    }

    #[test]
    fn received_pktinfo_names_the_destination_v6() {
        let rx = UdpSocket::bind("[::1]:0").unwrap();
        sockopt::enable_pktinfo(&rx, true).unwrap();
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let (mut buf, mut control) = ([0u8; 64], [0u8; PKTINFO_SPACE]);
        let (_, clen) = recv_with_control(&rx, &mut buf, &mut control);
        let got = received(&control[..clen]).local.unwrap();
        assert_eq!(got, LocalEnd { ip: "::1".parse().unwrap(), ifindex: loopback_index() });
    }

    #[test]
    fn received_control_has_the_destination_and_the_arrival_time() {
        for (rx, ipv6) in [("127.0.0.1:0", false), ("[::1]:0", true)] {
            let rx = UdpSocket::bind(rx).unwrap();
            sockopt::enable_pktinfo(&rx, ipv6).unwrap();
            sockopt::enable_arrival_times(&rx).unwrap();
            // The first socket to ask turns the kernel's receive stamps on a moment later
            // (deferred work); until then a datagram is stamped when it is read.
            std::thread::sleep(Duration::from_millis(100));
            let tx = UdpSocket::bind(if ipv6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
            let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            let (mut buf, mut control) = ([0u8; 64], [0u8; RECV_CONTROL_SPACE]);
            let (_, clen) = recv_with_control(&rx, &mut buf, &mut control);
            let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            let got = received(&control[..clen]);
            assert_eq!(got.local.map(|l| l.ip), Some(rx.local_addr().unwrap().ip()), "{got:?}");
            let at = got.arrival.expect("an arrival time");
            // The time the datagram arrived, not the time it was read 30 ms later.
            assert!(at >= before && at + Duration::from_millis(25) <= after, "{before:?} {at:?} {after:?}");
        }
        assert_eq!(received(&[0u8; 8]), Received::default());
    }

    #[test]
    fn gro_receive_reports_the_segment_size() {
        // --gro needs UDP GRO and GSO (Linux 5.0+); so does this test of it.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        sockopt::enable_udp_gro(&rx).expect("this kernel has no UDP GRO");
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        sockopt::set_udp_segment(&tx, 1000).expect("this kernel has no UDP GSO");
        tx.send_to(&[7u8; 2500], rx.local_addr().unwrap()).unwrap();
        let (mut buf, mut control) = ([0u8; 4096], [0u8; GRO_SPACE]);
        let (n, clen) = recv_with_control(&rx, &mut buf, &mut control);
        assert_eq!(n, 2500, "one receive holds the three datagrams");
        assert_eq!(gro_segment(&control[..clen]), Some(1000));
        assert_eq!(gro_segment(&[0u8; 8]), None);
    }

    #[test]
    fn one_send_with_source_and_segment_size_arrives_as_datagrams() {
        // The server falls back to one datagram per send without GSO; this test of the GSO
        // message needs it (Linux 4.18+), as the io_uring tests need Linux 5.19+.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        sockopt::set_udp_segment(&UdpSocket::bind("127.0.0.1:0").unwrap(), 1400).expect("this kernel has no UDP GSO");
        let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let mut cmsg = [0u8; PKTINFO_SPACE];
        let n = write_pktinfo(&LocalEnd { ip: "127.0.0.1".parse().unwrap(), ifindex: 0 }, &mut cmsg);
        let n = write_segment_size(&mut cmsg, n, 1000);
        let to: SocketAddr = rx.local_addr().unwrap();
        let sent = send::send_to_now(tx.as_raw_fd(), &to, &payload[..700], &payload[700..], &cmsg[..n]).unwrap();
        assert_eq!(sent, 2500);
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        for want in [1000, 1000, 500] {
            let (len, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!((len, from), (want, tx.local_addr().unwrap()));
            got.extend_from_slice(&buf[..len]);
        }
        assert_eq!(got, payload);
    }
}
