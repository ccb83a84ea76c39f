//! Worker threads: one per core, each with its own sockets, engine and backend.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_utils::CachePadded;
use tracing::{info, warn};

use super::commit;
use super::engine::{Engine, EngineParts, EngineSettings};
use super::socket::{self, PortPicker, listen_socket};
use super::stats::{Counters, Latencies};
use super::{epoll, probe, uring};
use crate::config::{ConfigError, IoBackend, IoConfig, ServePolicy, ServerConfig, WriteConfig};
use crate::fs::{Root, UploadRoot};
use crate::proto::Timestamp;

pub(crate) use super::io::RX_SIZE;

/// The monotonic clock a worker feeds its engine.
#[derive(Debug)]
pub(crate) struct Clock(std::time::Instant);

impl Clock {
    pub(crate) fn new() -> Self {
        Self(std::time::Instant::now())
    }

    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

/// How the main thread tells a worker to stop: flags plus an eventfd the worker waits on.
#[derive(Debug)]
pub(crate) struct WorkerControl {
    stop: AtomicBool,
    abort: AtomicBool,
    wake: OwnedFd,
}

impl WorkerControl {
    fn new() -> io::Result<Self> {
        // Blocking: io_uring reads of a non-blocking eventfd complete with EAGAIN on some kernels
        // instead of waiting; epoll reads it only when it is readable.
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { stop: AtomicBool::new(false), abort: AtomicBool::new(false), wake })
    }

    pub(crate) fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    pub(crate) fn poke(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub(crate) fn drain_wake(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn abort_requested(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }
}

/// The I/O backend workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring: multishot receives into a provided-buffer ring, batched submissions.
    Uring,
    /// epoll with `recvmmsg`.
    Epoll,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Uring => "io_uring",
            Self::Epoll => "epoll",
        })
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is refused ([`ServerConfig::validate`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The root directory cannot be opened.
    #[error("cannot open root {path}: {source}")]
    Root {
        /// The root given.
        path: std::path::PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A listening socket cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Another socket already holds a listen address and port, or the same port on an
    /// overlapping address.
    #[error(
        "cannot listen on {addr}: another socket already holds port {} on this address or on one overlapping it \
         (the wildcard address, or a specific one); two servers on one port would split the requests between them; \
         find it with: \
         ss -ulpn 'sport = :{}'",
        .addr.port(),
        .addr.port()
    )]
    InUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The upload directory is in the served tree without --uploads-in-root.
    #[error("{0}")]
    Uploads(String),
    /// io_uring was required but is unusable.
    #[error("io_uring is unusable here: {0} (use --io epoll or --io auto)")]
    Uring(String),
    /// A worker failed to set up its backend.
    #[error("worker {worker} failed to start: {source}")]
    Worker {
        /// The worker's number.
        worker: usize,
        /// The cause.
        source: io::Error,
    },
}

