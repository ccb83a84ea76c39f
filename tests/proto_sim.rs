//! Deterministic lossy-link simulation of whole transfers, without sockets or sleeps.
//!
//! A server-side [`ReadTransfer`] (with the request handling the real server does: a repeated
//! request goes to the existing transfer) and a client-side [`ReadClient`] exchange packets over
//! a simulated link with seeded loss, duplication and reordering, in virtual time. Every case
//! checks that the transfer completes, that the bytes are exact, and that retransmissions stay
//! within what the link's losses explain; duplicated packets alone must cause none.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bootstorm::proto::options::{Limits, negotiate};
use bootstorm::proto::wire::{self, Mode, Packet};
use bootstorm::proto::{
    ClientConfig, ClientOutcome, ClientTransmit, Outcome, ReadClient, ReadTransfer, RequestOptions, RetransmitConfig,
    RtoBounds, Timestamp, Transmit,
};

/// splitmix64: a tiny seeded generator, so that every run sees the same losses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

#[derive(Clone, Copy, Debug)]
struct LinkParams {
    loss: f64,
    dup: f64,
    reorder: f64,
    latency: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Dir {
    ToServer,
    ToClient,
}

#[derive(Default, Debug)]
struct LinkStats {
    sent: u64,
    dropped: u64,
    duplicated: u64,
    reordered: u64,
}

/// A packet in flight: delivery time, sequence (for a stable order), direction, bytes.
type InFlight = Reverse<(Timestamp, u64, Dir, Vec<u8>)>;

struct Link {
    p: LinkParams,
    rng: Rng,
    seq: u64,
    queue: BinaryHeap<InFlight>,
    stats: LinkStats,
}

impl Link {
    fn send(&mut self, now: Timestamp, dir: Dir, bytes: Vec<u8>) {
        self.stats.sent += 1;
        if self.rng.chance(self.p.loss) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.p.dup) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + self.p.latency;
            if self.rng.chance(self.p.reorder) {
                self.stats.reordered += 1;
                at = at + self.p.latency * 3;
            }
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq, dir, bytes.clone())));
        }
    }
}

const SERVER_CFG: RetransmitConfig = RetransmitConfig {
    rto: RtoBounds { initial: Duration::from_secs(1), min: Duration::from_millis(10), max: Duration::from_secs(2) },
    max_retries: 12,
    patience: Duration::from_secs(30),
    max_silence: Duration::from_secs(60),
};

// 200 ms like the load generator; 40 retries = 8 s, less than EDK2 (6 × 4 s) waits.
const CLIENT_CFG: ClientConfig = ClientConfig { timeout: Duration::from_millis(200), max_retries: 40 };

struct Server {
    file: Vec<u8>,
    request: Vec<u8>,
    xfer: Option<ReadTransfer>,
    data_packets: u64,
}

impl Server {
    fn on_datagram(&mut self, now: Timestamp, bytes: &[u8]) {
        match Packet::decode(bytes) {
            Ok(Packet::Request(r)) => match &mut self.xfer {
                // The same client address and port: the request was repeated.
                Some(x) => {
                    x.handle_repeated_request(now, &SERVER_CFG);
                }
                None => {
                    let n =
                        negotiate(r.kind, r.mode, &r.options, Some(self.file.len() as u64), Limits::default(), None);
                    self.request = bytes.to_vec();
                    self.xfer = Some(ReadTransfer::new(now, self.file.len() as u64, &n, &SERVER_CFG));
                }
            },
            Ok(p) => {
                if let Some(x) = &mut self.xfer {
                    x.handle_packet(now, &p, &SERVER_CFG);
                }
            }
            Err(e) => panic!("server got garbage: {e}"),
        }
    }

