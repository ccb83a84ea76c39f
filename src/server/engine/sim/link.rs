//! The simulated link and the engine's backend on it: [`Link`] loses, duplicates, reorders and
//! delays datagrams with a seeded generator; [`LinkIo`] (through [`Clocked`]) is the engine's
//! `Io`, whose sends go onto the link.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{LISTEN, SERVER_IP};
use crate::proto::Timestamp;
use crate::server::io::{DataRun, Io, MAX_RUN, MAX_RUN_BYTES, Outgoing, SockRef, Token, Via};

/// What the link does to each datagram, in either direction.
#[derive(Clone, Copy, Debug)]
pub(super) struct LinkParams {
    /// Chance that a datagram is lost.
    pub(super) loss: f64,
    /// Chance that it arrives twice.
    pub(super) dup: f64,
    /// Chance that a copy arrives three latencies late, after later datagrams.
    pub(super) reorder: f64,
    /// One-way delay.
    pub(super) latency: Duration,
}

/// No loss, duplication or reordering; 1 ms round trips.
pub(super) const CLEAN: LinkParams =
    LinkParams { loss: 0.0, dup: 0.0, reorder: 0.0, latency: Duration::from_micros(500) };

/// What the link did, in both directions.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LinkStats {
    pub(super) sent: u64,
    pub(super) dropped: u64,
    pub(super) duplicated: u64,
    pub(super) reordered: u64,
}

/// A datagram in flight: arrival, sequence (a stable order), source, destination, bytes.
pub(super) type InFlight = Reverse<(Timestamp, u64, SocketAddr, SocketAddr, Vec<u8>)>;

/// Datagrams in flight in both directions, and the seeded generator that decides their fate.
pub(super) struct Link {
    pub(super) p: LinkParams,
    rng: fastrand::Rng,
    seq: u64,
    pub(super) queue: BinaryHeap<InFlight>,
    pub(super) stats: LinkStats,
    /// From this time on every datagram is lost (a client that goes away, a cable pulled).
    pub(super) dead_after: Timestamp,
}

impl Link {
    pub(super) fn new(p: LinkParams, seed: u64) -> Self {
        Self {
            p,
            rng: fastrand::Rng::with_seed(seed ^ 0xdead_beef),
            seq: 0,
            queue: BinaryHeap::new(),
            stats: LinkStats::default(),
            dead_after: Timestamp::NEVER,
        }
    }

    pub(super) fn send(&mut self, now: Timestamp, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.stats.sent += 1;
        if now >= self.dead_after || chance(&mut self.rng, self.p.loss) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if chance(&mut self.rng, self.p.dup) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + self.p.latency;
            if chance(&mut self.rng, self.p.reorder) {
                self.stats.reordered += 1;
                at = at + self.p.latency * 3;
            }
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq, from, to, bytes.to_vec())));
        }
    }

    pub(super) fn next_arrival(&self) -> Timestamp {
        self.queue.peek().map_or(Timestamp::NEVER, |Reverse((t, ..))| *t)
    }
}

/// A transfer socket the engine opened.
pub(super) struct Sock {
    pub(super) addr: SocketAddr,
    pub(super) token: Token,
    pub(super) open: bool,
}

/// What the server put on the wire, besides the link's own counts.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ServerSends {
    /// DATA datagrams (runs cut into theirs).
    pub(super) data: u64,
    /// Runs handed over (one send each, or one per datagram where GSO is off), and the
    /// datagrams in them.
    pub(super) runs: u64,
    pub(super) run_segments: u64,
}

/// The engine's backend in the simulation: sends go onto the link.
pub(super) struct LinkIo {
    pub(super) link: Link,
    pub(super) socks: Vec<Sock>,
    /// DATA sends the backend accepts before its send queue is full (refilled as sends
    /// "complete", after each `flush`).
    pub(super) room: usize,
    pub(super) room_cap: usize,
    pub(super) sends: ServerSends,
}

