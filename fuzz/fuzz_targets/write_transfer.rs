//! The server's write transfer fed an arbitrary sequence of packets, repeated requests, timeouts
//! and commit results. It must never panic, must hand out only blocks in order at increasing
//! offsets, and must never accept more than its size limit.
#![no_main]

use std::time::Duration;

use bootstorm::proto::options::{Limits, negotiate};
use bootstorm::proto::wire::{Mode, Packet, RequestKind};
use bootstorm::proto::{LocalFailure, RetransmitConfig, Timestamp, WriteTransfer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limit = u64::from(u16::from_le_bytes([data[0], data[1]])) * 4;
    let req =
        format!("\x00\x02f\x00octet\x00blksize\x00{}\x00windowsize\x00{}\x00", 8 + u64::from(data[2]), data[2] % 9);
    let Ok(Packet::Request(r)) = Packet::decode(req.as_bytes()) else { return };
    let neg = negotiate(RequestKind::Write, Mode::Octet, &r.options, None, Limits::default(), None);
    let cfg = RetransmitConfig::default();
    let mut now = Timestamp::ZERO;
    let mut x = WriteTransfer::new(now, &neg, limit, &cfg);
    let mut expected_offset = 0u64;
    let mut ops = &data[3..];
    while let [op, len, rest @ ..] = ops {
        let len = usize::from(*len).min(rest.len());
        let (arg, tail) = rest.split_at(len);
        ops = tail;
        match op % 5 {
            0 => {
                if let Ok(p) = Packet::decode(arg) {
                    if let Some((off, bytes)) = x.handle_packet(now, &p, &cfg) {
                        assert_eq!(off, expected_offset, "blocks in order");
                        expected_offset += bytes.len() as u64;
                        assert!(expected_offset <= limit, "accepted past the limit");
                    }
                }
            }
            1 => {
                let ms = arg.iter().map(|&b| u64::from(b)).sum::<u64>() * 10;
                now = now + Duration::from_millis(ms);
                x.handle_timeout(now, &cfg);
            }
            2 => {
                x.handle_repeated_request(now, &cfg);
            }
            3 => {
                if x.wants_commit() {
                    let ok = arg.first().is_none_or(|b| b % 2 == 0);
                    x.commit_result(now, if ok { Ok(()) } else { Err(LocalFailure::DiskFull.into()) }, &cfg);
                }
            }
            _ => x.fail(LocalFailure::ShuttingDown),
        }
        let mut n = 0;
        while x.poll_transmit().is_some() {
            n += 1;
            assert!(n < 10, "a write transfer sends a handful of packets per event");
        }
        if x.outcome().is_some() {
            return;
        }
    }
});
