//! The lockstep ceiling of the machine: raw-UDP ping-pong over loopback in the shape of lockstep
//! TFTP, one DATA and one ACK per block, with nothing else done per datagram.
//!
//! A "client" thread stands for the TFTP clients and a "server" thread for the server. Each of
//! the `flows` flows has exactly one datagram in flight: the client sends a 4-byte request
//! (an ACK: opcode 4, then a block field holding the flow's number and a 4-bit sequence
//! number), the server answers it with one `size`-byte datagram (a DATA: opcode 3, the same
//! block field, then `size - 4` bytes of block), and the client answers that with the flow's
//! next ACK. An answer whose sequence number is not the one its flow waits for (a duplicate of
//! a request sent again) is ignored, so every flow stays at one datagram in flight. Each side takes everything that has
//! arrived with one `recvmmsg` and sends every answer it owes with one `sendmmsg`: two kernel
//! entries per side per batch, however many flows the batch holds.
//!
//! Each side has one socket for all its flows. bootstorm's io_uring backend enters the kernel
//! once per loop turn for the receives and sends of all its transfers, which this reproduces
//! with two system calls; a socket per flow driven by plain system calls would pay one per
//! datagram, which bootstorm does not, and would put the ceiling below what a server can reach.
//! (The kernel finds a UDP socket by a hash of its port either way.) The server's socket is not
//! connected: it answers each request at the address it came from, as a server on one port
//! does. Goodput counts the block (`size - 4` bytes) once per round trip.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bootstorm::sys::sockopt;
use serde::Serialize;

/// TFTP opcode of an ACK.
const OP_ACK: u8 = 4;
/// TFTP opcode of a DATA.
const OP_DATA: u8 = 3;
/// Bytes of a request (an ACK).
const REQUEST_BYTES: usize = 4;
/// Time without any answer after which the client sends the ACK of every flow again (a datagram
/// the kernel dropped would otherwise stop its flow for good).
const STALL: Duration = Duration::from_millis(50);
/// Most messages one `recvmmsg` or `sendmmsg` takes (the kernel's `UIO_MAXIOV`).
const MAX_BATCH: usize = 1024;
/// Most flows: the block field keeps 12 bits for the flow and 4 for its sequence number.
pub(crate) const MAX_FLOWS: usize = 1 << 12;
/// Time before counting starts, so that both threads run and the buffers are warm.
const WARM_UP: Duration = Duration::from_millis(100);

/// What the ping-pong measured.
#[derive(Debug, Serialize)]
pub(crate) struct PingPong {
    /// Flows, each with one datagram in flight.
    pub(crate) flows: usize,
    /// Bytes of each request (ACK) datagram.
    pub(crate) request_bytes: usize,
    /// Bytes of each answer (DATA) datagram.
    pub(crate) reply_bytes: usize,
    /// Bytes of block in each answer (the DATA's payload): what goodput counts.
    pub(crate) block_bytes: usize,
    pub(crate) seconds: f64,
    /// Request and answer pairs completed while counting.
    pub(crate) round_trips: u64,
    pub(crate) round_trips_per_s: f64,
    /// Lockstep goodput: `block_bytes` per round trip per second, MB/s (10^6).
    pub(crate) mbps: f64,
    /// Requests sent again after no answer came for 50 ms (datagrams the kernel dropped).
    pub(crate) resent: u64,
}

/// `count` message headers, each pointing at its own `iovs_per_msg` iovecs in `iovs` (and at
/// `names[i]` when given). The pointers stay valid while `iovs` and `names` are neither moved
/// nor reallocated.
fn headers(
    count: usize,
    iovs: &mut [libc::iovec],
    iovs_per_msg: usize,
    names: Option<&mut [libc::sockaddr_storage]>,
) -> Vec<libc::mmsghdr> {
    let mut names = names;
    (0..count)
        .map(|i| {
            // SAFETY: plain data; all-zero is valid.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iovs[i * iovs_per_msg];
            m.msg_hdr.msg_iovlen = iovs_per_msg;
            if let Some(names) = names.as_deref_mut() {
                m.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            }
            m
        })
        .collect()
}

/// Sends the first `n` messages of `msgs`, going on after a partial send; a failed send drops
/// the rest (the client's stall timer sends their requests again).
fn send_all(fd: libc::c_int, msgs: &mut [libc::mmsghdr], n: usize) {
    let mut done = 0;
    while done < n {
        // SAFETY: the messages point at live iovecs, buffers and addresses.
        let sent = unsafe { libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (n - done) as u32, 0) };
        if sent <= 0 {
            return;
        }
        done += sent as usize;
    }
}

