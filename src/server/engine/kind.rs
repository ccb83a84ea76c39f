//! What a transfer is: a read (a file version sent from its mapping) or a write (an upload into
//! an unnamed file, made at its first DATA), behind one interface for the engine.

use crate::fs::Upload;
use crate::proto::{LocalFailure, Outcome, ReadTransfer, Repeat, RetransmitConfig, Timestamp, WriteTransfer};

/// An upload's state besides the protocol: the file being written and where it stands.
#[derive(Debug)]
pub(super) struct WriteState {
    pub(super) xfer: WriteTransfer,
    /// The upload (its file is made at the first DATA); `None` once handed to the commit thread.
    pub(super) upload: Option<Upload>,
    pub(super) name: Box<str>,
}

/// A read or a write.
#[derive(Debug)]
pub(super) enum Kind {
    /// (Its mode is the transfer's, and its file version is kept with its request: see
    /// `Asked::file`.)
    Read { xfer: ReadTransfer },
    /// Boxed: uploads are rare, and reads keep the slot small.
    Write(Box<WriteState>),
}

impl Kind {
    pub(super) fn outcome(&self) -> Option<Outcome> {
        match self {
            Self::Read { xfer, .. } => xfer.outcome(),
            Self::Write(w) => w.xfer.outcome(),
        }
    }

    pub(super) fn wants_transmit(&self) -> bool {
        match self {
            Self::Read { xfer, .. } => xfer.wants_transmit(),
            Self::Write(w) => w.xfer.wants_transmit(),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        match self {
            Self::Read { xfer, .. } => xfer.poll_timeout(),
            Self::Write(w) => w.xfer.poll_timeout(),
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Timestamp, cfg: &RetransmitConfig) {
        match self {
            Self::Read { xfer, .. } => xfer.handle_timeout(now, cfg),
            Self::Write(w) => w.xfer.handle_timeout(now, cfg),
        }
    }

    pub(super) fn handle_repeated_request(&mut self, now: Timestamp, cfg: &RetransmitConfig) -> Repeat {
        match self {
            Self::Read { xfer, .. } => xfer.handle_repeated_request(now, cfg),
            Self::Write(w) => w.xfer.handle_repeated_request(now, cfg),
        }
    }

    /// Ends the transfer with the ERROR that reports `reason`.
    pub(super) fn fail(&mut self, reason: LocalFailure) {
        match self {
            Self::Read { xfer, .. } => xfer.fail(reason),
            Self::Write(w) => w.xfer.fail(reason),
        }
    }

    pub(super) fn cancel(&mut self, outcome: Outcome) {
        match self {
            Self::Read { xfer, .. } => xfer.cancel(outcome),
            Self::Write(w) => w.xfer.cancel(outcome),
        }
    }

    pub(super) fn started(&self) -> Timestamp {
        match self {
            Self::Read { xfer, .. } => xfer.started(),
            Self::Write(w) => w.xfer.started(),
        }
    }

    /// When the transfer really ended (an upload's commit, before its dally), if it did.
    pub(super) fn completed(&self) -> Option<Timestamp> {
        match self {
            Self::Read { .. } => None,
            Self::Write(w) => w.xfer.completed(),
        }
    }

    /// Whether the client has shown nothing yet: no ACK of a read's first answer, no DATA of an
    /// upload. Such a transfer may be a forged request's, and is the first to go when room runs
    /// out.
    pub(super) fn is_unconfirmed(&self) -> bool {
        match self {
            Self::Read { xfer, .. } => !xfer.is_confirmed(),
            Self::Write(w) => w.upload.is_some() && w.xfer.received() == 0 && w.xfer.completed().is_none(),
        }
    }

    /// An upload only dallying for a lost final ACK.
    pub(super) fn is_dallying(&self) -> bool {
        matches!(self, Self::Write(w) if w.xfer.completed().is_some() && w.xfer.outcome().is_none())
    }

    pub(super) fn retransmits(&self) -> u32 {
        match self {
            Self::Read { xfer, .. } => xfer.retransmits(),
            Self::Write(w) => w.xfer.retransmits(),
        }
    }

    /// Bytes delivered: acknowledged by the client (read) or received in order (write).
    pub(super) fn bytes(&self) -> u64 {
        match self {
            Self::Read { xfer, .. } => xfer.bytes_acked(),
            Self::Write(w) => w.xfer.received(),
        }
    }

    /// Blocks delivered: acknowledged by the client (read), or received in order (write).
    pub(super) fn blocks(&self) -> u64 {
        match self {
            Self::Read { xfer, .. } => xfer.sender().acked(),
            Self::Write(w) => w.xfer.received().div_ceil(u64::from(w.xfer.blksize().max(1))),
        }
    }

    pub(super) fn direction(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Write(_) => "write",
        }
    }
}
