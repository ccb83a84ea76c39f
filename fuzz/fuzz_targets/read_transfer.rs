//! The server's read transfer fed an arbitrary sequence of packets, repeated requests, timeouts
//! and aborts. It must never panic, and every DATA it asks for must lie inside the file and be no
//! longer than the block size.
#![no_main]

use std::time::Duration;

use bootstorm::proto::options::{Limits, negotiate};
use bootstorm::proto::wire::{Mode, Packet, RequestKind};
use bootstorm::proto::{LocalFailure, ReadTransfer, RetransmitConfig, Timestamp, Transmit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let size = u64::from(u16::from_le_bytes([data[0], data[1]])) * u64::from(data[2] % 8 + 1);
    // The request: a real one whose options come from the input.
    let mut req = b"\x00\x01f\x00octet\x00".to_vec();
    let opts = [("blksize", 8 + u64::from(data[3]) * 13), ("windowsize", u64::from(data[3] % 20)), ("tsize", 0)];
    for (n, v) in opts {
        req.extend_from_slice(n.as_bytes());
        req.push(0);
        req.extend_from_slice(v.to_string().as_bytes());
        req.push(0);
    }
    let Ok(Packet::Request(r)) = Packet::decode(&req) else { return };
    let neg = negotiate(RequestKind::Read, Mode::Octet, &r.options, Some(size), Limits::default(), None);
    let cfg = RetransmitConfig::default();
    let mut now = Timestamp::ZERO;
    let mut x = ReadTransfer::new(now, size, &neg, &cfg);
    let blksize = if neg.has_oack() { neg.blksize } else { 512 };
    let mut ops = &data[4..];
    let check = |x: &mut ReadTransfer, now| {
        let mut n = 0;
        while let Some(t) = x.poll_transmit(now, &cfg) {
            if let Transmit::Data { offset, len, .. } = t {
                assert!(offset + len as u64 <= size, "DATA past the end");
                assert!(len <= usize::from(blksize), "DATA longer than blksize");
            }
            n += 1;
            assert!(n <= 40_000, "a window never ends");
        }
    };
    while let [op, len, rest @ ..] = ops {
        let len = usize::from(*len).min(rest.len());
        let (arg, tail) = rest.split_at(len);
        ops = tail;
        match op % 5 {
            0 => {
                if let Ok(p) = Packet::decode(arg) {
                    x.handle_packet(now, &p, &cfg);
                }
            }
            1 => {
                let block = u16::from_be_bytes([arg.first().copied().unwrap_or(0), arg.get(1).copied().unwrap_or(0)]);
                x.handle_packet(now, &Packet::Ack { block }, &cfg);
            }
            2 => {
                let ms = arg.iter().map(|&b| u64::from(b)).sum::<u64>() * 10;
                now = now + Duration::from_millis(ms);
                x.handle_timeout(now, &cfg);
            }
            3 => {
                x.handle_repeated_request(now, &cfg);
            }
            _ => x.fail(LocalFailure::ShuttingDown),
        }
        check(&mut x, now);
        if x.outcome().is_some() {
            return;
        }
    }
});
