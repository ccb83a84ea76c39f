//! The client download (the load generator's) fed arbitrary server packets and timeouts: it must
//! never panic and must deliver data only in order, never past what it has been sent.
#![no_main]

use std::time::Duration;

use bootstorm::proto::wire::Packet;
use bootstorm::proto::{ClientConfig, ReadClient, RequestOptions, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut ops)) = data.split_first() else { return };
    let opts = RequestOptions {
        blksize: (first & 1 != 0).then_some(8 + u16::from(first) * 5),
        windowsize: (first & 2 != 0).then_some(u16::from(first % 16) + 1),
        tsize: first & 4 != 0,
        timeout: (first & 8 != 0).then_some(first % 7 + 1),
    };
    let cfg = ClientConfig::default();
    let mut now = Timestamp::ZERO;
    let mut c = ReadClient::new(now, opts);
    let mut next_offset = 0u64;
    while let [op, len, rest @ ..] = ops {
        let len = usize::from(*len).min(rest.len());
        let (arg, tail) = rest.split_at(len);
        ops = tail;
        if op % 4 == 0 {
            now = now + Duration::from_millis(u64::from(*op) * 7);
            c.handle_timeout(now, &cfg);
        } else if let Ok(p) = Packet::decode(arg) {
            if let Some((off, bytes)) = c.handle_packet(now, &p, &cfg) {
                assert_eq!(off, next_offset, "delivered in order");
                next_offset += bytes.len() as u64;
            }
        }
        while c.poll_transmit(now, &cfg).is_some() {}
        if c.outcome().is_some() {
            return;
        }
    }
});
