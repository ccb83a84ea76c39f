//! The DATA path allocates nothing per packet: a counting allocator around the whole process,
//! a server running in-process, and a client that allocates nothing while it measures. A transfer
//! of 10,000 blocks must allocate exactly as much as one of 100 blocks, on both backends, in
//! lock-step and with windows.
//!
//! One test in this binary, so that no other test allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bootstorm::config::{IoBackend, IoConfig, ServerConfig};
use bootstorm::proto::wire;
use bootstorm::server::Server;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `recv_from`, retried when a signal interrupts it.
fn recv(sock: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    loop {
        match sock.recv_from(buf) {
            Ok(r) => return r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// The client's buffers, allocated before measuring.
struct Buffers {
    packet: Vec<u8>,
    request: Vec<u8>,
}

/// Downloads `name` (`blocks` full blocks plus a short one) checking every byte against
/// `expect`, with buffers allocated before it starts. Returns the number of DATA received.
fn fetch(
    sock: &UdpSocket,
    server: SocketAddr,
    name: &[u8],
    blksize: u16,
    window: u16,
    expect: &[u8],
    b: &mut Buffers,
) -> u64 {
    let (buf, req) = (&mut b.packet[..], &mut b.request[..]);
    let mut d1 = [0u8; 20];
    let mut d2 = [0u8; 20];
    let opts: [(&[u8], &[u8]); 2] = [
        (b"blksize", wire::format_u64(u64::from(blksize), &mut d1)),
        (b"windowsize", wire::format_u64(u64::from(window), &mut d2)),
    ];
    let n = wire::encode_request(wire::RequestKind::Read, name, wire::Mode::Octet, opts, req).unwrap();
    sock.send_to(&req[..n], server).unwrap();
    let (n, tid) = recv(sock, buf);
    assert_eq!(&buf[..2], &[0, 6], "OACK");
    let _ = n;
    sock.send_to(&wire::ack(0), tid).unwrap();
    let mut expected: u64 = 1;
    let mut offset = 0usize;
    let mut packets = 0;
    loop {
        let (n, from) = recv(sock, buf);
        assert_eq!(from, tid);
        assert_eq!(&buf[..2], &[0, 3], "DATA");
        let block = u16::from_be_bytes([buf[2], buf[3]]);
        let behind = (expected as u16).wrapping_sub(block);
        if behind != 0 && behind < 0x8000 {
            // A block received already, sent again because this client (on a loaded machine)
            // was late with its ACK: the resend path is measured too, but not counted.
            continue;
        }
        assert_eq!(block, expected as u16, "no loss on loopback");
        let data = &buf[4..n];
        assert!(data == &expect[offset..offset + data.len()], "bytes differ at {offset}");
        offset += data.len();
        packets += 1;
        let last = data.len() < usize::from(blksize);
        if last || expected % u64::from(window) == 0 {
            sock.send_to(&wire::ack(block), tid).unwrap();
        }
        if last {
            assert_eq!(offset, expect.len());
            return packets;
        }
        expected += 1;
    }
}

#[test]
fn data_path_allocates_nothing_per_packet() {
    let dir = tempfile::tempdir().unwrap();
    let blksize = 512u16;
    let small: Vec<u8> = (0..100 * 512 + 7).map(|i| (i * 7 + 3) as u8).collect();
    let large: Vec<u8> = (0..10_000 * 512 + 7).map(|i| (i * 13 + 5) as u8).collect();
    std::fs::write(dir.path().join("small"), &small).unwrap();
    std::fs::write(dir.path().join("large"), &large).unwrap();
    for (io, backend) in [("uring", IoBackend::Uring), ("epoll", IoBackend::Epoll)] {
        let cfg = ServerConfig {
            root: dir.path().to_path_buf(),
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            workers: 1,
            io: IoConfig { backend, ..IoConfig::default() },
            ..ServerConfig::default()
        };
        let server = Server::start(cfg).unwrap();
        let addr = server.local_addrs()[0];
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut bufs = Buffers { packet: vec![0u8; 2048], request: vec![0u8; 512] };
        for window in [1u16, 16] {
            // Warm up: open and map both files, grow every table to its working size.
            for _ in 0..3 {
                fetch(&sock, addr, b"small", blksize, window, &small, &mut bufs);
                fetch(&sock, addr, b"large", blksize, window, &large, &mut bufs);
            }
            std::thread::sleep(Duration::from_millis(50));
            let a0 = ALLOCS.load(Ordering::Relaxed);
            let p_small = fetch(&sock, addr, b"small", blksize, window, &small, &mut bufs);
            std::thread::sleep(Duration::from_millis(50));
            let a1 = ALLOCS.load(Ordering::Relaxed);
            let p_large = fetch(&sock, addr, b"large", blksize, window, &large, &mut bufs);
            std::thread::sleep(Duration::from_millis(50));
            let a2 = ALLOCS.load(Ordering::Relaxed);
            let (small_allocs, large_allocs) = (a1 - a0, a2 - a1);
            println!(
                "{io} window {window}: {p_small} DATA -> {small_allocs} allocations; {p_large} DATA -> {large_allocs}"
            );
            assert_eq!((p_small, p_large), (101, 10_001));
            assert!(
                large_allocs <= small_allocs,
                "{io} window {window}: {} more DATA packets cost {} more allocations",
                p_large - p_small,
                large_allocs.saturating_sub(small_allocs)
            );
        }
        server.stop();
        server.wait().unwrap();
    }
}