impl LinkIo {
    fn source(&self, via: Via) -> SocketAddr {
        match via {
            Via::Listen(_) => LISTEN,
            Via::Transfer(SockRef(i)) => self.socks[i as usize].addr,
        }
    }

    fn put(&mut self, now: Timestamp, via: Via, to: SocketAddr, packet: &[u8]) {
        if packet.get(..2) == Some(&[0, 3]) {
            self.sends.data += 1;
        }
        let from = self.source(via);
        self.link.send(now, from, to, packet);
    }
}

/// The clock the link uses for the engine's sends: the engine does not pass its `now` to `Io`,
/// so the simulation sets it before every call into the engine.
pub(super) struct Clocked<'a> {
    pub(super) io: &'a mut LinkIo,
    pub(super) now: Timestamp,
}

impl Io for Clocked<'_> {
    fn open_transfer(
        &mut self,
        local: SocketAddr,
        avoid: Option<u16>,
        token: Token,
    ) -> std::io::Result<(SockRef, u16)> {
        let ip = if local.ip().is_unspecified() { IpAddr::V4(SERVER_IP) } else { local.ip() };
        let port = 40_000 + self.io.socks.len() as u16;
        assert_ne!(avoid, Some(port), "ports are never reused here");
        self.io.socks.push(Sock { addr: SocketAddr::new(ip, port), token, open: true });
        Ok((SockRef(self.io.socks.len() as u32 - 1), port))
    }

    fn close_transfer(&mut self, sock: SockRef, _token: Token) {
        let s = &mut self.io.socks[sock.0 as usize];
        assert!(s.open, "socket {sock:?} closed twice");
        s.open = false;
    }

    fn can_send(&self) -> bool {
        self.io.room > 0
    }

    fn send(&mut self, out: Outgoing<'_>) {
        let mut p = out.head.to_vec();
        if let Some(b) = out.body {
            self.io.room = self.io.room.saturating_sub(1);
            // SAFETY: the simulation's files are never truncated while served; the engine
            // bounds-checked the slice against the mapping that `b.file` keeps alive.
            p.extend_from_slice(unsafe { std::slice::from_raw_parts(b.slice.ptr, b.slice.len) });
        }
        self.io.put(self.now, out.via, out.to, &p);
    }

    fn send_run(&mut self, run: DataRun<'_>) {
        // What the kernel would refuse or the engine must never build.
        let segs = run.segs;
        assert!(!segs.is_empty() && segs.len() <= MAX_RUN, "run of {} segments", segs.len());
        let bytes: usize = segs.iter().map(|s| 4 + s.slice.len).sum();
        assert!(bytes <= MAX_RUN_BYTES, "run of {bytes} bytes");
        let len = run.segment_len();
        for (i, s) in segs.iter().enumerate() {
            let block = u16::from_be_bytes([s.hdr[2], s.hdr[3]]);
            let first = u16::from_be_bytes([segs[0].hdr[2], segs[0].hdr[3]]);
            assert_eq!(block, first.wrapping_add(i as u16), "run blocks not consecutive");
            let last = i + 1 == segs.len();
            assert!(if last { 4 + s.slice.len <= len } else { 4 + s.slice.len == len }, "segment lengths");
        }
        self.io.sends.runs += 1;
        self.io.sends.run_segments += segs.len() as u64;
        self.io.room = self.io.room.saturating_sub(1);
        // Cut into datagrams as GSO does; each meets the link on its own.
        let mut p = Vec::with_capacity(len);
        for s in segs {
            p.clear();
            p.extend_from_slice(&s.hdr);
            // SAFETY: as in `send`.
            p.extend_from_slice(unsafe { std::slice::from_raw_parts(s.slice.ptr, s.slice.len) });
            self.io.put(self.now, run.via, run.to, &p);
        }
    }
}

/// True with probability `p`, never when `p` is 0.
fn chance(rng: &mut fastrand::Rng, p: f64) -> bool {
    p > 0.0 && rng.f64() < p
}
