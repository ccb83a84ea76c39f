//! Micro-benchmarks of the hot path, with allocations per operation.
//!
//! - decode of a real request (OVMF's) and of an ACK;
//! - the read transfer's step for an ACK that opens a new window of 16 blocks (handle the ACK,
//!   poll the 16 transmits);
//! - building a DATA send: the 4-byte header and the slice of the file's mapping, as an iovec;
//! - what a request's name costs with lookup settings on (docs/names.md): a 50-rule map file
//!   that leaves the name as it is and one that rewrites it, a `--client-dir` template
//!   expanded, and the case-insensitive search through directories already read (with every
//!   setting off the name is only normalised, as before).
//!
//! Before criterion runs, each operation is also run 100,000 times under a counting allocator
//! and the allocations per operation are printed: the DATA path must show 0.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bootstorm::config::ClientDir;
use bootstorm::fs::{FileCache, Root};
use bootstorm::proto::options::{Limits, negotiate};
use bootstorm::proto::wire::{self, Mode, Packet, RequestKind};
use bootstorm::proto::{ReadTransfer, RetransmitConfig, Timestamp, Transmit};
use bootstorm::remap::{Client, Rules};
use criterion::{Criterion, Throughput, criterion_group};

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
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const EDK2_RRQ: &[u8] = b"\x00\x01grubx64.efi\x00octet\x00tsize\x000\x00blksize\x001468\x00windowsize\x004\x00";
const CFG: RetransmitConfig = RetransmitConfig {
    rto: bootstorm::proto::RtoBounds {
        initial: Duration::from_secs(1),
        min: Duration::from_millis(10),
        max: Duration::from_secs(2),
    },
    max_retries: 6,
    patience: Duration::from_secs(6),
    max_silence: Duration::from_secs(60),
};

/// A transfer of a big file at blksize 1468, windows of 16, past its OACK.
fn windowed_transfer() -> ReadTransfer {
    let Packet::Request(r) = Packet::decode(b"\x00\x01f\x00octet\x00blksize\x001468\x00windowsize\x0016\x00").unwrap()
    else {
        unreachable!()
    };
    let size = 1u64 << 40;
    let neg = negotiate(RequestKind::Read, Mode::Octet, &r.options, Some(size), Limits::default(), None);
    let mut x = ReadTransfer::new(Timestamp::ZERO, size, &neg, &CFG);
    assert_eq!(x.poll_transmit(Timestamp::ZERO, &CFG), Some(Transmit::Oack(x.oack())));
    x.handle_packet(Timestamp::from_micros(10), &Packet::Ack { block: 0 }, &CFG);
    while x.poll_transmit(Timestamp::from_micros(10), &CFG).is_some() {}
    x
}

/// A map file of 50 rules, as fleets write them: 49 prefixes taken off or mapped, then every
/// backslash made a slash.
fn fifty_rules() -> Rules {
    let text: String = (0..49)
        .map(|i| format!("r ^/tftpboot/site{i}/ /images/site{i}/\n"))
        .chain(["rg \\\\ /\n".to_string()])
        .collect();
    let rules = Rules::parse(text.as_bytes()).unwrap();
    assert_eq!(rules.len(), 50);
    rules
}

/// One window step: the ACK of the window's last block, then the next 16 blocks.
fn window_step(x: &mut ReadTransfer, acked: &mut u16, now: &mut u64) -> usize {
    *acked = acked.wrapping_add(16);
    *now += 50;
    let t = Timestamp::from_micros(*now);
    x.handle_packet(t, &Packet::Ack { block: *acked }, &CFG);
    let mut n = 0;
    while let Some(tx) = x.poll_transmit(t, &CFG) {
        black_box(tx);
        n += 1;
    }
    n
}

