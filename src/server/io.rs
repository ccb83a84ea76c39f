//! The seam between the worker's logic ([`super::engine`]) and an I/O backend (io_uring or epoll).
//!
//! The engine decides; a backend moves datagrams. A backend delivers each received datagram as a
//! [`Datagram`] borrowed from its receive buffer, and implements [`Io`] for what the engine asks
//! of it: open and close transfer sockets, and send. DATA payloads are handed over as raw slices
//! of a file mapping together with the [`FileVersion`] that keeps the mapping alive until the
//! kernel is done with it.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use super::socket::LocalEnd;
use crate::fs::FileVersion;
use crate::fs::cache::RawSlice;
use crate::proto::Timestamp;
use crate::sys::cmsg::RECV_CONTROL_SPACE;

/// Names a transfer: its slot in the engine's table and that slot's generation, so that a late
/// completion for a finished transfer is recognised and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token(pub(crate) u64);

impl Token {
    pub(crate) fn new(slot: u32, generation: u32) -> Self {
        Self(u64::from(slot) | (u64::from(generation) << 32))
    }

    pub(crate) fn slot(self) -> u32 {
        self.0 as u32
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// A transfer socket owned by the backend, named as the backend chooses (an index into its
/// table, or the descriptor itself): unique among the transfer sockets open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SockRef(pub(crate) u32);

/// The socket a datagram came in on or leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// A listening socket, by index in the configured listen addresses.
    Listen(u32),
    /// A transfer socket.
    Transfer(SockRef),
}

/// A received datagram, borrowed from the backend's receive buffer.
#[derive(Debug)]
pub(crate) struct Datagram<'a> {
    pub(crate) via: Via,
    /// The slot of the transfer a transfer socket was opened for: the engine hands the datagram
    /// to the transfer in that slot only if it is served from `via`.
    pub(crate) slot: Option<u32>,
    pub(crate) peer: SocketAddr,
    /// Where the request was sent to (listening sockets only).
    pub(crate) local: Option<LocalEnd>,
    /// When the kernel received it (listening sockets only, where the kernel stamps it): a
    /// request that waited in the socket's queue arrived before it is read.
    pub(crate) arrived: Option<Timestamp>,
    pub(crate) payload: &'a [u8],
    /// The datagram was longer than the receive buffer.
    pub(crate) truncated: bool,
}

/// A payload to send from a file version.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Body<'a> {
    pub(crate) file: &'a Rc<FileVersion>,
    pub(crate) slice: RawSlice,
}

/// One datagram to send.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) via: Via,
    pub(crate) to: SocketAddr,
    /// Source address for sends from a listening socket.
    pub(crate) from: Option<LocalEnd>,
    /// The header (DATA) or the whole packet (OACK, ERROR): at most [`MAX_HEAD`] bytes.
    pub(crate) head: &'a [u8],
    pub(crate) body: Option<Body<'a>>,
    /// The transfer to tell if the send fails.
    pub(crate) token: Option<Token>,
}

/// One DATA packet of a [`DataRun`]: its header and its slice of the mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub(crate) hdr: [u8; 4],
    pub(crate) slice: RawSlice,
}

/// Consecutive DATA packets of one transfer, all of one length but the last, which may be
/// shorter: what a backend can hand the kernel as one send that it cuts into datagrams (UDP
/// GSO).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DataRun<'a> {
    pub(crate) via: Via,
    pub(crate) to: SocketAddr,
    /// Source address for sends from a listening socket.
    pub(crate) from: Option<LocalEnd>,
    pub(crate) file: &'a Rc<FileVersion>,
    pub(crate) segs: &'a [Segment],
    /// The transfer to tell if the send fails.
    pub(crate) token: Token,
}

impl DataRun<'_> {
    /// The datagram length every segment but the last has.
    pub(crate) fn segment_len(&self) -> usize {
        self.segs.first().map_or(0, |s| 4 + s.slice.len)
    }

    /// Sends the run as single datagrams.
    pub(crate) fn send_each<I: Io + ?Sized>(&self, io: &mut I) {
        for s in self.segs {
            let body = Some(Body { file: self.file, slice: s.slice });
            io.send(Outgoing {
                via: self.via,
                to: self.to,
                from: self.from,
                head: &s.hdr,
                body,
                token: Some(self.token),
            });
        }
    }
}

/// Send failures a backend owes the engine: the errno of every failed send of a transfer's
/// packet, with the transfer's token, however the send was made (queued and completed later, or
/// made at once because no queue slot was free). The backend's loop hands each to
/// `Engine::on_send_error` once the engine's current call has returned.
#[derive(Debug, Default)]
pub(crate) struct SendErrors(Vec<(Token, i32)>);

impl SendErrors {
    /// Records the result of a send made for `token`'s transfer. A send for no transfer (an
    /// answer to a request that started none, an ERROR to a foreign port) concerns no one.
    pub(crate) fn record(&mut self, token: Option<Token>, result: Result<(), i32>) {
        if let (Some(token), Err(errno)) = (token, result) {
            self.0.push((token, errno));
        }
    }