    fn transmit(&mut self, now: Timestamp, link: &mut Link) {
        let Some(x) = &mut self.xfer else { return };
        while let Some(t) = x.poll_transmit(now, &SERVER_CFG) {
            let mut buf = vec![0u8; 70_000];
            let n = match t {
                // What the transfer kept of its negotiation, in the request's spelling.
                Transmit::Oack(neg) => {
                    let Ok(Packet::Request(r)) = Packet::decode(&self.request) else { unreachable!() };
                    neg.encode_oack(&r.options, &mut buf).unwrap()
                }
                Transmit::Data { block, offset, len } => {
                    self.data_packets += 1;
                    buf[..4].copy_from_slice(&wire::data_header(block));
                    buf[4..4 + len].copy_from_slice(&self.file[offset as usize..offset as usize + len]);
                    4 + len
                }
                Transmit::Error { code, message } => wire::encode_error(code, message.as_bytes(), &mut buf).unwrap(),
            };
            buf.truncate(n);
            link.send(now, Dir::ToClient, buf);
        }
    }
}

struct Client {
    c: ReadClient,
    got: Vec<u8>,
    filled: u64,
}

impl Client {
    fn on_datagram(&mut self, now: Timestamp, bytes: &[u8]) {
        let p = Packet::decode(bytes).expect("client got garbage");
        if let Some((offset, data)) = self.c.handle_packet(now, &p, &CLIENT_CFG) {
            let end = offset as usize + data.len();
            assert!(end <= self.got.len(), "server sent past the end of the file");
            assert_eq!(offset, self.filled, "in-order delivery");
            self.got[offset as usize..end].copy_from_slice(data);
            self.filled = end as u64;
        }
    }

    fn transmit(&mut self, now: Timestamp, link: &mut Link) {
        while let Some(t) = self.c.poll_transmit(now, &CLIENT_CFG) {
            let mut buf = vec![0u8; 600];
            let n = match t {
                ClientTransmit::Request => self.c.encode_request(b"kernel", Mode::Octet, &mut buf).unwrap(),
                ClientTransmit::Ack(b) => {
                    buf[..4].copy_from_slice(&wire::ack(b));
                    4
                }
                ClientTransmit::Error { code, message } => {
                    wire::encode_error(code, message.as_bytes(), &mut buf).unwrap()
                }
            };
            buf.truncate(n);
            link.send(now, Dir::ToServer, buf);
        }
    }
}

#[derive(Debug)]
struct Report {
    elapsed: Duration,
    data_packets: u64,
    blocks: u64,
    server_retransmits: u32,
    client_retransmits: u32,
    link: LinkStats,
}

fn file_of(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed);
    (0..len).map(|_| r.next() as u8).collect()
}

fn simulate(len: usize, options: RequestOptions, p: LinkParams, seed: u64) -> Report {
    let file = file_of(len, seed);
    let mut link =
        Link { p, rng: Rng(seed ^ 0xdead_beef), seq: 0, queue: BinaryHeap::new(), stats: LinkStats::default() };
    let mut server = Server { file: file.clone(), request: Vec::new(), xfer: None, data_packets: 0 };
    let mut client = Client { c: ReadClient::new(Timestamp::ZERO, options), got: vec![0; len], filled: 0 };
    let mut now = Timestamp::ZERO;
    let limit = Timestamp::ZERO + Duration::from_secs(3600);
    client.transmit(now, &mut link);
    let mut steps = 0u64;
    while client.c.outcome().is_none() {
        steps += 1;
        assert!(steps < 50_000_000, "simulation does not converge");
        let next_packet = link.queue.peek().map(|Reverse((t, ..))| *t).unwrap_or(Timestamp::NEVER);
        let server_timer = server.xfer.as_ref().and_then(|x| x.poll_timeout()).unwrap_or(Timestamp::NEVER);
        let client_timer = client.c.poll_timeout().unwrap_or(Timestamp::NEVER);
        now = next_packet.min(server_timer).min(client_timer);
        assert!(now < limit, "stuck: {:?} {:?}", server.xfer.as_ref().map(|x| x.outcome()), client.c.outcome());
        if next_packet == now {
            let Reverse((_, _, dir, bytes)) = link.queue.pop().unwrap();
            match dir {
                Dir::ToServer => {
                    server.on_datagram(now, &bytes);
                }
                Dir::ToClient => client.on_datagram(now, &bytes),
            }
        }
        if server_timer <= now {
            if let Some(x) = &mut server.xfer {
                x.handle_timeout(now, &SERVER_CFG);
            }
        }
        if client_timer <= now {
            client.c.handle_timeout(now, &CLIENT_CFG);
        }
        server.transmit(now, &mut link);
        client.transmit(now, &mut link);
    }
    assert_eq!(
        client.c.outcome(),
        Some(ClientOutcome::Complete),
        "{p:?} {options:?} server: {:?} at {now:?}",
        server.xfer.as_ref().map(|x| (x.outcome(), x.retransmits(), x.bytes_acked()))
    );
    assert_eq!(client.filled, len as u64);
    assert!(client.got == file, "bytes differ");
    // Deliver what is still in flight (the final ACK, duplicates) so the server can finish.
    while let Some(Reverse((t, _, dir, bytes))) = link.queue.pop() {
        if dir == Dir::ToServer {
            server.on_datagram(t, &bytes);
        }
    }
    let x = server.xfer.as_ref().unwrap();
    if link.stats.dropped == 0 {
        assert_eq!(x.outcome(), Some(Outcome::Complete), "final ACK delivered");
    }
    let blksize = u64::from(x.sender().blksize());
    Report {
        elapsed: now.saturating_since(Timestamp::ZERO),
        data_packets: server.data_packets,
        blocks: len as u64 / blksize + 1,
        server_retransmits: x.retransmits(),
        client_retransmits: client.c.retransmits(),
        link: link.stats,
    }
}

