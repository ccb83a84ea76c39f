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

use std::time::Duration;

use super::error::{BufferTooSmall, ErrorCode, TransferError, Violation};
use super::options::{DEFAULT_BLKSIZE, MIN_BLKSIZE};
use super::receiver::{Received, WindowReceiver};
use super::rtt::RtoBounds;
use super::sender::{AckEffect, RetransmitConfig, TimeoutEffect, WindowSender};
use super::time::Timestamp;
use super::wire::{Mode, Options, Packet, RequestKind, encode_request, format_u64, parse_u64};

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

/// What the client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTransmit {
    /// The request (first time or again).
    Request,
    /// An ACK of this wire block number.
    Ack(u16),
    /// An ERROR; the transfer is over.
    Error {
        /// The code.
        code: ErrorCode,
        /// The message.
        message: &'static str,
    },
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Requesting,
    Receiving,
    /// The ERROR that answers the violation is due.
    Failing(Violation),
    Done(ClientOutcome),
}

/// A download in progress.
#[derive(Clone, Debug)]
pub struct ReadClient {
    phase: Phase,
    recv: WindowReceiver,
    options: RequestOptions,
    tsize: Option<u64>,
    pending: Option<ClientTransmit>,
    deadline: Timestamp,
    started: Timestamp,
    first_data: Option<Timestamp>,
    retries: u8,
    retransmits: u32,
}

impl ReadClient {
    /// A download that will ask for `options`; the request is due at once.
    pub fn new(now: Timestamp, options: RequestOptions) -> Self {
        Self {
            phase: Phase::Requesting,
            recv: WindowReceiver::new(DEFAULT_BLKSIZE, 1),
            options,
            tsize: None,
            pending: Some(ClientTransmit::Request),
            deadline: now,
            started: now,
            first_data: None,
            retries: 0,
            retransmits: 0,
        }
    }

    /// Encodes the read request for `filename` with this client's options.
    pub fn encode_request(&self, filename: &[u8], mode: Mode, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        encode_with_options(RequestKind::Read, filename, mode, &self.options, 0, out)
    }

