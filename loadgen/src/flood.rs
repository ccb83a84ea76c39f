//! Request floods, for the security measurements: each request from its own socket (a new
//! client port), from one or many source addresses, at a fixed rate. Two questions:
//!
//! - `reflect`: to a source that never answers (a spoofed victim), how many bytes does the server
//!   send per byte of request, and for how long? Counted on the wire (IP and UDP headers
//!   included: 28 bytes per datagram over IPv4).
//! - `flood`: under N requests per second, how many get an answer (served: OACK or DATA; refused:
//!   ERROR 0 "busy"; other errors) and how many get silence?

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use bootstorm::proto::wire::{self, Mode, Packet, RequestKind};
use bootstorm::sys::epoll::{Epoll, NO_EVENT};
use serde::Serialize;

const UDP_IP_OVERHEAD: u64 = 28;

/// What a reflection run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Reflection {
    pub(crate) requests: u64,
    pub(crate) request_bytes_on_wire: u64,
    pub(crate) responses: u64,
    pub(crate) response_bytes_on_wire: u64,
    /// Bytes sent to the silent source per request byte, on the wire.
    pub(crate) amplification: f64,
    /// Datagrams sent to the silent source per request.
    pub(crate) packets_per_request: f64,
    /// Time from a request to the last datagram its source received (the longest).
    pub(crate) last_packet_after_s: f64,
}

/// What a flood run measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Flood {
    pub(crate) rate: f64,
    pub(crate) sources: u32,
    pub(crate) requests: u64,
    /// First answer OACK or DATA.
    pub(crate) served: u64,
    /// ERROR 0 saying the server is busy.
    pub(crate) refused_busy: u64,
    /// Any other ERROR.
    pub(crate) other_errors: u64,
    /// Nothing within the wait.
    pub(crate) silent: u64,
    pub(crate) answered_share: f64,
    /// Time to the first answer, milliseconds, median and 99th percentile of answered requests.
    pub(crate) answer_p50_ms: f64,
    pub(crate) answer_p99_ms: f64,
}

fn source_ip(i: u64, sources: u32, server: SocketAddr) -> IpAddr {
    match server.ip() {
        IpAddr::V4(s) if s.is_loopback() && sources > 1 => {
            IpAddr::V4(Ipv4Addr::from(0x7f02_0001u32 + (i % u64::from(sources)) as u32))
        }
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    }
}

fn request(file: &str, options: &[(String, String)]) -> anyhow::Result<Vec<u8>> {
    let mut buf = [0u8; 1024];
    let n = wire::encode_request(
        RequestKind::Read,
        file.as_bytes(),
        Mode::Octet,
        options.iter().map(|(a, b)| (a.as_bytes(), b.as_bytes())),
        &mut buf,
    )
    .map_err(|_| anyhow::anyhow!("request too long"))?;
    Ok(buf[..n].to_vec())
}

/// The sockets of a run, watched under their request numbers.
struct Poller(Epoll);

impl Poller {
    fn new() -> anyhow::Result<Self> {
        Ok(Self(Epoll::new().context("epoll_create1")?))
    }

    /// Watches `s` under `key`. A socket epoll cannot watch (past `max_user_watches`) has its
    /// answers go uncounted.
    fn add(&self, s: &UdpSocket, key: u64) {
        let _ = self.0.add(s.as_raw_fd(), key);
    }

    /// Waits up to `ms` for answers; a failed wait (a signal) is a wait with none.
    fn wait(&self, events: &mut [libc::epoll_event], ms: i32) -> usize {
        self.0.wait(events, ms).unwrap_or(0)
    }
}

