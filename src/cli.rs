//! The command line: [`Cli`] is what clap parses, [`Settings`] what the binary runs with (the
//! library's [`ServerConfig`], validated, plus the settings only the binary has: the log level
//! and the stats interval). Checks of flag syntax live here; checks of the configuration itself
//! are the library's ([`ServerConfig::validate`]), and their messages name the flags.
//! (Over 400 lines on purpose: one field per flag, each with the help text `--help` prints; the
//! value parsers are in `cli/parse.rs`, the tests in `cli/tests.rs`.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bootstorm::config::{
    self, Cidr, ClientDir, ConfigError, DEFAULT_MAX_TRANSFERS, IoBackend, IoConfig, LookupPolicy, MapFile, ServePolicy,
    ServerConfig, SourceRate, StripPrefix, WriteConfig,
};
use bootstorm::fs::WritePolicy;
use bootstorm::proto::RtoBounds;
use bootstorm::proto::options::{Limits, MAX_BLKSIZE, MAX_WINDOWSIZE, MIN_BLKSIZE, Refused};
use bootstorm::remap::RemapError;
use bootstorm::server::stats::{FileClassError, FileClasses};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, ValueEnum};

mod file;
pub(crate) mod hpa;
mod invocation;
pub(crate) mod maptest;
mod parse;
pub(crate) mod probe;
pub(crate) mod process;

pub(crate) use invocation::{Args, Invocation, LoadError, manpage};
pub(crate) use parse::{parse_listen, parse_port_range, parse_size, parse_umask};

/// `--io`: which I/O backend the workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum IoArg {
    /// io_uring when the start-up probe says it works, epoll otherwise.
    Auto,
    /// io_uring; fail to start if it is unusable.
    Uring,
    /// epoll.
    Epoll,
}

impl From<IoArg> for IoBackend {
    fn from(a: IoArg) -> Self {
        match a {
            IoArg::Auto => Self::Auto,
            IoArg::Uring => Self::Uring,
            IoArg::Epoll => Self::Epoll,
        }
    }
}

/// bootstorm: a TFTP server for PXE-booting whole fleets at once.
///
/// Serves files from --root to TFTP clients (RFC 1350 with options blksize, timeout, tsize and
/// windowsize). One worker per CPU, each pinned to its core with its own socket per listen
/// address; the kernel spreads clients over the workers.
#[derive(Debug, Parser)]
#[command(name = "bootstorm", version = crate::VERSION, max_term_width = 100, args_override_self = true)]
pub(crate) struct Cli {
    /// Directory to serve. Paths are resolved beneath it by the kernel: nothing outside it can be
    /// read, whatever the request or the symlinks say. --root / is refused (it would serve the
    /// whole file system) unless --serve-whole-filesystem is given. Required: here, or as
    /// `root` in the --config file.
    #[arg(short, long, value_name = "DIR")]
    pub(crate) root: PathBuf,

    /// Read settings from this TOML file: its keys are the long flag names (root = "/srv/tftp",
    /// max-blksize = 1468, allow = ["10.0.0.0/8"], single-port = true); a flag given here wins
    /// over the same key in the file. SIGHUP reads it again and applies the serving policy to
    /// new transfers. `bootstorm check --config FILE` checks a file without serving.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Accept --root / (or any path that resolves to /): every readable file of the host, from
    /// /etc/shadow to SSH host keys, is then served to anyone who can send a datagram.
    #[arg(long)]
    pub(crate) serve_whole_filesystem: bool,

    /// Address and port to listen on; repeat for several (the same address and port twice is
    /// refused). Forms: 192.0.2.1:69, [2001:db8::1]:69, an address alone (port 69), :69 (every
    /// address, IPv4 and IPv6, as Debian's TFTP_ADDRESS=":69"), or a host name (localhost:69:
    /// each address it resolves to). An interface name is refused: give one of its addresses. A
    /// specific address need not be up yet (the sockets are IP_FREEBIND): the server starts
    /// before the interface and serves once the address is configured. An address and port that
    /// another socket already holds, or overlaps (the wildcard address and a specific one), is
    /// refused at start. [default: 0.0.0.0:69 and [::]:69, IPv4 only (with a warning) where the
    /// host has IPv6 turned off]
    #[arg(short, long = "listen", value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub(crate) listen: Vec<ListenAddrs>,