    /// Handles a packet from the server. Returns the payload of a block received in order and
    /// the offset it belongs at.
    pub fn handle_packet<'a>(
        &mut self,
        now: Timestamp,
        packet: &Packet<'a>,
        cfg: &ClientConfig,
    ) -> Option<(u64, &'a [u8])> {
        match (*packet, self.phase) {
            (_, Phase::Done(_) | Phase::Failing(_)) => None,
            (Packet::Oack(opts), Phase::Requesting) => {
                match check_oack(&self.options, &opts) {
                    Ok((blksize, window, tsize)) => {
                        self.tsize = tsize;
                        self.recv = WindowReceiver::new(blksize, window);
                        self.phase = Phase::Receiving;
                        self.progress(now, cfg);
                        self.pending = Some(ClientTransmit::Ack(0));
                    }
                    Err(why) => self.fail(why),
                }
                None
            }
            (Packet::Oack(_), Phase::Receiving) => {
                // The OACK again: our ACK 0 was lost.
                if self.recv.blocks() == 0 {
                    self.pending = Some(ClientTransmit::Ack(0));
                }
                None
            }
            (Packet::Data { block, data }, Phase::Requesting | Phase::Receiving) => {
                if self.phase == Phase::Requesting {
                    // The server ignored our options (RFC 2347): RFC 1350 defaults.
                    self.phase = Phase::Receiving;
                    self.tsize = None;
                }
                let (kind, ack) = self.recv.on_data(block, data.len());
                if let Some(a) = ack {
                    self.pending = Some(ClientTransmit::Ack(a));
                }
                match kind {
                    Received::InOrder { offset, last, .. } => {
                        self.first_data.get_or_insert(now);
                        self.progress(now, cfg);
                        if last {
                            self.phase = Phase::Done(ClientOutcome::Complete);
                        }
                        Some((offset, data))
                    }
                    Received::Oversized => {
                        self.fail(Violation::OversizedData);
                        None
                    }
                    Received::Duplicate | Received::Gap => None,
                }
            }
            (Packet::Error { code, .. }, _) => {
                self.phase = Phase::Done(ClientOutcome::ServerError(code));
                self.pending = None;
                None
            }
            (Packet::Ack { .. } | Packet::Request(_), _) => {
                self.fail(Violation::UnexpectedPacket);
                None
            }
        }
    }

    fn progress(&mut self, now: Timestamp, cfg: &ClientConfig) {
        self.retries = 0;
        self.deadline = now + cfg.timeout;
    }

    fn fail(&mut self, why: Violation) {
        self.phase = Phase::Failing(why);
    }

    /// Handles the timer: resends the request or the last ACK, or gives up.
    pub fn handle_timeout(&mut self, now: Timestamp, cfg: &ClientConfig) {
        if now < self.deadline || !matches!(self.phase, Phase::Requesting | Phase::Receiving) {
            return;
        }
        if self.retries >= cfg.max_retries {
            self.phase = Phase::Done(ClientOutcome::TimedOut);
            self.pending = None;
            return;
        }
        self.retries += 1;
        self.retransmits += 1;
        self.pending = Some(match self.phase {
            Phase::Requesting => ClientTransmit::Request,
            _ => ClientTransmit::Ack(self.recv.last_acked()),
        });
        self.deadline = now + cfg.timeout;
    }

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self, now: Timestamp, cfg: &ClientConfig) -> Option<ClientTransmit> {
        if let Phase::Failing(why) = self.phase {
            self.phase = Phase::Done(ClientOutcome::ProtocolError(why));
            return Some(ClientTransmit::Error { code: why.code(), message: why.message() });
        }
        let t = self.pending.take()?;
        if t == ClientTransmit::Request && self.deadline <= now {
            self.deadline = now + cfg.timeout;
        }
        Some(t)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        matches!(self.phase, Phase::Requesting | Phase::Receiving).then_some(self.deadline)
    }

    /// How the download ended, once it has.
    pub fn outcome(&self) -> Option<ClientOutcome> {
        match self.phase {
            Phase::Done(o) => Some(o),
            _ => None,
        }
    }

    /// The size the server announced (tsize), if any.
    pub fn tsize(&self) -> Option<u64> {
        self.tsize
    }

    /// The block size in use.
    pub fn blksize(&self) -> u16 {
        self.recv.blksize()
    }

    /// Requests and ACKs sent again after a timeout.
    pub fn retransmits(&self) -> u32 {
        self.retransmits
    }

    /// When the first block arrived.
    pub fn first_data(&self) -> Option<Timestamp> {
        self.first_data
    }

    /// When the download started.
    pub fn started(&self) -> Timestamp {
        self.started
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

/// What an uploading client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadTransmit {
    /// The write request (first time or again).
    Request,
    /// DATA block `block` (wire number): `len` bytes of the source at `offset`.
    Data {
        /// Wire block number.
        block: u16,
        /// Offset in the source.
        offset: u64,
        /// Length.
        len: usize,
    },
    /// An ERROR; the upload is over.
    Error {
        /// The code.
        code: ErrorCode,
        /// The message.
        message: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UploadPhase {
    Requesting,
    Sending,
    /// The ERROR that answers the violation is due.
    Failing(Violation),
    Done(ClientOutcome),
}

/// An upload (WRQ) in progress, as the load generator runs it.
#[derive(Clone, Debug)]
pub struct WriteClient {
    phase: UploadPhase,
    options: RequestOptions,
    size: u64,
    sender: WindowSender,
    cfg: RetransmitConfig,
    request_due: bool,
    deadline: Timestamp,
    retries: u8,
    retransmits: u32,
    started: Timestamp,
}

impl WriteClient {
    /// An upload of `size` bytes asking for `options` (tsize carries the size); the request is due
    /// at once.
    pub fn new(now: Timestamp, size: u64, options: RequestOptions, cfg: &ClientConfig) -> Self {
        let t = cfg.timeout;
        let rcfg = RetransmitConfig {
            rto: RtoBounds { initial: t, min: t, max: t },
            max_retries: cfg.max_retries,
            patience: t * u32::from(cfg.max_retries),
            max_silence: t * (u32::from(cfg.max_retries) + 1),
        };
        Self {
            phase: UploadPhase::Requesting,
            options,
            size,
            sender: WindowSender::new(now, size, DEFAULT_BLKSIZE, 1, &rcfg),
            cfg: rcfg,
            request_due: true,
            deadline: now + t,
            retries: 0,
            retransmits: 0,
            started: now,
        }
    }

    /// Encodes the write request for `filename`.
    pub fn encode_request(&self, filename: &[u8], mode: Mode, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        encode_with_options(RequestKind::Write, filename, mode, &self.options, self.size, out)
    }

    /// Handles a packet from the server.
    pub fn handle_packet(&mut self, now: Timestamp, packet: &Packet<'_>) {
        let cfg = self.cfg;
        match (*packet, self.phase) {
            (_, UploadPhase::Done(_) | UploadPhase::Failing(_)) => {}
            (Packet::Oack(opts), UploadPhase::Requesting) => match check_oack(&self.options, &opts) {
                Ok((blksize, window, _)) => self.start_sending(now, blksize, window),
                Err(why) => self.phase = UploadPhase::Failing(why),
            },
            (Packet::Ack { block: 0 }, UploadPhase::Requesting) => self.start_sending(now, DEFAULT_BLKSIZE, 1),
            // The first answer again (the network duplicated it, or it answered a repeat).
            (Packet::Oack(_), UploadPhase::Sending) => {}
            (Packet::Ack { block }, UploadPhase::Sending) => {
                if self.sender.on_ack(now, block, &cfg) == AckEffect::Complete {
                    self.phase = UploadPhase::Done(ClientOutcome::Complete);
                }
            }
            (Packet::Error { code, .. }, _) => self.phase = UploadPhase::Done(ClientOutcome::ServerError(code)),
            _ => self.phase = UploadPhase::Failing(Violation::UnexpectedPacket),
        }
    }

    fn start_sending(&mut self, now: Timestamp, blksize: u16, window: u16) {
        self.sender = WindowSender::new(now, self.size, blksize, window, &self.cfg);
        self.phase = UploadPhase::Sending;
    }

    /// Handles the timer: the request or the window again, or the end.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let cfg = self.cfg;
        match self.phase {
            UploadPhase::Requesting if now >= self.deadline => {
                if self.retries >= cfg.max_retries {
                    self.phase = UploadPhase::Done(ClientOutcome::TimedOut);
                } else {
                    self.retries += 1;
                    self.retransmits += 1;
                    self.request_due = true;
                    self.deadline = now + cfg.rto.initial;
                }
            }
            UploadPhase::Sending => match self.sender.on_timeout(now, &cfg) {
                TimeoutEffect::GiveUp => self.phase = UploadPhase::Done(ClientOutcome::TimedOut),
                TimeoutEffect::Retransmit => self.retransmits += 1,
                TimeoutEffect::NotDue => {}
            },
            _ => {}
        }
    }

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<UploadTransmit> {
        let cfg = self.cfg;
        match self.phase {
            UploadPhase::Failing(why) => {
                self.phase = UploadPhase::Done(ClientOutcome::ProtocolError(why));
                Some(UploadTransmit::Error { code: why.code(), message: why.message() })
            }
            UploadPhase::Requesting if self.request_due => {
                self.request_due = false;
                Some(UploadTransmit::Request)
            }
            UploadPhase::Sending => {
                let (block, _) = self.sender.next_block(now, &cfg)?;
                let (offset, len) = self.sender.block_span(block);
                Some(UploadTransmit::Data { block: block as u16, offset, len })
            }
            _ => None,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.phase {
            UploadPhase::Requesting => Some(self.deadline),
            UploadPhase::Sending => Some(self.sender.deadline()),
            _ => None,
        }
    }

    /// How the upload ended, once it has.
    pub fn outcome(&self) -> Option<ClientOutcome> {
        match self.phase {
            UploadPhase::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Requests and DATA sent again after timeouts.
    pub fn retransmits(&self) -> u32 {
        self.retransmits
    }

    /// When the upload started.
    pub fn started(&self) -> Timestamp {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_micros(ms * 1000)
    }

    const CFG: ClientConfig = ClientConfig { timeout: Duration::from_millis(100), max_retries: 2 };

    #[test]
    fn request_encoding_and_retries() {
        let mut c = ReadClient::new(t(0), RequestOptions { blksize: Some(1432), tsize: true, ..Default::default() });
        let mut buf = [0u8; 128];
        let n = c.encode_request(b"boot.ipxe", Mode::Octet, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"\x00\x01boot.ipxe\x00octet\x00tsize\x000\x00blksize\x001432\x00");
        assert_eq!(c.poll_transmit(t(0), &CFG), Some(ClientTransmit::Request));
        assert_eq!(c.poll_timeout(), Some(t(100)));
        c.handle_timeout(t(100), &CFG);
        assert_eq!(c.poll_transmit(t(100), &CFG), Some(ClientTransmit::Request));
        c.handle_timeout(t(200), &CFG);
        c.handle_timeout(t(300), &CFG);
        assert_eq!(c.outcome(), Some(ClientOutcome::TimedOut));
    }

    #[test]
    fn strict_oack_checks() {
        /// An OACK, and the violation it is refused for with the message that says it.
        type Case = (&'static [u8], Option<(Violation, &'static str)>);
        let cases: [Case; 6] = [
            (b"\x00\x06blksize\x001432\x00tsize\x0099\x00", None),
            (b"\x00\x06blksize\x002000\x00", Some((Violation::OackBlksizeOutOfRange, "OACK blksize out of range"))),
            (
                b"\x00\x06windowsize\x004\x00",
                Some((Violation::OackUnaskedWindowsize, "OACK has windowsize we did not ask for")),
            ),
            (b"\x00\x06timeout\x005\x00", Some((Violation::OackUnaskedTimeout, "OACK has timeout we did not ask for"))),
            (b"\x00\x06foo\x001\x00", Some((Violation::OackUnaskedOption, "OACK has an option we did not ask for"))),
            (b"\x00\x06tsize\x00x\x00", Some((Violation::OackNotANumber, "OACK value is not a number"))),
        ];
        for (oack, err) in cases {
            let mut c =
                ReadClient::new(t(0), RequestOptions { blksize: Some(1432), tsize: true, ..Default::default() });
            c.poll_transmit(t(0), &CFG);
            c.handle_packet(t(1), &Packet::decode(oack).unwrap(), &CFG);
            match err {
                None => {
                    assert_eq!(c.poll_transmit(t(1), &CFG), Some(ClientTransmit::Ack(0)));
                    assert_eq!(c.tsize(), Some(99));
                    assert_eq!(c.blksize(), 1432);
                }
                Some((why, message)) => {
                    assert_eq!(
                        c.poll_transmit(t(1), &CFG),
                        Some(ClientTransmit::Error { code: ErrorCode::OPTION_REFUSED, message })
                    );
                    assert_eq!(c.outcome(), Some(ClientOutcome::ProtocolError(why)));
                    assert_eq!(c.outcome().and_then(ClientOutcome::error), Some(TransferError::Violation(why)));
                    assert_eq!(why.to_string(), message);
                }
            }
        }
    }

    #[test]
    fn data_without_oack_uses_defaults() {
        let mut c = ReadClient::new(t(0), RequestOptions { blksize: Some(1432), ..Default::default() });
        c.poll_transmit(t(0), &CFG);
        let got = c.handle_packet(t(1), &Packet::Data { block: 1, data: &[7; 512] }, &CFG);
        assert_eq!(got.map(|(o, d)| (o, d.len())), Some((0, 512)));
        assert_eq!(c.poll_transmit(t(1), &CFG), Some(ClientTransmit::Ack(1)));
        c.handle_packet(t(2), &Packet::Data { block: 2, data: &[7; 3] }, &CFG);
        assert_eq!(c.poll_transmit(t(2), &CFG), Some(ClientTransmit::Ack(2)));
        assert_eq!(c.outcome(), Some(ClientOutcome::Complete));
    }

    /// A DATA with wire number `block` (a full block) to `c`: what it returned and what `c`
    /// sends next.
    fn feed(c: &mut ReadClient, block: u16) -> (Option<u64>, Option<ClientTransmit>) {
        let got = c.handle_packet(t(1), &Packet::Data { block, data: &[0; 512] }, &CFG).map(|(o, _)| o);
        (got, c.poll_transmit(t(1), &CFG))
    }

    /// Every wire block number, before and after block 1, in lock step: the expected block is
    /// taken at its offset and acknowledged; block 1 again is acknowledged again; a block ahead
    /// (up to half the number space) is a gap, reported once with an ACK of the last block in
    /// order; anything else is stale and ignored. Nothing else is taken or acknowledged, and
    /// the download goes on to its end afterwards.
    #[test]
    fn any_data_number_is_safe() {
        for block in 0..=u16::MAX {
            // Nothing received yet: only block 1 is the next; 2..=32768 are ahead of it.
            let mut c = ReadClient::new(t(0), RequestOptions::default());
            c.poll_transmit(t(0), &CFG);
            let want = match block {
                1 => (Some(0), Some(ClientTransmit::Ack(1))),
                2..=32768 => (None, Some(ClientTransmit::Ack(0))),
                _ => (None, None),
            };
            assert_eq!(feed(&mut c, block), want, "block {block} first");
            assert_eq!(c.outcome(), None, "block {block} first");
            if block != 1 {
                assert_eq!(feed(&mut c, 1), (Some(0), Some(ClientTransmit::Ack(1))), "block 1 after {block}");
            }
            // Block 1 received: 2 is the next, 1 a duplicate, 3..=32769 ahead.
            let want = match block {
                2 => (Some(512), Some(ClientTransmit::Ack(2))),
                1 => (None, Some(ClientTransmit::Ack(1))),
                3..=32769 => (None, Some(ClientTransmit::Ack(1))),
                _ => (None, None),
            };
            assert_eq!(feed(&mut c, block), want, "block {block} after block 1");
            assert_eq!(c.outcome(), None, "block {block} after block 1");
            // The download goes on: the next block in order, short, ends it.
            let (next, offset) = if block == 2 { (3, 1024) } else { (2, 512) };
            let last = c.handle_packet(t(2), &Packet::Data { block: next, data: &[0; 10] }, &CFG);
            assert_eq!(last.map(|(o, d)| (o, d.len())), Some((offset, 10)), "after block {block}");
            assert_eq!(c.poll_transmit(t(2), &CFG), Some(ClientTransmit::Ack(next)), "after block {block}");
            assert_eq!(c.outcome(), Some(ClientOutcome::Complete), "after block {block}");
        }
    }

    #[test]
    fn timeout_resends_last_ack() {
        let mut c = ReadClient::new(t(0), RequestOptions::default());
        c.poll_transmit(t(0), &CFG);
        c.handle_packet(t(1), &Packet::Data { block: 1, data: &[0; 512] }, &CFG);
        c.poll_transmit(t(1), &CFG);
        c.handle_timeout(t(101), &CFG);
        assert_eq!(c.poll_transmit(t(101), &CFG), Some(ClientTransmit::Ack(1)));
        assert_eq!(c.retransmits(), 1);
    }
}
