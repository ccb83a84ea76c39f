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

use crate::proto::options::{MAX_BLKSIZE, MAX_WINDOWSIZE, MIN_BLKSIZE};

mod cidr;
mod error;
mod io;
mod lookup;
mod policy;

pub use cidr::Cidr;
pub use error::ConfigError;
pub use io::{DEFAULT_MAX_TRANSFERS, IoBackend, IoConfig};
pub use lookup::{ClientDir, LookupPolicy, MapFile, Piece, StripPrefix};
pub use policy::{ServePolicy, SourceRate, retransmit};

/// Bytes of DATA a read transfer may send, on the wire, before its client has acknowledged a
/// DATA block, when a forger can predict transfer IDs: with one listening port for every
/// transfer, or ports from a range. A forged request and a forged ACK 0 (about 100 bytes) then
/// cost their victim at most about 50 times their size. With a new kernel-chosen port per
/// transfer, a forger must guess the port, and no budget applies.
pub const BLIND_BUDGET: u32 = 5000;

/// The smallest blind budget: one DATA of 512 bytes with its header.
pub const MIN_BLIND_BUDGET: u32 = 516;

/// The longest first retransmission timeout (`--timeout`) accepted. RFC 2349 lets a client ask
/// for up to 255 s, but a server-side timeout that long keeps a dead client's transfer, its
/// socket and its table slot for `retries` times as long: an hour or more. A value above it is
/// almost always tftpd-hpa's `-T` (microseconds) or `-t` (an idle exit) carried over.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The port listened on when `--listen` names an address without one.
pub const TFTP_PORT: u16 = 69;

/// Everything a server runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Directory served. Empty by default, which [`validate`](Self::validate) refuses: there is
    /// no directory that is safe to guess.
    pub root: PathBuf,
    /// Accept a root that resolves to `/`, which serves every readable file of the host.
    pub serve_whole_filesystem: bool,
    /// Addresses listened on. Default: `0.0.0.0:69` and `[::]:69`. A specific address need not
    /// be configured yet: listening sockets bound to one are `IP_FREEBIND`.
    pub listen: Vec<SocketAddr>,
    /// An IPv6 wildcard address of `listen` that the host cannot bind (IPv6 turned off) is
    /// dropped with a warning instead of failing the start, as long as another address remains.
    /// True by default, for the default `listen`; the command line turns it off when `--listen`
    /// is given, so that an address asked for is never dropped silently.
    pub ipv6_optional: bool,
    /// Worker threads. Default: [`default_workers`], half the CPUs this process may run on.
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

/// Where uploads go, and which of their risks are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteConfig {
    /// Directory uploads go into; `None`: the root itself, which needs `in_served_tree`.
    pub dir: Option<PathBuf>,
    /// Uploads may land in the served tree (the directory is the root, inside it or above it);
    /// else the server refuses to start when it is.
    pub in_served_tree: bool,
    /// With `in_served_tree` and [`WritePolicy::overwrite`](crate::fs::WritePolicy::overwrite):
    /// uploads may replace files the server serves.
    pub overwrite_served_files: bool,
    /// Uploads are accepted with [`IoConfig::single_port`], where anyone who can forge an
    /// accepted address can upload blind.
    pub allow_single_port: bool,
}

