//! A protocol client at the far end of the link: a [`ReadClient`] or [`WriteClient`] from
//! `crate::proto`, its request quirks, and the checks on every byte it receives.

use std::net::SocketAddr;

use super::link::Link;
use super::{CLIENT_CFG, LISTEN};
use crate::proto::wire::{self, Mode, Packet};
use crate::proto::{ClientOutcome, ClientTransmit, ErrorCode, ReadClient, Timestamp, UploadTransmit, WriteClient};

/// A client's side of its transfer.
pub(super) enum Role {
    Read { c: ReadClient, got: Vec<u8> },
    Write { c: WriteClient },
}

/// One client: its address, its transfer, what it must end with.
pub(super) struct Client {
    pub(super) addr: SocketAddr,
    pub(super) name: String,
    /// The file's contents: what a download must receive, what an upload sends.
    pub(super) want: Vec<u8>,
    pub(super) role: Role,
    /// The server's transfer ID, from its first answer.
    pub(super) server: Option<SocketAddr>,
    pub(super) start: Timestamp,
    pub(super) started: bool,
    /// The request goes out this many extra times when first sent.
    pub(super) extra_requests: u8,
    /// The request goes out once more after the first answer came (a client that repeats it).
    pub(super) repeat_after_answer: bool,
    /// Answers from another address than the server's transfer ID (answered with ERROR 5).
    pub(super) strays: u32,
    pub(super) done_at: Option<Timestamp>,
}

impl Client {
    pub(super) fn outcome(&self) -> Option<ClientOutcome> {
        match &self.role {
            Role::Read { c, .. } => c.outcome(),
            Role::Write { c } => c.outcome(),
        }
    }

    /// Requests, ACKs and DATA the client sent again on its own timer.
    pub(super) fn retransmits(&self) -> u32 {
        match &self.role {
            Role::Read { c, .. } => c.retransmits(),
            Role::Write { c } => c.retransmits(),
        }
    }

    pub(super) fn timeout(&self) -> Timestamp {
        if !self.started {
            return self.start;
        }
        match &self.role {
            Role::Read { c, .. } => c.poll_timeout(),
            Role::Write { c } => c.poll_timeout(),
        }
        .unwrap_or(Timestamp::NEVER)
    }

    pub(super) fn request(&self, out: &mut [u8]) -> usize {
        let r = match &self.role {
            Role::Read { c, .. } => c.encode_request(self.name.as_bytes(), Mode::Octet, out),
            Role::Write { c } => c.encode_request(self.name.as_bytes(), Mode::Octet, out),
        };
        r.expect("a request fits")
    }

    pub(super) fn on_datagram(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8], link: &mut Link) {
        let tid = *self.server.get_or_insert(from);
        if from != tid {
            // RFC 1350: another source is answered with ERROR 5 and the transfer goes on.
            self.strays += 1;
            let mut buf = [0u8; 64];
            let n = wire::encode_error(ErrorCode::UNKNOWN_TID, b"unknown transfer ID", &mut buf).expect("fits");
            link.send(now, self.addr, from, &buf[..n]);
            return;
        }
        let p = Packet::decode(bytes).unwrap_or_else(|e| panic!("{}: server sent garbage: {e}", self.name));
        let first = self.outcome().is_none() && self.repeat_after_answer;
        match &mut self.role {
            Role::Read { c, got } => {
                if let Some((offset, data)) = c.handle_packet(now, &p, &CLIENT_CFG) {
                    let offset = offset as usize;
                    assert_eq!(offset, got.len(), "{}: delivery out of order", self.name);
                    let end = offset + data.len();
                    assert!(end <= self.want.len(), "{}: DATA past the end of the file", self.name);
                    assert!(data == &self.want[offset..end], "{}: bytes at {offset} differ from the file", self.name);
                    got.extend_from_slice(data);
                }
            }
            Role::Write { c } => c.handle_packet(now, &p),
        }
        if first {
            self.repeat_after_answer = false;
            let mut buf = [0u8; 600];
            let n = self.request(&mut buf);
            link.send(now, self.addr, LISTEN, &buf[..n]);
        }
        if self.done_at.is_none() && self.outcome().is_some() {
            self.done_at = Some(now);
        }
    }

    pub(super) fn on_timer(&mut self, now: Timestamp) {
        if !self.started {
            return;
        }
        match &mut self.role {
            Role::Read { c, .. } => c.handle_timeout(now, &CLIENT_CFG),
            Role::Write { c } => c.handle_timeout(now),
        }
        if self.done_at.is_none() && self.outcome().is_some() {
            self.done_at = Some(now);
        }
    }

    pub(super) fn transmit(&mut self, now: Timestamp, link: &mut Link) {
        if now < self.start {
            return;
        }
        self.started = true;
        let mut buf = vec![0u8; 70_000];
        loop {
            let (n, to, request) = match &mut self.role {
                Role::Read { c, .. } => match c.poll_transmit(now, &CLIENT_CFG) {
                    None => break,
                    Some(ClientTransmit::Request) => (0, LISTEN, true),
                    Some(ClientTransmit::Ack(b)) => {
                        buf[..4].copy_from_slice(&wire::ack(b));
                        (4, self.server.unwrap_or(LISTEN), false)
                    }
                    Some(ClientTransmit::Error { code, message }) => {
                        let n = wire::encode_error(code, message.as_bytes(), &mut buf).expect("fits");
                        (n, self.server.unwrap_or(LISTEN), false)
                    }
                },
                Role::Write { c } => match c.poll_transmit(now) {
                    None => break,
                    Some(UploadTransmit::Request) => (0, LISTEN, true),
                    Some(UploadTransmit::Data { block, offset, len }) => {
                        buf[..4].copy_from_slice(&wire::data_header(block));
                        let offset = offset as usize;
                        buf[4..4 + len].copy_from_slice(&self.want[offset..offset + len]);
                        (4 + len, self.server.unwrap_or(LISTEN), false)
                    }
                    Some(UploadTransmit::Error { code, message }) => {
                        let n = wire::encode_error(code, message.as_bytes(), &mut buf).expect("fits");
                        (n, self.server.unwrap_or(LISTEN), false)
                    }
                },
            };
            if request {
                let n = self.request(&mut buf);
                for _ in 0..=std::mem::take(&mut self.extra_requests) {
                    link.send(now, self.addr, LISTEN, &buf[..n]);
                }
            } else {
                link.send(now, self.addr, to, &buf[..n]);
            }
        }
        if self.done_at.is_none() && self.outcome().is_some() {
            self.done_at = Some(now);
        }
    }
}
