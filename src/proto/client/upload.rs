//! A client's upload ([`WriteClient`]), as the load generator runs it: the write request, the
//! OACK check, and the window of DATA sent from a source the owner reads.

use super::{ClientConfig, ClientOutcome, RequestOptions, check_oack, encode_with_options};
use crate::proto::error::{BufferTooSmall, ErrorCode, Violation};
use crate::proto::options::DEFAULT_BLKSIZE;
use crate::proto::rtt::RtoBounds;
use crate::proto::sender::{AckEffect, RetransmitConfig, TimeoutEffect, WindowSender};
use crate::proto::time::Timestamp;
use crate::proto::wire::{Mode, Packet, RequestKind};

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
    /// An upload of `size` bytes (at most [`MAX_SIZE`](crate::proto::sender::MAX_SIZE): a
    /// sender counts no further) asking for `options` (tsize carries the size); the request is
    /// due at once.
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