/// Opens the upload directory; refuses one in the served tree unless allowed, and says at start
/// what each accepted upload risk means.
fn open_uploads(cfg: &ServerConfig, wc: &WriteConfig) -> Result<UploadRoot, StartError> {
    use crate::fs::TreeRelation;
    let dir = wc.dir.as_deref().unwrap_or(&cfg.root);
    let uploads = UploadRoot::open(dir).map_err(|source| StartError::Root { path: dir.to_path_buf(), source })?;
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

struct WorkerHandle {
    thread: JoinHandle<io::Result<Latencies>>,
    control: Arc<WorkerControl>,
    counters: Arc<CachePadded<Counters>>,
}

/// What a server reports when it has stopped.
#[derive(Debug)]
pub struct Report {
    /// Latencies merged over all workers.
    pub latencies: Latencies,
    /// Each worker's counters.
    pub workers: Vec<[(&'static str, u64); super::stats::COUNTERS]>,
}

/// A running server: its worker threads and their controls.
pub struct Server {
    workers: Vec<WorkerHandle>,
    local_addrs: Vec<SocketAddr>,
    backend: Backend,
    fallback_reason: Option<String>,
    gso: bool,
    committer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("workers", &self.workers.len())
            .field("local_addrs", &self.local_addrs)
            .field("backend", &self.backend)
            .finish()
    }
}

/// Raises the soft descriptor limit to the hard one; returns the soft limit now in force.
fn raise_fd_limit() -> u64 {
    // SAFETY: plain data out-parameter.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

/// Transfers each worker may hold: `--max-transfers`, and in the default mode (one socket per
/// transfer; an upload also holds its directory and file) no more than its share of three
/// quarters of the descriptors left after a reserve for listening sockets, files and the rest, so that the table fills (and never-acknowledged
/// transfers make room) before descriptors run out.
fn transfer_capacity(cfg: &ServerConfig, nofile: u64) -> usize {
    let max_transfers = cfg.io.max_transfers;
    if cfg.io.single_port {
        return max_transfers;
    }
    let workers = cfg.workers.max(1) as u64;
    // Listening sockets, rings, the commit thread; and the files each worker keeps open (its
    // idle cache, counted up to 256: a fleet boots from a handful of files).
    let reserve = 128 + workers * (32 + (cfg.file_cache as u64).min(256));
    let share = nofile.saturating_sub(reserve) / 4 * 3 / workers;
    max_transfers.min(usize::try_from(share).unwrap_or(usize::MAX)).max(1)
}

impl Server {
    /// Checks the configuration ([`ServerConfig::validate`]), opens the root, binds every
    /// worker's sockets, picks the backend and starts the workers. Returns once every worker is
    /// serving.
    pub fn start(cfg: ServerConfig) -> Result<Self, StartError> {
        cfg.validate()?;
        let nofile = raise_fd_limit();
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

        // No one else may hold a listen address: checked for all of them before binding any, as
        // the server's own addresses may overlap (0.0.0.0:69 and 10.0.0.1:69).
        for &addr in cfg.listen.iter().filter(|a| a.port() != 0) {
            socket::check_unheld(addr).map_err(|source| match source.raw_os_error() {
                Some(libc::EADDRINUSE) => StartError::InUse { addr },
                _ => StartError::Bind { addr, source },
            })?;
        }
        // Bind all sockets here, in worker order, so that a port 0 resolves once for all.
        let mut per_worker: Vec<Vec<UdpSocket>> = (0..cfg.workers).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        for &addr in &cfg.listen {
            let mut addr = addr;
            for sockets in per_worker.iter_mut() {
                let s = listen_socket(addr, cfg.io.recv_buffer).map_err(|source| StartError::Bind { addr, source })?;
                if addr.port() == 0 {
                    addr = s.local_addr().map_err(|source| StartError::Bind { addr, source })?;
                }
                sockets.push(s);
            }
            local_addrs.push(addr);
        }

        let (backend, fallback_reason) = match cfg.io.backend {
            IoBackend::Epoll => (Backend::Epoll, None),
            IoBackend::Uring => match probe::io_uring_usable() {
                Ok(()) => (Backend::Uring, None),
                Err(e) => return Err(StartError::Uring(e)),
            },
            IoBackend::Auto => match probe::io_uring_usable() {
                Ok(()) => (Backend::Uring, None),
                Err(e) => (Backend::Epoll, Some(e)),
            },
        };
        if let Some(why) = &fallback_reason {
            warn!(reason = %why, "io_uring is unusable, running on epoll");
        }

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
        // The I/O settings the workers run with: GSO only where the kernel has it.
        let io = IoConfig { gso: cfg.io.gso && socket::gso_supported(), ..cfg.io };
        let capacity = transfer_capacity(&cfg, nofile);
        if capacity < io.max_transfers {
            warn!(
                per_worker = capacity,
                descriptors = nofile,
                "the descriptor limit holds each worker below --max-transfers (raise LimitNOFILE, or use --single-port)"
            );
        }
        let policy = Arc::new(cfg.effective_policy());
        let settings = EngineSettings::of(&cfg);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(cfg.workers);
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
            let (policy, ctl, ready) = (Arc::clone(&policy), Arc::clone(&control), ready_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("bootstorm-w{w}"))
                .spawn(move || worker_main(w, core, backend, io, policy, settings, parts, listens, ctl, ready))
                .map_err(|source| StartError::Worker { worker: w, source })?;
            workers.push(WorkerHandle { thread, control, counters });
        }
        drop(ready_tx);
        let server = Self { workers, local_addrs, backend, fallback_reason, gso: io.gso, committer };
        for _ in 0..server.workers.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err((worker, source))) => {
                    server.abort();
                    return Err(StartError::Worker { worker, source });
                }
                Err(_) => break,
            }
        }
        info!(workers = server.workers.len(), backend = %backend, gso = io.gso, "serving");
        Ok(server)
    }

    /// The addresses listened on (ports resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether runs of DATA go out as one send cut by the kernel (UDP GSO): asked for in
    /// [`IoConfig::gso`] and supported by the kernel.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Why io_uring was not used, when `--io auto` fell back to epoll.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Stops accepting requests; transfers in progress get the grace period.
    pub fn stop(&self) {
        self.control().stop();
    }

    /// Ends every transfer now (each client gets an ERROR).
    pub fn abort(&self) {
        self.control().abort();
    }

    /// A handle that can stop or abort the server from another thread while one waits for it.
    pub fn control(&self) -> ServerControl {
        ServerControl(self.workers.iter().map(|w| Arc::clone(&w.control)).collect())
    }

    /// Each worker's counters now.
    pub fn counters(&self) -> Vec<[(&'static str, u64); super::stats::COUNTERS]> {
        self.workers.iter().map(|w| w.counters.snapshot()).collect()
    }

    /// Waits for every worker to finish (after [`stop`](Self::stop) or [`abort`](Self::abort)).
    pub fn wait(self) -> io::Result<Report> {
        let mut latencies = Latencies::new();
        let mut workers = Vec::new();
        let mut first_err = None;
        for w in self.workers {
            let joined = w.thread.join();
            // After the join: the worker's last transfers are counted.
            workers.push(w.counters.snapshot());
            match joined {
                Ok(Ok(l)) => latencies.merge(&l),
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(_) => first_err = first_err.or(Some(io::Error::other("worker panicked"))),
            }
        }
        // The commit thread ends once every worker has dropped its link.
        if let Some(c) = self.committer {
            let _ = c.join();
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(Report { latencies, workers }),
        }
    }
}

