//! Error types of the protocol layer.
//!
//! [`ErrorCode`] is the number carried in an ERROR packet (RFC 1350 §5, RFC 2347 for code 8).
//! [`DecodeError`] says why a datagram is not a valid TFTP packet; it is `Copy` and carries no
//! heap data, so that rejecting garbage costs nothing.
//!
//! Above the codec, [`TransferError`] says why a transfer ended badly: the peer's ERROR, its
//! silence, a [`Violation`] of the protocol, or a [`LocalFailure`]. Each maps to the ERROR that
//! reports it (code and static message) in one place, here.

use std::fmt;

/// The error code of a TFTP ERROR packet.
///
/// A newtype rather than an enum so that codes outside 0–8 sent by a peer survive a round trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// 0: not defined, see the error message.
    pub const NOT_DEFINED: Self = Self(0);
    /// 1: file not found.
    pub const FILE_NOT_FOUND: Self = Self(1);
    /// 2: access violation.
    pub const ACCESS_VIOLATION: Self = Self(2);
    /// 3: disk full or allocation exceeded.
    pub const DISK_FULL: Self = Self(3);
    /// 4: illegal TFTP operation.
    pub const ILLEGAL_OPERATION: Self = Self(4);
    /// 5: unknown transfer ID (a packet from a port that is not the transfer's peer).
    pub const UNKNOWN_TID: Self = Self(5);
    /// 6: file already exists.
    pub const FILE_EXISTS: Self = Self(6);
    /// 7: no such user.
    pub const NO_SUCH_USER: Self = Self(7);
    /// 8: option negotiation refused (RFC 2347).
    pub const OPTION_REFUSED: Self = Self(8);

    /// A short name for logs, or `None` for codes outside 0–8.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "not defined",
            1 => "file not found",
            2 => "access violation",
            3 => "disk full",
            4 => "illegal operation",
            5 => "unknown transfer id",
            6 => "file exists",
            7 => "no such user",
            8 => "option refused",
            _ => return None,
        })
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "ErrorCode({} {n})", self.0),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{} ({n})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Why a datagram could not be decoded as a TFTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the fixed part of its packet kind.
    #[error("packet too short")]
    TooShort,
    /// The opcode is not one of 1–6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string field is not terminated by a NUL byte.
    #[error("string field without terminating NUL")]
    MissingNul,
    /// The request's filename is empty.
    #[error("empty filename")]
    EmptyFilename,
    /// The request's filename is longer than [`MAX_FILENAME_LEN`](super::wire::MAX_FILENAME_LEN).
    #[error("filename too long")]
    FilenameTooLong,
    /// The request's mode is not netascii, octet or mail.
    #[error("unknown transfer mode")]
    BadMode,
    /// More options than [`MAX_OPTIONS`](super::wire::MAX_OPTIONS).
    #[error("too many options")]
    TooManyOptions,
    /// An option name or value is longer than [`MAX_OPTION_LEN`](super::wire::MAX_OPTION_LEN), or a name is empty.
    #[error("malformed option")]
    BadOption,
    /// An option name without a value.
    #[error("option without value")]
    MissingOptionValue,
    /// Bytes after the last field of a fixed-size packet.
    #[error("trailing bytes after packet")]
    TrailingBytes,
}

impl DecodeError {
    /// The ERROR code a server answers a malformed packet with.
    pub fn code(self) -> ErrorCode {
        ErrorCode::ILLEGAL_OPERATION
    }

    /// The message of that ERROR: a static string, so answering costs no allocation.
    pub fn message(self) -> &'static str {
        match self {
            Self::TooShort => "malformed packet: too short",
            Self::UnknownOpcode(_) => "unknown opcode",
            Self::MissingNul => "malformed packet: unterminated string",
            Self::EmptyFilename => "empty filename",
            Self::FilenameTooLong => "filename too long",
            Self::BadMode => "unsupported transfer mode",
            Self::TooManyOptions => "too many options",
            Self::BadOption => "malformed option",
            Self::MissingOptionValue => "option without value",
            Self::TrailingBytes => "malformed packet: trailing bytes",
        }
    }
}

