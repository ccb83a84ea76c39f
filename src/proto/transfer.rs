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
    /// The client asked for `tsize`, read the OACK and stopped with ERROR 8 (or said "User
    /// aborted"): EDK2's size probe, not a failure.
    Probe,
    /// The client answered the OACK with an ERROR that is no size probe: an old ROM refusing
    /// the options (it may ask again without them).
    Rejected(ErrorCode),
    /// The client sent an ERROR.
    PeerError(ErrorCode),
    /// The client went silent.
    TimedOut,
    /// The server ended the transfer with an ERROR of this code.
    Aborted(ErrorCode),
}

impl Outcome {
    /// A one-word label for logs: ok, probe, rejected, error or timeout. (An ERROR from the
    /// client and one of ours are both `error`; the `code` beside it and the record's `by` tell
    /// them apart.)
    pub fn label(self) -> &'static str {
        match self {
            Self::Complete => "ok",
            Self::Probe => "probe",
            Self::Rejected(_) => "rejected",
            Self::PeerError(_) => "client_error",
            Self::Aborted(_) => "error",
            Self::TimedOut => "timeout",
        }
    }

    /// The ERROR code that ended the transfer, whoever sent it.
    pub fn code(self) -> Option<ErrorCode> {
        match self {
            Self::Rejected(c) | Self::PeerError(c) | Self::Aborted(c) => Some(c),
            Self::Complete | Self::Probe | Self::TimedOut => None,
        }
    }

    /// Who ended it with an ERROR: `client` or `server`; `None` when nobody sent one.
    pub fn by(self) -> Option<&'static str> {
        match self {
            Self::Rejected(_) | Self::PeerError(_) => Some("client"),
            Self::Aborted(_) => Some("server"),
            Self::Complete | Self::Probe | Self::TimedOut => None,
        }
    }
}

/// Whether an ERROR right after an OACK is a size probe (EDK2: it asked for `tsize`, read it,
/// and stops with ERROR 8 "User aborted the transfer") rather than a refusal of the OACK.
pub(super) fn is_size_probe(tsize_asked: bool, code: ErrorCode, message: &[u8]) -> bool {
    const ABORTED: &[u8] = b"user aborted";
    let aborted = message.len() >= ABORTED.len() && message[..ABORTED.len()].eq_ignore_ascii_case(ABORTED);
    tsize_asked && (code == ErrorCode::OPTION_REFUSED || aborted)
}

/// How long a transfer nobody has acknowledged waits: the server's patience, or twice the
/// client's timeout if that is longer, but never more than twice the server's patience.
pub(super) fn unconfirmed_wait(base: &RetransmitConfig, client_timeout: Option<u8>) -> Duration {
    let client = Duration::from_secs(u64::from(client_timeout.unwrap_or(0))) * 2;
    base.patience.max(client).min(base.patience * 2)
}