/// Stops or aborts a running [`Server`] from any thread.
#[derive(Clone, Debug)]
pub struct ServerControl(Vec<Arc<WorkerControl>>);

impl ServerControl {
    /// Stops accepting requests; transfers in progress get the grace period.
    pub fn stop(&self) {
        for c in &self.0 {
            c.stop.store(true, Ordering::Release);
            c.poke();
        }
    }

    /// Ends every transfer now (each client gets an ERROR).
    pub fn abort(&self) {
        for c in &self.0 {
            c.stop.store(true, Ordering::Release);
            c.abort.store(true, Ordering::Release);
            c.poke();
        }
    }
}

type Ready = crossbeam_channel::Sender<Result<(), (usize, io::Error)>>;

#[allow(clippy::too_many_arguments)]
fn worker_main(
    w: usize,
    core: Option<core_affinity::CoreId>,
    backend: Backend,
    io: IoConfig,
    policy: Arc<ServePolicy>,
    settings: EngineSettings,
    parts: EngineParts,
    listens: Vec<UdpSocket>,
    control: Arc<WorkerControl>,
    ready: Ready,
) -> io::Result<Latencies> {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core) {
            warn!(worker = w, core = core.id, "cannot pin worker to its core");
        }
    }
    let clock = Clock::new();
    let mut engine = Engine::new(w, policy, settings, parts, clock.now());
    let ports = PortPicker::new(io.port_range);
    let result = match backend {
        Backend::Epoll => match epoll::EpollIo::new(&io, listens, ports, control.wake_fd()) {
            Ok(mut io) => {
                let _ = ready.send(Ok(()));
                epoll::run(&mut engine, &mut io, &clock, &control, RX_SIZE)
            }
            Err(e) => Err(e),
        },
        Backend::Uring => match uring::Uring::new(&io, listens, ports, control.wake_fd()) {
            Ok(mut u) => {
                let _ = ready.send(Ok(()));
                uring::run(&mut engine, &mut u, &clock, &control)
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = &result {
        // If setup failed, start() is waiting for this.
        let _ = ready.send(Err((w, io::Error::new(e.kind(), e.to_string()))));
    }
    result.map(|()| engine.latencies().clone())
}