/// Encoding failed because the caller's buffer is too small for the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("buffer too small to encode packet")]
pub struct BufferTooSmall;

/// How the peer broke the protocol. The side that notices answers with an ERROR of
/// [`code`](Self::code) and [`message`](Self::message) and ends the transfer.
///
/// One byte, with a static message, so that a transfer can hold it in its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Violation {
    /// A client sent DATA, an OACK or a request on a read transfer.
    UnexpectedOnRead,
    /// A client sent an ACK, an OACK or a request on a write transfer.
    UnexpectedOnWrite,
    /// A server sent a packet that has no place in a client's transfer.
    UnexpectedPacket,
    /// A DATA block longer than the negotiated blksize.
    OversizedData,
    /// An OACK value that is not a decimal number.
    OackNotANumber,
    /// An OACK with blksize the client did not ask for.
    OackUnaskedBlksize,
    /// An OACK blksize below the minimum or above what was asked for.
    OackBlksizeOutOfRange,
    /// An OACK with windowsize the client did not ask for.
    OackUnaskedWindowsize,
    /// An OACK windowsize of 0 or above what was asked for.
    OackWindowsizeOutOfRange,
    /// An OACK with timeout the client did not ask for.
    OackUnaskedTimeout,
    /// An OACK timeout other than the one asked for (RFC 2349: the server must echo it).
    OackTimeoutDiffers,
    /// An OACK with tsize the client did not ask for.
    OackUnaskedTsize,
    /// An OACK with an option the client did not ask for.
    OackUnaskedOption,
}

impl Violation {
    /// The ERROR code that answers it: 8 for a refused OACK (what EDK2 sends), 4 otherwise.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::UnexpectedOnRead | Self::UnexpectedOnWrite | Self::UnexpectedPacket | Self::OversizedData => {
                ErrorCode::ILLEGAL_OPERATION
            }
            Self::OackNotANumber
            | Self::OackUnaskedBlksize
            | Self::OackBlksizeOutOfRange
            | Self::OackUnaskedWindowsize
            | Self::OackWindowsizeOutOfRange
            | Self::OackUnaskedTimeout
            | Self::OackTimeoutDiffers
            | Self::OackUnaskedTsize
            | Self::OackUnaskedOption => ErrorCode::OPTION_REFUSED,
        }
    }

    /// The message of that ERROR (and the `Display` text).
    pub fn message(self) -> &'static str {
        match self {
            Self::UnexpectedOnRead => "unexpected packet on a read transfer",
            Self::UnexpectedOnWrite => "unexpected packet on a write transfer",
            Self::UnexpectedPacket => "unexpected packet",
            Self::OversizedData => "DATA larger than blksize",
            Self::OackNotANumber => "OACK value is not a number",
            Self::OackUnaskedBlksize => "OACK has blksize we did not ask for",
            Self::OackBlksizeOutOfRange => "OACK blksize out of range",
            Self::OackUnaskedWindowsize => "OACK has windowsize we did not ask for",
            Self::OackWindowsizeOutOfRange => "OACK windowsize out of range",
            Self::OackUnaskedTimeout => "OACK has timeout we did not ask for",
            Self::OackTimeoutDiffers => "OACK timeout differs from the request",
            Self::OackUnaskedTsize => "OACK has tsize we did not ask for",
            Self::OackUnaskedOption => "OACK has an option we did not ask for",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Violation {}

/// A failure on this side that refuses a request or ends a transfer, as the ERROR that reports
/// it: [`code`](Self::code) and [`message`](Self::message), written here once for the file
/// system's errors (`fs::OpenError`, `fs::UploadError`) and the server's own reasons.
///
/// One byte, with a static message, so that answering costs no allocation and a transfer can
/// hold it in its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LocalFailure {
    /// The server is stopping.
    ShuttingDown,
    /// The file shrank or changed under its mapping while being served.
    FileChanged,
    /// No such file, or no such directory for an upload.
    NotFound,
    /// Outside the root, through a refused symlink, not a regular file, not world-readable, or
    /// not permitted.
    Denied,
    /// Through a symlink, on a kernel without `openat2` (before Linux 5.6), where none is
    /// followed: an access violation whose message names the cause, since the operator's fix
    /// (a newer kernel, or no links) is not what "access violation" suggests.
    SymlinkWithoutOpenat2,
    /// The file could not be read.
    ReadFailed,
    /// The file is larger than netascii mode serves.
    NetasciiTooLarge,
    /// The upload is larger than the free space or the announced size allows.
    DiskFull,
    /// The upload grew past the server's largest allowed upload.
    UploadTooLarge,
    /// The file exists and overwriting is not allowed.
    Exists,
    /// Writing the upload failed.
    WriteFailed,
    /// The upload could not be handed over to be made durable.
    CommitFailed,
}

