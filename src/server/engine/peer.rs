//! A transfer's client, its address and port, in 8 bytes where a `SocketAddr` takes 32: an
//! IPv4 client (the fleet's, nearly always) inline, an IPv6 one (with its scope) in an
//! allocation of its own, made when its transfer starts. The flow label is not kept: the
//! kernel reports none unless asked to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// An IPv6 client, where [`Peer`] points.
#[derive(Clone, Copy, PartialEq, Eq)]
struct V6 {
    ip: [u8; 16],
    scope_id: u32,
    port: u16,
}

/// Bit 0 of [`Peer`]'s word: an IPv4 client, its address in the high half and its port in
/// bits 16–31. Clear: the address of a [`V6`] (at least 4-aligned, so its bit 0 is clear).
const V4: u64 = 1;

/// A transfer's client. See the module documentation.
pub(super) struct Peer(u64);

impl Peer {
    /// The client at `a`.
    pub(super) fn new(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(a) => Self(u64::from(a.ip().to_bits()) << 32 | u64::from(a.port()) << 16 | V4),
            SocketAddr::V6(a) => {
                let v6 = Box::new(V6 { ip: a.ip().octets(), scope_id: a.scope_id(), port: a.port() });
                Self(Box::into_raw(v6).expose_provenance() as u64)
            }
        }
    }

    /// The IPv6 client, when it is one.
    fn v6(&self) -> Option<&V6> {
        if self.0 & V4 != 0 {
            return None;
        }
        let ptr = std::ptr::with_exposed_provenance::<V6>(self.0 as usize);
        // SAFETY: a word with V4 clear is the address of the box `new` leaked, exposed there
        // and freed only by `drop`; the reference lives no longer than `self`.
        Some(unsafe { &*ptr })
    }

    /// The address as the socket layer takes it.
    pub(super) fn addr(&self) -> SocketAddr {
        match self.v6() {
            None => {
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from_bits((self.0 >> 32) as u32), (self.0 >> 16) as u16))
            }
            Some(v6) => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(v6.ip), v6.port, 0, v6.scope_id)),
        }
    }

    /// The address without the port.
    pub(super) fn ip(&self) -> IpAddr {
        self.addr().ip()
    }

    /// Whether `a` is this client (its flow label aside).
    pub(super) fn is(&self, a: &SocketAddr) -> bool {
        match (self.v6(), a) {
            (None, SocketAddr::V4(_)) => Self::new(*a).0 == self.0,
            (Some(v6), SocketAddr::V6(a)) => *v6 == V6 { ip: a.ip().octets(), scope_id: a.scope_id(), port: a.port() },
            _ => false,
        }
    }

    /// What the index by client hashes: the same for this client as [`key`] of its address.
    pub(super) fn key(&self) -> Key {
        key(&self.addr())
    }
}

/// What a client is hashed by, its flow label aside (see [`Peer::key`]).
#[derive(Hash)]
pub(super) struct Key {
    ip: IpAddr,
    port: u16,
    scope_id: u32,
}

/// The hash key of the client at `a`.
pub(super) fn key(a: &SocketAddr) -> Key {
    let scope_id = match a {
        SocketAddr::V4(_) => 0,
        SocketAddr::V6(a) => a.scope_id(),
    };
    Key { ip: a.ip(), port: a.port(), scope_id }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.0 & V4 == 0 {
            let ptr = std::ptr::with_exposed_provenance_mut::<V6>(self.0 as usize);
            // SAFETY: the box `new` leaked (see `v6`), freed here once: the word is not used again.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

impl PartialEq for Peer {
    fn eq(&self, other: &Self) -> bool {
        self.is(&other.addr())
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.addr(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn a_client_address_reads_back_as_it_came() {
        let h = std::collections::hash_map::RandomState::new();
        for a in [
            "192.0.2.1:69",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::ffff:192.0.2.1]:1",
            "[2001:db8::1]:65535",
            "[fe80::1%7]:2000",
            "[::]:5",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let p = Peer::new(a);
            assert_eq!(p.addr(), a);
            assert_eq!(p.ip(), a.ip());
            assert!(p.is(&a));
            assert_eq!(h.hash_one(p.key()), h.hash_one(key(&a)), "{a}");
        }
        let v4: SocketAddr = "192.0.2.1:69".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:69".parse().unwrap();
        assert!(Peer::new(v4) != Peer::new(mapped));
        assert!(!Peer::new(v4).is(&mapped) && !Peer::new(mapped).is(&v4));
        assert!(!Peer::new(v4).is(&"192.0.2.1:70".parse().unwrap()));
        assert!(!Peer::new("[fe80::1%7]:2000".parse().unwrap()).is(&"[fe80::1%8]:2000".parse().unwrap()));
        // The flow label is not the client's.
        let flow = SocketAddr::V6(SocketAddrV6::new("2001:db8::1".parse().unwrap(), 69, 5, 0));
        assert!(Peer::new("[2001:db8::1]:69".parse().unwrap()).is(&flow));
        assert_eq!(std::mem::size_of::<Peer>(), 8);
    }
}
