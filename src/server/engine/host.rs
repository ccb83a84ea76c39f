//! What the engine asks of the host besides its sockets: the MTU of the interface a request
//! came in on (to fit blksize), and whether the address it was sent to is a broadcast address
//! (such requests are ignored). Both are cached: they change rarely, and reading them costs
//! system calls.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::proto::Timestamp;
use crate::server::socket::{broadcast_addresses, interface_mtu};

/// How long an interface's MTU is trusted before it is read again.
const MTU_MAX_AGE: Duration = Duration::from_secs(10);
/// How often the interfaces' broadcast addresses are re-read.
const BROADCAST_MAX_AGE: Duration = Duration::from_secs(10);

/// The host's interfaces, as the engine sees them.
pub(crate) trait HostInfo {
    /// The MTU of interface `ifindex`, if known.
    fn interface_mtu(&mut self, ifindex: u32, now: Timestamp) -> Option<u32>;

    /// Whether `ip` is the broadcast address of one of the host's interfaces.
    fn is_interface_broadcast(&mut self, ip: Ipv4Addr, now: Timestamp) -> bool;
}

/// Whether a request sent to `ip` was sent to a broadcast or multicast address.
pub(super) fn is_broadcast(host: &mut dyn HostInfo, ip: IpAddr, now: Timestamp) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.is_multicast(),
        IpAddr::V4(v4) if v4.is_broadcast() || v4.is_multicast() => true,
        IpAddr::V4(v4) => host.is_interface_broadcast(v4, now),
    }
}

/// One interface's MTU as last read.
#[derive(Clone, Copy, Debug)]
struct InterfaceMtu {
    ifindex: u32,
    mtu: Option<u32>,
    read: Timestamp,
}

/// The kernel's answers (`getifaddrs`, `SIOCGIFMTU`), cached.
#[derive(Debug, Default)]
pub(crate) struct KernelHost {
    mtus: Vec<InterfaceMtu>,
    broadcasts: Vec<Ipv4Addr>,
    broadcasts_read: Option<Timestamp>,
}

impl HostInfo for KernelHost {
    fn interface_mtu(&mut self, ifindex: u32, now: Timestamp) -> Option<u32> {
        let pos = self.mtus.iter().position(|m| m.ifindex == ifindex);
        match pos {
            Some(p) if now.saturating_since(self.mtus[p].read) < MTU_MAX_AGE => self.mtus[p].mtu,
            _ => {
                let entry = InterfaceMtu { ifindex, mtu: interface_mtu(ifindex), read: now };
                match pos {
                    Some(p) => self.mtus[p] = entry,
                    None => self.mtus.push(entry),
                }
                entry.mtu
            }
        }
    }

    fn is_interface_broadcast(&mut self, ip: Ipv4Addr, now: Timestamp) -> bool {
        if self.broadcasts_read.is_none_or(|t| now.saturating_since(t) >= BROADCAST_MAX_AGE) {
            self.broadcasts = broadcast_addresses();
            self.broadcasts_read = Some(now);
        }
        self.broadcasts.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with fixed answers.
    struct Fixed;

    impl HostInfo for Fixed {
        fn interface_mtu(&mut self, _: u32, _: Timestamp) -> Option<u32> {
            Some(1500)
        }

        fn is_interface_broadcast(&mut self, ip: Ipv4Addr, _: Timestamp) -> bool {
            ip == Ipv4Addr::new(192, 0, 2, 255)
        }
    }

    #[test]
    fn broadcast_multicast_and_interface_broadcasts() {
        let now = Timestamp::ZERO;
        let is = |s: &str| is_broadcast(&mut Fixed, s.parse().unwrap(), now);
        assert!(is("255.255.255.255") && is("224.0.0.1") && is("ff02::1") && is("192.0.2.255"));
        assert!(!is("192.0.2.1") && !is("2001:db8::1"));
    }
}
