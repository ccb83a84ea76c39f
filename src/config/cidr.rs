//! Networks in CIDR notation, for the `allow` and `allow_write_from` lists of a
//! [`ServePolicy`](super::ServePolicy).

use std::net::IpAddr;

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or a single address.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| format!("not an address: {addr}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| format!("bad prefix in {s}"))?,
            None => max,
        };
        Ok(Self { net, prefix })
    }

    /// The network as (bits, address width, prefix), an IPv4-mapped IPv6 network of prefix 96 or
    /// more as the IPv4 network it maps.
    fn canonical(&self) -> (u128, u32, u32) {
        match self.net {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32, u32::from(self.prefix)),
            IpAddr::V6(v) => match v.to_ipv4_mapped() {
                Some(v4) if self.prefix >= 96 => (u128::from(u32::from(v4)), 32, u32::from(self.prefix) - 96),
                _ => (u128::from(v), 128, u32::from(self.prefix)),
            },
        }
    }

    /// Whether every address of this network is in `outer`.
    pub fn within(&self, outer: &Cidr) -> bool {
        let (a, aw, ap) = self.canonical();
        let (b, bw, bp) = outer.canonical();
        aw == bw && bp <= ap && (bp == 0 || (a >> (aw - bp)) == (b >> (bw - bp)))
    }

    /// Whether `ip` is in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u32) {
            match a.to_canonical() {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let (n, nw) = bits(self.net);
        let (a, aw) = bits(ip);
        if nw != aw {
            return false;
        }
        let shift = nw - u32::from(self.prefix);
        shift >= 128 || (n >> shift) == (a >> shift)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        assert!(c("10.1.0.0/16").within(&c("10.0.0.0/8")));
        assert!(c("10.0.0.0/8").within(&c("10.0.0.0/8")));
        assert!(!c("10.0.0.0/7").within(&c("10.0.0.0/8")));
        assert!(!c("11.0.0.0/16").within(&c("10.0.0.0/8")));
        assert!(c("203.0.113.9").within(&c("0.0.0.0/0")));
        assert!(!c("::1").within(&c("0.0.0.0/0")), "families differ");
        assert!(c("2001:db8::/48").within(&c("::/0")));
        assert!(c("fd12::/16").within(&c("fd00::/8")) && !c("fe80::/10").within(&c("fd00::/8")));
        assert!(c("::ffff:10.1.2.3").within(&c("10.0.0.0/8")), "IPv4-mapped");
        assert!(c("10.1.2.3").within(&c("::ffff:10.0.0.0/104")));
        assert_eq!(c("10.1.0.0/16").to_string(), "10.1.0.0/16");
    }

    #[test]
    fn contains() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()), "IPv4-mapped");
        assert!(!c.contains("fd00::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("203.0.113.5".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("192.0.2.7").unwrap().contains("192.0.2.7".parse().unwrap()));
        assert!(!Cidr::parse("192.0.2.7").unwrap().contains("192.0.2.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
