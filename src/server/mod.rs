//! The server: per-core workers, each an [`engine::Engine`] on an I/O backend.

pub mod stats;

pub(crate) mod engine;
pub(crate) mod io;
pub(crate) mod socket;
pub(crate) mod timer;