/// The default number of workers on a machine where the process may run on `cpus` CPUs: half
/// of them, at least one. A lockstep block costs the server's CPU mostly in the kernel (its
/// send, and the receive processing of the client's ACK, which runs on whichever CPU took the
/// packet), so a worker on every CPU leaves none for that work nor for the DHCP and HTTP servers
/// beside it, and busy threads take turns on one CPU. Measured in `docs/operations.md` (Sizing).
/// Workers are pinned to the first CPUs of the process's set, on SMT machines commonly one
/// thread of each core.
pub fn default_workers(cpus: usize) -> usize {
    (cpus / 2).max(1)
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
            ipv6_optional: true,
            workers: default_workers(std::thread::available_parallelism().map_or(1, usize::from)),
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

impl ServerConfig {
    /// The serving policy the workers run with: [`serve`](Self::serve), its window limit capped
    /// by the blind budget the port settings call for ([`IoConfig::blind_budget_in_force`]).
    pub fn effective_policy(&self) -> ServePolicy {
        let mut policy = self.serve.clone();
        let limits = &mut policy.limits;
        limits.max_window_bytes = match (limits.max_window_bytes, self.io.blind_budget_in_force()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        policy
    }

    /// The settings fixed for the server's life that differ between `self` and `other`, by
    /// command-line flag, in the order of the fields: every field but [`serve`](Self::serve)
    /// (root, listen addresses, workers and pinning, grace, symbolic links, file cache, every
    /// [`IoConfig`] field, and where uploads go and which of their risks are accepted). What a
    /// reload reports as not applied.
    ///
    /// [`ipv6_optional`](Self::ipv6_optional) is not compared: it only decides, at start, what
    /// to do with an IPv6 wildcard address the host cannot bind, and follows from whether
    /// `--listen` was given, not from what it names.
    pub fn fixed_differences(&self, other: &ServerConfig) -> Vec<&'static str> {
        // Destructured whole, so that a field added to these structures must be classed here.
        let ServerConfig {
            root,
            serve_whole_filesystem,
            listen,
            ipv6_optional: _,
            workers,
            pin,
            grace,
            follow_symlinks,
            file_cache,
            io,
            serve: _,
            write,
        } = self;
        let IoConfig {
            backend,
            gso,
            recv_buffer,
            ring_entries,
            rx_buffers,
            send_slots,
            single_port,
            port_range,
            blind_budget,
            max_transfers,
        } = io;
        // The same for the upload settings (compared one by one below).
        if let Some(WriteConfig { dir: _, in_served_tree: _, overwrite_served_files: _, allow_single_port: _ }) = write
        {
        }
        let o = other;
        let upload = |f: fn(&WriteConfig) -> bool| {
            let (a, b) = (write.as_ref().map(f), o.write.as_ref().map(f));
            a.is_some() && b.is_some() && a != b
        };
        let dir = |w: &Option<WriteConfig>| w.as_ref().map(|w| w.dir.clone());
        [
            (*root != o.root, "--root"),
            (*serve_whole_filesystem != o.serve_whole_filesystem, "--serve-whole-filesystem"),
            (*listen != o.listen, "--listen"),
            (*workers != o.workers, "--workers"),
            (*pin != o.pin, "--no-pin"),
            (*grace != o.grace, "--grace"),
            (*follow_symlinks != o.follow_symlinks, "--no-symlinks"),
            (*file_cache != o.file_cache, "--file-cache"),
            (*backend != o.io.backend, "--io"),
            (*gso != o.io.gso, "--no-gso"),
            (*recv_buffer != o.io.recv_buffer, "--recv-buffer"),
            (*ring_entries != o.io.ring_entries, "--ring-entries"),
            (*rx_buffers != o.io.rx_buffers, "--rx-buffers"),
            (*send_slots != o.io.send_slots, "--send-slots"),
            (*single_port != o.io.single_port, "--single-port"),
            (*port_range != o.io.port_range, "--port-range"),
            (*blind_budget != o.io.blind_budget, "--blind-budget"),
            (*max_transfers != o.io.max_transfers, "--max-transfers"),
            (write.is_some() != o.write.is_some(), "--allow-write"),
            (write.is_some() && o.write.is_some() && dir(write) != dir(&o.write), "--upload-dir"),
            (upload(|w| w.in_served_tree), "--uploads-in-root"),
            (upload(|w| w.overwrite_served_files), "--overwrite-served-files"),
            (upload(|w| w.allow_single_port), "--allow-single-port-uploads"),
        ]
        .into_iter()
        .filter_map(|(differs, name)| differs.then_some(name))
        .collect()
    }

    /// The directory uploads go into, when they are accepted.
    pub fn upload_dir(&self) -> Option<&Path> {
        self.write.as_ref().map(|w| w.dir.as_deref().unwrap_or(&self.root))
    }

    /// Refuses settings that cannot work, contradict each other, or are almost surely a
    /// mistake: `--root /` without `serve_whole_filesystem`, an upload network outside every
    /// `allow` network, the same listen address twice, upload risks not accepted one by one, a
    /// `--timeout` above [`MAX_TIMEOUT`], a port range that holds a listening port.
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
        if retransmit.rto.initial > MAX_TIMEOUT {
            return Err(ConfigError::TimeoutTooLong(retransmit.rto.initial));
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
        if self.io.blind_budget < MIN_BLIND_BUDGET {
            return Err(ConfigError::BlindBudgetTooSmall(self.io.blind_budget));
        }
        if self.io.blind_budget != BLIND_BUDGET && !self.io.single_port && self.io.port_range.is_none() {
            return Err(ConfigError::BlindBudgetUnused);
        }
        if let Some((lo, hi)) = self.io.port_range {
            if lo == 0 || lo > hi {
                return Err(ConfigError::PortRange(lo, hi));
            }
            if self.io.single_port {
                return Err(ConfigError::SinglePortWithPortRange);
            }
            if let Some(&listen) = self.listen.iter().find(|a| (lo..=hi).contains(&a.port())) {
                return Err(ConfigError::PortRangeHasListenPort { lo, hi, listen });
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
mod tests;
