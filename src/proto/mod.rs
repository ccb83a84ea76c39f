//! The TFTP protocol, free of I/O: no sockets, no clock, no file system.
//!
//! Everything here is fed bytes and time and answers with what to send and when to wake up, so
//! that it is tested without sockets (including a lossy-link simulation in virtual time) and
//! shared by the server and the load generator.
//!
//! - [`wire`]: the packet codec (borrowed views, encoding into caller memory).
//! - [`options`]: option negotiation (blksize, timeout, tsize, windowsize).
//! - [`read`], [`write`](mod@write): the server's read and write transfers, and [`transfer`], what they
//!   share; [`client`]: a client's download and upload.
//! - [`error`]: error codes, decode errors, and why a transfer ended badly ([`TransferError`]).
//! - [`sender`], [`receiver`]: the window halves those are built from.
//! - [`rtt`]: the adaptive retransmission timeout; [`netascii`]: the text mode.

pub mod client;
pub mod error;
pub mod netascii;
pub mod options;
pub mod read;
pub mod receiver;
pub mod rtt;
pub mod sender;
pub mod time;
pub mod transfer;
pub mod wire;
pub mod write;

pub use client::{
    ClientConfig, ClientOutcome, ClientTransmit, ReadClient, RequestOptions, UploadTransmit, WriteClient,
};
pub use error::{BufferTooSmall, DecodeError, ErrorCode, LocalFailure, TransferError, Violation};
pub use options::{Limits, Negotiated, negotiate};
pub use read::{ReadTransfer, Transmit};
pub use rtt::RtoBounds;
pub use sender::RetransmitConfig;
pub use time::Timestamp;
pub use transfer::{Outcome, Repeat};
pub use wire::{Mode, Packet, Request, RequestKind};
pub use write::{WriteTransfer, WriteTransmit};
