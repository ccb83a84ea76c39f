//! Command line and configuration: [`Cli`] parses, [`Config`] is the validated result.
//!
//! Defaults suit a PXE fleet: every CPU a worker, per-transfer ports, blksize up to what the
//! request's interface carries without fragmentation, windows of up to 64 blocks, a 1 s first
//! retransmission timeout that adapts to the measured round trip, and 6 s of silence before a
//! client is given up.

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, ValueEnum};

use crate::proto::options::{Limits, MAX_BLKSIZE, MAX_WINDOWSIZE, MIN_BLKSIZE};
use crate::proto::{RetransmitConfig, RtoBounds};

/// Which I/O backend the workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IoBackend {
    /// io_uring when the start-up probe says it works, epoll otherwise.
    Auto,
    /// io_uring; fail to start if it is unusable.
    Uring,
    /// epoll.
    Epoll,
}

/// bootstorm: a TFTP server for PXE-booting whole fleets at once.
///
/// Serves files from --root to TFTP clients (RFC 1350 with options blksize, timeout, tsize and
/// windowsize). One worker per CPU, each pinned to its core with its own socket per listen
/// address; the kernel spreads clients over the workers.
#[derive(Debug, Parser)]
#[command(name = "bootstorm", version, max_term_width = 100, args_override_self = true)]
pub struct Cli {
    /// Directory to serve. Paths are resolved beneath it by the kernel: nothing outside it can be
    /// read, whatever the request or the symlinks say. --root / is refused (it would serve the
    /// whole file system) unless --serve-whole-filesystem is given.
    #[arg(short, long, value_name = "DIR")]
    pub root: PathBuf,

    /// Accept --root / (or any path that resolves to /): every readable file of the host, from
    /// /etc/shadow to SSH host keys, is then served to anyone who can send a datagram.
    #[arg(long)]
    pub serve_whole_filesystem: bool,

    /// Address and port to listen on; repeat for several (the same address and port twice is
    /// refused). An address and port that another socket already holds, or overlaps (the
    /// wildcard address and a specific one), is refused at start. [default: 0.0.0.0:69 and
    /// [::]:69]
    #[arg(short, long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,

    /// Worker threads. [default: the CPUs this process may run on]
    #[arg(short, long, value_name = "N")]
    pub workers: Option<usize>,

    /// Do not pin each worker to its own core.
    #[arg(long)]
    pub no_pin: bool,

    /// I/O backend.
    #[arg(long = "io", value_enum, default_value_t = IoBackend::Auto)]
    pub io: IoBackend,

    /// Send each DATA packet with its own send, never a window of them as one send that the
    /// kernel cuts into datagrams (UDP GSO; used by default where the kernel has it).
    #[arg(long)]
    pub no_gso: bool,

    /// Largest blksize granted (8–65464). Also capped per request by the MTU of the interface the
    /// request came in on, so that no DATA packet is fragmented.
    #[arg(long, value_name = "BYTES", default_value_t = MAX_BLKSIZE)]
    pub max_blksize: u16,

    /// Largest windowsize granted (1–32768, RFC 7440).
    #[arg(long, value_name = "BLOCKS", default_value_t = 64)]
    pub max_windowsize: u16,

    /// Retransmission timeout before a round trip has been measured, in seconds (fractions
    /// allowed). Once ACKs flow, the timeout adapts to the measured round-trip time.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub timeout: f64,

    /// Lower bound of the adaptive retransmission timeout, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub min_rto: u64,

    /// Upper bound of the retransmission timeout with backoff, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub max_rto: u64,

    /// Retransmissions in a row before a silent client is given up (and at least
    /// --timeout × --retries of silence).
    #[arg(long, value_name = "N", default_value_t = 6)]
    pub retries: u8,

    /// Ports for transfers, LO:HI inclusive, to fit a firewall; each transfer gets a free port
    /// drawn at random from the range. [default: any free port, chosen at random by the kernel]
    #[arg(long, value_name = "LO:HI", value_parser = parse_port_range)]
    pub port_range: Option<(u16, u16)>,

    /// Serve every transfer from the listening port instead of a new port per transfer (for NAT
    /// and load balancers); transfers are told apart by client address and port. Refused with
    /// --port-range, which it contradicts.
    #[arg(long, conflicts_with = "port_range")]
    pub single_port: bool,