fn per_op(name: &str, iters: u64, mut f: impl FnMut()) {
    f();
    let a = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..iters {
        f();
    }
    let per = (ALLOCS.load(Ordering::Relaxed) - a) as f64 / iters as f64;
    println!("allocations per operation: {name:<32} {per}");
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kernel"), vec![0x5a; 8 << 20]).unwrap();
    let mut cache = FileCache::new(Arc::new(Root::open(dir.path(), true).unwrap()), 8);
    let file = cache.get(b"kernel", Timestamp::ZERO).unwrap();

    // Allocation counts first.
    per_op("decode request (EDK2)", 100_000, || {
        black_box(Packet::decode(black_box(EDK2_RRQ)).unwrap());
    });
    per_op("decode ACK", 100_000, || {
        black_box(Packet::decode(black_box(b"\x00\x04\x12\x34")).unwrap());
    });
    let (mut x, mut acked, mut now) = (windowed_transfer(), 0u16, 10u64);
    per_op("ACK opening a window of 16", 100_000, || {
        black_box(window_step(&mut x, &mut acked, &mut now));
    });
    let mut block = 0u64;
    per_op("build DATA send (hdr + mmap)", 100_000, || {
        block = (block + 1) % 5000;
        let hdr = wire::data_header(block as u16);
        let s = file.raw_slice(block * 1468, 1468).unwrap();
        let iov = [
            libc::iovec { iov_base: hdr.as_ptr() as *mut _, iov_len: 4 },
            libc::iovec { iov_base: s.ptr as *mut _, iov_len: s.len },
        ];
        black_box(iov);
    });

    let rules = fifty_rules();
    let client = Client { addr: "198.18.0.2".parse().unwrap(), write: false };
    per_op("50 rules, name unchanged", 10_000, || {
        black_box(rules.rewrite(black_box(b"pxelinux.cfg/01-52-54-00-ab-cd-ef"), &client));
    });
    per_op("50 rules, name rewritten", 10_000, || {
        black_box(rules.rewrite(black_box(b"\\Boot\\x64\\wdsmgfw.efi"), &client));
    });
    let view = ClientDir::new("clients/{hexip}/{mac}").unwrap();
    let mut out = [0u8; 512];
    per_op("client dir expanded", 100_000, || {
        black_box(view.expand(client.addr, Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]), &mut out));
    });
    std::fs::create_dir(dir.path().join("pxelinux.cfg")).unwrap();
    for i in 0..40 {
        std::fs::write(dir.path().join(format!("pxelinux.cfg/01-52-54-00-00-00-{i:02x}")), b"m").unwrap();
    }
    // A directory changed within 2 s is read again at each search: let it settle.
    std::thread::sleep(Duration::from_millis(2100));
    let mut found = [0u8; 512];
    per_op("case-insensitive miss, dirs kept", 10_000, || {
        black_box(cache.find_case_insensitive(b"PXELINUX.CFG/C612", &mut found).is_err());
    });

    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fifty_rules_unchanged", |b| {
        b.iter(|| rules.rewrite(black_box(b"pxelinux.cfg/01-52-54-00-ab-cd-ef"), &client))
    });
    g.bench_function("fifty_rules_rewritten", |b| {
        b.iter(|| rules.rewrite(black_box(b"\\Boot\\x64\\wdsmgfw.efi"), &client))
    });
    g.bench_function("client_dir_expanded", |b| {
        b.iter(|| view.expand(client.addr, Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]), &mut out).map(<[u8]>::len))
    });
    g.bench_function("case_insensitive_miss_dirs_kept", |b| {
        b.iter(|| cache.find_case_insensitive(b"PXELINUX.CFG/C612", &mut found).is_err())
    });
    g.finish();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("request_edk2", |b| b.iter(|| Packet::decode(black_box(EDK2_RRQ)).unwrap()));
    g.bench_function("ack", |b| b.iter(|| Packet::decode(black_box(b"\x00\x04\x12\x34")).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("read_transfer");
    g.throughput(Throughput::Elements(16));
    let (mut x, mut acked, mut now) = (windowed_transfer(), 0u16, 10u64);
    g.bench_function("ack_opens_window_of_16", |b| b.iter(|| window_step(&mut x, &mut acked, &mut now)));
    g.finish();

    let mut g = c.benchmark_group("data_send");
    g.throughput(Throughput::Bytes(1472));
    let mut block = 0u64;
    g.bench_function("header_and_mapping_slice", |b| {
        b.iter(|| {
            block = (block + 1) % 5000;
            let hdr = wire::data_header(block as u16);
            let s = file.raw_slice(block * 1468, 1468).unwrap();
            black_box([
                libc::iovec { iov_base: hdr.as_ptr() as *mut _, iov_len: 4 },
                libc::iovec { iov_base: s.ptr as *mut _, iov_len: s.len },
            ])
        })
    });
    g.finish();
}

/// The group, in a module of its own: criterion's macro generates an undocumented `pub fn`.
#[allow(missing_docs, unreachable_pub)]
mod group {
    use super::*;

    criterion_group! {
        name = hot_path;
        config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
        targets = benches
    }
}

fn main() {
    group::hot_path();
    Criterion::default().configure_from_args().final_summary();
}
