//! A new serving policy taken by a running engine (a reload): new requests see all of it,
//! transfers in flight go on as they started.

use super::*;
use crate::proto::RtoBounds;

const RRQ_SMALL: &[u8] = b"\x00\x01small\x00octet\x00";

/// The rig's engine takes the default policy changed by `set`, as a reload hands it over.
fn reload(r: &mut Rig, set: impl FnOnce(&mut ServerConfig)) {
    let mut cfg = ServerConfig { root: r.dir.path().to_path_buf(), ..Default::default() };
    set(&mut cfg);
    cfg.validate().unwrap();
    r.engine.set_policy(Arc::new(cfg.effective_policy()), r.now);
}

/// An ACK from `peer` to the transfer in `slot` (each transfer of the rig opens one socket, in
/// slot order).
fn ack_slot(r: &mut Rig, slot: u32, peer: &str, block: u16) {
    let token = r.engine.token(slot);
    r.dgram(Via::Transfer(SockRef(slot)), Some(token), peer, &wire::ack(block));
}

/// The wire opcode and block of each datagram sent, by client.
fn blocks(sent: &[(Via, SocketAddr, Option<LocalEnd>, Vec<u8>)]) -> Vec<(String, [u8; 4])> {
    sent.iter().map(|s| (s.1.to_string(), [s.3[0], s.3[1], s.3[2], s.3[3]])).collect()
}

/// When the transfer in `slot` wants its next timer, after `now`.
fn timer_of(r: &mut Rig, slot: u32) -> Duration {
    let now = r.now;
    let t = r.engine.table.get_mut(slot).expect("transfer held");
    t.kind.poll_timeout().expect("timer armed").saturating_since(now)
}

#[test]
fn a_narrowed_allow_list_ignores_new_requests_and_lets_transfers_finish() {
    let mut r = rig(|_| {});
    r.request(CLIENT, RRQ_SMALL);
    assert_eq!(&r.io.take()[0].3[..4], &[0, 3, 0, 1]);
    reload(&mut r, |c| c.serve.allow = vec![Cidr::parse("192.0.2.20/32").unwrap()]);
    // The transfer of the client now left out goes on to its end.
    r.ack(CLIENT, 1);
    assert_eq!(blocks(&r.io.take()), [(CLIENT.to_string(), [0, 3, 0, 2])]);
    r.ack(CLIENT, 2);
    assert_eq!((r.engine.active, r.counters.get(Counter::Ok)), (0, 1));
    // Its new request is ignored, with no answer; a client the new list names is served.
    r.request("192.0.2.10:2001", RRQ_SMALL);
    assert!(r.io.take().is_empty(), "a request from outside the new allow list is answered");
    assert_eq!(r.engine.active, 0);
    r.request("192.0.2.20:2000", RRQ_SMALL);
    assert_eq!(blocks(&r.io.take()), [("192.0.2.20:2000".to_string(), [0, 3, 0, 1])]);
}

#[test]
fn transfers_keep_the_retransmission_settings_they_started_with() {
    const OLD: &str = CLIENT;
    const NEW: &str = "192.0.2.11:2000";
    // Before: a first timeout of 1 s, the adaptive timeout within 10 ms..2 s.
    let mut r = rig(|_| {});
    r.request(OLD, RRQ_SMALL);
    reload(&mut r, |c| {
        let rto = RtoBounds {
            initial: Duration::from_secs(3),
            min: Duration::from_millis(2500),
            max: Duration::from_secs(4),
        };
        c.serve.retransmit = crate::config::retransmit(rto, 6);
    });
    r.request(NEW, RRQ_SMALL);
    assert_eq!(blocks(&r.io.take()).len(), 2, "DATA 1 to each");
    assert_eq!(timer_of(&mut r, 0), Duration::from_secs(1), "the first timeout the old transfer started with");
    assert_eq!(timer_of(&mut r, 1), Duration::from_secs(3), "the new first timeout");
    // Both clients acknowledge after 0.5 s: each adaptive timeout (from that round trip) stays
    // within the bounds of its start.
    r.advance(Duration::from_millis(500));
    ack_slot(&mut r, 0, OLD, 1);
    ack_slot(&mut r, 1, NEW, 1);
    assert_eq!(blocks(&r.io.take()).len(), 2, "DATA 2 to each");
    let (old, new) = (timer_of(&mut r, 0), timer_of(&mut r, 1));
    assert!(old <= Duration::from_secs(2), "old transfer: {old:?}, beyond the 2 s it started with");
    assert!(new >= Duration::from_millis(2500), "new transfer: {new:?}, below the new 2.5 s");
    // Silence: the old transfer resends DATA 2 within its 2 s, the new one does not; the old
    // one's backoff stops at its 2 s.
    r.advance(Duration::from_millis(2010));
    assert_eq!(blocks(&r.io.take()), [(OLD.to_string(), [0, 3, 0, 2])]);
    assert!(timer_of(&mut r, 0) <= Duration::from_secs(2), "backoff beyond the old maximum");
    assert_eq!(r.engine.retransmits.entries_len(), 2, "the settings of both are kept");
    // Once the old transfer is over, its settings make room for the next change.
    ack_slot(&mut r, 0, OLD, 2);
    assert_eq!(r.engine.active, 1);
    reload(&mut r, |c| {
        let rto = RtoBounds { initial: Duration::from_millis(500), ..c.serve.retransmit.rto };
        c.serve.retransmit = crate::config::retransmit(rto, 6);
    });
    assert_eq!(r.engine.retransmits.entries_len(), 2, "the unused entry was taken again");
    let kept = r.engine.table.get_mut(1).unwrap().route.retransmit();
    assert_eq!(r.engine.retransmits.get(kept).rto.min, Duration::from_millis(2500), "the new transfer's, kept");
    assert_eq!(r.engine.retransmits.in_force().rto.initial, Duration::from_millis(500));
}