    /// Worker threads. [default: half the CPUs this process may run on, at least 1]
    #[arg(short, long, value_name = "N")]
    pub(crate) workers: Option<usize>,

    /// Do not pin each worker to its own core.
    #[arg(long)]
    pub(crate) no_pin: bool,

    /// I/O backend.
    #[arg(long = "io", value_enum, default_value_t = IoArg::Auto)]
    pub(crate) io: IoArg,

    /// Send each DATA packet with its own send, never a window of them as one send that the
    /// kernel cuts into datagrams (UDP GSO; used by default where the kernel has it).
    #[arg(long)]
    pub(crate) no_gso: bool,

    /// Largest blksize granted (8–65464). Also capped per request by the MTU of the interface the
    /// request came in on, so that no DATA packet is fragmented.
    #[arg(long, value_name = "BYTES", default_value_t = MAX_BLKSIZE,
        value_parser = clap::value_parser!(u16).range(i64::from(MIN_BLKSIZE)..=i64::from(MAX_BLKSIZE)))]
    pub(crate) max_blksize: u16,

    /// Largest windowsize granted (1–32768, RFC 7440).
    #[arg(long, value_name = "BLOCKS", default_value_t = 64,
        value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_WINDOWSIZE)))]
    pub(crate) max_windowsize: u16,

    /// Never grant these options, for a boot ROM that mishandles one: blksize, tsize, timeout,
    /// windowsize (repeat, or a comma list). The request is answered as if the option had not been
    /// asked. tftpd-hpa's -r NAME; dnsmasq's --tftp-no-blocksize is --refuse-option blksize.
    #[arg(long, value_name = "OPTION", value_enum, value_delimiter = ',')]
    pub(crate) refuse_option: Vec<RefuseArg>,

    /// Retransmission timeout before a round trip has been measured, in seconds (fractions
    /// allowed, at most 60). Once ACKs flow, the timeout adapts to the measured round-trip time.
    /// (tftpd-hpa's -T is in microseconds: its -T 500000 is --timeout 0.5.)
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub(crate) timeout: f64,

    /// Lower bound of the adaptive retransmission timeout, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub(crate) min_rto: u64,

    /// Upper bound of the retransmission timeout with backoff, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub(crate) max_rto: u64,

    /// Retransmissions in a row before a silent client is given up (and at least
    /// --timeout × --retries of silence); 1–255.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..))]
    pub(crate) retries: u8,

    /// Ports for transfers, LO:HI inclusive, to fit a firewall; each transfer gets a free port
    /// drawn at random from the range, which must leave out the listening ports. [default: any
    /// free port, chosen at random by the kernel]
    #[arg(long, value_name = "LO:HI", value_parser = parse_port_range)]
    pub(crate) port_range: Option<(u16, u16)>,

    /// Serve every transfer from the listening port instead of a new port per transfer (for NAT
    /// and load balancers); transfers are told apart by client address and port. Refused with
    /// --port-range, which it contradicts.
    #[arg(long, conflicts_with = "port_range")]
    pub(crate) single_port: bool,

    /// With --single-port or --port-range, where a forger can predict the transfer ID: the
    /// bytes of DATA a read sends before its client acknowledges a block, which also caps the
    /// window and blksize granted (5000: windowsize 3 at blksize 1468; 24000: windowsize 16).
    /// One forged request and ACK release about this much, and each further forged ACK one
    /// more window: raise it only where no one can forge a client's address (docs/security.md).
    #[arg(long, value_name = "BYTES", default_value_t = config::BLIND_BUDGET)]
    pub(crate) blind_budget: u32,

    /// Transfers in progress over the whole server (as dnsmasq's --tftp-max), divided evenly
    /// among the workers; a request beyond its worker's share gets ERROR 0 "server busy". In the
    /// default mode each transfer holds a socket: the start warns when the descriptor limit
    /// (LimitNOFILE) holds the server below this.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TRANSFERS)]
    pub(crate) max_transfers: usize,

    /// On SIGINT or SIGTERM: stop accepting, then give transfers in progress this many seconds to
    /// finish before ending them.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) grace: f64,

    /// Serve files that not every user of the host may read (mode without o+r). By default such
    /// a file is refused with ERROR 2, as tftpd-hpa running as nobody and dnsmasq do, so that a
    /// root-owned 0600 file under the root is not handed to anyone who asks.
    #[arg(long)]
    pub(crate) serve_private_files: bool,

    /// Refuse every symbolic link (by default links that stay inside the root are followed).
    #[arg(long)]
    pub(crate) no_symlinks: bool,

    /// Receive buffer of each listening socket (K, M and G suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_size)]
    pub(crate) recv_buffer: usize,

    /// io_uring submission queue entries per worker.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub(crate) ring_entries: u32,

    /// Receive buffers per worker in the io_uring provided-buffer ring (a power of two).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) rx_buffers: u32,

    /// Sends in flight per worker on io_uring.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub(crate) send_slots: u32,

    /// Files kept open and mapped per worker when no transfer uses them.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) file_cache: usize,

    /// Log level: error, warn, info (one line per finished transfer), debug (also file-not-found
    /// lookups), trace; any other value is refused. Without it, RUST_LOG (a filter) applies if
    /// set; a --log-level given wins over RUST_LOG. [default: info]
    #[arg(long, value_name = "LEVEL", ignore_case = true,
        value_parser = PossibleValuesParser::new(LOG_LEVELS).map(|s| s.to_ascii_lowercase()))]
    pub(crate) log_level: Option<String>,

    /// Log format: text (logfmt: key=value, values quoted where needed) or json (one object
    /// per line).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// Log each request as it arrives (client, file, mode, options), before anything is decided
    /// about it, as tftpd-hpa's -v does.
    #[arg(short = 'v', long)]
    pub(crate) log_requests: bool,

    /// Accept uploads (WRQ) into --upload-dir. New files also need --create, replacing existing
    /// ones --overwrite. An upload is written to an unnamed file and put in place only when
    /// complete. TFTP has no authentication: anyone who can send from an address that --allow and
    /// --allow-write-from accept, or forge one, can upload.
    #[arg(long)]
    pub(crate) allow_write: bool,

    /// Directory uploads go into (needs --allow-write). It must lie outside the served tree: not
    /// --root, not inside it, not above it (else --uploads-in-root).
    #[arg(long, value_name = "DIR")]
    pub(crate) upload_dir: Option<PathBuf>,

    /// Let uploads land in the served tree: into --root when no --upload-dir is given, or into an
    /// --upload-dir inside (or above) the root. Every client can then fetch what any uploader
    /// wrote; replacing served files also needs --overwrite-served-files.
    #[arg(long)]
    pub(crate) uploads_in_root: bool,

    /// With --uploads-in-root and --overwrite: let an upload replace files the server serves
    /// (boot loaders, kernels, pxelinux.cfg). One upload, forged or not, then changes what every
    /// client boots.
    #[arg(long)]
    pub(crate) overwrite_served_files: bool,

    /// Accept uploads with --single-port (refused otherwise). Every transfer then shares the
    /// listening port, so anyone who can forge an address that --allow-write-from accepts can
    /// upload blind, with two datagrams (WRQ, then DATA 1), never seeing an answer.
    #[arg(long)]
    pub(crate) allow_single_port_uploads: bool,

    /// Uploads may create new files (needs --allow-write).
    #[arg(long)]
    pub(crate) create: bool,

    /// Uploads may replace existing files; without it they get ERROR 6 "file exists" (needs
    /// --allow-write).
    #[arg(long)]
    pub(crate) overwrite: bool,

    /// Largest upload accepted, checked against the client's tsize before any data and while
    /// receiving (K, M and G suffixes allowed); beyond it: ERROR 3.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_size)]
    pub(crate) max_upload_size: usize,

    /// umask for uploaded files, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "022", value_parser = parse_umask)]
    pub(crate) umask: u32,

    /// Serve only clients in this network (repeat, or a comma list: 10.0.0.0/8,fd00::/8,192.0.2.7);
    /// requests from elsewhere are ignored. An address filter stops only senders that cannot
    /// forge their source address. [default: everyone]
    #[arg(long = "allow", value_name = "CIDR", value_parser = Cidr::parse, value_delimiter = ',')]
    pub(crate) allow: Vec<Cidr>,

    /// Accept uploads only from this network (repeat, or a comma list); uploads from elsewhere get
    /// ERROR 2.
    /// Each must lie inside an --allow network, when --allow is given. Only the request's source
    /// address is checked: this stops attackers who cannot forge addresses, not those who can.
    /// [default: every client --allow lets in]
    #[arg(long = "allow-write-from", value_name = "CIDR", value_parser = Cidr::parse, value_delimiter = ',')]
    pub(crate) allow_write_from: Vec<Cidr>,

    /// New transfers per second each client address may start while the server is under
    /// pressure (a worker's transfer table half full, or transfer sockets failing to open);
    /// token bucket, 0: no limit. An idle server serves every request, so a rack behind NAT or
    /// a Kubernetes node (many clients, one address) is never throttled; under pressure, a
    /// source beyond its rate is dropped (counted as rate_limited) so it cannot starve the
    /// others. Repeated requests do not count. Each worker holds an even share of the rate and
    /// burst (the kernel spreads an address's ports over the workers).
    #[arg(long, value_name = "N", default_value_t = 100.0)]
    pub(crate) rate_per_source: f64,

    /// Apply --rate-per-source at all times, as a hard cap per address even on an idle server
    /// (clients that share an address, behind NAT, share the cap).
    #[arg(long)]
    pub(crate) rate_limit_always: bool,

    /// Burst of new transfers a client address may start at once.
    #[arg(long, value_name = "N", default_value_t = 500.0)]
    pub(crate) burst_per_source: f64,

    /// Log the counters every SECS seconds (fractions allowed; 0: only at exit, with latency
    /// percentiles).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub(crate) stats_interval: f64,

    /// Serve Prometheus metrics over HTTP at http://ADDR:PORT/metrics (port 0: one the kernel
    /// chooses, printed on stdout as `metrics on ADDR:PORT`). [default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) metrics: Option<SocketAddr>,

    /// A file class for the transfer-duration histogram: transfers of files whose name (as the
    /// client sent it) matches PATTERN are labelled file_class=NAME; PATTERN is a glob (* and ?)
    /// or else a prefix. Repeat for several (at most 8 names; several patterns may share one);
    /// the first match wins, everything else is `other`.
    #[arg(long, value_name = "NAME=PATTERN", requires = "metrics")]
    pub(crate) metrics_file_class: Vec<String>,

    /// Drop root to this user once the sockets are bound, the root opened and the workers set
    /// up, before the first request: supplementary groups cleared, user and group ids set for
    /// good. Refused at start if the user does not exist, cannot read --root or (with
    /// --allow-write) cannot write the upload directory. Needs root; without it, run as the user
    /// with CAP_NET_BIND_SERVICE instead. [default: stay as started]
    #[arg(long, value_name = "USER")]
    pub(crate) user: Option<String>,

    /// The group for --user. [default: the user's primary group]
    #[arg(long, value_name = "GROUP", requires = "user")]
    pub(crate) group: Option<String>,

    /// Rewrite each request's filename with tftp-hpa's map-file rules (docs/remap.md), run on
    /// the name as the client sent it, before normalisation and containment: no rule can lead
    /// outside --root. A file that does not parse is refused, naming its line; SIGHUP reads it
    /// again. tftpd-hpa's -m. `bootstorm map-test FILE NAME...` shows what names become.
    /// [default: none]
    #[arg(long, value_name = "FILE")]
    pub(crate) map_file: Option<PathBuf>,

    /// A name not found as spelled is looked for with ASCII case ignored, component by
    /// component, and the file served as it is named on disk (PXELINUX.CFG/01-AA-BB-... finds
    /// pxelinux.cfg/01-aa-bb-...).
    #[arg(long)]
    pub(crate) case_insensitive: bool,

    /// Take this leading directory off names that start with it (after normalisation:
    /// `/tftpboot/` makes /tftpboot/x and x the same file); repeat for several, the first that
    /// matches is taken off. The root's own absolute path is always taken off.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) strip_prefix: Vec<String>,

    /// Drop the bytes some NIC ROMs append after the name (0xFF, DEL, NUL) from its end.
    #[arg(long)]
    pub(crate) trim_name_garbage: bool,

    /// Each client's own directory beneath the root, tried before the shared tree for reads: a
    /// template with {ip} (dotted quad or IPv6 text), {hexip} (8 upper-case hex digits for
    /// IPv4, as PXELINUX names its files) and {mac} (lower-case with dashes, from the kernel's
    /// neighbour table: clients on the link only), e.g. clients/{mac}. [default: none]
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) client_dir: Option<String>,

    /// Write the server's process id to this file once it listens (before privileges are
    /// dropped: the directory need not be writable by --user), and remove the file at exit.
    /// tftpd-hpa's -P. [default: none]
    #[arg(long, value_name = "FILE")]
    pub(crate) pid_file: Option<PathBuf>,
}