const CLEAN: LinkParams = LinkParams { loss: 0.0, dup: 0.0, reorder: 0.0, latency: Duration::from_micros(500) };

fn opts(blksize: u16, window: u16) -> RequestOptions {
    RequestOptions { blksize: Some(blksize), windowsize: (window > 1).then_some(window), tsize: true, timeout: None }
}

#[test]
fn clean_link_sends_each_block_once() {
    for (len, blksize, window) in [(0, 512, 1), (512, 512, 1), (1024, 512, 4), (100_000, 1468, 16), (1, 8, 1)] {
        let r = simulate(len, opts(blksize, window), CLEAN, 1);
        assert_eq!(r.data_packets, r.blocks, "{len} {blksize} {window}: {r:?}");
        assert_eq!(r.server_retransmits, 0);
        assert_eq!(r.client_retransmits, 0);
        // OACK + one round trip per window.
        let windows = r.blocks.div_ceil(u64::from(window));
        assert_eq!(r.elapsed, Duration::from_millis(1) * (windows as u32 + 1), "{r:?}");
    }
}

#[test]
fn duplication_alone_causes_no_retransmission() {
    // Sorcerer's Apprentice: every duplicated ACK would double the traffic of a naive server.
    let p = LinkParams { dup: 0.3, ..CLEAN };
    for window in [1, 4, 16] {
        let r = simulate(300_000, opts(1024, window), p, 7);
        assert!(r.link.duplicated > 50, "{r:?}");
        assert_eq!(r.server_retransmits, 0, "window {window}: {r:?}");
        assert_eq!(r.data_packets, r.blocks, "window {window}: {r:?}");
    }
}

#[test]
fn rollover_beyond_65535_blocks() {
    // 75,001 blocks of 8 bytes: block numbers wrap to 0 twice... once past 65535.
    for window in [1, 8] {
        let r = simulate(600_000, opts(8, window), CLEAN, 3);
        assert_eq!(r.blocks, 75_001);
        assert_eq!(r.data_packets, 75_001);
    }
    // And at the default blksize without options, past 32 MiB.
    let r = simulate(65_540 * 512, RequestOptions::default(), CLEAN, 4);
    assert_eq!(r.blocks, 65_541);
    let r = simulate(70_000 * 8 + 5, opts(8, 4), LinkParams { loss: 0.02, reorder: 0.02, ..CLEAN }, 5);
    assert_eq!(r.blocks, 70_001);
}