/// The server side: answers every request with one `size`-byte DATA to the address it came
/// from, batch by batch, until `stop`.
fn serve(sock: &UdpSocket, flows: usize, size: usize, stop: &AtomicBool) {
    let batch = flows.min(MAX_BATCH);
    let block = vec![0x5au8; size - 4];
    // Per message: the request read into `rx_bufs`, then the DATA header and the shared block.
    let mut rx_bufs = vec![[0u8; 16]; batch];
    let mut headers_out = vec![[0u8; 4]; batch];
    let mut names = vec![
        // SAFETY: plain data; all-zero is valid.
        unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
        batch
    ];
    let mut rx_iovs: Vec<libc::iovec> =
        rx_bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
    let mut rx = headers(batch, &mut rx_iovs, 1, Some(&mut names));
    let mut tx_iovs: Vec<libc::iovec> = headers_out
        .iter_mut()
        .flat_map(|h| {
            [
                libc::iovec { iov_base: h.as_mut_ptr().cast(), iov_len: 4 },
                libc::iovec { iov_base: block.as_ptr() as *mut _, iov_len: block.len() },
            ]
        })
        .collect();
    let mut tx = headers(batch, &mut tx_iovs, 2, None);
    let fd = sock.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        for m in rx.iter_mut() {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        // SAFETY: the message array points at live iovecs, buffers and addresses.
        let n =
            unsafe { libc::recvmmsg(fd, rx.as_mut_ptr(), batch as u32, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n <= 0 {
            continue;
        }
        let mut out = 0;
        for i in 0..n as usize {
            let req = &rx_bufs[i];
            if rx[i].msg_len as usize != REQUEST_BYTES || req[0] != 0 || req[1] != OP_ACK {
                continue;
            }
            headers_out[out] = [0, OP_DATA, req[2], req[3]];
            tx[out].msg_hdr.msg_name = rx[i].msg_hdr.msg_name;
            tx[out].msg_hdr.msg_namelen = rx[i].msg_hdr.msg_namelen;
            out += 1;
        }
        send_all(fd, &mut tx, out);
    }
}

/// Runs `flows` lockstep flows of 4-byte requests answered by `size`-byte datagrams for
/// `duration` (after a 100 ms warm-up) and counts the round trips.
pub(crate) fn measure(flows: usize, size: usize, duration: Duration) -> std::io::Result<PingPong> {
    if flows == 0 || flows > MAX_FLOWS || !(5..=65_507).contains(&size) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let server = UdpSocket::bind("127.0.0.1:0")?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    // Failure only leaves the default buffer sizes.
    let _ = sockopt::force_recv_buffer(&server, 8 << 20);
    let _ = sockopt::force_recv_buffer(&client, 8 << 20);
    server.set_read_timeout(Some(Duration::from_millis(20)))?;
    client.set_read_timeout(Some(STALL))?;
    client.connect(server.local_addr()?)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let server_thread = std::thread::spawn(move || serve(&server, flows, size, &s2));

    let batch = flows.min(MAX_BATCH);
    let mut rx_bufs = vec![0u8; batch * size];
    let mut rx_iovs: Vec<libc::iovec> = rx_bufs
        .chunks_exact_mut(size)
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
        .collect();
    let mut rx = headers(batch, &mut rx_iovs, 1, None);
    let mut acks = vec![[0u8; REQUEST_BYTES]; batch];
    let mut tx_iovs: Vec<libc::iovec> =
        acks.iter_mut().map(|a| libc::iovec { iov_base: a.as_mut_ptr().cast(), iov_len: a.len() }).collect();
    let mut tx = headers(batch, &mut tx_iovs, 1, None);
    // The sequence number each flow waits for (it is in its last ACK).
    let mut seq = vec![0u8; flows];
    let fd = client.as_raw_fd();

    // Every flow starts with its first ACK, a batch at a time.
    send_every_ack(fd, &mut tx, &mut acks, &seq);
    let start = Instant::now();
    let (mut counted_from, mut counting) = (start, false);
    let (mut round_trips, mut resent) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if !counting && now >= start + WARM_UP {
            (counted_from, counting, round_trips, resent) = (now, true, 0, 0);
        }
        if counting && now >= counted_from + duration {
            break;
        }
        // SAFETY: the message array points at live iovecs and buffers.
        let n =
            unsafe { libc::recvmmsg(fd, rx.as_mut_ptr(), batch as u32, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n <= 0 {
            // Nothing for STALL: every flow sends its last ACK again.
            send_every_ack(fd, &mut tx, &mut acks, &seq);
            resent += flows as u64;
            continue;
        }
        let mut out = 0;
        for i in 0..n as usize {
            let d = &rx_bufs[i * size..i * size + 4];
            let field = u16::from_be_bytes([d[2], d[3]]);
            let (f, s) = (usize::from(field >> 4), (field & 0xf) as u8);
            if rx[i].msg_len as usize != size || d[1] != OP_DATA || f >= flows || seq[f] != s {
                continue;
            }
            round_trips += 1;
            seq[f] = (s + 1) & 0xf;
            acks[out] = ack(f, seq[f]);
            out += 1;
        }
        send_all(fd, &mut tx, out);
    }
    let secs = counted_from.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = server_thread.join();
    let block_bytes = size - 4;
    Ok(PingPong {
        flows,
        request_bytes: REQUEST_BYTES,
        reply_bytes: size,
        block_bytes,
        seconds: secs,
        round_trips,
        round_trips_per_s: round_trips as f64 / secs,
        mbps: (round_trips * block_bytes as u64) as f64 / secs / 1e6,
        resent,
    })
}

/// Sends every flow's ACK (the one with the sequence number `seq` holds for it) through the
/// messages `tx`, which point at `acks`, a batch at a time.
fn send_every_ack(fd: libc::c_int, tx: &mut [libc::mmsghdr], acks: &mut [[u8; REQUEST_BYTES]], seq: &[u8]) {
    let batch = tx.len();
    for first in (0..seq.len()).step_by(batch) {
        let out = batch.min(seq.len() - first);
        for (k, a) in acks[..out].iter_mut().enumerate() {
            *a = ack(first + k, seq[first + k]);
        }
        send_all(fd, tx, out);
    }
}

/// Flow `f`'s ACK with sequence number `s`: opcode 4, then the flow in the block field's high
/// 12 bits and the sequence number in its low 4.
fn ack(f: usize, s: u8) -> [u8; REQUEST_BYTES] {
    let b = (((f as u16) << 4) | u16::from(s & 0xf)).to_be_bytes();
    [0, OP_ACK, b[0], b[1]]
}