/// `--refuse-option`: an option never granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RefuseArg {
    /// blksize (RFC 2348): 512-byte blocks.
    Blksize,
    /// tsize (RFC 2349).
    Tsize,
    /// timeout (RFC 2349).
    Timeout,
    /// windowsize (RFC 7440).
    Windowsize,
}

/// The options `args` refuse.
fn refused(args: &[RefuseArg]) -> Refused {
    let has = |a| args.contains(&a);
    Refused {
        blksize: has(RefuseArg::Blksize),
        tsize: has(RefuseArg::Tsize),
        timeout: has(RefuseArg::Timeout),
        windowsize: has(RefuseArg::Windowsize),
    }
}

/// The addresses one `--listen` names (`:69` and a host name may name several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListenAddrs(pub(crate) Vec<SocketAddr>);

/// How log records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// logfmt: `key=value` pairs, values quoted and escaped where needed.
    Text,
    /// One JSON object per record.
    Json,
}

/// The values `--log-level` accepts (in any case).
pub(crate) const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// What the binary runs with.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The server's configuration, validated.
    pub(crate) server: ServerConfig,
    /// Log filter (`--log-level`, lowercase), when given.
    pub(crate) log_level: Option<String>,
    /// Log format (`--log-format`).
    pub(crate) log_format: LogFormat,
    /// Log the counters this often (`--stats-interval`); `None`: only at exit.
    pub(crate) stats_interval: Option<Duration>,
    /// Where to serve metrics (`--metrics`); `None`: nowhere.
    pub(crate) metrics: Option<SocketAddr>,
    /// File classes of the duration histogram (`--metrics-file-class`).
    pub(crate) file_classes: FileClasses,
    /// The user and group to drop to (`--user`, `--group`), not looked up yet.
    pub(crate) run_as: Option<(String, Option<String>)>,
    /// Where to write the process id (`--pid-file`).
    pub(crate) pid_file: Option<PathBuf>,
}