    /// The next failure to report.
    pub(crate) fn pop(&mut self) -> Option<(Token, i32)> {
        self.0.pop()
    }
}

/// Which runs a backend sends as one GSO send: those of at least two packets no longer than a
/// limit that drops below each segment length the kernel refused (a segment larger than the
/// route's MTU: `EINVAL`; a device without checksum offload: `EIO`), so that one odd route
/// costs one lost window, recovered by the retransmission timer, and not GSO for everyone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GsoLimit(usize);

impl GsoLimit {
    /// No limit when `on`; otherwise no run goes as one send.
    pub(crate) fn new(on: bool) -> Self {
        Self(if on { usize::MAX } else { 0 })
    }

    /// Whether `run` goes out as one send.
    pub(crate) fn allows(self, run: &DataRun<'_>) -> bool {
        self.fits(run.segs.len(), run.segment_len())
    }

    fn fits(self, segments: usize, segment: usize) -> bool {
        segments >= 2 && segment <= self.0
    }

    /// The kernel refused a GSO send of `segment`-byte datagrams with `errno`.
    pub(crate) fn refused(&mut self, segment: usize, errno: i32) {
        if segment <= self.0 {
            tracing::warn!(
                segment,
                errno,
                "a send with a UDP segment size was refused; such DATA leaves one datagram per send"
            );
            self.0 = segment.saturating_sub(1);
        }
    }
}

/// Most DATA packets in one [`DataRun`] (the kernel's limit on segments per GSO send).
pub(crate) const MAX_RUN: usize = 64;

/// Most bytes in one [`DataRun`]: the whole send must fit one IP datagram before the kernel cuts
/// it.
pub(crate) const MAX_RUN_BYTES: usize = 65_000;

/// Largest head a backend must accept: any OACK or ERROR this server builds fits.
pub(crate) const MAX_HEAD: usize = 192;

/// Size of each receive buffer. Requests, ACKs and ERRORs fit with room to spare.
pub(crate) const RX_SIZE: usize = 2048;

/// What an io_uring multishot receive puts in a receive buffer before the datagram: its header
/// (16 bytes), the source address (room for an IPv6 one) and, on a listening socket, the packet
/// info and the arrival time. In single-port mode an upload's DATA comes through the listening
/// socket.
const RX_OVERHEAD: usize = 16 + crate::net::RAW_ADDR_LEN as usize + RECV_CONTROL_SPACE;

/// Largest blksize granted to uploads: a DATA packet (its 4-byte header and the block) and the
/// backend's per-datagram overhead must fit one receive buffer.
pub(crate) const MAX_UPLOAD_BLKSIZE: u16 = (RX_SIZE - RX_OVERHEAD - 4) as u16;

/// What a worker's logic needs from its I/O backend.
pub(crate) trait Io {
    /// Opens a transfer socket bound to `local` (port chosen by the backend's port picker, never
    /// `avoid`: the port of the same client's previous transfer) and starts receiving on it; its
    /// datagrams come back with `token`. Returns the socket and its port.
    fn open_transfer(&mut self, local: SocketAddr, avoid: Option<u16>, token: Token) -> io::Result<(SockRef, u16)>;

    /// Closes transfer `token`'s socket (once the backend no longer uses it).
    fn close_transfer(&mut self, sock: SockRef, token: Token);

    /// Whether a DATA send would be accepted now. Control packets (without body) always are.
    fn can_send(&self) -> bool;

    /// Sends (or queues) a datagram. Whether the send is queued or made at once, its failure is
    /// reported later, with `out.token`, through the backend's [`SendErrors`]; the engine decides
    /// whether it concerns the transfer (the file mapping went away under the kernel: `EFAULT`).
    fn send(&mut self, out: Outgoing<'_>);

    /// Sends a run of DATA packets of one transfer; a backend that can, in one send the kernel
    /// cuts into datagrams. Needs the room [`Io::can_send`] reports, like one DATA.
    fn send_run(&mut self, run: DataRun<'_>) {
        run.send_each(self);
    }
}

#[cfg(test)]
mod tests {
    use super::GsoLimit;

    #[test]
    fn gso_limit_drops_below_each_refused_segment_length() {
        let mut g = GsoLimit::new(true);
        assert!(g.fits(16, 1472) && g.fits(2, 516));
        assert!(!g.fits(1, 1472), "one datagram needs no GSO");
        g.refused(1472, libc::EINVAL);
        assert!(!g.fits(16, 1472) && g.fits(16, 1412) && g.fits(16, 516));
        g.refused(9000, libc::EINVAL);
        assert!(g.fits(16, 1412), "a larger refusal changes nothing");
        g.refused(516, libc::EIO);
        assert!(!g.fits(16, 516) && g.fits(64, 100));
        assert!(!GsoLimit::new(false).fits(16, 516));
    }
}
