//! The server's configuration as plain values: [`ServerConfig`] with what is fixed for the
//! server's life ([`IoConfig`] and the rest) and the serving policy ([`ServePolicy`]) a reload
//! may replace. [`ServerConfig::validate`] refuses contradictions and likely mistakes with a
//! [`ConfigError`]. The command line that fills it lives in the binary (`src/cli.rs`); a library
//! user or a test builds it directly, from `ServerConfig { root, ..Default::default() }`.
//!
//! Defaults suit a PXE fleet: every CPU a worker, per-transfer ports, blksize up to what the
//! request's interface carries without fragmentation, windows of up to 64 blocks, a 1 s first
//! retransmission timeout that adapts to the measured round trip, and 6 s of silence before a
//! client is given up.
//!
//! The messages of [`ConfigError`] name the command-line flags of each setting, since that is
//! how an operator meets them.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::fs::WritePolicy;
use crate::proto::options::{Limits, MAX_BLKSIZE, MAX_WINDOWSIZE, MIN_BLKSIZE};
use crate::proto::{RetransmitConfig, RtoBounds};

mod cidr;

pub use cidr::Cidr;

/// Bytes of DATA a read transfer may send, on the wire, before its client has acknowledged a
/// DATA block, when a forger can predict transfer IDs: with one listening port for every
/// transfer, or ports from a range. A forged request and a forged ACK 0 (about 100 bytes) then
/// cost their victim at most about 50 times their size. With a new kernel-chosen port per
/// transfer, a forger must guess the port, and no budget applies.
pub const BLIND_BUDGET: u32 = 5000;

/// Everything a server runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Directory served. Empty by default, which [`validate`](Self::validate) refuses: there is
    /// no directory that is safe to guess.
    pub root: PathBuf,
    /// Accept a root that resolves to `/`, which serves every readable file of the host.
    pub serve_whole_filesystem: bool,
    /// Addresses listened on. Default: `0.0.0.0:69` and `[::]:69`.
    pub listen: Vec<SocketAddr>,
    /// Worker threads. Default: the CPUs this process may run on.
    pub workers: usize,
    /// Pin each worker to its own core.
    pub pin: bool,
    /// On stop, how long transfers in progress may take to finish before they are ended.
    pub grace: Duration,
    /// Follow symbolic links that stay inside the root (else refuse every link).
    pub follow_symlinks: bool,
    /// Files kept open and mapped per worker when no transfer uses them.
    pub file_cache: usize,
    /// The I/O settings, fixed while the server runs.
    pub io: IoConfig,
    /// What is served to whom, and how.
    pub serve: ServePolicy,
    /// Uploads, when accepted; `None`: every upload is refused.
    pub write: Option<WriteConfig>,
}

/// Which I/O backend the workers run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring when the start-up probe says it works, epoll otherwise.
    #[default]
    Auto,
    /// io_uring; fail to start if it is unusable.
    Uring,
    /// epoll.
    Epoll,
}

/// How the workers move datagrams: the settings that cannot change while the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoConfig {
    /// The backend.
    pub backend: IoBackend,
    /// Send runs of DATA as one send that the kernel cuts into datagrams (UDP GSO), where the
    /// kernel has it.
    pub gso: bool,
    /// Receive buffer of each listening socket, in bytes.
    pub recv_buffer: usize,
    /// io_uring submission queue entries per worker (at least 64).
    pub ring_entries: u32,
    /// Receive buffers per worker in the io_uring provided-buffer ring (a power of two in
    /// 16..=32768).
    pub rx_buffers: u32,
    /// Sends in flight per worker on io_uring (at least 16).
    pub send_slots: u32,
    /// Serve every transfer from the listening port instead of a new port per transfer.
    pub single_port: bool,
    /// Ports for transfers, inclusive; `None`: any free port the kernel picks.
    pub port_range: Option<(u16, u16)>,
    /// Transfers in progress per worker.
    pub max_transfers: usize,
}

