//! What to run: the server, the files, the options and the shape of the load, resolved from the
//! command line once and shared read-only by every thread.

use std::net::SocketAddr;
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
    pub(crate) source_ips: u32,
    pub(crate) seed: u64,
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
            seed: 1,
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
}