/// Sends `count` requests, each from a new socket that never answers, spread over `spread`, and
/// counts everything that comes back within `window` after the last request.
pub(crate) fn reflect(
    server: SocketAddr,
    file: &str,
    options: &[(String, String)],
    count: u64,
    spread: Duration,
    window: Duration,
) -> anyhow::Result<Reflection> {
    let req = request(file, options)?;
    let poller = Poller::new()?;
    let mut socks = Vec::new();
    let mut sent_at = Vec::new();
    let mut last_rx = vec![None::<Instant>; count as usize];
    let (mut responses, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut events = vec![NO_EVENT; 256];
    let mut buf = vec![0u8; 70_000];
    let mut drain = |poller: &Poller, socks: &Vec<UdpSocket>, last_rx: &mut Vec<Option<Instant>>, ms: i32| {
        let n = poller.wait(&mut events, ms);
        for ev in &events[..n] {
            let i = { ev.u64 } as usize;
            while let Ok(len) = socks[i].recv(&mut buf) {
                responses += 1;
                bytes += len as u64 + UDP_IP_OVERHEAD;
                last_rx[i] = Some(Instant::now());
            }
        }
    };
    for i in 0..count {
        let due = start + spread.mul_f64(i as f64 / count.max(1) as f64);
        while Instant::now() < due {
            drain(&poller, &socks, &mut last_rx, 1);
        }
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).context("bind")?;
        s.set_nonblocking(true)?;
        s.send_to(&req, server)?;
        poller.add(&s, i);
        socks.push(s);
        sent_at.push(Instant::now());
    }
    let end = Instant::now() + window;
    while Instant::now() < end {
        drain(&poller, &socks, &mut last_rx, 50);
    }
    let last = last_rx
        .iter()
        .zip(&sent_at)
        .filter_map(|(r, s)| r.map(|r| r.saturating_duration_since(*s)))
        .max()
        .unwrap_or_default();
    let req_bytes = count * (req.len() as u64 + UDP_IP_OVERHEAD);
    Ok(Reflection {
        requests: count,
        request_bytes_on_wire: req_bytes,
        responses,
        response_bytes_on_wire: bytes,
        amplification: bytes as f64 / req_bytes.max(1) as f64,
        packets_per_request: responses as f64 / count.max(1) as f64,
        last_packet_after_s: last.as_secs_f64(),
    })
}

/// Sends requests at `rate` per second for `duration`, each from a new socket on one of
/// `sources` source addresses, and classifies each one's first answer within `wait`.
pub(crate) fn flood(
    server: SocketAddr,
    file: &str,
    options: &[(String, String)],
    rate: f64,
    duration: Duration,
    sources: u32,
    wait: Duration,
) -> anyhow::Result<Flood> {
    let req = request(file, options)?;
    let poller = Poller::new()?;
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut open: HashMap<u64, (UdpSocket, Instant)> = HashMap::new();
    let mut f = Flood { rate, sources, ..Default::default() };
    let mut latencies: Vec<f64> = Vec::new();
    let mut events = vec![NO_EVENT; 1024];
    let mut buf = vec![0u8; 70_000];
    let start = Instant::now();
    let mut next = 0u64;
    loop {
        let now = Instant::now();
        // Send what is due.
        while next < total && start + Duration::from_secs_f64(next as f64 / rate) <= now {
            let ip = source_ip(next, sources, server);
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(ip, 0)) {
                s.set_nonblocking(true)?;
                if s.send_to(&req, server).is_ok() {
                    poller.add(&s, next);
                    open.insert(next, (s, now));
                    f.requests += 1;
                }
            }
            next += 1;
        }
        // Classify answers.
        let n = poller.wait(&mut events, 1);
        for ev in &events[..n] {
            let key = ev.u64;
            let Some((s, at)) = open.remove(&key) else { continue };
            if let Ok(len) = s.recv(&mut buf) {
                latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                match Packet::decode(&buf[..len]) {
                    Ok(Packet::Oack(_) | Packet::Data { .. }) => f.served += 1,
                    Ok(Packet::Error { code, message }) if code.0 == 0 && message.windows(4).any(|w| w == b"busy") => {
                        f.refused_busy += 1
                    }
                    _ => f.other_errors += 1,
                }
            }
        }
        // Silence past the wait.
        let now = Instant::now();
        open.retain(|_, (_, at)| {
            let keep = now.duration_since(*at) < wait;
            if !keep {
                f.silent += 1;
            }
            keep
        });
        if next >= total && open.is_empty() {
            break;
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0.0);
    f.answer_p50_ms = pct(0.5);
    f.answer_p99_ms = pct(0.99);
    f.answered_share = (f.served + f.refused_busy + f.other_errors) as f64 / f.requests.max(1) as f64;
    Ok(f)
}
