//! The packet decoder on arbitrary datagrams: it must never panic, and whatever it accepts must
//! encode and decode back to the same packet.
#![no_main]

use bootstorm::proto::wire::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        let mut buf = vec![0u8; data.len() + 8];
        let n = p.encode(&mut buf).expect("a decoded packet re-encodes into as many bytes");
        assert_eq!(Packet::decode(&buf[..n]).expect("re-encoded packet decodes"), p);
    }
});
