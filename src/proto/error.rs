//! Error types of the protocol layer.
//!
//! [`ErrorCode`] is the number carried in an ERROR packet (RFC 1350 §5, RFC 2347 for code 8).
//! [`DecodeError`] says why a datagram is not a valid TFTP packet; it is `Copy` and carries no
//! heap data, so that rejecting garbage costs nothing.

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
