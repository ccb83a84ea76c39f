//! The running server: its worker threads (one per core, each with its own sockets, engine and
//! backend) and the handle that stops them and collects their reports. [`Server::start`] is in
//! `start.rs`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_utils::CachePadded;
use tracing::warn;

use super::control::WorkerControl;
use super::engine::{Engine, EngineParts, EngineSettings};
use super::socket::PortPicker;
use super::stats::{CounterSnapshot, Counters, Latencies};
use super::{epoll, uring};
use crate::config::{IoConfig, ServePolicy};
use crate::sys::clock::Clock;

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

/// A started worker thread, its control and its counters.
pub(super) struct WorkerHandle {
    pub(super) thread: JoinHandle<io::Result<Latencies>>,
    pub(super) control: Arc<WorkerControl>,
    pub(super) counters: Arc<CachePadded<Counters>>,
}

/// What a server reports when it has stopped.
#[derive(Debug)]
pub struct Report {
    /// Latencies merged over all workers.
    pub latencies: Latencies,
    /// Each worker's counters.
    pub workers: Vec<CounterSnapshot>,
}

/// A running server: its worker threads and their controls.
pub struct Server {
    pub(super) workers: Vec<WorkerHandle>,
    pub(super) local_addrs: Vec<SocketAddr>,
    pub(super) backend: Backend,
    pub(super) fallback_reason: Option<String>,
    pub(super) gso: bool,
    pub(super) committer: Option<JoinHandle<()>>,
    /// The descriptor limit after raising it.
    pub(super) nofile: u64,
    /// The smallest receive buffer granted to a listening socket.
    pub(super) recv_buffer_granted: Option<usize>,
    /// The configuration the server was started with: its fixed settings are those in force (a
    /// reload compares against them); the serving policy in force is the last reload's
    /// (`reload.rs`).
    pub(super) config: crate::config::ServerConfig,
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

impl Server {
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
    pub fn counters(&self) -> Vec<CounterSnapshot> {
        self.counter_reader().read()
    }

    /// A handle that reads the workers' counters from another thread for as long as it is kept,
    /// through the grace period after a stop and after [`wait`](Self::wait) too.
    pub fn counter_reader(&self) -> CounterReader {
        CounterReader(self.workers.iter().map(|w| Arc::clone(&w.counters)).collect())
    }

    /// Waits for every worker to finish (after [`stop`](Self::stop) or [`abort`](Self::abort)).
    pub fn wait(self) -> io::Result<Report> {
        let mut latencies = Latencies::new();
        let mut workers = Vec::new();
        let mut first_err = None;
        for w in self.workers {
            let joined = w.thread.join();
            // After the join: the worker's last transfers are counted.
            workers.push(w.counters.values());
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

/// Reads each worker's counters (see [`Server::counter_reader`]).
#[derive(Clone)]
pub struct CounterReader(Vec<Arc<CachePadded<Counters>>>);

impl CounterReader {
    /// Each worker's counters now.
    pub fn read(&self) -> Vec<CounterSnapshot> {
        self.0.iter().map(|c| c.values()).collect()
    }
}

impl std::fmt::Debug for CounterReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterReader").field("workers", &self.0.len()).finish()
    }
}

/// Stops or aborts a running [`Server`] from any thread.
#[derive(Clone, Debug)]
pub struct ServerControl(Vec<Arc<WorkerControl>>);

impl ServerControl {
    /// Stops accepting requests; transfers in progress get the grace period.
    pub fn stop(&self) {
        for c in &self.0 {
            c.request_stop();
        }
    }

    /// Ends every transfer now (each client gets an ERROR).
    pub fn abort(&self) {
        for c in &self.0 {
            c.request_abort();
        }
    }
}

/// Where a worker says whether its backend is set up (`Err`: which worker, and why not).
pub(super) type Ready = crossbeam_channel::Sender<Result<(), (usize, io::Error)>>;

/// Closed (dropped) by [`Server::start`](super::Server::start) once the process may serve:
/// after every worker is ready and what must come before serving (dropping root) is done.
pub(super) type Go = crossbeam_channel::Receiver<()>;

/// A worker thread: pins itself, sets up its backend, says so on `ready`, waits for `go` to
/// close, and runs the engine until it has finished after a stop; returns its latencies.
#[allow(clippy::too_many_arguments)]
pub(super) fn worker_main(
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
    go: Go,
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
                let _ = go.recv();
                epoll::run(&mut engine, &mut io, &clock, &control)
            }
            Err(e) => Err(e),
        },
        Backend::Uring => match uring::Uring::new(&io, listens, ports, control.wake_fd(), clock) {
            Ok(mut u) => {
                let _ = ready.send(Ok(()));
                let _ = go.recv();
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
