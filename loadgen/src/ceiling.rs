//! The raw-UDP ceiling of the machine: how many bytes per second the kernel moves over loopback
//! between two threads with the cheapest batching there is (`sendmmsg` of 32 datagrams,
//! `recvmmsg` of 64), with nothing else done per datagram. Every server throughput is also
//! reported as a fraction of this, measured in the same run.
//!
//! A second ceiling, [`measure_gso`], is the same with the datagrams sent as UDP GSO sends and
//! received with UDP GRO: the most a server sending windows as GSO sends can reach towards a
//! receiver that takes them with GRO.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bootstorm::sys::sockopt;
use serde::Serialize;

/// What the blaster measured.
#[derive(Debug, Serialize)]
pub(crate) struct Ceiling {
    pub(crate) datagram_bytes: usize,
    pub(crate) seconds: f64,
    pub(crate) datagrams: u64,
    /// Payload received per second, MB/s (10^6).
    pub(crate) mbps: f64,
    pub(crate) datagrams_per_s: f64,
    /// Datagrams per GSO send (0: `sendmmsg`/`recvmmsg`).
    pub(crate) gso_segments: usize,
}

/// Blasts GSO sends of `segments` datagrams of `size` bytes from one thread to a GRO receiver
/// in another for `duration`; counts payload bytes (a GRO receive holds several datagrams).
pub(crate) fn measure_gso(size: usize, segments: usize, duration: Duration) -> std::io::Result<Ceiling> {
    let segments = segments.clamp(1, (65_000 / size.max(1)).clamp(1, 64));
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    // Failure only leaves the default buffer size.
    let _ = sockopt::force_recv_buffer(&rx, 64 << 20);
    sockopt::enable_udp_gro(&rx)?;
    // The kernel refuses a segment size past 65535 with EINVAL, as this does.
    let segment = u16::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    sockopt::set_udp_segment(&tx, segment)?;
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    tx.connect(rx.local_addr()?)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let sender = std::thread::spawn(move || {
        let payload = vec![0x5au8; size * segments];
        while !s2.load(Ordering::Relaxed) {
            // SAFETY: a live buffer and its length.
            unsafe { libc::send(tx.as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0) };
        }
    });
    let mut buf = vec![0u8; 65_536];
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < duration {
        // SAFETY: a live buffer and its length.
        let n = unsafe { libc::recv(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            bytes += n as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let datagrams = bytes / size as u64;
    Ok(Ceiling {
        datagram_bytes: size,
        seconds: secs,
        datagrams,
        mbps: bytes as f64 / secs / 1e6,
        datagrams_per_s: datagrams as f64 / secs,
        gso_segments: segments,
    })
}

/// Blasts `size`-byte datagrams from one thread to another for `duration`.
pub(crate) fn measure(size: usize, duration: Duration) -> std::io::Result<Ceiling> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    // Failure only leaves the default buffer size.
    let _ = sockopt::force_recv_buffer(&rx, 64 << 20);
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    tx.connect(rx.local_addr()?)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let sender = std::thread::spawn(move || {
        const B: usize = 32;
        let payload = vec![0x5au8; size];
        let mut iovs: Vec<libc::iovec> =
            (0..B).map(|_| libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: size }).collect();
        let mut msgs: Vec<libc::mmsghdr> = (0..B)
            .map(|i| {
                // SAFETY: plain data; all-zero is valid.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &mut iovs[i];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        while !s2.load(Ordering::Relaxed) {
            // SAFETY: the message array points at live iovecs and payload.
            unsafe { libc::sendmmsg(tx.as_raw_fd(), msgs.as_mut_ptr(), B as u32, 0) };
        }
    });
    const R: usize = 64;
    let mut bufs = vec![0u8; R * 2048];
    let mut iovs: Vec<libc::iovec> = (0..R)
        .map(|i| libc::iovec { iov_base: bufs[i * 2048..].as_mut_ptr().cast(), iov_len: 2048.max(size) })
        .collect();
    if size > 2048 {
        bufs = vec![0u8; R * size];
        iovs = (0..R).map(|i| libc::iovec { iov_base: bufs[i * size..].as_mut_ptr().cast(), iov_len: size }).collect();
    }
    let mut msgs: Vec<libc::mmsghdr> = (0..R)
        .map(|i| {
            // SAFETY: plain data; all-zero is valid.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // Warm up, then count.
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let mut datagrams = 0u64;
    while start.elapsed() < duration {
        // SAFETY: the message array points at live iovecs and buffers.
        let n = unsafe {
            libc::recvmmsg(rx.as_raw_fd(), msgs.as_mut_ptr(), R as u32, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if n > 0 {
            datagrams += n as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    Ok(Ceiling {
        datagram_bytes: size,
        seconds: secs,
        datagrams,
        mbps: (datagrams * size as u64) as f64 / secs / 1e6,
        datagrams_per_s: datagrams as f64 / secs,
        gso_segments: 0,
    })
}