impl LocalFailure {
    /// The ERROR code that reports it.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::NotFound => ErrorCode::FILE_NOT_FOUND,
            Self::Denied | Self::SymlinkWithoutOpenat2 => ErrorCode::ACCESS_VIOLATION,
            Self::DiskFull | Self::UploadTooLarge => ErrorCode::DISK_FULL,
            Self::Exists => ErrorCode::FILE_EXISTS,
            Self::ShuttingDown
            | Self::FileChanged
            | Self::ReadFailed
            | Self::NetasciiTooLarge
            | Self::WriteFailed
            | Self::CommitFailed => ErrorCode::NOT_DEFINED,
        }
    }

    /// The message of that ERROR (and the `Display` text). It says no more than the code to a
    /// client about the server's file system: the cause goes to the server's log.
    pub fn message(self) -> &'static str {
        match self {
            Self::ShuttingDown => "server shutting down",
            Self::FileChanged => "file changed while being read",
            Self::NotFound => "file not found",
            Self::Denied => "access violation",
            Self::SymlinkWithoutOpenat2 => "symlinks not served: kernel lacks openat2",
            Self::ReadFailed => "cannot read file",
            Self::NetasciiTooLarge => "file too large for netascii, use octet",
            Self::DiskFull => "disk full or upload too large",
            Self::UploadTooLarge => "upload larger than allowed",
            Self::Exists => "file already exists",
            Self::WriteFailed => "cannot write file",
            Self::CommitFailed => "cannot commit upload",
        }
    }
}

impl fmt::Display for LocalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for LocalFailure {}

/// Why a transfer ended badly, for reads and writes, servers and clients alike.
///
/// `Copy` and four bytes: no heap data, so ending a transfer costs no allocation. The ERROR
/// that reports it has the code `ErrorCode::from(&error)` and the [`message`](Self::message),
/// mapped here once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The peer sent an ERROR with this code.
    #[error("the peer sent ERROR {0}")]
    Peer(ErrorCode),
    /// The peer went silent.
    #[error("the peer went silent")]
    TimedOut,
    /// The peer broke the protocol.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// This side failed.
    #[error(transparent)]
    Local(#[from] LocalFailure),
}

impl TransferError {
    /// The code of the ERROR that ends the transfer: the peer's own, or the one this side sends
    /// (a silent peer is reported as 0, though nothing is sent to it).
    pub fn code(self) -> ErrorCode {
        ErrorCode::from(&self)
    }

    /// The message of the ERROR this side sends for it (static: answering allocates nothing).
    pub fn message(self) -> &'static str {
        match self {
            Self::Peer(_) => "transfer ended by the peer",
            Self::TimedOut => "timed out",
            Self::Violation(v) => v.message(),
            Self::Local(l) => l.message(),
        }
    }

    /// Whether the peer ended the transfer (with an ERROR or by going silent), rather than
    /// this side.
    pub fn is_peer(self) -> bool {
        matches!(self, Self::Peer(_) | Self::TimedOut)
    }
}

impl From<&TransferError> for ErrorCode {
    fn from(e: &TransferError) -> Self {
        match *e {
            TransferError::Peer(code) => code,
            TransferError::TimedOut => ErrorCode::NOT_DEFINED,
            TransferError::Violation(v) => v.code(),
            TransferError::Local(l) => l.code(),
        }
    }
}

#[cfg(test)]
mod tests;
