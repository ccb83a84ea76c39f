//! The TFTP wire codec: RRQ, WRQ, DATA, ACK, ERROR (RFC 1350) and OACK (RFC 2347).
//!
//! One file on purpose: every packet type's decoding and encoding side by side, one codec whose
//! bounds are checked in one place.
//!
//! Decoding borrows: a [`Packet`] holds slices of the receive buffer and copies nothing.
//! Everything a peer controls is checked once, here, and bounded: filename length, option count
//! and option lengths. Encoding writes into memory the caller owns and never allocates.

use super::error::{BufferTooSmall, DecodeError, ErrorCode};

/// Length of the fixed header of DATA and ACK packets (opcode and block number).
pub const HEADER_LEN: usize = 4;
/// Longest filename accepted in a request, in bytes.
pub const MAX_FILENAME_LEN: usize = 512;
/// Most options accepted in one request or OACK.
pub const MAX_OPTIONS: usize = 16;
/// Longest option name or value accepted, in bytes.
pub const MAX_OPTION_LEN: usize = 255;

/// The opcode of a packet (RFC 1350 §5, RFC 2347).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// A block of data.
    Data = 3,
    /// Acknowledgement of a block.
    Ack = 4,
    /// Error; ends the transfer.
    Error = 5,
    /// Option acknowledgement.
    Oack = 6,
}

impl Opcode {
    /// The opcode for a number, if it is one.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Rrq,
            2 => Self::Wrq,
            3 => Self::Data,
            4 => Self::Ack,
            5 => Self::Error,
            6 => Self::Oack,
            _ => return None,
        })
    }
}

/// Transfer mode of a request. Compared case-insensitively on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Text with CR LF line ends (RFC 1350, Telnet NVT).
    Netascii,
    /// Raw bytes.
    Octet,
    /// Obsolete mail mode; recognised so that it can be refused (RFC 1123 §4.2.2.1).
    Mail,
}

impl Mode {
    /// Parses a mode string, ignoring case.
    pub fn parse(s: &[u8]) -> Option<Self> {
        if s.eq_ignore_ascii_case(b"octet") {
            Some(Self::Octet)
        } else if s.eq_ignore_ascii_case(b"netascii") {
            Some(Self::Netascii)
        } else if s.eq_ignore_ascii_case(b"mail") {
            Some(Self::Mail)
        } else {
            None
        }
    }

    /// The canonical lower-case spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Netascii => "netascii",
            Self::Octet => "octet",
            Self::Mail => "mail",
        }
    }
}

/// Whether a request reads from or writes to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// RRQ: the client downloads.
    Read,
    /// WRQ: the client uploads.
    Write,
}

/// The option list of a request or OACK: validated `name NUL value NUL` pairs, borrowed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Options<'a> {
    bytes: &'a [u8],
    count: u8,
}

impl<'a> Options<'a> {
    /// An empty list.
    pub const EMPTY: Options<'static> = Options { bytes: &[], count: 0 };

    /// Validates `bytes` as a sequence of option pairs (each string NUL-terminated).
    /// Trailing NUL padding after the last pair is tolerated.
    fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut rest = bytes;
        let mut count = 0usize;
        let mut end = 0usize;
        loop {
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            let (name, after_name) = split_cstr(rest)?;
            if name.is_empty() || name.len() > MAX_OPTION_LEN {
                return Err(DecodeError::BadOption);
            }
            if after_name.is_empty() {
                return Err(DecodeError::MissingOptionValue);
            }
            let (value, after_value) = split_cstr(after_name)?;
            if value.len() > MAX_OPTION_LEN {
                return Err(DecodeError::BadOption);
            }
            count += 1;
            if count > MAX_OPTIONS {
                return Err(DecodeError::TooManyOptions);
            }
            end += name.len() + value.len() + 2;
            rest = after_value;
        }
        Ok(Self {
            bytes: &bytes[..end],
            // `count` is at most MAX_OPTIONS (16), checked above.
            count: count as u8,
        })
    }

    /// Number of options.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are no options.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded pairs, without any padding.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The options in wire order as `(name, value)`, names in the sender's spelling.
    pub fn iter(&self) -> OptionsIter<'a> {
        OptionsIter { rest: self.bytes }
    }

    /// The first option named `name` (ASCII case-insensitive), as `(spelling, value)`.
    pub fn get(&self, name: &str) -> Option<(&'a [u8], &'a [u8])> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

