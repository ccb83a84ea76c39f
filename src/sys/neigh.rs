//! The kernel's neighbour table: the hardware address of a client on the link, for per-client
//! views by MAC (`--client-dir` with `{mac}`).
//!
//! IPv4 entries are read from `/proc/thread-self/net/arp`: the table of the network namespace
//! of the reading thread (`/proc/net` is the process's first thread's, which differs when a
//! thread was moved into another namespace), or `/proc/net/arp` before Linux 3.17. Only complete entries count (flag `ATF_COM`): an incomplete one has
//! no address yet. A client behind a DHCP relay or a router is not on the link and has no entry.
//! IPv6 neighbours (netlink `RTM_GETNEIGH`) are not read: an IPv6 client has no MAC view.

use std::net::{IpAddr, Ipv4Addr};

/// `ATF_COM` of `<net/if_arp.h>`: the entry is complete.
const ATF_COM: u32 = 0x02;

/// The hardware address of `ip` in the neighbour table, when it has a complete Ethernet entry.
/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is looked up as IPv4.
pub fn mac_of(ip: IpAddr) -> Option<[u8; 6]> {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped()?,
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
        assert_eq!(mac_of("2001:db8::1".parse().unwrap()), None, "no IPv6 neighbours");
    }
}
