//! The server: per-core workers, each an engine on an I/O backend.
//!
//! [`Server::start`] (`start.rs`) validates its [`ServerConfig`](crate::config::ServerConfig),
//! checks that no other socket holds a listen address (else it refuses to start), binds one
//! `SO_REUSEPORT` socket per worker per listen address, probes io_uring, and starts the workers
//! (`worker.rs`); each owns the transfers whose requests its sockets received.
//! The engine (`engine`) holds the logic; `uring` and `epoll.rs` move datagrams for it, each
//! ending its loop turns the same way (`turn.rs`) and stopped, or given a new serving policy by
//! [`Server::reload`] (`reload.rs`), through a `WorkerControl` (`control.rs`).

pub mod stats;

pub(crate) mod commit;
pub(crate) mod control;
pub(crate) mod engine;
pub(crate) mod epoll;
pub(crate) mod io;
pub(crate) mod limits;
pub(crate) mod probe;
pub(crate) mod reload;
pub(crate) mod reply_budget;
pub(crate) mod rx_batch;
pub(crate) mod sendmsg;
pub(crate) mod socket;
pub(crate) mod start;
pub(crate) mod transfer_sockets;
pub(crate) mod turn;
pub(crate) mod uring;
pub(crate) mod worker;

pub use probe::UringUnusable;
pub use reload::Reloaded;
pub use start::StartError;
pub use worker::Backend;
pub use worker::{CounterReader, Report, Server, ServerControl};
