//! The values of flags that need more than a number: listen addresses, port ranges, umasks,
//! byte sizes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use bootstorm::config::TFTP_PORT;

use super::ListenAddrs;

/// What `--listen` accepts, for its messages.
const LISTEN_FORMS: &str =
    "give ADDR:PORT (192.0.2.1:69, [2001:db8::1]:69), an address alone (port 69), :PORT (every address) or HOST:PORT";

/// Parses a `--listen` value: `ADDR:PORT`, `[V6]:PORT`, an address alone (port 69), `:PORT`
/// (the IPv4 and IPv6 wildcard addresses), or `HOST[:PORT]`, resolved now. An interface name is
/// refused with the forms wanted: its addresses may change, and binding to an interface is not
/// what a listen address means.
pub(crate) fn parse_listen(s: &str) -> Result<ListenAddrs, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("an empty address: {LISTEN_FORMS}"));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(ListenAddrs(vec![a]));
    }
    let bare = t.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(t);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ListenAddrs(vec![SocketAddr::new(ip, TFTP_PORT)]));
    }
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port number: {LISTEN_FORMS}"));
    if let Some(p) = t.strip_prefix(':') {
        let p = port(p)?;
        return Ok(ListenAddrs(vec![
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, p)),
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, p)),
        ]));
    }
    let (host, p) = match t.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, port(p)?),
        Some(_) => return Err(format!("not an address: {LISTEN_FORMS} (an IPv6 address with a port in brackets)")),
        None => (t, TFTP_PORT),
    };
    if is_interface(host) {
        return Err(format!(
            "{host} is an interface name: give one of its addresses (--listen 192.0.2.1:{p}), or :{p} for every \
             address (an address not up yet is fine: the server binds it with IP_FREEBIND)"
        ));
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let resolved = (host, p).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}; {LISTEN_FORMS}"))?;
    for a in resolved {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address; {LISTEN_FORMS}"));
    }
    Ok(ListenAddrs(addrs))
}

/// Whether `name` is a network interface of this host.
fn is_interface(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".." && {
        std::path::Path::new("/sys/class/net").join(name).exists()
    }
}

/// Parses `LO:HI` (inclusive, LO ≤ HI, both above 0).
pub(crate) fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once(':').ok_or("expected LO:HI")?;
    let lo: u16 = lo.trim().parse().map_err(|_| "LO is not a port number")?;
    let hi: u16 = hi.trim().parse().map_err(|_| "HI is not a port number")?;
    if lo == 0 || lo > hi {
        return Err("need 0 < LO <= HI".into());
    }
    Ok((lo, hi))
}

/// Parses an octal umask (at most 0o777).
pub(crate) fn parse_umask(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim(), 8).ok().filter(|&m| m <= 0o777).ok_or_else(|| format!("not an octal umask: {s}"))
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: usize = num.trim().parse().map_err(|_| format!("not a size: {s}"))?;
    n.checked_mul(mult).ok_or_else(|| format!("too large: {s}"))
}
