//! Starting a server: the root and the upload directory opened, the listening sockets bound (or
//! taken from the service manager), the backend chosen, the workers started ([`Server::start`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use tracing::{debug, warn};

use super::commit;
use super::control::WorkerControl;
use super::engine::{EngineParts, EngineSettings};
use super::probe::{self, UringUnusable};
use super::socket;
use super::stats::Counters;
use super::worker::{Backend, Server, WorkerHandle, worker_main};
use crate::config::{ConfigError, IoBackend, IoConfig, ServerConfig, WriteConfig};
use crate::fs::{Root, UploadRoot};
use crate::sys::activation::{self, ActivationError};
use crate::sys::rlimit;

mod listen;

use listen::{adopt_listen, bind_listen, list};

/// Why a server could not start. The message says what failed; the cause (an OS error, why
/// io_uring is unusable) is only its [`source`](std::error::Error::source), so that a caller
/// printing the chain prints it once.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is refused ([`ServerConfig::validate`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The root directory cannot be opened.
    #[error("cannot open root {}", .path.display())]
    Root {
        /// The root given.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The upload directory cannot be opened.
    #[error("cannot open --upload-dir {}", .path.display())]
    UploadDir {
        /// The directory given.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A listening socket cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A port below 1024 without the privilege to bind it.
    #[error("cannot listen on {addr}: port {} needs root or CAP_NET_BIND_SERVICE", .addr.port())]
    Privileged {
        /// The address.
        addr: SocketAddr,
        /// The cause (`EACCES`).
        #[source]
        source: io::Error,
    },
    /// Another socket already holds a listen address and port, or the same port on an
    /// overlapping address.
    #[error(
        "cannot listen on {addr}: another socket already holds port {} on this address or on one overlapping it \
         (the wildcard address, or a specific one); two servers on one port would split the requests between them \
         (see `ss -ulpn 'sport = :{}'`)",
        .addr.port(),
        .addr.port()
    )]
    InUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The sockets the service manager passed cannot be served from.
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// Listen addresses were asked for that are not those of the sockets the service manager
    /// passed.
    #[error(
        "the service manager passed sockets on {} (socket activation), but the listen addresses asked for are {}: \
         leave --listen out (the .socket unit's ListenDatagram= lines say where to listen), or name exactly those",
        list(.passed),
        list(.configured)
    )]
    ListenNotPassed {
        /// The passed sockets' addresses.
        passed: Vec<SocketAddr>,
        /// The listen addresses configured.
        configured: Vec<SocketAddr>,
    },
    /// `--single-port` with several workers, on a passed socket they would have to share.
    #[error(
        "--single-port with {workers} workers needs each worker's own socket on {addr}, and the socket the service \
         manager passed cannot be joined ({}): use --workers 1, or let bootstorm bind the port itself (start the \
         service without its .socket unit)",
        if *.reuse_port {
            "it belongs to another user, or the port needs CAP_NET_BIND_SERVICE"
        } else {
            "it has no SO_REUSEPORT: ReusePort=yes in the .socket unit, with the service started as the same user"
        }
    )]
    SinglePortShared {
        /// The socket's address.
        addr: SocketAddr,
        /// Workers configured.
        workers: usize,
        /// Whether the passed socket has `SO_REUSEPORT`.
        reuse_port: bool,
    },
    /// The upload directory is in the served tree without --uploads-in-root.
    #[error("{0}")]
    Uploads(String),
    /// io_uring was required but is unusable; the cause says why.
    #[error("io_uring is unusable here (use --io epoll or --io auto)")]
    Uring(#[from] UringUnusable),
    /// What had to be done before serving failed ([`Server::start_then`]).
    #[error(transparent)]
    BeforeServing(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A worker failed to set up its backend.
    #[error("worker {worker} failed to start")]
    Worker {
        /// The worker's number.
        worker: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl StartError {
    /// A failed bind of `addr`, with the hint its cause calls for.
    fn bind(addr: SocketAddr, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EADDRINUSE) => Self::InUse { addr },
            Some(libc::EACCES) => Self::Privileged { addr, source },
            _ => Self::Bind { addr, source },
        }
    }
}

/// The backend `wanted` on this kernel, and why io_uring was passed over when `auto` fell back
/// to epoll (logged here).
fn choose_backend(wanted: IoBackend) -> Result<(Backend, Option<String>), StartError> {
    let fallback = match wanted {
        IoBackend::Epoll => return Ok((Backend::Epoll, None)),
        IoBackend::Uring => return probe::check().map(|()| (Backend::Uring, None)).map_err(StartError::from),
        IoBackend::Auto => match probe::check() {
            Ok(()) => return Ok((Backend::Uring, None)),
            Err(why) => why,
        },
    };
    warn!(reason = %fallback, "io_uring is unusable, running on epoll");
    Ok((Backend::Epoll, Some(fallback.to_string())))
}

/// Opens the upload directory; refuses one in the served tree unless allowed, and says at start
/// what each accepted upload risk means.
fn open_uploads(cfg: &ServerConfig, wc: &WriteConfig) -> Result<UploadRoot, StartError> {
    use crate::fs::TreeRelation;
    let dir = wc.dir.as_deref().unwrap_or(&cfg.root);
    let uploads = UploadRoot::open(dir).map_err(|source| StartError::UploadDir { path: dir.to_path_buf(), source })?;
    let relation =
        uploads.relation_to(&cfg.root).map_err(|source| StartError::Root { path: cfg.root.clone(), source })?;
    let where_ = match relation {
        TreeRelation::Separate => None,
        TreeRelation::Same => Some("is the served root"),
        TreeRelation::Inside => Some("is inside the served root"),
        TreeRelation::Contains => Some("contains the served root"),
    };
    if let Some(where_) = where_ {
        if !wc.in_served_tree {
            return Err(StartError::Uploads(format!(
                "--upload-dir {} {where_} {}: every client could fetch uploads, and uploads could replace what \
                 clients boot; use an upload directory outside the root, or --uploads-in-root to accept that",
                dir.display(),
                cfg.root.display()
            )));
        }
        warn!(
            dir = %dir.display(),
            "--uploads-in-root: uploads land in the served tree, so every client can fetch what any uploader (or \
             anyone forging an uploader's address) puts there"
        );
        if cfg.serve.upload.overwrite {
            warn!(
                "--overwrite-served-files: an upload may replace any file the server serves (boot loaders, kernels, \
                 pxelinux.cfg); one forged upload changes what every client boots"
            );
        }
    }
    if cfg.io.single_port {
        warn!(
            "--allow-single-port-uploads: every transfer shares the listening port, so anyone who can forge an \
             address that --allow-write-from accepts can upload blind with two datagrams (WRQ, then DATA 1); use it \
             only where source addresses cannot be forged"
        );
    }
    Ok(uploads)
}

/// Descriptors kept for what is not a transfer: listening sockets, rings, the commit thread;
/// and the files each worker keeps open (its idle cache, counted up to 256: a fleet boots from a
/// handful of files).
fn reserved_descriptors(cfg: &ServerConfig) -> u64 {
    let workers = cfg.workers.max(1) as u64;
    128 + workers * (32 + (cfg.file_cache as u64).min(256))
}

/// The descriptor limit at which [`transfer_capacity`] gives every worker its whole share of
/// `--max-transfers` (one socket per transfer in the default mode).
fn descriptors_needed(cfg: &ServerConfig) -> u64 {
    if cfg.io.single_port {
        return 0;
    }
    reserved_descriptors(cfg).saturating_add((cfg.io.max_transfers as u64).saturating_mul(4).div_ceil(3))
}

/// Transfers each worker may hold: its even share of `--max-transfers` (a server total, as
/// dnsmasq's `--tftp-max`), and in the default mode (one socket per transfer; an upload also
/// holds its directory and file) no more than its share of three quarters of the descriptors left
/// after [`reserved_descriptors`], so that the table fills (and never-acknowledged transfers make
/// room) before descriptors run out.
fn transfer_capacity(cfg: &ServerConfig, nofile: u64) -> usize {
    let workers = cfg.workers.max(1);
    let share = cfg.io.max_transfers.div_ceil(workers).max(1);
    if cfg.io.single_port {
        return share;
    }
    let fit = nofile.saturating_sub(reserved_descriptors(cfg)) / 4 * 3 / workers as u64;
    share.min(usize::try_from(fit).unwrap_or(usize::MAX)).max(1)
}

impl Server {
    /// The descriptor limit (`RLIMIT_NOFILE`) the server runs under, after raising the soft
    /// limit to the hard one (`u64::MAX` when it cannot be read).
    pub fn nofile_limit(&self) -> u64 {
        self.nofile
    }

    /// The receive buffer the kernel granted the listening sockets (the smallest, in the bytes
    /// `--recv-buffer` asks for), when it could be read back.
    pub fn recv_buffer_granted(&self) -> Option<usize> {
        self.recv_buffer_granted
    }

    /// Checks the configuration ([`ServerConfig::validate`]), opens the root, binds every
    /// worker's sockets, picks the backend and starts the workers. Returns once every worker is
    /// serving.
    pub fn start(cfg: ServerConfig) -> Result<Self, StartError> {
        Self::start_then(cfg, || Ok::<(), std::convert::Infallible>(()))
    }

    /// As [`start`](Self::start), and runs `before_serving` once everything privileged is done
    /// (root and upload directory opened, sockets bound, every worker's backend set up) and
    /// before any request is served: the place to drop root. Its error stops the workers and
    /// is returned as [`StartError::BeforeServing`].
    pub fn start_then<E>(cfg: ServerConfig, before_serving: impl FnOnce() -> Result<(), E>) -> Result<Self, StartError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        cfg.validate()?;
        let nofile = rlimit::raise_fd_limit();
        let root = Root::open(&cfg.root, cfg.follow_symlinks)
            .map_err(|source| StartError::Root { path: cfg.root.clone(), source })?;
        if !root.uses_openat2() {
            warn!("openat2 is unavailable: symbolic links are refused everywhere under the root");
        }
        let root = Arc::new(root);
        let uploads = match &cfg.write {
            Some(wc) => Some(Arc::new(open_uploads(&cfg, wc)?)),
            None => None,
        };

        let inherited = activation::take()?;
        let (per_worker, local_addrs) =
            if inherited.is_empty() { bind_listen(&cfg)? } else { adopt_listen(&cfg, inherited)? };
        let recv_buffer_granted = per_worker.iter().flatten().filter_map(|s| socket::recv_buffer_granted(s).ok()).min();
        if let Some(granted) = recv_buffer_granted.filter(|&g| g < cfg.io.recv_buffer) {
            warn!(
                asked = cfg.io.recv_buffer,
                granted,
                "the kernel granted a smaller receive buffer than --recv-buffer (net.core.rmem_max caps it without \
                 CAP_NET_ADMIN): a burst of requests may be dropped; raise net.core.rmem_max or give the service \
                 CAP_NET_ADMIN"
            );
        }

        let (backend, fallback_reason) = choose_backend(cfg.io.backend)?;

        let cores = if cfg.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let controls: Vec<Arc<WorkerControl>> = (0..cfg.workers)
            .map(|w| WorkerControl::new().map(Arc::new).map_err(|source| StartError::Worker { worker: w, source }))
            .collect::<Result<_, _>>()?;
        // Uploads are committed (synced, renamed into place) on their own thread.
        let (mut commit_links, committer) = if uploads.is_some() {
            let wake: Vec<Arc<WorkerControl>> = controls.clone();
            let (links, thread) = commit::start(cfg.workers, move |w| wake[w].poke())
                .map_err(|source| StartError::Worker { worker: 0, source })?;
            (links.into_iter().map(Some).collect(), Some(thread))
        } else {
            ((0..cfg.workers).map(|_| None).collect::<Vec<_>>(), None)
        };
        let capacity = transfer_capacity(&cfg, nofile);
        if capacity.saturating_mul(cfg.workers) < cfg.io.max_transfers {
            warn!(
                descriptors = nofile,
                needed = descriptors_needed(&cfg),
                max_transfers = cfg.io.max_transfers,
                per_worker = capacity,
                "the descriptor limit is below what --max-transfers needs over the workers: the server holds \
                 fewer transfers at once (raise LimitNOFILE, or lower --max-transfers, or use --single-port)"
            );
        }
        // The I/O settings the workers run with: GSO only where the kernel has it, and each
        // worker's share of the transfers.
        let io = IoConfig { gso: cfg.io.gso && socket::gso_supported(), max_transfers: capacity, ..cfg.io };
        let policy = Arc::new(cfg.effective_policy());
        let settings = EngineSettings::of(&cfg);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(cfg.workers);
        // Never sent on: dropped to let the workers serve.
        let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
        let mut workers = Vec::new();
        for (w, listens) in per_worker.into_iter().enumerate() {
            let control = Arc::clone(&controls[w]);
            let counters = Arc::new(CachePadded::new(Counters::default()));
            let core = (!cores.is_empty()).then(|| cores[w % cores.len()]);
            let parts = EngineParts {
                root: Arc::clone(&root),
                uploads: uploads.clone(),
                commits: commit_links[w].take(),
                counters: Arc::clone(&counters),
                capacity,
            };
            let (policy, ctl, ready, go) = (Arc::clone(&policy), Arc::clone(&control), ready_tx.clone(), go_rx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("bootstorm-w{w}"))
                .spawn(move || worker_main(w, core, backend, io, policy, settings, parts, listens, ctl, ready, go))
                .map_err(|source| StartError::Worker { worker: w, source })?;
            workers.push(WorkerHandle { thread, control, counters });
        }
        drop(ready_tx);
        let server = Self {
            workers,
            local_addrs,
            backend,
            fallback_reason,
            gso: io.gso,
            committer,
            nofile,
            recv_buffer_granted,
            config: cfg.clone(),
        };
        drop(go_rx);
        for _ in 0..server.workers.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err((worker, source))) => {
                    server.abort();
                    drop(go_tx);
                    return Err(StartError::Worker { worker, source });
                }
                Err(_) => break,
            }
        }
        if let Err(e) = before_serving() {
            // The workers see the abort as soon as they are let go.
            server.abort();
            drop(go_tx);
            return Err(StartError::BeforeServing(e.into()));
        }
        drop(go_tx);
        debug!(workers = server.workers.len(), backend = %backend, gso = io.gso, "workers started");
        Ok(server)
    }
}