/// The serving policy: who is served, what is granted, how transfers retransmit and what
/// uploads may do. The part of the configuration a live reload may replace.
#[derive(Clone, Debug, PartialEq)]
pub struct ServePolicy {
    /// Networks served; empty: everyone. Requests from elsewhere are ignored silently.
    pub allow: Vec<Cidr>,
    /// Networks uploads are accepted from; empty: every client `allow` lets in.
    pub allow_write_from: Vec<Cidr>,
    /// What negotiation may grant. The blind budget that the port settings call for is added
    /// by [`ServerConfig::effective_policy`].
    pub limits: Limits,
    /// Retransmission timeouts and patience; build it with [`retransmit`] so that patience and
    /// the silence bound follow from the timeout and the retries.
    pub retransmit: RetransmitConfig,
    /// New transfers each source may start while the server is under pressure; `None` or a rate
    /// of 0: no limit.
    pub rate_per_source: Option<SourceRate>,
    /// Apply `rate_per_source` at all times, not only under pressure.
    pub rate_limit_always: bool,
    /// What uploads may do, when [`ServerConfig::write`] accepts them.
    pub upload: WritePolicy,
}

/// A token bucket for the new transfers of one source, over the whole server (each worker
/// holds an even share).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceRate {
    /// Tokens per second (0: no limit).
    pub per_second: f64,
    /// Bucket size: new transfers a source may start at once (at least 1).
    pub burst: f64,
}

/// Where uploads go, and which of their risks are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteConfig {
    /// Directory uploads go into; `None`: the root itself, which needs `in_served_tree`.
    pub dir: Option<PathBuf>,
    /// Uploads may land in the served tree (the directory is the root, inside it or above it);
    /// else the server refuses to start when it is.
    pub in_served_tree: bool,
    /// With `in_served_tree` and [`WritePolicy::overwrite`]: uploads may replace files the
    /// server serves.
    pub overwrite_served_files: bool,
    /// Uploads are accepted with [`IoConfig::single_port`], where anyone who can forge an
    /// accepted address can upload blind.
    pub allow_single_port: bool,
}

