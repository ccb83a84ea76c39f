//! Option negotiation: blksize (RFC 2348), timeout and tsize (RFC 2349), windowsize (RFC 7440).
//!
//! All client-supplied option values are clamped or refused in [`negotiate`], nowhere else.
//! The OACK answers only what the client asked for, in the client's spelling and order, never with
//! a larger blksize or windowsize than requested, and with timeout echoed exactly or left out:
//! EDK2 rejects an OACK that breaks any of these (`Mtftp4RrqOackValid`).

use super::error::BufferTooSmall;
use super::wire::{Mode, OackWriter, Options, RequestKind, parse_u64};

/// Default block size when blksize is not negotiated (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest blksize a client may ask for (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest blksize the protocol allows (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;
/// Largest windowsize this implementation grants: it keeps 16-bit ACK numbers unambiguous
/// (an ACK from before the window can never alias a block inside it).
pub const MAX_WINDOWSIZE: u16 = 32768;

/// Server limits that shape what is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest blksize granted (at most [`MAX_BLKSIZE`]).
    pub max_blksize: u16,
    /// Largest windowsize granted (at most [`MAX_WINDOWSIZE`]).
    pub max_windowsize: u16,
    /// Largest window granted in bytes on the wire (IPv4 and UDP headers counted), which also
    /// caps blksize; `None`: no limit.
    pub max_window_bytes: Option<u32>,
    /// Options never granted, whatever a client asks.
    pub refuse: Refused,
}

/// Options the server never grants, for a boot ROM that mishandles one (tftpd-hpa's `-r`): the
/// request is answered as if the option had not been asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// Never grant `blksize` (RFC 2348): 512-byte blocks.
    pub blksize: bool,
    /// Never grant `tsize` (RFC 2349).
    pub tsize: bool,
    /// Never grant `timeout` (RFC 2349).
    pub timeout: bool,
    /// Never grant `windowsize` (RFC 7440).
    pub windowsize: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_blksize: MAX_BLKSIZE, max_windowsize: 64, max_window_bytes: None, refuse: Refused::default() }
    }
}

/// Bytes on the wire around a DATA payload: IPv4 and UDP headers and the TFTP header.
pub const DATAGRAM_OVERHEAD: u32 = 20 + 8 + 4;

/// The largest blksize whose DATA packets fit an interface MTU without IP fragmentation
/// (20- or 40-byte IP header, 8-byte UDP header, 4-byte TFTP header). Many boot ROMs cannot
/// reassemble fragments (RFC 2348 discussion; dnsmasq, tftp-hpa `-B`).
pub fn blksize_for_mtu(mtu: u32, ipv6: bool) -> u16 {
    let overhead = if ipv6 { 40 + 8 + 4 } else { 20 + 8 + 4 };
    let fit = mtu.saturating_sub(overhead).clamp(u32::from(MIN_BLKSIZE), u32::from(MAX_BLKSIZE));
    // Clamped to MAX_BLKSIZE above, so it fits in u16.
    fit as u16
}

const BLKSIZE: u8 = 1;
const TIMEOUT: u8 = 2;
const TSIZE: u8 = 4;
const WINDOWSIZE: u8 = 8;

/// The outcome of negotiation: the transfer parameters and which options the OACK carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Block size in bytes (512 unless negotiated).
    pub blksize: u16,
    /// Blocks per window (1 unless negotiated).
    pub windowsize: u16,
    /// The client's retransmission timeout in seconds, when it asked for one and it was accepted.
    pub timeout: Option<u8>,
    /// The transfer size announced in the OACK: the file's size on a read, the client's on a write.
    pub tsize: Option<u64>,
    acked: u8,
    /// The OACK's options in the client's order: two bits each (see [`OPTION_BITS`]), first
    /// option lowest.
    order: u8,
}

impl Negotiated {
    /// Parameters of a transfer without options (RFC 1350).
    pub const PLAIN: Self =
        Self { blksize: DEFAULT_BLKSIZE, windowsize: 1, timeout: None, tsize: None, acked: 0, order: 0 };