impl std::fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(n, v)| (n.escape_ascii().to_string(), v.escape_ascii().to_string())))
            .finish()
    }
}

/// Iterator over the pairs of an [`Options`] list.
#[derive(Clone, Debug)]
pub struct OptionsIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OptionsIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // The list was validated when it was built, so both splits succeed.
        let (name, rest) = split_cstr(self.rest).ok()?;
        let (value, rest) = split_cstr(rest).ok()?;
        self.rest = rest;
        Some((name, value))
    }
}

/// A read or write request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// RRQ or WRQ.
    pub kind: RequestKind,
    /// The filename exactly as sent (not yet normalised; see the server's path handling).
    pub filename: &'a [u8],
    /// The transfer mode.
    pub mode: Mode,
    /// The mode string as sent, for echoing in logs.
    pub mode_raw: &'a [u8],
    /// Options (RFC 2347).
    pub options: Options<'a>,
}

/// A decoded packet, borrowing from the buffer it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ or WRQ.
    Request(Request<'a>),
    /// DATA: a block of the file (0 to blksize bytes).
    Data {
        /// Block number (wraps to 0 after 65535).
        block: u16,
        /// The payload.
        data: &'a [u8],
    },
    /// ACK of a block (block 0 acknowledges an OACK).
    Ack {
        /// Block number acknowledged.
        block: u16,
    },
    /// ERROR: ends the transfer; never acknowledged.
    Error {
        /// The error code.
        code: ErrorCode,
        /// The message, as sent (not necessarily UTF-8).
        message: &'a [u8],
    },
    /// OACK: the options the server accepted.
    Oack(Options<'a>),
}

impl<'a> Packet<'a> {
    /// Decodes one datagram. Rejects anything malformed, including trailing bytes after a
    /// fixed-size packet; tolerates NUL padding after a request's options and a missing NUL at
    /// the end of an ERROR message (an ERROR must always be able to stop a transfer).
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < 2 {
            return Err(DecodeError::TooShort);
        }
        let raw = u16::from_be_bytes([buf[0], buf[1]]);
        let op = Opcode::from_u16(raw).ok_or(DecodeError::UnknownOpcode(raw))?;
        let body = &buf[2..];
        match op {
            Opcode::Rrq | Opcode::Wrq => {
                let (filename, rest) = split_cstr(body)?;
                if filename.is_empty() {
                    return Err(DecodeError::EmptyFilename);
                }
                if filename.len() > MAX_FILENAME_LEN {
                    return Err(DecodeError::FilenameTooLong);
                }
                let (mode_raw, rest) = split_cstr(rest)?;
                let mode = Mode::parse(mode_raw).ok_or(DecodeError::BadMode)?;
                let options = Options::parse(rest)?;
                let kind = if op == Opcode::Rrq { RequestKind::Read } else { RequestKind::Write };
                Ok(Packet::Request(Request { kind, filename, mode, mode_raw, options }))
            }
            Opcode::Data => {
                if body.len() < 2 {
                    return Err(DecodeError::TooShort);
                }
                Ok(Packet::Data { block: u16::from_be_bytes([body[0], body[1]]), data: &body[2..] })
            }
            Opcode::Ack => match body.len() {
                0 | 1 => Err(DecodeError::TooShort),
                2 => Ok(Packet::Ack { block: u16::from_be_bytes([body[0], body[1]]) }),
                _ => Err(DecodeError::TrailingBytes),
            },
            Opcode::Error => {
                if body.len() < 2 {
                    return Err(DecodeError::TooShort);
                }
                let code = ErrorCode(u16::from_be_bytes([body[0], body[1]]));
                let text = &body[2..];
                let message = match text.iter().position(|&b| b == 0) {
                    Some(nul) => &text[..nul],
                    None => text,
                };
                Ok(Packet::Error { code, message })
            }
            Opcode::Oack => Ok(Packet::Oack(Options::parse(body)?)),
        }
    }

    /// The packet's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Packet::Request(Request { kind: RequestKind::Read, .. }) => Opcode::Rrq,
            Packet::Request(Request { kind: RequestKind::Write, .. }) => Opcode::Wrq,
            Packet::Data { .. } => Opcode::Data,
            Packet::Ack { .. } => Opcode::Ack,
            Packet::Error { .. } => Opcode::Error,
            Packet::Oack(_) => Opcode::Oack,
        }
    }

    /// Encodes the packet into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out);
        w.u16(self.opcode() as u16)?;
        match *self {
            Packet::Request(r) => {
                w.cstr(r.filename)?;
                w.cstr(r.mode_raw)?;
                w.bytes(r.options.as_bytes())?;
            }
            Packet::Data { block, data } => {
                w.u16(block)?;
                w.bytes(data)?;
            }
            Packet::Ack { block } => w.u16(block)?,
            Packet::Error { code, message } => {
                w.u16(code.0)?;
                w.cstr(message)?;
            }
            Packet::Oack(opts) => w.bytes(opts.as_bytes())?,
        }
        Ok(w.len())
    }
}