/// A configuration the server refuses. The messages name the command-line flags.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No root directory.
    #[error("--root is empty: name the directory to serve")]
    NoRoot,
    /// No address to listen on.
    #[error("no --listen address: nothing would be served")]
    NoListen,
    /// `limits.max_blksize` out of range.
    #[error("--max-blksize must be {MIN_BLKSIZE}..={MAX_BLKSIZE}")]
    MaxBlksize,
    /// `limits.max_windowsize` out of range.
    #[error("--max-windowsize must be 1..={MAX_WINDOWSIZE}")]
    MaxWindowsize,
    /// A zero initial retransmission timeout.
    #[error("--timeout must be above 0")]
    Timeout,
    /// Retransmission timeout bounds that are zero or inverted.
    #[error("--min-rto must be above 0 and at most --max-rto")]
    RtoBounds,
    /// No retransmission at all.
    #[error("--retries must be at least 1")]
    Retries,
    /// No transfer could ever run.
    #[error("--max-transfers must be at least 1")]
    MaxTransfers,
    /// A provided-buffer ring the kernel would refuse.
    #[error("--rx-buffers must be a power of two in 16..=32768")]
    RxBuffers,
    /// An io_uring too small to work.
    #[error("--ring-entries must be at least 64 and --send-slots at least 16")]
    RingSize,
    /// No worker.
    #[error("--workers must be at least 1")]
    Workers,
    /// An empty or inverted port range, or one that includes port 0.
    #[error("--port-range {0}:{1}: need 0 < LO <= HI")]
    PortRange(u16, u16),
    /// One listening port for every transfer, and a range of transfer ports.
    #[error(
        "--single-port contradicts --port-range: transfers either share the listening port or take theirs from the range"
    )]
    SinglePortWithPortRange,
    /// Upload settings while uploads are refused.
    #[error(
        "--create, --overwrite, --upload-dir, --allow-write-from, --uploads-in-root, --overwrite-served-files and \
         --allow-single-port-uploads need --allow-write"
    )]
    UploadsOff,
    /// Uploads accepted, but they may neither create nor replace a file.
    #[error("--allow-write needs --create (new files) and/or --overwrite (existing files)")]
    UploadsDoNothing,
    /// Uploads into the root without saying so.
    #[error(
        "--allow-write needs --upload-dir DIR outside --root: uploads into the served root are served to every \
         client and can replace what they boot (--uploads-in-root writes into the root on purpose)"
    )]
    NoUploadDir,
    /// Replacing served files where uploads cannot reach them.
    #[error("--overwrite-served-files needs --uploads-in-root (uploads outside the root replace no served file)")]
    OverwriteServedOutsideRoot,
    /// Replacing served files without replacing any file.
    #[error("--overwrite-served-files needs --overwrite")]
    OverwriteServedWithoutOverwrite,
    /// Uploads in the served tree that may replace files, without that risk accepted.
    #[error(
        "--overwrite with --uploads-in-root lets an upload replace files the server serves (boot loaders, kernels, \
         pxelinux.cfg): add --overwrite-served-files to accept that, or use --upload-dir outside --root"
    )]
    OverwriteServedUnaccepted,
    /// Uploads on a single port, without that risk accepted.
    #[error(
        "--allow-write with --single-port is refused: every transfer shares the listening port, so anyone who can \
         forge an address that --allow-write-from accepts can upload blind with two datagrams (WRQ, then DATA 1); \
         add --allow-single-port-uploads to accept that risk, or drop --single-port"
    )]
    SinglePortUploads,
    /// A root that resolves to `/`, without that accepted.
    #[error(
        "--root {} serves the whole file system (/etc/shadow, SSH host keys, every readable file) to anyone who \
         can send a datagram; serve a directory that holds only boot files, or add --serve-whole-filesystem to \
         accept that",
        .0.display()
    )]
    WholeFilesystem(PathBuf),
    /// An upload network from which no request is served.
    #[error(
        "--allow-write-from {from} is not inside any --allow network ({}): requests from outside --allow are \
         ignored, so no upload could come from all of it; widen --allow or narrow --allow-write-from",
        joined(.allow)
    )]
    WriteFromOutsideAllow {
        /// The upload network.
        from: Cidr,
        /// The networks served.
        allow: Vec<Cidr>,
    },
    /// The same address and port twice.
    #[error("--listen {0} is given twice")]
    ListenTwice(SocketAddr),
    /// A negative or not-a-number rate, or a burst below one.
    #[error("--rate-per-source must be >= 0 and --burst-per-source >= 1")]
    SourceRate,
}

/// The networks, comma-separated.
fn joined(nets: &[Cidr]) -> String {
    nets.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ")
}

/// Retransmission settings from the timeout bounds and the retries: a client is given up after
/// `max_retries` timeouts in a row and at least `initial × max_retries` of silence, and whatever
/// its own `timeout` option asks, after at most twice that or [`MAX_SILENCE`], whichever is
/// longer.
///
/// [`MAX_SILENCE`]: crate::proto::sender::MAX_SILENCE
pub fn retransmit(rto: RtoBounds, max_retries: u8) -> RetransmitConfig {
    let patience = rto.initial.saturating_mul(u32::from(max_retries));
    let max_silence = crate::proto::sender::MAX_SILENCE.max(patience.saturating_mul(2));
    RetransmitConfig { rto, max_retries, patience, max_silence }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::new(),
            serve_whole_filesystem: false,
            listen: vec![
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 69)),
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 69)),
            ],
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            pin: true,
            grace: Duration::from_secs(10),
            follow_symlinks: true,
            file_cache: 1024,
            io: IoConfig::default(),
            serve: ServePolicy::default(),
            write: None,
        }
    }
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            backend: IoBackend::Auto,
            gso: true,
            recv_buffer: 8 << 20,
            ring_entries: 4096,
            rx_buffers: 1024,
            send_slots: 2048,
            single_port: false,
            port_range: None,
            max_transfers: 16384,
        }
    }
}