/// The matrix: blksize × windowsize × loss, with duplication and reordering on the lossy rows.
/// Each row must complete byte-exact; retransmissions must be explained by what the link did
/// (each lost or reordered packet costs at most one window); and up to 5% loss, recovery must
/// come from the server's adaptive timeout, not from the client's 200 ms timer.
#[test]
fn lossy_matrix() {
    let mut table =
        String::from("blksize window loss | blocks data_sent retrans client_retrans dropped reordered | ms\n");
    for blksize in [8u16, 512, 1468] {
        for window in [1u16, 4, 16] {
            for loss in [0.0, 0.01, 0.05, 0.2] {
                let p = LinkParams { loss, dup: loss / 2.0, reorder: loss / 2.0, ..CLEAN };
                let len = usize::from(blksize) * 300 + 17;
                let seed = u64::from(blksize) * 1000 + u64::from(window) * 10 + (loss * 100.0) as u64;
                let r = simulate(len, opts(blksize, window), p, seed);
                let caused = r.link.dropped + r.link.reordered;
                assert!(
                    u64::from(r.server_retransmits) <= u64::from(window) * caused,
                    "too many retransmissions: {r:?}"
                );
                if loss == 0.0 {
                    assert_eq!(r.server_retransmits, 0);
                }
                if loss <= 0.05 {
                    assert!(r.client_retransmits <= 1, "stalled on the client's timer: {r:?}");
                }
                table += &format!(
                    "{blksize:7} {window:6} {loss:4} | {:6} {:9} {:7} {:14} {:7} {:9} | {}\n",
                    r.blocks,
                    r.data_packets,
                    r.server_retransmits,
                    r.client_retransmits,
                    r.link.dropped,
                    r.link.reordered,
                    r.elapsed.as_millis()
                );
            }
        }
    }
    println!("{table}");
}

#[test]
fn heavy_loss_still_completes_across_seeds() {
    for seed in 0..20 {
        let p = LinkParams { loss: 0.3, dup: 0.1, reorder: 0.1, ..CLEAN };
        let r = simulate(20_000, opts(512, 8), p, seed);
        assert!(r.server_retransmits > 0);
    }
}

// ---- Uploads: a WriteClient pushes a file to a server WriteTransfer over the same link. ----

use bootstorm::proto::{UploadTransmit, WriteClient, WriteTransfer, WriteTransmit};

#[derive(Debug)]
struct UploadReport {
    client_retransmits: u32,
    server_retransmits: u32,
    link: LinkStats,
    elapsed: Duration,
}