    /// Transfers in progress per worker; requests beyond get ERROR 0 "server busy".
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub max_transfers: usize,

    /// On SIGINT or SIGTERM: stop accepting, then give transfers in progress this many seconds to
    /// finish before ending them.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub grace: f64,

    /// Refuse every symbolic link (by default links that stay inside the root are followed).
    #[arg(long)]
    pub no_symlinks: bool,

    /// Receive buffer of each listening socket (K, M and G suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_size)]
    pub recv_buffer: usize,

    /// io_uring submission queue entries per worker.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub ring_entries: u32,

    /// Receive buffers per worker in the io_uring provided-buffer ring (a power of two).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub rx_buffers: u32,

    /// Sends in flight per worker on io_uring.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub send_slots: u32,

    /// Files kept open and mapped per worker when no transfer uses them.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub file_cache: usize,

    /// Log level: error, warn, info (one line per finished transfer), debug (also file-not-found
    /// lookups), trace; any other value is refused. RUST_LOG overrides it with a filter.
    #[arg(long, value_name = "LEVEL", default_value = "info", ignore_case = true,
        value_parser = PossibleValuesParser::new(LOG_LEVELS).map(|s| s.to_ascii_lowercase()))]
    pub log_level: String,

    /// Accept uploads (WRQ) into --upload-dir. New files also need --create, replacing existing
    /// ones --overwrite. An upload is written to an unnamed file and put in place only when
    /// complete. TFTP has no authentication: anyone who can send from an address that --allow and
    /// --allow-write-from accept, or forge one, can upload.
    #[arg(long)]
    pub allow_write: bool,

    /// Directory uploads go into (needs --allow-write). It must lie outside the served tree: not
    /// --root, not inside it, not above it (else --uploads-in-root).
    #[arg(long, value_name = "DIR")]
    pub upload_dir: Option<PathBuf>,

    /// Let uploads land in the served tree: into --root when no --upload-dir is given, or into an
    /// --upload-dir inside (or above) the root. Every client can then fetch what any uploader
    /// wrote; replacing served files also needs --overwrite-served-files.
    #[arg(long)]
    pub uploads_in_root: bool,

    /// With --uploads-in-root and --overwrite: let an upload replace files the server serves
    /// (boot loaders, kernels, pxelinux.cfg). One upload, forged or not, then changes what every
    /// client boots.
    #[arg(long)]
    pub overwrite_served_files: bool,

    /// Accept uploads with --single-port (refused otherwise). Every transfer then shares the
    /// listening port, so anyone who can forge an address that --allow-write-from accepts can
    /// upload blind, with two datagrams (WRQ, then DATA 1), never seeing an answer.
    #[arg(long)]
    pub allow_single_port_uploads: bool,

    /// Uploads may create new files (needs --allow-write).
    #[arg(long)]
    pub create: bool,

    /// Uploads may replace existing files; without it they get ERROR 6 "file exists" (needs
    /// --allow-write).
    #[arg(long)]
    pub overwrite: bool,

    /// Largest upload accepted, checked against the client's tsize before any data and while
    /// receiving (K, M and G suffixes allowed); beyond it: ERROR 3.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_size)]
    pub max_upload_size: usize,

    /// umask for uploaded files, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "022", value_parser = parse_umask)]
    pub umask: u32,

    /// Serve only clients in this network (repeatable, e.g. 10.0.0.0/8, fd00::/8, 192.0.2.7);
    /// requests from elsewhere are ignored silently. An address filter stops only senders that
    /// cannot forge their source address. [default: everyone]
    #[arg(long = "allow", value_name = "CIDR", value_parser = Cidr::parse)]
    pub allow: Vec<Cidr>,

    /// Accept uploads only from this network (repeatable); uploads from elsewhere get ERROR 2.
    /// Each must lie inside an --allow network, when --allow is given. Only the request's source
    /// address is checked: this stops attackers who cannot forge addresses, not those who can.
    /// [default: every client --allow lets in]
    #[arg(long = "allow-write-from", value_name = "CIDR", value_parser = Cidr::parse)]
    pub allow_write_from: Vec<Cidr>,

    /// New transfers per second each client address may start while the server is under
    /// pressure (a worker's transfer table half full, or transfer sockets failing to open);
    /// token bucket, 0: no limit. An idle server serves every request, so a rack behind NAT or
    /// a Kubernetes node (many clients, one address) is never throttled; under pressure, a
    /// source beyond its rate is dropped (counted as rate_limited) so it cannot starve the
    /// others. Repeated requests do not count. Each worker holds an even share of the rate and
    /// burst (the kernel spreads an address's ports over the workers).
    #[arg(long, value_name = "N", default_value_t = 100.0)]
    pub rate_per_source: f64,

    /// Apply --rate-per-source at all times, as a hard cap per address even on an idle server
    /// (clients that share an address, behind NAT, share the cap).
    #[arg(long)]
    pub rate_limit_always: bool,

    /// Burst of new transfers a client address may start at once.
    #[arg(long, value_name = "N", default_value_t = 500.0)]
    pub burst_per_source: f64,

    /// Log each worker's counters every SECS seconds (0: only at exit, with latency percentiles).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub stats_interval: u64,
}