impl Default for ServePolicy {
    fn default() -> Self {
        let rto =
            RtoBounds { initial: Duration::from_secs(1), min: Duration::from_millis(10), max: Duration::from_secs(2) };
        Self {
            allow: Vec::new(),
            allow_write_from: Vec::new(),
            limits: Limits { max_blksize: MAX_BLKSIZE, max_windowsize: 64, max_window_bytes: None },
            retransmit: retransmit(rto, 6),
            rate_per_source: Some(SourceRate { per_second: 100.0, burst: 500.0 }),
            rate_limit_always: false,
            upload: WritePolicy { create: false, overwrite: false, mode: 0o644, max_size: 1 << 30 },
        }
    }
}

impl IoConfig {
    /// The blind budget for these port settings: [`BLIND_BUDGET`] where a forger can predict
    /// transfer IDs (one listening port, or ports from a range), else none.
    pub fn blind_budget(&self) -> Option<u32> {
        (self.single_port || self.port_range.is_some()).then_some(BLIND_BUDGET)
    }
}

impl ServePolicy {
    /// The per-source limit in force, if any (a rate of 0 is none).
    pub fn source_limit(&self) -> Option<SourceRate> {
        self.rate_per_source.filter(|r| r.per_second > 0.0)
    }
}

impl ServerConfig {
    /// The serving policy the workers run with: [`serve`](Self::serve), its window limit capped
    /// by the blind budget the port settings call for ([`IoConfig::blind_budget`]).
    pub fn effective_policy(&self) -> ServePolicy {
        let mut policy = self.serve.clone();
        let limits = &mut policy.limits;
        limits.max_window_bytes = match (limits.max_window_bytes, self.io.blind_budget()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        policy
    }

    /// The directory uploads go into, when they are accepted.
    pub fn upload_dir(&self) -> Option<&Path> {
        self.write.as_ref().map(|w| w.dir.as_deref().unwrap_or(&self.root))
    }

    /// Refuses settings that cannot work, contradict each other, or are almost surely a
    /// mistake: `--root /` without `serve_whole_filesystem`, an upload network outside every
    /// `allow` network, the same listen address twice, upload risks not accepted one by one.
    /// The first mistake found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.root.as_os_str().is_empty() {
            return Err(ConfigError::NoRoot);
        }
        let ServePolicy { limits, retransmit, .. } = &self.serve;
        if !(MIN_BLKSIZE..=MAX_BLKSIZE).contains(&limits.max_blksize) {
            return Err(ConfigError::MaxBlksize);
        }
        if !(1..=MAX_WINDOWSIZE).contains(&limits.max_windowsize) {
            return Err(ConfigError::MaxWindowsize);
        }
        if retransmit.rto.initial.is_zero() {
            return Err(ConfigError::Timeout);
        }
        if retransmit.rto.min.is_zero() || retransmit.rto.min > retransmit.rto.max {
            return Err(ConfigError::RtoBounds);
        }
        if retransmit.max_retries == 0 {
            return Err(ConfigError::Retries);
        }
        self.io.validate()?;
        if self.workers == 0 {
            return Err(ConfigError::Workers);
        }
        self.validate_uploads()?;
        self.check_operator_mistakes()?;
        if let Some(r) = self.serve.rate_per_source {
            if !(r.per_second >= 0.0 && r.burst >= 1.0) {
                return Err(ConfigError::SourceRate);
            }
        }
        if self.listen.is_empty() {
            return Err(ConfigError::NoListen);
        }
        if let Some((lo, hi)) = self.io.port_range {
            if lo == 0 || lo > hi {
                return Err(ConfigError::PortRange(lo, hi));
            }
            if self.io.single_port {
                return Err(ConfigError::SinglePortWithPortRange);
            }
        }
        Ok(())
    }

    /// Uploads: each setting needs uploads on, and each risk needs its own acceptance.
    fn validate_uploads(&self) -> Result<(), ConfigError> {
        let upload = &self.serve.upload;
        let Some(w) = &self.write else {
            if upload.create || upload.overwrite || !self.serve.allow_write_from.is_empty() {
                return Err(ConfigError::UploadsOff);
            }
            return Ok(());
        };
        if !upload.create && !upload.overwrite {
            return Err(ConfigError::UploadsDoNothing);
        }
        if w.dir.is_none() && !w.in_served_tree {
            return Err(ConfigError::NoUploadDir);
        }
        if w.overwrite_served_files && !w.in_served_tree {
            return Err(ConfigError::OverwriteServedOutsideRoot);
        }
        if w.overwrite_served_files && !upload.overwrite {
            return Err(ConfigError::OverwriteServedWithoutOverwrite);
        }
        if w.in_served_tree && upload.overwrite && !w.overwrite_served_files {
            return Err(ConfigError::OverwriteServedUnaccepted);
        }
        if self.io.single_port && !w.allow_single_port {
            return Err(ConfigError::SinglePortUploads);
        }
        Ok(())
    }

    /// What is almost surely a mistake: the whole file system served, an upload network from
    /// which no request is served, the same listen address twice.
    fn check_operator_mistakes(&self) -> Result<(), ConfigError> {
        if !self.serve_whole_filesystem && is_filesystem_root(&self.root) {
            return Err(ConfigError::WholeFilesystem(self.root.clone()));
        }
        let allow = &self.serve.allow;
        if !allow.is_empty() {
            if let Some(w) = self.serve.allow_write_from.iter().find(|w| !allow.iter().any(|a| w.within(a))) {
                return Err(ConfigError::WriteFromOutsideAllow { from: *w, allow: allow.clone() });
            }
        }
        for (i, a) in self.listen.iter().enumerate() {
            // Port 0 twice asks for two kernel-chosen ports: two different sockets.
            if a.port() != 0 && self.listen[..i].contains(a) {
                return Err(ConfigError::ListenTwice(*a));
            }
        }
        Ok(())
    }
}