    /// Whether any option was accepted, so that the server answers with an OACK
    /// rather than with DATA 1 (read) or ACK 0 (write).
    pub fn has_oack(&self) -> bool {
        self.acked != 0
    }

    /// Writes the OACK for `requested` (the same option list negotiation saw) into `out`.
    ///
    /// Options appear in the order and spelling the client used; a repeated option is
    /// answered once.
    pub fn encode_oack(&self, requested: &Options<'_>, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = OackWriter::new(out)?;
        let mut written = 0u8;
        for (name, _) in requested.iter() {
            let Some(bit) = option_bit(name) else {
                continue;
            };
            if self.acked & bit == 0 || written & bit != 0 {
                continue;
            }
            written |= bit;
            w.option(name, self.value(bit))?;
        }
        Ok(w.finish())
    }

    /// Which options the OACK carries and in what order (two bytes), for
    /// [`with_shape`](Self::with_shape): what a transfer keeps to write its OACK again once the
    /// request is gone.
    pub fn shape(&self) -> OackShape {
        OackShape { acked: self.acked, order: self.order }
    }

    /// The negotiation with these values and the options of `shape`.
    pub fn with_shape(
        shape: OackShape,
        blksize: u16,
        windowsize: u16,
        timeout: Option<u8>,
        tsize: Option<u64>,
    ) -> Self {
        Self { blksize, windowsize, timeout, tsize, acked: shape.acked, order: shape.order }
    }

    /// Writes the OACK again without the request: the same options with the same values in the
    /// same order, names in lower case (option names are case-insensitive, RFC 2347).
    pub fn encode_oack_again(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = OackWriter::new(out)?;
        for i in 0..self.acked.count_ones() {
            let (name, bit) = OPTION_BITS[usize::from((self.order >> (2 * i)) & 3)];
            let value = self.value(bit);
            w.option(name, value)?;
        }
        Ok(w.finish())
    }

    fn value(&self, bit: u8) -> u64 {
        match bit {
            BLKSIZE => u64::from(self.blksize),
            TIMEOUT => u64::from(self.timeout.unwrap_or(0)),
            TSIZE => self.tsize.unwrap_or(0),
            _ => u64::from(self.windowsize),
        }
    }
}

/// Which options an OACK carries, in the client's order: what a transfer keeps of its request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OackShape {
    acked: u8,
    order: u8,
}

impl OackShape {
    /// Whether the first answer is an OACK (some option was acknowledged).
    pub fn has_oack(self) -> bool {
        self.acked != 0
    }

    /// Whether the OACK carries tsize.
    pub fn has_tsize(self) -> bool {
        self.acked & TSIZE != 0
    }

    /// The shape in two bytes (options accepted, low byte; their order, high byte).
    pub fn to_bits(self) -> u16 {
        u16::from_le_bytes([self.acked, self.order])
    }

    /// The shape [`to_bits`](Self::to_bits) gave.
    pub fn from_bits(bits: u16) -> Self {
        let [acked, order] = bits.to_le_bytes();
        Self { acked, order }
    }
}

/// The options an OACK can carry, by their two-bit code in [`Negotiated`]'s order.
const OPTION_BITS: [(&[u8], u8); 4] =
    [(b"blksize", BLKSIZE), (b"timeout", TIMEOUT), (b"tsize", TSIZE), (b"windowsize", WINDOWSIZE)];

fn option_bit(name: &[u8]) -> Option<u8> {
    if name.eq_ignore_ascii_case(b"blksize") {
        Some(BLKSIZE)
    } else if name.eq_ignore_ascii_case(b"timeout") {
        Some(TIMEOUT)
    } else if name.eq_ignore_ascii_case(b"tsize") {
        Some(TSIZE)
    } else if name.eq_ignore_ascii_case(b"windowsize") {
        Some(WINDOWSIZE)
    } else {
        None
    }
}

