//! The per-client slots: each client's socket, timer link and session, the step in progress
//! and the dispatch over its state machine (a download or an upload).

use std::net::{SocketAddr, UdpSocket};

use bootstorm::proto::{ClientOutcome, ReadClient, Timestamp, WriteClient};
use bootstorm::sys::sockopt;
use bootstorm::timer::{Links, TimerLink};

use crate::plan::{Plan, Step};

/// The client state machine of a step: a download, or an upload (`--upload`).
pub(super) enum StepClient {
    /// A download (RRQ).
    Read(ReadClient),
    /// An upload (WRQ).
    Write(WriteClient),
}

impl StepClient {
    /// How the transfer ended, once it has.
    pub(super) fn outcome(&self) -> Option<ClientOutcome> {
        match self {
            Self::Read(c) => c.outcome(),
            Self::Write(c) => c.outcome(),
        }
    }

    /// When the state machine next wants [`handle_timeout`](ReadClient::handle_timeout).
    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        match self {
            Self::Read(c) => c.poll_timeout(),
            Self::Write(c) => c.poll_timeout(),
        }
    }

    /// Retransmissions so far.
    pub(super) fn retransmits(&self) -> u32 {
        match self {
            Self::Read(c) => c.retransmits(),
            Self::Write(c) => c.retransmits(),
        }
    }

    /// When the first DATA arrived (downloads only).
    pub(super) fn first_data(&self) -> Option<Timestamp> {
        match self {
            Self::Read(c) => c.first_data(),
            Self::Write(_) => None,
        }
    }
}

/// The step in progress.
pub(super) struct StepRun {
    /// Which step of the session.
    pub(super) step: Step,
    /// Its state machine.
    pub(super) client: StepClient,
    /// The server's transfer ID (address and port), once its first answer came.
    pub(super) tid: Option<SocketAddr>,
    /// When the step began.
    pub(super) started: Timestamp,
    /// DATA bytes received so far.
    pub(super) received: u64,
    /// An ACK being held back (`--hold`): block and when to send it.
    pub(super) held: Option<(u16, Timestamp)>,
}

/// A session in progress: the plan's steps, one after the other.
pub(super) struct Session {
    /// The session's number across all threads.
    pub(super) number: u64,
    /// When the session started.
    pub(super) started: Timestamp,
    /// Index of the current step in the plan.
    pub(super) step: usize,
    /// The current step, between its start and its end.
    pub(super) run: Option<StepRun>,
    /// Failed steps started again so far (`--session-retries`).
    pub(super) restarts: u32,
    /// When the failed step starts again, during the pause before a restart.
    pub(super) restart_at: Option<Timestamp>,
}

/// One client: its socket and what it is doing.
pub(super) struct Client {
    /// The client's number across all threads.
    pub(super) global: u64,
    /// The client's socket: a new one (a new port) for each step, or with `--reuse-port` one
    /// for every step and session; a restart (`--session-retries`) always takes a new one.
    pub(super) sock: UdpSocket,
    /// The client's place in the timer wheel.
    pub(super) link: TimerLink,
    /// Whether a multishot receive is armed on the socket.
    pub(super) armed: bool,
    /// The socket's generation: it counts the client's moves to a new port, so that the
    /// completions of a left socket's receive are told apart.
    pub(super) generation: u32,
    /// Storm arrival time of this client's session.
    pub(super) start_at: Option<Timestamp>,
    /// The session in progress, if any.
    pub(super) session: Option<Session>,
    /// The transfer ID of the client's previous step, to tell which wrong answers came from it.
    pub(super) previous_tid: Option<SocketAddr>,
    /// Whether the socket has carried a request: without `--reuse-port`, the next step moves
    /// to a new port.
    pub(super) carried: bool,
}

/// The thread's clients, by index; the timer wheel reaches their links through [`Links`].
pub(super) struct Clients(pub(super) Vec<Client>);

impl Links for Clients {
    fn link(&mut self, idx: u32) -> &mut TimerLink {
        &mut self.0[idx as usize].link
    }
}

/// Client `global`'s socket: non-blocking, bound to an ephemeral port on the source address
/// [`Plan::source_ip`] gives it, with GRO if asked.
pub(super) fn client_socket(plan: &Plan, global: u64) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::new(plan.source_ip(global), 0))?;
    s.set_nonblocking(true)?;
    if plan.gro {
        sockopt::enable_udp_gro(&s)?;
    }
    Ok(s)
}