/// The 4-byte header of DATA block `block`.
#[inline]
pub fn data_header(block: u16) -> [u8; HEADER_LEN] {
    let b = block.to_be_bytes();
    [0, Opcode::Data as u8, b[0], b[1]]
}

/// An ACK of block `block`.
#[inline]
pub fn ack(block: u16) -> [u8; HEADER_LEN] {
    let b = block.to_be_bytes();
    [0, Opcode::Ack as u8, b[0], b[1]]
}

/// Encodes an ERROR packet; returns its length. A message too long for `out` is shortened to
/// fit (at a character boundary when it is UTF-8): the error code is what a peer acts on, and an
/// ERROR must still leave. Fails only when `out` cannot hold an empty message (5 bytes).
pub fn encode_error(code: ErrorCode, message: &[u8], out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let room = out.len().saturating_sub(HEADER_LEN + 1);
    let mut len = message.len().min(room);
    if len < message.len() && std::str::from_utf8(message).is_ok() {
        // Back to the start of the character that would be cut (continuation bytes are 10xxxxxx).
        while len > 0 && message[len] & 0xc0 == 0x80 {
            len -= 1;
        }
    }
    Packet::Error { code, message: &message[..len] }.encode(out)
}

/// Encodes a request with the given options; returns its length.
pub fn encode_request<'o>(
    kind: RequestKind,
    filename: &[u8],
    mode: Mode,
    options: impl IntoIterator<Item = (&'o [u8], &'o [u8])>,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let mut w = Writer::new(out);
    w.u16(if kind == RequestKind::Read { Opcode::Rrq } else { Opcode::Wrq } as u16)?;
    w.cstr(filename)?;
    w.cstr(mode.as_str().as_bytes())?;
    for (name, value) in options {
        w.cstr(name)?;
        w.cstr(value)?;
    }
    Ok(w.len())
}

/// Writes an OACK, one option at a time, into caller memory.
#[derive(Debug)]
pub struct OackWriter<'b> {
    w: Writer<'b>,
}

impl<'b> OackWriter<'b> {
    /// Starts an OACK in `out`.
    pub fn new(out: &'b mut [u8]) -> Result<Self, BufferTooSmall> {
        let mut w = Writer::new(out);
        w.u16(Opcode::Oack as u16)?;
        Ok(Self { w })
    }

    /// Appends `name` (in the spelling given) with a decimal value.
    pub fn option(&mut self, name: &[u8], value: u64) -> Result<(), BufferTooSmall> {
        let mut digits = [0u8; 20];
        self.w.cstr(name)?;
        self.w.cstr(format_u64(value, &mut digits))
    }

    /// Length of the OACK so far.
    pub fn finish(self) -> usize {
        self.w.len()
    }
}

/// Formats `v` in decimal into `buf` without allocating; returns the digits.
pub fn format_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Parses a decimal number of at most 20 digits, without sign or spaces.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Splits a NUL-terminated string off the front of `buf`.
fn split_cstr(buf: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let nul = buf.iter().position(|&b| b == 0).ok_or(DecodeError::MissingNul)?;
    Ok((&buf[..nul], &buf[nul + 1..]))
}

/// A bounds-checked cursor over caller memory.
#[derive(Debug)]
struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    fn bytes(&mut self, b: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.len.checked_add(b.len()).ok_or(BufferTooSmall)?;
        self.buf.get_mut(self.len..end).ok_or(BufferTooSmall)?.copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    fn u16(&mut self, v: u16) -> Result<(), BufferTooSmall> {
        self.bytes(&v.to_be_bytes())
    }

    fn cstr(&mut self, s: &[u8]) -> Result<(), BufferTooSmall> {
        self.bytes(s)?;
        self.bytes(&[0])
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests;
