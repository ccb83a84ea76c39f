//! Socket addresses in the raw form the kernel reads and writes, shared by the server's backends
//! and the load generator: encoded into caller memory, decoded from receive buffers, no
//! allocation.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A `sockaddr_in` or `sockaddr_in6` in caller memory.
#[derive(Clone, Copy)]
#[repr(C)]
pub union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawAddr")
    }
}

impl RawAddr {
    /// Encodes `addr`; returns the value and its length.
    pub fn new(addr: &SocketAddr) -> (Self, libc::socklen_t) {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_in is plain data; all-zero is valid.
                let mut v4: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                v4.sin_family = libc::AF_INET as libc::sa_family_t;
                v4.sin_port = a.port().to_be();
                v4.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                (Self { v4 }, size_of::<libc::sockaddr_in>() as libc::socklen_t)
            }
            SocketAddr::V6(a) => {
                // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
                let mut v6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                v6.sin6_port = a.port().to_be();
                v6.sin6_addr.s6_addr = a.ip().octets();
                v6.sin6_flowinfo = a.flowinfo();
                v6.sin6_scope_id = a.scope_id();
                (Self { v6 }, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
            }
        }
    }

    /// An all-zero value, large enough for either family.
    pub fn zeroed() -> Self {
        // SAFETY: both members are plain data; all-zero is valid.
        unsafe { std::mem::zeroed() }
    }
}

/// Size of the largest `sockaddr` a receive can return here.
pub const RAW_ADDR_LEN: libc::socklen_t = size_of::<RawAddr>() as libc::socklen_t;

/// Decodes a `sockaddr` written by the kernel (`bytes` as long as it said).
pub fn decode_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]);
    match i32::from(family) {
        libc::AF_INET if bytes.len() >= size_of::<libc::sockaddr_in>() => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if bytes.len() >= size_of::<libc::sockaddr_in6>() => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let flow = u32::from_ne_bytes(bytes[4..8].try_into().ok()?);
            let ip: [u8; 16] = bytes[8..24].try_into().ok()?;
            let scope = u32::from_ne_bytes(bytes[24..28].try_into().ok()?);
            let ip = Ipv6Addr::from(ip);
            // An IPv4-mapped peer on an IPv6 socket is reported as the IPv4 address it is.
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SocketAddr::V4(SocketAddrV4::new(v4, port)));
            }
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_roundtrip() {
        for a in ["127.0.0.1:69", "[::1]:6969", "[fe80::1%1]:5"] {
            let addr: SocketAddr = a.parse().unwrap();
            let (raw, len) = RawAddr::new(&addr);
            // SAFETY: RawAddr is plain data of at least `len` bytes.
            let bytes = unsafe { std::slice::from_raw_parts((&raw as *const RawAddr).cast::<u8>(), len as usize) };
            assert_eq!(decode_sockaddr(bytes), Some(addr));
        }
        assert_eq!(decode_sockaddr(&[0, 0]), None);
    }
}
