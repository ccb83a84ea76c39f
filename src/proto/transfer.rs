//! What the server's read and write transfers share: how a transfer ends ([`Outcome`]), what a
//! repeated request means to it ([`Repeat`]), and how long one nobody has confirmed waits.

use std::time::Duration;

use super::error::ErrorCode;
use super::sender::RetransmitConfig;

/// What a repeated request (same client address and port, same bytes) means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Nothing was acknowledged yet: the first answer was lost, and goes out again.
    ResendFirst,
    /// The transfer is under way: the repeat is ignored.
    Ignored,
    /// Every block has been sent and the client asks again: it has the file and is starting
    /// over (its final ACK may still be in flight on the transfer's socket). This transfer is
    /// complete; the owner starts a new one for the request.
    Finished,
}

/// How a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every block was acknowledged (or the client closed after the final block).
    Complete,
    /// The client read the OACK and stopped with ERROR 0 or 8: a size probe, not a failure.
    Probe,
    /// The client sent an ERROR.
    PeerError(ErrorCode),
    /// The client went silent.
    TimedOut,
    /// The server ended the transfer with an ERROR of this code.
    Aborted(ErrorCode),
}

impl Outcome {
    /// A one-word label for logs: ok, probe, error or timeout.
    pub fn label(self) -> &'static str {
        match self {
            Self::Complete => "ok",
            Self::Probe => "probe",
            Self::PeerError(_) | Self::Aborted(_) => "error",
            Self::TimedOut => "timeout",
        }
    }
}

/// How long a transfer nobody has acknowledged waits: the server's patience, or twice the
/// client's timeout if that is longer, but never more than twice the server's patience.
pub(super) fn unconfirmed_wait(base: &RetransmitConfig, client_timeout: Option<u8>) -> Duration {
    let client = Duration::from_secs(u64::from(client_timeout.unwrap_or(0))) * 2;
    base.patience.max(client).min(base.patience * 2)
}