impl IoConfig {
    /// Refuses sizes the backends cannot work with.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_transfers == 0 {
            return Err(ConfigError::MaxTransfers);
        }
        if !self.rx_buffers.is_power_of_two() || !(16..=32768).contains(&self.rx_buffers) {
            return Err(ConfigError::RxBuffers);
        }
        if self.ring_entries < 64 || self.send_slots < 16 {
            return Err(ConfigError::RingSize);
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults, serving `/srv/tftp`.
    fn base() -> ServerConfig {
        ServerConfig { root: "/srv/tftp".into(), ..Default::default() }
    }

    /// `base` changed by `f`, validated.
    fn check(f: impl FnOnce(&mut ServerConfig)) -> Result<(), ConfigError> {
        let mut c = base();
        f(&mut c);
        c.validate()
    }

    /// Uploads on, into `dir` (`None`: the root, accepted as in the served tree), new files only.
    fn uploads(c: &mut ServerConfig, dir: Option<&str>) {
        c.write = Some(WriteConfig {
            dir: dir.map(PathBuf::from),
            in_served_tree: dir.is_none(),
            overwrite_served_files: false,
            allow_single_port: false,
        });
        c.serve.upload.create = true;
    }

    /// A change to a configuration.
    type Change = fn(&mut ServerConfig);

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn defaults() {
        let c = ServerConfig::default();
        assert_eq!(c.validate(), Err(ConfigError::NoRoot), "no root is guessed");
        let c = base();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.listen, ["0.0.0.0:69".parse::<SocketAddr>().unwrap(), "[::]:69".parse().unwrap()]);
        assert!(c.workers >= 1 && c.pin && c.follow_symlinks);
        assert_eq!((c.serve.limits.max_blksize, c.serve.limits.max_windowsize), (65464, 64));
        assert_eq!(c.serve.retransmit, RetransmitConfig::default(), "the protocol's defaults");
        assert_eq!(c.io.recv_buffer, 8 << 20);
        assert!(!c.io.single_port && c.write.is_none() && c.upload_dir().is_none());
        assert_eq!(c.serve.source_limit(), Some(SourceRate { per_second: 100.0, burst: 500.0 }));
        assert_eq!(c.serve.upload.mode, 0o644);
    }

    #[test]
    fn derived_values() {
        let r = retransmit(RtoBounds { initial: Duration::from_millis(500), ..RetransmitConfig::default().rto }, 4);
        assert_eq!(r.patience, Duration::from_secs(2));
        assert_eq!(r.max_silence, crate::proto::sender::MAX_SILENCE);
        let r = retransmit(RtoBounds { initial: Duration::from_secs(20), ..r.rto }, 3);
        assert_eq!((r.patience, r.max_silence), (Duration::from_secs(60), Duration::from_secs(120)));
        // The blind budget follows the port settings and caps a limit set by hand.
        let mut c = base();
        assert_eq!(c.effective_policy().limits.max_window_bytes, None);
        c.io.single_port = true;
        assert_eq!(c.effective_policy().limits.max_window_bytes, Some(BLIND_BUDGET));
        c.io = IoConfig { port_range: Some((30000, 30100)), ..IoConfig::default() };
        assert_eq!(c.effective_policy().limits.max_window_bytes, Some(BLIND_BUDGET));
        c.serve.limits.max_window_bytes = Some(1000);
        assert_eq!(c.effective_policy().limits.max_window_bytes, Some(1000));
        assert_eq!(c.serve.limits.max_window_bytes, Some(1000), "the configuration itself is left alone");
        // A rate of 0 is no limit.
        c.serve.rate_per_source = Some(SourceRate { per_second: 0.0, burst: 500.0 });
        assert_eq!(c.serve.source_limit(), None);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn refusals() {
        use ConfigError as E;
        let cases: [(Change, ConfigError); 14] = [
            (|c| c.serve.limits.max_blksize = 7, E::MaxBlksize),
            (|c| c.serve.limits.max_blksize = 65465, E::MaxBlksize),
            (|c| c.serve.limits.max_windowsize = 0, E::MaxWindowsize),
            (|c| c.serve.retransmit.rto.initial = Duration::ZERO, E::Timeout),
            (|c| c.serve.retransmit.rto.min = Duration::from_secs(5), E::RtoBounds),
            (|c| c.serve.retransmit.rto.min = Duration::ZERO, E::RtoBounds),
            (|c| c.serve.retransmit.max_retries = 0, E::Retries),
            (|c| c.io.max_transfers = 0, E::MaxTransfers),
            (|c| c.io.rx_buffers = 1000, E::RxBuffers),
            (|c| c.io.send_slots = 8, E::RingSize),
            (|c| c.workers = 0, E::Workers),
            (|c| c.listen.clear(), E::NoListen),
            (|c| c.io.port_range = Some((10, 5)), E::PortRange(10, 5)),
            (|c| c.serve.rate_per_source = Some(SourceRate { per_second: 1.0, burst: 0.5 }), E::SourceRate),
        ];
        for (i, (f, want)) in cases.into_iter().enumerate() {
            assert_eq!(check(f), Err(want), "case {i}");
        }
        assert!(check(|c| c.serve.retransmit.rto.min = Duration::from_secs(2)).is_ok(), "min = max");
        let e = check(|c| {
            c.io.single_port = true;
            c.io.port_range = Some((30000, 30010));
        })
        .unwrap_err();
        assert!(e.to_string().contains("--single-port") && e.to_string().contains("--port-range"), "{e}");
        assert_eq!(E::MaxBlksize.to_string(), "--max-blksize must be 8..=65464");
    }

    #[test]
    fn operator_mistakes() {
        let root = |r: &str, whole: bool| {
            let mut c = ServerConfig { root: r.into(), serve_whole_filesystem: whole, ..base() };
            c.listen = vec!["127.0.0.1:0".parse().unwrap()];
            c.validate()
        };
        for r in ["/", "//", "/.", "/tmp/..", "/nonexistent/..", "/nonexistent/../../."] {
            let e = root(r, false).unwrap_err();
            assert_eq!(e, ConfigError::WholeFilesystem(r.into()));
            let e = e.to_string();
            assert!(e.contains("--serve-whole-filesystem") && e.contains("whole file system"), "{r}: {e}");
            assert_eq!(root(r, true), Ok(()), "{r}");
        }
        assert!(root("/nonexistent", false).is_ok() && root("relative/..", false).is_ok());
        let net = |allow: &[&str], from: &[&str]| {
            check(|c| {
                uploads(c, Some("/up"));
                c.serve.allow = allow.iter().map(|s| cidr(s)).collect();
                c.serve.allow_write_from = from.iter().map(|s| cidr(s)).collect();
            })
        };
        let e = net(&["10.0.0.0/8"], &["192.168.1.0/24"]).unwrap_err().to_string();
        assert!(e.contains("--allow-write-from 192.168.1.0/24") && e.contains("(10.0.0.0/8)"), "{e}");
        let e = net(&["10.0.0.0/8", "fd00::/8"], &["10.0.0.0/7"]).unwrap_err().to_string();
        assert!(e.contains("(10.0.0.0/8, fd00::/8)"), "{e}");
        assert!(net(&["10.0.0.0/8", "fd00::/8"], &["fd00:1::/32"]).is_ok());
        assert!(net(&["10.0.0.0/8"], &["10.1.2.3"]).is_ok());
        assert!(net(&[], &["192.168.1.0/24"]).is_ok(), "no allow list: everyone is served");
        let listen = |l: &[&str]| check(|c| c.listen = l.iter().map(|a| a.parse().unwrap()).collect());
        let e = listen(&["127.0.0.1:69", "[::1]:69", "127.0.0.1:69"]).unwrap_err();
        assert_eq!(e.to_string(), "--listen 127.0.0.1:69 is given twice");
        assert!(listen(&["127.0.0.1:0", "127.0.0.1:0"]).is_ok(), "two kernel-chosen ports");
        assert!(listen(&["0.0.0.0:69", "127.0.0.1:69"]).is_ok(), "overlapping, not the same");
    }

    #[test]
    fn uploads_and_their_risks() {
        use ConfigError as E;
        assert_eq!(check(|c| uploads(c, Some("/up"))), Ok(()));
        assert_eq!(check(|c| uploads(c, None)), Ok(()), "into the root, accepted");
        // Upload settings without uploads.
        assert_eq!(check(|c| c.serve.upload.create = true), Err(E::UploadsOff));
        assert_eq!(check(|c| c.serve.upload.overwrite = true), Err(E::UploadsOff));
        assert_eq!(check(|c| c.serve.allow_write_from = vec![cidr("10.0.0.0/8")]), Err(E::UploadsOff));
        // Uploads that can do nothing, or that go into the root unasked.
        let e = check(|c| {
            uploads(c, Some("/up"));
            c.serve.upload.create = false;
        });
        assert_eq!(e, Err(E::UploadsDoNothing));
        let e = check(|c| {
            uploads(c, None);
            c.write.as_mut().unwrap().in_served_tree = false;
        });
        assert_eq!(e, Err(E::NoUploadDir));
        assert!(
            E::NoUploadDir.to_string().contains("--upload-dir")
                && E::NoUploadDir.to_string().contains("--uploads-in-root")
        );
        // Replacing served files needs its own acceptance, and that needs the other two.
        let in_root = |overwrite: bool, served: bool| {
            check(|c| {
                uploads(c, None);
                c.serve.upload.overwrite = overwrite;
                c.write.as_mut().unwrap().overwrite_served_files = served;
            })
        };
        assert_eq!(in_root(true, false), Err(E::OverwriteServedUnaccepted));
        assert_eq!(in_root(true, true), Ok(()));
        assert_eq!(in_root(false, true), Err(E::OverwriteServedWithoutOverwrite));
        let e = check(|c| {
            uploads(c, Some("/up"));
            c.serve.upload.overwrite = true;
            c.write.as_mut().unwrap().overwrite_served_files = true;
        });
        assert_eq!(e, Err(E::OverwriteServedOutsideRoot));
        // Uploads on a single port only with the risk accepted.
        let single = |accepted: bool| {
            check(|c| {
                uploads(c, Some("/up"));
                c.io.single_port = true;
                c.write.as_mut().unwrap().allow_single_port = accepted;
            })
        };
        assert_eq!(single(false), Err(E::SinglePortUploads));
        assert_eq!(single(true), Ok(()));
        // Where they go.
        let mut c = base();
        uploads(&mut c, None);
        assert_eq!(c.upload_dir(), Some(Path::new("/srv/tftp")));
        uploads(&mut c, Some("/srv/up"));
        assert_eq!(c.upload_dir(), Some(Path::new("/srv/up")));
    }
}
