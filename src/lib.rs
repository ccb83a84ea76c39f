//! bootstorm: a TFTP server for PXE-booting whole fleets at once.
//!
//! - [`proto`]: the protocol as a sans-IO state machine (codec, negotiation, transfers).
//!
//! See `docs/architecture.md` for the data flow and its invariants.

#![warn(missing_docs)]

pub mod proto;
