//! A client's download ([`ReadClient`]): the request, the OACK check, the window of DATA it
//! acknowledges, and the retries of its last packet.

use super::{ClientConfig, ClientOutcome, RequestOptions, check_oack, encode_with_options};
use crate::proto::error::{BufferTooSmall, ErrorCode, Violation};
use crate::proto::options::DEFAULT_BLKSIZE;
use crate::proto::receiver::{Received, WindowReceiver};
use crate::proto::time::Timestamp;
use crate::proto::wire::{Mode, Packet, RequestKind};

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
