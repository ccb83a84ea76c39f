//! What to run: the server, the files, the options and the shape of the load, resolved from the
//! command line once and shared read-only by every thread.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bootstorm::proto::{ClientConfig, RequestOptions};

/// Patterns of real boot firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Profile {
    /// One request per file with the options given.
    Plain,
    /// EDK2 UEFI: a size probe (tsize, then ERROR 8 on the OACK), then the real request.
    Uefi,
    /// PXELINUX: configuration-file misses (ERROR 1 expected) before the files.
    Pxelinux,
    /// GRUB: blksize 1024 and tsize, usually many small files.
    Grub,
}

/// One file of the per-session list, with its expected contents when verifying against a copy.
#[derive(Debug)]
pub(crate) struct FileSpec {
    pub(crate) name: String,
    pub(crate) expect: Option<Arc<[u8]>>,
}

/// When sessions start.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arrivals {
    /// `clients` sessions at a time; a finished one is replaced until `total` have run or the
    /// duration is over.
    Closed { clients: usize, total: Option<u64>, duration: Option<Duration> },
    /// `total` sessions arriving evenly over `ramp`, each running once (a boot storm).
    Storm { total: u64, ramp: Duration },
}

/// One step of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A request expected to fail with ERROR 1 (the n-th miss).
    Miss(u32),
    /// UEFI size probe of file `f`: read the OACK, answer ERROR 8.
    Probe(usize),
    /// Download file `f`.
    Fetch(usize),
}

/// The resolved plan.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) server: SocketAddr,
    pub(crate) files: Vec<FileSpec>,
    pub(crate) options: RequestOptions,
    pub(crate) client: ClientConfig,
    pub(crate) profile: Profile,
    pub(crate) misses: u32,
    pub(crate) drop: f64,
    /// Upload the files (WRQ, as `<name>.<client>`) instead of downloading them.
    pub(crate) upload: bool,
    pub(crate) hold: Duration,
    pub(crate) arrivals: Arrivals,
    pub(crate) threads: usize,
    /// Source addresses the clients are spread over.
    pub(crate) source_ips: u32,
    /// The first of them (`--source-base`); `None`: 127.1.0.1 and up for an IPv4 loopback
    /// server with `source_ips` > 1, else the family's any or loopback address.
    pub(crate) source_base: Option<IpAddr>,
    pub(crate) seed: u64,
    /// Restarts of a failed step a session may make (`--session-retries`).
    pub(crate) session_retries: u32,
    /// Pause before a restart.
    pub(crate) retry_pause: Duration,
    /// One port for every request of a client (`--reuse-port`), instead of one per step.
    pub(crate) reuse_port: bool,
    pub(crate) rx_buffers: u16,
    /// Receive with UDP GRO: datagrams a server sent as one GSO send arrive as one buffer.
    pub(crate) gro: bool,
}

impl Plan {
    /// Step `i` of a session, or `None` once the session is complete.
    pub(crate) fn step(&self, i: usize) -> Option<Step> {
        let misses = self.misses as usize;
        if i < misses {
            return Some(Step::Miss(i as u32));
        }
        let i = i - misses;
        if self.profile == Profile::Uefi {
            let f = i / 2;
            (f < self.files.len()).then(|| if i.is_multiple_of(2) { Step::Probe(f) } else { Step::Fetch(f) })
        } else {
            (i < self.files.len()).then_some(Step::Fetch(i))
        }
    }

    /// The options of a step's request.
    pub(crate) fn options_for(&self, step: Step) -> RequestOptions {
        match step {
            Step::Probe(_) => RequestOptions { tsize: true, ..self.options },
            // EDK2's second request drops tsize.
            Step::Fetch(_) if self.profile == Profile::Uefi => RequestOptions { tsize: false, ..self.options },
            _ => self.options,
        }
    }