fn simulate_upload(len: usize, options: RequestOptions, p: LinkParams, seed: u64) -> UploadReport {
    let file = file_of(len, seed);
    let mut link = Link { p, rng: Rng(seed ^ 0xfeed), seq: 0, queue: BinaryHeap::new(), stats: LinkStats::default() };
    let mut client = WriteClient::new(Timestamp::ZERO, len as u64, options, &CLIENT_CFG);
    let mut server: Option<WriteTransfer> = None;
    let mut request = Vec::new();
    let mut stored = vec![0u8; len];
    let mut stored_len = 0u64;
    let mut now = Timestamp::ZERO;
    let limit = Timestamp::ZERO + Duration::from_secs(3600);
    let mut buf = vec![0u8; 70_000];
    let mut steps = 0u64;
    loop {
        // Transmit whatever both sides have.
        while let Some(t) = client.poll_transmit(now) {
            let n = match t {
                UploadTransmit::Request => client.encode_request(b"upload", Mode::Octet, &mut buf).unwrap(),
                UploadTransmit::Data { block, offset, len } => {
                    buf[..4].copy_from_slice(&wire::data_header(block));
                    buf[4..4 + len].copy_from_slice(&file[offset as usize..offset as usize + len]);
                    4 + len
                }
                UploadTransmit::Error { code, message } => {
                    wire::encode_error(code, message.as_bytes(), &mut buf).unwrap()
                }
            };
            link.send(now, Dir::ToServer, buf[..n].to_vec());
        }
        if let Some(x) = &mut server {
            if x.wants_commit() {
                x.commit_result(now, Ok(()), &SERVER_CFG);
            }
            while let Some(t) = x.poll_transmit() {
                let n = match t {
                    WriteTransmit::Oack(neg) => {
                        let Ok(Packet::Request(r)) = Packet::decode(&request) else { unreachable!() };
                        neg.encode_oack(&r.options, &mut buf).unwrap()
                    }
                    WriteTransmit::Ack(b) => {
                        buf[..4].copy_from_slice(&wire::ack(b));
                        4
                    }
                    WriteTransmit::Error { code, message } => {
                        wire::encode_error(code, message.as_bytes(), &mut buf).unwrap()
                    }
                };
                link.send(now, Dir::ToClient, buf[..n].to_vec());
            }
        }
        if client.outcome().is_some() {
            break;
        }
        steps += 1;
        assert!(steps < 50_000_000, "upload simulation does not converge");
        let next_packet = link.queue.peek().map(|Reverse((t, ..))| *t).unwrap_or(Timestamp::NEVER);
        let st = server.as_ref().and_then(|x| x.poll_timeout()).unwrap_or(Timestamp::NEVER);
        let ct = client.poll_timeout().unwrap_or(Timestamp::NEVER);
        now = next_packet.min(st).min(ct);
        assert!(now < limit, "upload stuck");
        if next_packet == now {
            let Reverse((_, _, dir, bytes)) = link.queue.pop().unwrap();
            let p = Packet::decode(&bytes).unwrap();
            match dir {
                Dir::ToServer => match (&mut server, p) {
                    (None, Packet::Request(r)) => {
                        let neg = negotiate(r.kind, r.mode, &r.options, None, Limits::default(), None);
                        request = bytes.clone();
                        server = Some(WriteTransfer::new(now, &neg, len as u64, &SERVER_CFG));
                    }
                    (Some(x), Packet::Request(_)) => {
                        x.handle_repeated_request(now, &SERVER_CFG);
                    }
                    (Some(x), p) => {
                        if let Some((off, data)) = x.handle_packet(now, &p, &SERVER_CFG) {
                            assert_eq!(off, stored_len, "in order");
                            stored[off as usize..off as usize + data.len()].copy_from_slice(data);
                            stored_len += data.len() as u64;
                        }
                    }
                    (None, _) => {}
                },
                Dir::ToClient => client.handle_packet(now, &p),
            }
        }
        if st <= now {
            if let Some(x) = &mut server {
                x.handle_timeout(now, &SERVER_CFG);
            }
        }
        if ct <= now {
            client.handle_timeout(now);
        }
    }
    assert_eq!(client.outcome(), Some(ClientOutcome::Complete), "{p:?} {options:?}");
    let x = server.as_ref().unwrap();
    assert!(x.is_committed(), "the client saw the final ACK only after the commit");
    assert_eq!(stored_len, len as u64);
    assert!(stored == file, "uploaded bytes differ");
    UploadReport {
        client_retransmits: client.retransmits(),
        server_retransmits: x.retransmits(),
        link: link.stats,
        elapsed: now.saturating_since(Timestamp::ZERO),
    }
}

#[test]
fn upload_matrix() {
    for blksize in [8u16, 512, 1468] {
        for window in [1u16, 4, 16] {
            for loss in [0.0, 0.01, 0.05, 0.2] {
                let p = LinkParams { loss, dup: loss / 2.0, reorder: loss / 2.0, ..CLEAN };
                let len = usize::from(blksize) * 300 + 5;
                let seed = u64::from(blksize) * 7 + u64::from(window) * 3 + (loss * 1000.0) as u64;
                let r = simulate_upload(len, opts(blksize, window), p, seed);
                if loss == 0.0 {
                    assert_eq!((r.client_retransmits, r.server_retransmits), (0, 0), "{r:?}");
                }
            }
        }
    }
}

#[test]
fn upload_rollover_and_edges() {
    for (len, o) in [(0, RequestOptions::default()), (512, RequestOptions::default()), (70_000 * 8 + 1, opts(8, 8))] {
        let r = simulate_upload(len, o, CLEAN, 3);
        assert_eq!(r.client_retransmits, 0, "{len}: {r:?}");
        assert!(r.elapsed > Duration::ZERO);
    }
    // Duplication alone causes no resend from the sending client (Sorcerer's Apprentice).
    let r = simulate_upload(200_000, opts(1024, 4), LinkParams { dup: 0.3, ..CLEAN }, 9);
    assert_eq!(r.client_retransmits, 0, "{r:?}");
    assert!(r.link.duplicated > 10);
}
