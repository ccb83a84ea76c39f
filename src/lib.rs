//! bootstorm: a TFTP server for PXE-booting whole fleets at once.
//!
//! - [`proto`]: the protocol as a sans-IO state machine (codec, negotiation, transfers).
//! - [`net`]: raw socket addresses for `sendmsg`/`recvmsg`.
//! - [`ring`]: provided-buffer rings for io_uring receives (server and load generator).
//! - [`timer`]: an allocation-free timer wheel for many deadlines.
//! - [`fs`]: request paths, containment under the root, the per-worker cache of file maps.
//! - [`sys`]: kernel helpers shared by the server and the load generator.
//! - [`config`]: the server's configuration as plain values ([`config::ServerConfig`]: what is
//!   fixed while it runs, and the serving policy a reload may replace), with its validation.
//!   The command line that fills it belongs to the binary (`src/cli.rs`), not to the library.
//! - [`server`]: per-core workers, each an engine on an io_uring or epoll backend.
//!
//! See `docs/architecture.md` for the data flow and its invariants.

#![warn(missing_docs)]

pub mod config;
pub mod fs;
pub mod net;
pub mod proto;
pub mod remap;
pub mod ring;
pub mod server;
pub mod sys;
pub mod timer;