    /// The address client `global` binds to: the `global mod source_ips`-th address from
    /// `source_base`, or without a base, as suits the server (several loopback addresses for an
    /// IPv4 loopback server, else the unspecified address, or `::1` for an IPv6 server).
    pub(crate) fn source_ip(&self, global: u64) -> IpAddr {
        let k = global % u64::from(self.source_ips.max(1));
        match (self.source_base, self.server.ip()) {
            // In range: `plan` checked that the last address of the range exists.
            (Some(base), _) => nth_address(base, k).unwrap_or(base),
            (None, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            // Spread clients over 127.1.0.1 and up, so that the server sees many addresses.
            (None, IpAddr::V4(server)) if self.source_ips > 1 && server.is_loopback() => {
                IpAddr::V4(Ipv4Addr::from(0x7f01_0001u32 + k as u32))
            }
            (None, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// The filename of a miss: PXELINUX's search order for a client (MAC, then its IP address
    /// in hex shortened one digit at a time).
    pub(crate) fn miss_name(&self, client: u64, n: u32) -> String {
        let mac = client.to_be_bytes();
        if n == 0 {
            return format!("pxelinux.cfg/01-52-54-{:02x}-{:02x}-{:02x}-{:02x}", mac[4], mac[5], mac[6], mac[7]);
        }
        let hex = format!("{:08X}", 0x0a00_0000u32 | (client as u32 & 0x00ff_ffff));
        let keep = hex.len().saturating_sub(n as usize - 1).max(1);
        format!("pxelinux.cfg/{}", &hex[..keep])
    }
}

/// The address `k` places after `base` in its family, or `None` past the family's last address.
pub(crate) fn nth_address(base: IpAddr, k: u64) -> Option<IpAddr> {
    match base {
        IpAddr::V4(b) => {
            let k = u32::try_from(k).ok()?;
            u32::from(b).checked_add(k).map(|a| IpAddr::V4(Ipv4Addr::from(a)))
        }
        IpAddr::V6(b) => u128::from(b).checked_add(u128::from(k)).map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(profile: Profile, files: usize, misses: u32) -> Plan {
        Plan {
            server: "127.0.0.1:69".parse().unwrap(),
            files: (0..files).map(|i| FileSpec { name: format!("f{i}"), expect: None }).collect(),
            options: RequestOptions { tsize: true, blksize: Some(1468), ..Default::default() },
            client: ClientConfig::default(),
            profile,
            misses,
            drop: 0.0,
            upload: false,
            hold: Duration::ZERO,
            arrivals: Arrivals::Closed { clients: 1, total: Some(1), duration: None },
            threads: 1,
            source_ips: 1,
            source_base: None,
            seed: 1,
            session_retries: 0,
            retry_pause: Duration::ZERO,
            reuse_port: false,
            rx_buffers: 64,
            gro: false,
        }
    }

    #[test]
    fn uefi_steps_probe_then_fetch_without_tsize() {
        let p = plan(Profile::Uefi, 2, 0);
        let steps: Vec<_> = (0..5).map(|i| p.step(i)).collect();
        assert_eq!(
            steps,
            [Some(Step::Probe(0)), Some(Step::Fetch(0)), Some(Step::Probe(1)), Some(Step::Fetch(1)), None]
        );
        assert!(p.options_for(Step::Probe(0)).tsize);
        assert!(!p.options_for(Step::Fetch(0)).tsize);
    }

    #[test]
    fn pxelinux_misses_first() {
        let p = plan(Profile::Pxelinux, 1, 3);
        assert_eq!(p.step(0), Some(Step::Miss(0)));
        assert_eq!(p.step(3), Some(Step::Fetch(0)));
        assert_eq!(p.step(4), None);
        assert_eq!(p.miss_name(0x0102_0304, 0), "pxelinux.cfg/01-52-54-01-02-03-04");
        assert_eq!(p.miss_name(0x0102_0304, 1), "pxelinux.cfg/0A020304");
        assert_eq!(p.miss_name(0x0102_0304, 3), "pxelinux.cfg/0A0203");
    }

    #[test]
    fn source_base_counts_up_in_either_family() {
        let mut p = plan(Profile::Plain, 1, 0);
        p.source_ips = 4;
        p.source_base = Some("198.18.128.255".parse().unwrap());
        let ips: Vec<String> = (0..5).map(|g| p.source_ip(g).to_string()).collect();
        assert_eq!(ips, ["198.18.128.255", "198.18.129.0", "198.18.129.1", "198.18.129.2", "198.18.128.255"]);
        p.source_base = Some("fd00::ffff".parse().unwrap());
        assert_eq!(p.source_ip(1).to_string(), "fd00::1:0");
        // Whatever the server: a base applies to a non-loopback server too.
        p.server = "198.18.0.1:69".parse().unwrap();
        p.source_base = Some("127.2.0.1".parse().unwrap());
        assert_eq!(p.source_ip(3).to_string(), "127.2.0.4");
    }

    #[test]
    fn source_range_past_the_family_is_none() {
        assert_eq!(nth_address("255.255.255.254".parse().unwrap(), 1), Some("255.255.255.255".parse().unwrap()));
        assert_eq!(nth_address("255.255.255.254".parse().unwrap(), 2), None);
        assert_eq!(nth_address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(), 1), None);
    }

    #[test]
    fn without_a_base_loopback_spread_stays() {
        let mut p = plan(Profile::Plain, 1, 0);
        assert_eq!(p.source_ip(7).to_string(), "0.0.0.0");
        p.source_ips = 3;
        assert_eq!(p.source_ip(4).to_string(), "127.1.0.2");
        p.server = "[::1]:69".parse().unwrap();
        assert_eq!(p.source_ip(4).to_string(), "::1");
    }
}
