//! The server: per-core workers, each an engine on an I/O backend.
//!
//! [`Server::start`] validates its [`ServerConfig`](crate::config::ServerConfig), checks that
//! no other socket holds a listen address (else it refuses to start), binds one `SO_REUSEPORT`
//! socket per worker per listen address, probes io_uring, and starts the workers; each owns the
//! transfers whose requests its sockets received.
//! The engine (`engine.rs`) holds the logic; `uring.rs` and `epoll.rs` move datagrams for it.

pub mod stats;

pub(crate) mod commit;
pub(crate) mod engine;
pub(crate) mod epoll;
pub(crate) mod io;
pub(crate) mod limits;
pub(crate) mod probe;
pub(crate) mod reply_budget;
pub(crate) mod sendmsg;
pub(crate) mod socket;
pub(crate) mod uring;
pub(crate) mod worker;

pub use worker::{Backend, Report, Server, ServerControl, StartError};
