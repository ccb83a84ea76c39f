//! The client side of transfers, as a boot client or the load generator runs them: downloads
//! ([`ReadClient`]) and uploads ([`WriteClient`]).
//!
//! Driven like [`ReadTransfer`](super::read::ReadTransfer): feed packets and timeouts, poll what
//! to send. The owner tracks the server's port (the first answer's source becomes the
//! transfer ID) and encodes the request with [`ReadClient::encode_request`].
//!
//! The client checks an OACK as strictly as EDK2 does: only options it asked for, no larger
//! blksize or windowsize than requested, timeout echoed exactly. A violation is answered with
//! ERROR 8, so a server tested with this client is safe for UEFI firmware.

mod download;
mod upload;

use std::time::Duration;

use super::error::{BufferTooSmall, ErrorCode, TransferError, Violation};
use super::options::{DEFAULT_BLKSIZE, MIN_BLKSIZE};
use super::wire::{Mode, Options, RequestKind, encode_request, format_u64, parse_u64};

pub use download::{ClientTransmit, ReadClient};
pub use upload::{UploadTransmit, WriteClient};

/// Options a client asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// blksize to ask for.
    pub blksize: Option<u16>,
    /// windowsize to ask for.
    pub windowsize: Option<u16>,
    /// Ask for the transfer size (tsize 0).
    pub tsize: bool,
    /// timeout (seconds) to ask for.
    pub timeout: Option<u8>,
}

/// Client timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long to wait for the next packet before resending the last one.
    pub timeout: Duration,
    /// Resends before giving up.
    pub max_retries: u8,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(1), max_retries: 5 }
    }
}

/// How a download ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientOutcome {
    /// The final block arrived.
    Complete,
    /// The server sent an ERROR.
    ServerError(ErrorCode),
    /// The server went silent.
    TimedOut,
    /// The server broke the protocol (the client sent an ERROR saying why).
    ProtocolError(Violation),
}

impl ClientOutcome {
    /// Why the transfer ended badly, or `None` if it completed.
    pub fn error(self) -> Option<TransferError> {
        match self {
            Self::Complete => None,
            Self::ServerError(code) => Some(TransferError::Peer(code)),
            Self::TimedOut => Some(TransferError::TimedOut),
            Self::ProtocolError(v) => Some(TransferError::Violation(v)),
        }
    }
}

/// Checks an OACK as strictly as EDK2 does: only options asked for, blksize and windowsize no
/// larger than asked, timeout exactly as asked. Returns the block size, window and tsize.
fn check_oack(asked: &RequestOptions, opts: &Options<'_>) -> Result<(u16, u16, Option<u64>), Violation> {
    let mut blksize = DEFAULT_BLKSIZE;
    let mut window = 1u16;
    let mut tsize = None;
    for (name, value) in opts.iter() {
        let v = parse_u64(value).ok_or(Violation::OackNotANumber)?;
        if name.eq_ignore_ascii_case(b"blksize") {
            let a = asked.blksize.ok_or(Violation::OackUnaskedBlksize)?;
            if v < u64::from(MIN_BLKSIZE) || v > u64::from(a) {
                return Err(Violation::OackBlksizeOutOfRange);
            }
            blksize = v as u16;
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            let a = asked.windowsize.ok_or(Violation::OackUnaskedWindowsize)?;
            if v == 0 || v > u64::from(a) {
                return Err(Violation::OackWindowsizeOutOfRange);
            }
            window = v as u16;
        } else if name.eq_ignore_ascii_case(b"timeout") {
            let a = asked.timeout.ok_or(Violation::OackUnaskedTimeout)?;
            if v != u64::from(a) {
                return Err(Violation::OackTimeoutDiffers);
            }
        } else if name.eq_ignore_ascii_case(b"tsize") {
            if !asked.tsize {
                return Err(Violation::OackUnaskedTsize);
            }
            tsize = Some(v);
        } else {
            return Err(Violation::OackUnaskedOption);
        }
    }
    Ok((blksize, window, tsize))
}

/// Encodes a request with `options` (and tsize `tsize` when asked for).
fn encode_with_options(
    kind: RequestKind,
    filename: &[u8],
    mode: Mode,
    options: &RequestOptions,
    tsize: u64,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let mut digits = [[0u8; 20]; 4];
    let [d0, d1, d2, d3] = &mut digits;
    let mut opts: [(&[u8], &[u8]); 4] = [(&[], &[]); 4];
    let mut n = 0;
    if options.tsize {
        opts[n] = (b"tsize", format_u64(tsize, d3));
        n += 1;
    }
    if let Some(b) = options.blksize {
        opts[n] = (b"blksize", format_u64(u64::from(b), d0));
        n += 1;
    }
    if let Some(w) = options.windowsize {
        opts[n] = (b"windowsize", format_u64(u64::from(w), d1));
        n += 1;
    }
    if let Some(t) = options.timeout {
        opts[n] = (b"timeout", format_u64(u64::from(t), d2));
        n += 1;
    }
    encode_request(kind, filename, mode, opts[..n].iter().copied(), out)
}

#[cfg(test)]
mod tests;