#[test]
fn a_reload_forgets_cached_files_and_transfers_keep_their_version() {
    let mut r = rig(|_| {});
    // `small` is in use by a transfer, `text` served and idle in the cache.
    r.request(CLIENT, RRQ_SMALL);
    assert_eq!(r.io.take()[0].3[4..], [7u8; 512]);
    r.request("192.0.2.11:2000", b"\x00\x01text\x00octet\x00");
    assert_eq!(r.io.take()[0].3[4..], *b"a\nb");
    ack_slot(&mut r, 1, "192.0.2.11:2000", 1);
    assert_eq!(r.engine.files.len(), 2);
    // Replaced on disk: `small` by rename (a new inode), `text` rewritten in place.
    let small = r.dir.path().join("small");
    std::fs::write(r.dir.path().join("small.new"), [9u8; 1000]).unwrap();
    std::fs::rename(r.dir.path().join("small.new"), &small).unwrap();
    std::fs::write(r.dir.path().join("text"), b"hello\nworld").unwrap();
    reload(&mut r, |_| {});
    assert!(r.engine.files.is_empty(), "cached versions kept by the reload");
    // The transfer in flight keeps its version; new transfers get the new contents.
    r.ack(CLIENT, 1);
    assert_eq!(r.io.take()[0].3[4..], [7u8; 488]);
    r.request("192.0.2.12:2000", RRQ_SMALL);
    assert_eq!(r.io.take()[0].3[4..], [9u8; 512]);
    r.request("192.0.2.13:2000", b"\x00\x01text\x00octet\x00");
    assert_eq!(r.io.take()[0].3[4..], *b"hello\nworld");
}

#[test]
fn world_readable_only_follows_the_reload() {
    use std::os::unix::fs::PermissionsExt;
    let mut r = rig(|_| {});
    let private = r.dir.path().join("private");
    std::fs::write(&private, b"secret").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rrq = b"\x00\x01private\x00octet\x00";
    r.request(CLIENT, rrq);
    assert_eq!(error_of(&r.io.take()[0].3).0, 2, "refused by default");
    reload(&mut r, |c| c.serve.world_readable_only = false);
    r.request("192.0.2.10:2001", rrq);
    assert_eq!(r.io.take()[0].3[4..], *b"secret", "served after --serve-private-files");
    reload(&mut r, |_| {});
    r.request("192.0.2.10:2002", rrq);
    assert_eq!(error_of(&r.io.take()[0].3).0, 2, "refused again");
}

#[test]
fn a_changed_rate_limit_applies_and_an_unchanged_one_keeps_its_buckets() {
    let no_limit = |c: &mut ServerConfig| {
        c.serve.rate_per_source = None;
        c.serve.rate_limit_always = true;
    };
    // One new transfer per source, and next to no refill.
    let one = |c: &mut ServerConfig| {
        c.serve.rate_per_source = Some(SourceRate { per_second: 0.001, burst: 1.0 });
        c.serve.rate_limit_always = true;
    };
    let mut r = rig(no_limit);
    let answered = |r: &mut Rig, port: u16| {
        r.request(&format!("192.0.2.10:{port}"), RRQ_SMALL);
        !r.io.take().is_empty()
    };
    assert!((3000..3004).all(|p| answered(&mut r, p)), "no limit at first");
    reload(&mut r, one);
    assert!(answered(&mut r, 3010), "the new bucket starts full");
    assert!(!answered(&mut r, 3011), "and holds one transfer");
    // Another setting changes: the buckets stay as they are.
    reload(&mut r, |c| {
        one(c);
        c.serve.log_requests = true;
    });
    assert!(!answered(&mut r, 3012), "the bucket emptied before the reload is still empty");
    reload(&mut r, no_limit);
    assert!(answered(&mut r, 3013), "no limit again");
}