/// The values `--log-level` accepts (in any case).
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The validated configuration a server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory served.
    pub root: PathBuf,
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Worker threads.
    pub workers: usize,
    /// Pin workers to cores.
    pub pin: bool,
    /// I/O backend choice.
    pub io: IoBackend,
    /// Send runs of DATA as one send cut by the kernel (UDP GSO).
    pub gso: bool,
    /// Negotiation limits.
    pub limits: Limits,
    /// Retransmission settings.
    pub retransmit: RetransmitConfig,
    /// Transfer port range.
    pub port_range: Option<(u16, u16)>,
    /// Serve transfers from the listening port.
    pub single_port: bool,
    /// Transfers per worker.
    pub max_transfers: usize,
    /// Shutdown grace period.
    pub grace: Duration,
    /// Follow symlinks inside the root.
    pub follow_symlinks: bool,
    /// Listening socket receive buffer.
    pub recv_buffer: usize,
    /// io_uring submission queue size.
    pub ring_entries: u32,
    /// io_uring provided receive buffers.
    pub rx_buffers: u32,
    /// io_uring sends in flight.
    pub send_slots: u32,
    /// Idle files kept per worker.
    pub file_cache: usize,
    /// Log filter.
    pub log_level: String,
    /// Periodic stats.
    pub stats_interval: Option<Duration>,
    /// Uploads, when allowed.
    pub write: Option<WriteConfig>,
    /// Networks served (empty: all).
    pub allow: Vec<Cidr>,
    /// Networks uploads are accepted from (empty: all that `allow` lets in).
    pub allow_write_from: Vec<Cidr>,
    /// Per-source limit on new transfers: (per second, burst).
    pub rate_per_source: Option<(f64, f64)>,
    /// The per-source limit applies at all times, not only under pressure.
    pub rate_limit_always: bool,
}

/// Where uploads go and what they may do.
#[derive(Clone, Debug)]
pub struct WriteConfig {
    /// Directory uploads go into.
    pub dir: PathBuf,
    /// It may be (in) the served tree (`--uploads-in-root`); else the server refuses to start
    /// when it is the root, lies inside it or contains it.
    pub in_served_tree: bool,
    /// Permissions and limits.
    pub policy: crate::fs::WritePolicy,
}

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

/// An invalid combination of flags.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn secs(v: f64, what: &str) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v).map_err(|_| ConfigError(format!("{what} must be a non-negative number of seconds")))
}

impl TryFrom<Cli> for Config {
    type Error = ConfigError;