/// Negotiates the options of a request.
///
/// - `file_size`: on a read, the size of the file in octet mode (`None` when it is not known in
///   advance, as for netascii, whose tsize is then left out).
/// - `mtu_blksize`: the blksize that fits the MTU of the interface the request came in on,
///   when the caller knows it.
///
/// Invalid values are not errors: the option is left out of the OACK and the RFC 1350 default
/// applies (blksize below 8, timeout outside 1–255, windowsize 0, non-numeric values).
/// Unknown options are ignored, and so are those `limits.refuse` names (as tftpd-hpa's `-r`
/// does): a request whose only options are refused is answered with DATA 1 or ACK 0, not an
/// OACK. The first occurrence of a repeated option counts.
pub fn negotiate(
    kind: RequestKind,
    mode: Mode,
    requested: &Options<'_>,
    file_size: Option<u64>,
    limits: Limits,
    mtu_blksize: Option<u16>,
) -> Negotiated {
    let mut n = Negotiated::PLAIN;
    // A refused option is read as absent: never granted, never in the OACK.
    let value = |name: &str, refused: bool| {
        if refused { None } else { requested.get(name).and_then(|(_, v)| parse_u64(v)) }
    };

    //= https://www.rfc-editor.org/rfc/rfc2348
    //# Valid values range between "8" and "65464" octets, inclusive. [...] the server
    //# may reply with a smaller value than was requested.
    if let Some(v) = value("blksize", limits.refuse.blksize) {
        if v >= u64::from(MIN_BLKSIZE) {
            let bytes_cap = limits
                .max_window_bytes
                .map_or(MAX_BLKSIZE, |b| b.saturating_sub(DATAGRAM_OVERHEAD).min(u32::from(MAX_BLKSIZE)) as u16);
            let cap = limits.max_blksize.min(mtu_blksize.unwrap_or(MAX_BLKSIZE)).min(MAX_BLKSIZE).min(bytes_cap);
            n.blksize = v.min(u64::from(cap.max(MIN_BLKSIZE))) as u16;
            n.acked |= BLKSIZE;
        }
    }

    //= https://www.rfc-editor.org/rfc/rfc2349#section-2
    //# Valid values range between "1" and "255" seconds, inclusive. [...] the server
    //# [...] MUST echo the same value.
    if let Some(v) = value("timeout", limits.refuse.timeout) {
        if (1..=255).contains(&v) {
            n.timeout = Some(v as u8);
            n.acked |= TIMEOUT;
        }
    }

    //= https://www.rfc-editor.org/rfc/rfc2349#section-3
    //# In Read Request packets, a size of "0" is specified in the request and the size of
    //# the file, in octets, is returned in the OACK. [...] In Write Request packets, the
    //# size of the file, in octets, is specified in the request
    if let Some(v) = value("tsize", limits.refuse.tsize) {
        let size = match kind {
            RequestKind::Read => file_size,
            RequestKind::Write => Some(v),
        };
        if let (Some(size), Mode::Octet) = (size, mode) {
            n.tsize = Some(size);
            n.acked |= TSIZE;
        }
    }

    //= https://www.rfc-editor.org/rfc/rfc7440#section-4
    //# Valid values range between "1" and "65535" blocks, inclusive. [...] the server
    //# may reply with a smaller value than was requested
    if let Some(v) = value("windowsize", limits.refuse.windowsize) {
        if (1..=65535).contains(&v) {
            let bytes_cap = limits.max_window_bytes.map_or(MAX_WINDOWSIZE, |b| {
                (b / (u32::from(n.blksize) + DATAGRAM_OVERHEAD)).clamp(1, u32::from(MAX_WINDOWSIZE)) as u16
            });
            let cap = limits.max_windowsize.clamp(1, MAX_WINDOWSIZE).min(bytes_cap);
            n.windowsize = (v as u16).min(cap);
            n.acked |= WINDOWSIZE;
        }
    }
    // The order of the accepted options, first occurrences, as the OACK lists them.
    let mut seen = 0u8;
    let mut count = 0;
    for (name, _) in requested.iter() {
        let Some(code) = OPTION_BITS.iter().position(|(n, _)| name.eq_ignore_ascii_case(n)) else { continue };
        let bit = OPTION_BITS[code].1;
        if n.acked & bit != 0 && seen & bit == 0 {
            seen |= bit;
            n.order |= (code as u8) << (2 * count);
            count += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests;
