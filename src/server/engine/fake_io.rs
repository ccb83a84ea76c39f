//! An in-memory backend for engine tests: it keeps every datagram the engine sends, and every
//! run of DATA it hands over as one send, so that tests observe both what reaches the wire and
//! how it was grouped.

use std::net::SocketAddr;

use super::*;
use crate::server::io::{DataRun, Outgoing, SockRef};

/// The backend of engine tests.
#[derive(Default)]
pub(super) struct FakeIo {
    /// Every datagram, runs cut into their datagrams as the kernel would.
    pub(super) sent: Vec<(Via, SocketAddr, Option<LocalEnd>, Vec<u8>)>,
    /// Every run of DATA handed over as one send.
    pub(super) runs: Vec<Run>,
    pub(super) opened: Vec<SocketAddr>,
    /// The port of each socket opened, by [`SockRef`]: like the kernel, the port most recently
    /// freed, unless the engine asks to avoid it.
    pub(super) ports: Vec<u16>,
    pub(super) closed: Vec<SockRef>,
    pub(super) full: bool,
}

/// What [`FakeIo`] keeps of one [`DataRun`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Run {
    /// Number of DATA packets.
    pub(super) segments: usize,
    /// Datagram length of every packet but the last.
    pub(super) segment_len: usize,
    /// Datagram length of the last packet.
    pub(super) last_len: usize,
    /// Wire block numbers, in order.
    pub(super) blocks: Vec<u16>,
}

impl Run {
    /// A run of `blocks` whose datagrams are `segment_len` bytes but the last, `last_len`.
    pub(super) fn of(blocks: std::ops::RangeInclusive<u16>, segment_len: usize, last_len: usize) -> Self {
        let blocks: Vec<u16> = blocks.collect();
        Self { segments: blocks.len(), segment_len, last_len, blocks }
    }
}

impl Io for FakeIo {
    fn open_transfer(
        &mut self,
        local: SocketAddr,
        avoid: Option<u16>,
        _token: Token,
    ) -> std::io::Result<(SockRef, u16)> {
        self.opened.push(local);
        let in_use =
            |p: &u16| self.ports.iter().enumerate().any(|(i, q)| q == p && !self.closed.contains(&SockRef(i as u32)));
        let freed = self.closed.iter().rev().map(|s| self.ports[s.0 as usize]);
        let port = freed.chain(40_000..).find(|p| !in_use(p) && avoid != Some(*p)).unwrap_or(0);
        self.ports.push(port);
        Ok((SockRef(self.opened.len() as u32 - 1), port))
    }

    fn close_transfer(&mut self, sock: SockRef, _token: Token) {
        self.closed.push(sock);
    }

    fn can_send(&self) -> bool {
        !self.full
    }

    fn send(&mut self, out: Outgoing<'_>) {
        let mut p = out.head.to_vec();
        if let Some(b) = out.body {
            // SAFETY: the test files are not truncated; the slice was bounds-checked.
            p.extend_from_slice(unsafe { std::slice::from_raw_parts(b.slice.ptr, b.slice.len) });
        }
        self.sent.push((out.via, out.to, out.from, p));
    }

    fn send_run(&mut self, run: DataRun<'_>) {
        let segs = run.segs;
        self.runs.push(Run {
            segments: segs.len(),
            segment_len: run.segment_len(),
            last_len: segs.last().map_or(0, |s| 4 + s.slice.len),
            blocks: segs.iter().map(|s| u16::from_be_bytes([s.hdr[2], s.hdr[3]])).collect(),
        });
        run.send_each(self);
    }
}

impl FakeIo {
    pub(super) fn take(&mut self) -> Vec<(Via, SocketAddr, Option<LocalEnd>, Vec<u8>)> {
        std::mem::take(&mut self.sent)
    }

    pub(super) fn take_runs(&mut self) -> Vec<Run> {
        std::mem::take(&mut self.runs)
    }
}
