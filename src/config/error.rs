//! Why a configuration is refused. The messages name the command-line flags, since that is how
//! an operator meets each setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Cidr, MAX_TIMEOUT};
use crate::proto::options::{MAX_BLKSIZE, MAX_WINDOWSIZE, MIN_BLKSIZE};

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
    /// A first retransmission timeout above [`MAX_TIMEOUT`].
    #[error("{}", timeout_too_long(*.0))]
    TimeoutTooLong(Duration),
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
    /// A range of transfer ports that holds a listening port.
    #[error(
        "--port-range {lo}:{hi} includes port {} of --listen {listen}: a transfer could take the listening port \
         (or find it taken); choose a range that leaves it out",
        .listen.port()
    )]
    PortRangeHasListenPort {
        /// The range's first port.
        lo: u16,
        /// The range's last port.
        hi: u16,
        /// The listen address whose port is in the range.
        listen: SocketAddr,
    },
    /// One listening port for every transfer, and a range of transfer ports.
    #[error(
        "--single-port contradicts --port-range: transfers either share the listening port or take theirs from the range"
    )]
    SinglePortWithPortRange,
    /// A blind budget other than the default where no forger can predict a transfer ID.
    #[error(
        "--blind-budget applies only with --single-port or --port-range (in the default mode each transfer's port is its secret)"
    )]
    BlindBudgetUnused,
    /// A blind budget below one DATA of 512 bytes.
    #[error("--blind-budget {0}: at least 516 bytes (one DATA of 512 bytes with its header)")]
    BlindBudgetTooSmall(u32),
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
    /// A `--client-dir` template that names no client or could leave the root.
    #[error("--client-dir {template:?}: {why} (a directory beneath --root with {{ip}}, {{hexip}} or {{mac}})")]
    ClientDir {
        /// The template as given.
        template: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `--strip-prefix` that names no directory, or climbs out of one.
    #[error("--strip-prefix {0:?}: name a leading directory of requested names (e.g. /tftpboot/), without `..`")]
    StripPrefix(String),
}

/// The networks, comma-separated.
fn joined(nets: &[Cidr]) -> String {
    nets.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ")
}

/// The message for a `--timeout` above [`MAX_TIMEOUT`], with the tftpd-hpa habit it most likely
/// comes from: `-T` in microseconds (a value of a thousand or more), or `-t`, an idle exit.
fn timeout_too_long(t: Duration) -> String {
    let secs = t.as_secs_f64();
    let max = MAX_TIMEOUT.as_secs();
    let hint = if secs >= 1000.0 {
        format!("did you mean --timeout {}? tftpd-hpa's -T is in microseconds", secs / 1e6)
    } else {
        "tftpd-hpa's -t (exit when idle) has no counterpart here: bootstorm runs until stopped".to_string()
    };
    format!(
        "--timeout {secs} is in seconds and above {max} s: a first retransmission timeout that long holds a silent \
         client for hours; {hint}"
    )
}