/// A command line the binary refuses: a flag value that means nothing, or a configuration
/// [`ServerConfig::validate`] refuses.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// A number of seconds that is negative, not a number or too large.
    #[error("{flag} must be a non-negative number of seconds")]
    Seconds {
        /// The flag.
        flag: &'static str,
    },
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A `--metrics-file-class` is refused.
    #[error("--metrics-file-class: {0}")]
    FileClass(#[from] FileClassError),
    /// The `--map-file` cannot be read or does not parse.
    #[error("--map-file {}: {source}", .path.display())]
    MapFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: RemapError,
    },
}

fn secs(v: f64, flag: &'static str) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(v).map_err(|_| CliError::Seconds { flag })
}

impl TryFrom<Cli> for Settings {
    type Error = CliError;

    fn try_from(c: Cli) -> Result<Self, CliError> {
        let timeout = secs(c.timeout, "--timeout")?;
        let grace = secs(c.grace, "--grace")?;
        let stats_interval = secs(c.stats_interval, "--stats-interval")?;
        // These flags have no place in the configuration without uploads: refused here, as the
        // library refuses the upload settings it holds.
        if !c.allow_write
            && (c.upload_dir.is_some() || c.uploads_in_root || c.overwrite_served_files || c.allow_single_port_uploads)
        {
            return Err(ConfigError::UploadsOff.into());
        }
        let lookup = LookupPolicy {
            map_file: match &c.map_file {
                Some(path) => {
                    Some(MapFile::load(path).map_err(|source| CliError::MapFile { path: path.clone(), source })?)
                }
                None => None,
            },
            case_insensitive: c.case_insensitive,
            strip_prefixes: c.strip_prefix.iter().map(|p| StripPrefix::new(p)).collect::<Result<_, _>>()?,
            trim_garbage: c.trim_name_garbage,
            client_dir: c.client_dir.as_deref().map(ClientDir::new).transpose()?,
        };
        let defaults = ServerConfig::default();
        let rto = RtoBounds {
            initial: timeout,
            min: Duration::from_millis(c.min_rto),
            max: Duration::from_millis(c.max_rto),
        };
        let server = ServerConfig {
            root: c.root,
            serve_whole_filesystem: c.serve_whole_filesystem,
            ipv6_optional: c.listen.is_empty(),
            listen: if c.listen.is_empty() {
                defaults.listen
            } else {
                c.listen.into_iter().flat_map(|l| l.0).collect()
            },
            workers: c.workers.unwrap_or(defaults.workers),
            pin: !c.no_pin,
            grace,
            follow_symlinks: !c.no_symlinks,
            file_cache: c.file_cache,
            io: IoConfig {
                backend: c.io.into(),
                gso: !c.no_gso,
                recv_buffer: c.recv_buffer,
                ring_entries: c.ring_entries,
                rx_buffers: c.rx_buffers,
                send_slots: c.send_slots,
                single_port: c.single_port,
                port_range: c.port_range,
                blind_budget: c.blind_budget,
                max_transfers: c.max_transfers,
            },
            serve: ServePolicy {
                allow: c.allow,
                allow_write_from: c.allow_write_from,
                limits: Limits {
                    max_blksize: c.max_blksize,
                    max_windowsize: c.max_windowsize,
                    refuse: refused(&c.refuse_option),
                    ..Limits::default()
                },
                retransmit: config::retransmit(rto, c.retries),
                rate_per_source: Some(SourceRate { per_second: c.rate_per_source, burst: c.burst_per_source }),
                rate_limit_always: c.rate_limit_always,
                log_requests: c.log_requests,
                world_readable_only: !c.serve_private_files,
                lookup,
                upload: WritePolicy {
                    create: c.create,
                    overwrite: c.overwrite,
                    mode: 0o666 & !c.umask,
                    max_size: c.max_upload_size as u64,
                },
            },
            write: c.allow_write.then_some(WriteConfig {
                dir: c.upload_dir,
                in_served_tree: c.uploads_in_root,
                overwrite_served_files: c.overwrite_served_files,
                allow_single_port: c.allow_single_port_uploads,
            }),
        };
        server.validate()?;
        let mut file_classes = FileClasses::default();
        for rule in &c.metrics_file_class {
            file_classes.add(rule)?;
        }
        Ok(Self {
            run_as: c.user.map(|u| (u, c.group)),
            pid_file: c.pid_file,
            metrics: c.metrics,
            file_classes,
            server,
            log_level: c.log_level,
            log_format: c.log_format,
            stats_interval: (!stats_interval.is_zero()).then_some(stats_interval),
        })
    }
}

#[cfg(test)]
mod tests;