    fn try_from(c: Cli) -> Result<Self, ConfigError> {
        if !(MIN_BLKSIZE..=MAX_BLKSIZE).contains(&c.max_blksize) {
            return Err(ConfigError(format!("--max-blksize must be {MIN_BLKSIZE}..={MAX_BLKSIZE}")));
        }
        if !(1..=MAX_WINDOWSIZE).contains(&c.max_windowsize) {
            return Err(ConfigError(format!("--max-windowsize must be 1..={MAX_WINDOWSIZE}")));
        }
        let timeout = secs(c.timeout, "--timeout")?;
        if timeout.is_zero() {
            return Err(ConfigError("--timeout must be above 0".into()));
        }
        if c.min_rto == 0 || c.min_rto > c.max_rto {
            return Err(ConfigError("--min-rto must be above 0 and at most --max-rto".into()));
        }
        if c.retries == 0 {
            return Err(ConfigError("--retries must be at least 1".into()));
        }
        if c.max_transfers == 0 {
            return Err(ConfigError("--max-transfers must be at least 1".into()));
        }
        if !c.rx_buffers.is_power_of_two() || !(16..=32768).contains(&c.rx_buffers) {
            return Err(ConfigError("--rx-buffers must be a power of two in 16..=32768".into()));
        }
        if c.ring_entries < 64 || c.send_slots < 16 {
            return Err(ConfigError("--ring-entries must be at least 64 and --send-slots at least 16".into()));
        }
        let workers = match c.workers {
            Some(0) => return Err(ConfigError("--workers must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        check_upload_flags(&c)?;
        check_operator_mistakes(&c)?;
        if !(c.rate_per_source >= 0.0 && c.burst_per_source >= 1.0) {
            return Err(ConfigError("--rate-per-source must be >= 0 and --burst-per-source >= 1".into()));
        }
        let write = c.allow_write.then(|| WriteConfig {
            dir: c.upload_dir.clone().unwrap_or_else(|| c.root.clone()),
            in_served_tree: c.uploads_in_root,
            policy: crate::fs::WritePolicy {
                create: c.create,
                overwrite: c.overwrite,
                mode: 0o666 & !c.umask,
                max_size: c.max_upload_size as u64,
            },
        });
        let listen = if c.listen.is_empty() {
            vec!["0.0.0.0:69".parse().expect("literal"), "[::]:69".parse().expect("literal")]
        } else {
            c.listen
        };
        Ok(Self {
            root: c.root,
            listen,
            workers,
            pin: !c.no_pin,
            io: c.io,
            gso: !c.no_gso,
            limits: Limits {
                max_blksize: c.max_blksize,
                max_windowsize: c.max_windowsize,
                max_window_bytes: blind_budget(c.single_port, c.port_range),
            },
            retransmit: RetransmitConfig {
                rto: RtoBounds {
                    initial: timeout,
                    min: Duration::from_millis(c.min_rto),
                    max: Duration::from_millis(c.max_rto),
                },
                max_retries: c.retries,
                patience: timeout * u32::from(c.retries),
                max_silence: crate::proto::sender::MAX_SILENCE.max(timeout * u32::from(c.retries) * 2),
            },
            port_range: c.port_range,
            single_port: c.single_port,
            max_transfers: c.max_transfers,
            grace: secs(c.grace, "--grace")?,
            follow_symlinks: !c.no_symlinks,
            recv_buffer: c.recv_buffer,
            ring_entries: c.ring_entries,
            rx_buffers: c.rx_buffers,
            send_slots: c.send_slots,
            file_cache: c.file_cache,
            log_level: c.log_level,
            stats_interval: (c.stats_interval > 0).then(|| Duration::from_secs(c.stats_interval)),
            write,
            allow: c.allow,
            allow_write_from: c.allow_write_from,
            rate_per_source: (c.rate_per_source > 0.0).then_some((c.rate_per_source, c.burst_per_source)),
            rate_limit_always: c.rate_limit_always,
        })
    }
}

/// Bytes of DATA a read transfer may send, on the wire, before its client has acknowledged a
/// DATA block, when a forger can predict transfer IDs: with one listening port for every
/// transfer, or ports from a range. A forged request and a forged ACK 0 (about 100 bytes) then
/// cost their victim at most about 50 times their size. With a new kernel-chosen port per
/// transfer, a forger must guess the port, and no budget applies.
pub const BLIND_BUDGET: u32 = 5000;

/// The blind budget for a server with these port settings.
fn blind_budget(single_port: bool, port_range: Option<(u16, u16)>) -> Option<u32> {
    (single_port || port_range.is_some()).then_some(BLIND_BUDGET)
}

/// The upload flags: each needs --allow-write, and each risk needs its own flag.
fn check_upload_flags(c: &Cli) -> Result<(), ConfigError> {
    let err = |m: &str| Err(ConfigError(m.into()));
    let any = c.create
        || c.overwrite
        || c.upload_dir.is_some()
        || !c.allow_write_from.is_empty()
        || c.uploads_in_root
        || c.overwrite_served_files
        || c.allow_single_port_uploads;
    if !c.allow_write {
        if any {
            return err("--create, --overwrite, --upload-dir, --allow-write-from, --uploads-in-root, \
                 --overwrite-served-files and --allow-single-port-uploads need --allow-write");
        }
        return Ok(());
    }
    if !c.create && !c.overwrite {
        return err("--allow-write needs --create (new files) and/or --overwrite (existing files)");
    }
    if c.upload_dir.is_none() && !c.uploads_in_root {
        return err("--allow-write needs --upload-dir DIR outside --root: uploads into the served root are served to \
             every client and can replace what they boot (--uploads-in-root writes into the root on purpose)");
    }
    if c.overwrite_served_files && !c.uploads_in_root {
        return err(
            "--overwrite-served-files needs --uploads-in-root (uploads outside the root replace no served file)",
        );
    }
    if c.overwrite_served_files && !c.overwrite {
        return err("--overwrite-served-files needs --overwrite");
    }
    if c.uploads_in_root && c.overwrite && !c.overwrite_served_files {
        return err(
            "--overwrite with --uploads-in-root lets an upload replace files the server serves (boot loaders, \
             kernels, pxelinux.cfg): add --overwrite-served-files to accept that, or use --upload-dir outside --root",
        );
    }
    if c.single_port && !c.allow_single_port_uploads {
        return err(
            "--allow-write with --single-port is refused: every transfer shares the listening port, so anyone who \
             can forge an address that --allow-write-from accepts can upload blind with two datagrams (WRQ, then \
             DATA 1); add --allow-single-port-uploads to accept that risk, or drop --single-port",
        );
    }
    Ok(())
}

/// Flags that contradict each other or ask for what is almost surely a mistake: `--root /`
/// without `--serve-whole-filesystem`, an upload network outside every `--allow` network, the
/// same `--listen` address twice. (`--single-port` with `--port-range` and unknown log levels are
/// refused by the parser.)
fn check_operator_mistakes(c: &Cli) -> Result<(), ConfigError> {
    if !c.serve_whole_filesystem && is_filesystem_root(&c.root) {
        return Err(ConfigError(format!(
            "--root {} serves the whole file system (/etc/shadow, SSH host keys, every readable file) to anyone \
             who can send a datagram; serve a directory that holds only boot files, or add \
             --serve-whole-filesystem to accept that",
            c.root.display()
        )));
    }
    if !c.allow.is_empty() {
        if let Some(w) = c.allow_write_from.iter().find(|w| !c.allow.iter().any(|a| w.within(a))) {
            let allow: Vec<String> = c.allow.iter().map(Cidr::to_string).collect();
            return Err(ConfigError(format!(
                "--allow-write-from {w} is not inside any --allow network ({}): requests from outside --allow are \
                 ignored, so no upload could come from all of it; widen --allow or narrow --allow-write-from",
                allow.join(", ")
            )));
        }
    }
    for (i, a) in c.listen.iter().enumerate() {
        // Port 0 twice asks for two kernel-chosen ports: two different sockets.
        if a.port() != 0 && c.listen[..i].contains(a) {
            return Err(ConfigError(format!("--listen {a} is given twice")));
        }
    }
    Ok(())
}

/// Whether `path` is the file system's root: resolved by the file system when it exists (`/tmp/..`,
/// a symlink to `/`), else by its components.
fn is_filesystem_root(path: &Path) -> bool {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p == Path::new("/");
    }
    let mut depth = 0usize;
    let mut absolute = false;
    for c in path.components() {
        match c {
            Component::RootDir => absolute = true,
            Component::CurDir => {}
            Component::ParentDir => depth = depth.saturating_sub(1),
            Component::Normal(_) | Component::Prefix(_) => depth += 1,
        }
    }
    absolute && depth == 0
}

/// Parses `LO:HI` (inclusive, LO ≤ HI, both above 0).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once(':').ok_or("expected LO:HI")?;
    let lo: u16 = lo.trim().parse().map_err(|_| "LO is not a port number")?;
    let hi: u16 = hi.trim().parse().map_err(|_| "HI is not a port number")?;
    if lo == 0 || lo > hi {
        return Err("need 0 < LO <= HI".into());
    }
    Ok((lo, hi))
}

/// Parses an octal umask (at most 0o777).
pub fn parse_umask(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim(), 8).ok().filter(|&m| m <= 0o777).ok_or_else(|| format!("not an octal umask: {s}"))
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, String> {
        let mut v = vec!["bootstorm", "--root", "/srv/tftp"];
        v.extend_from_slice(args);
        let cli = Cli::try_parse_from(v).map_err(|e| e.to_string())?;
        Config::try_from(cli).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.workers >= 1);
        assert!(c.pin);
        assert_eq!(c.limits.max_blksize, 65464);
        assert_eq!(c.limits.max_windowsize, 64);
        assert_eq!(c.retransmit.patience, Duration::from_secs(6));
        assert_eq!(c.recv_buffer, 8 << 20);
        assert!(!c.single_port);
    }

    #[test]
    fn flags() {
        let c = cfg(&[
            "-l",
            "127.0.0.1:6969",
            "-l",
            "[::1]:6969",
            "-w",
            "3",
            "--no-pin",
            "--io",
            "epoll",
            "--port-range",
            "30000:30100",
            "--timeout",
            "0.5",
            "--retries",
            "4",
            "--max-blksize",
            "1468",
        ])
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.workers, 3);
        assert!(!c.pin);
        assert_eq!(c.io, IoBackend::Epoll);
        assert_eq!(c.port_range, Some((30000, 30100)));
        assert!(cfg(&["--single-port"]).unwrap().single_port);
        assert_eq!(c.retransmit.patience, Duration::from_secs(2));
        assert_eq!(c.limits.max_blksize, 1468);
    }

    #[test]
    fn refusals() {
        for bad in [
            &["--max-blksize", "7"][..],
            &["--max-windowsize", "0"],
            &["--timeout", "0"],
            &["--timeout", "-1"],
            &["--workers", "0"],
            &["--port-range", "10:5"],
            &["--port-range", "0:5"],
            &["--rx-buffers", "1000"],
            &["--min-rto", "5000"],
            &["--retries", "0"],
        ] {
            assert!(cfg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn operator_mistakes() {
        let root = |r: &str, extra: &[&str]| {
            let mut v = vec!["bootstorm", "--root", r];
            v.extend_from_slice(extra);
            Config::try_from(Cli::try_parse_from(v).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
        };
        for r in ["/", "//", "/.", "/tmp/..", "/nonexistent/..", "/nonexistent/../../."] {
            let e = root(r, &[]).unwrap_err();
            assert!(e.contains("--serve-whole-filesystem") && e.contains("whole file system"), "{r}: {e}");
            assert!(root(r, &["--serve-whole-filesystem"]).is_ok(), "{r}");
        }
        assert!(root("/nonexistent", &[]).is_ok() && root("relative/..", &[]).is_ok());
        // Log levels: exactly the five, in any case.
        for bad in ["warning", "bogus", "", "info,bootstorm=trace"] {
            let e = cfg(&["--log-level", bad]).unwrap_err();
            assert!(e.contains("error, warn, info, debug, trace"), "{bad}: {e}");
        }
        assert_eq!(cfg(&["--log-level", "WARN"]).unwrap().log_level, "warn");
        assert_eq!(cfg(&[]).unwrap().log_level, "info");
        // Contradictions.
        let e = cfg(&["--single-port", "--port-range", "30000:30010"]).unwrap_err();
        assert!(e.contains("--single-port") && e.contains("--port-range"), "{e}");
        let up = ["--allow-write", "--create", "--upload-dir", "/up"];
        let with = |extra: &[&'static str]| cfg(&[&up[..], extra].concat());
        let e = with(&["--allow", "10.0.0.0/8", "--allow-write-from", "192.168.1.0/24"]).unwrap_err();
        assert!(e.contains("--allow-write-from 192.168.1.0/24") && e.contains("(10.0.0.0/8)"), "{e}");
        assert!(with(&["--allow", "10.0.0.0/8", "--allow-write-from", "10.0.0.0/7"]).is_err());
        assert!(with(&["--allow", "10.0.0.0/8", "--allow", "fd00::/8", "--allow-write-from", "fd00:1::/32"]).is_ok());
        assert!(with(&["--allow", "10.0.0.0/8", "--allow-write-from", "10.1.2.3"]).is_ok());
        assert!(with(&["--allow-write-from", "192.168.1.0/24"]).is_ok(), "no --allow: everyone is served");
        let e = cfg(&["-l", "127.0.0.1:69", "-l", "[::1]:69", "-l", "127.0.0.1:69"]).unwrap_err();
        assert!(e.contains("--listen 127.0.0.1:69 is given twice"), "{e}");
        assert!(cfg(&["-l", "127.0.0.1:0", "-l", "127.0.0.1:0"]).is_ok(), "two kernel-chosen ports");
        assert!(cfg(&["-l", "0.0.0.0:69", "-l", "127.0.0.1:69"]).is_ok(), "overlapping, not the same");
    }

    #[test]
    fn cidr_within() {
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
    fn upload_flags() {
        let c =
            cfg(&["--allow-write", "--create", "--umask", "027", "--max-upload-size", "10M", "--upload-dir", "/up"])
                .unwrap();
        let w = c.write.unwrap();
        assert_eq!(w.dir, std::path::PathBuf::from("/up"));
        assert!(w.policy.create && !w.policy.overwrite);
        assert_eq!(w.policy.mode, 0o640);
        assert_eq!(w.policy.max_size, 10 << 20);
        assert!(cfg(&[]).unwrap().write.is_none());
        assert!(cfg(&["--allow-write"]).is_err(), "needs --create or --overwrite");
        assert!(cfg(&["--create"]).is_err(), "needs --allow-write");
        for flag in ["--uploads-in-root", "--overwrite-served-files", "--allow-single-port-uploads"] {
            assert!(cfg(&[flag]).unwrap_err().contains("need --allow-write"), "{flag}");
        }
        // Uploads stay out of the served tree unless --uploads-in-root says otherwise.
        let e = cfg(&["--allow-write", "--create"]).unwrap_err();
        assert!(e.contains("--upload-dir") && e.contains("--uploads-in-root"), "{e}");
        let w = cfg(&["--allow-write", "--create", "--uploads-in-root"]).unwrap().write.unwrap();
        assert_eq!(w.dir, std::path::PathBuf::from("/srv/tftp"));
        assert!(w.in_served_tree);
        assert!(!cfg(&["--allow-write", "--create", "--upload-dir", "/up"]).unwrap().write.unwrap().in_served_tree);
        // Replacing served files needs its own flag, and that flag needs the other two.
        let e = cfg(&["--allow-write", "--uploads-in-root", "--overwrite"]).unwrap_err();
        assert!(e.contains("--overwrite-served-files"), "{e}");
        assert!(cfg(&["--allow-write", "--uploads-in-root", "--overwrite", "--overwrite-served-files"]).is_ok());
        assert!(cfg(&["--allow-write", "--upload-dir", "/up", "--overwrite", "--overwrite-served-files"]).is_err());
        assert!(cfg(&["--allow-write", "--uploads-in-root", "--create", "--overwrite-served-files"]).is_err());
        // Uploads with --single-port only with the risk accepted.
        let e = cfg(&["--single-port", "--allow-write", "--create", "--upload-dir", "/up"]).unwrap_err();
        assert!(e.contains("--allow-single-port-uploads"), "{e}");
        let sp = ["--single-port", "--allow-write", "--create", "--upload-dir", "/up", "--allow-single-port-uploads"];
        assert!(cfg(&sp).is_ok());
        assert!(cfg(&["--umask", "999"]).is_err());
        let c = cfg(&["--allow-write", "--overwrite", "--upload-dir", "/srv/up"]).unwrap();
        assert_eq!(c.write.unwrap().dir, std::path::PathBuf::from("/srv/up"));
    }

    #[test]
    fn cidrs() {
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
        let c = cfg(&["--allow", "127.0.0.0/8", "--allow", "::1"]).unwrap();
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.rate_per_source, Some((100.0, 500.0)));
        assert_eq!(cfg(&["--rate-per-source", "0"]).unwrap().rate_per_source, None);
        assert!(!c.rate_limit_always, "under pressure only, by default");
        assert!(cfg(&["--rate-limit-always"]).unwrap().rate_limit_always);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("x").is_err());
    }
}
