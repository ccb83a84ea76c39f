//! Option negotiation tests: each option's limits, what is acknowledged, block size for an MTU.

use super::*;
use crate::proto::wire::Packet;

fn opts(raw: &[u8]) -> Options<'_> {
    match Packet::decode(raw).unwrap() {
        Packet::Request(r) => r.options,
        p => panic!("{p:?}"),
    }
}

fn req(options: &str) -> Vec<u8> {
    let mut v = b"\x00\x01f\x00octet\x00".to_vec();
    for part in options.split_whitespace() {
        v.extend(part.as_bytes());
        v.push(0);
    }
    v
}

fn oack(n: &Negotiated, o: &Options<'_>) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let len = n.encode_oack(o, &mut buf).unwrap();
    buf[..len].to_vec()
}

const READ: RequestKind = RequestKind::Read;

#[test]
fn no_options_no_oack() {
    let r = req("");
    let n = negotiate(READ, Mode::Octet, &opts(&r), Some(100), Limits::default(), None);
    assert_eq!(n, Negotiated::PLAIN);
    assert!(!n.has_oack());
}

#[test]
fn edk2_probe_and_request() {
    let r = req("tsize 0 blksize 1468 windowsize 4");
    let o = opts(&r);
    let n = negotiate(READ, Mode::Octet, &o, Some(2_681_664), Limits::default(), Some(1468));
    assert_eq!((n.blksize, n.windowsize, n.tsize), (1468, 4, Some(2_681_664)));
    assert_eq!(oack(&n, &o), b"\x00\x06tsize\x002681664\x00blksize\x001468\x00windowsize\x004\x00");
}

#[test]
fn blksize_capped_by_server_and_mtu_never_raised() {
    let r = req("blksize 65464");
    let o = opts(&r);
    let lim = Limits { max_blksize: 8192, ..Limits::default() };
    assert_eq!(negotiate(READ, Mode::Octet, &o, Some(1), lim, None).blksize, 8192);
    assert_eq!(negotiate(READ, Mode::Octet, &o, Some(1), lim, Some(1468)).blksize, 1468);
    let r = req("blksize 1024");
    let n = negotiate(READ, Mode::Octet, &opts(&r), Some(1), lim, Some(1468));
    assert_eq!(n.blksize, 1024);
    // Above the protocol maximum: clamped, never refused.
    let r = req("blksize 70000");
    assert_eq!(negotiate(READ, Mode::Octet, &opts(&r), Some(1), Limits::default(), None).blksize, MAX_BLKSIZE);
}

#[test]
fn invalid_values_left_out() {
    let r = req("blksize 4 timeout 0 windowsize 0 tsize abc");
    let o = opts(&r);
    let n = negotiate(READ, Mode::Octet, &o, Some(10), Limits::default(), None);
    assert_eq!(n, Negotiated::PLAIN);
    let r = req("timeout 256 blksize -1 windowsize 65536");
    assert_eq!(negotiate(READ, Mode::Octet, &opts(&r), Some(10), Limits::default(), None), Negotiated::PLAIN);
}

#[test]
fn timeout_echoed_exactly() {
    for t in [1u8, 5, 255] {
        let r = req(&format!("timeout {t}"));
        let o = opts(&r);
        let n = negotiate(READ, Mode::Octet, &o, Some(10), Limits::default(), None);
        assert_eq!(n.timeout, Some(t));
        assert_eq!(oack(&n, &o), format!("\x00\x06timeout\x00{t}\x00").into_bytes());
    }
}

#[test]
fn windowsize_capped() {
    let r = req("windowsize 1000");
    let n = negotiate(READ, Mode::Octet, &opts(&r), Some(1), Limits::default(), None);
    assert_eq!(n.windowsize, 64);
    let lim = Limits { max_blksize: 512, max_windowsize: 65535, ..Limits::default() };
    let r = req("windowsize 65535");
    assert_eq!(negotiate(READ, Mode::Octet, &opts(&r), Some(1), lim, None).windowsize, MAX_WINDOWSIZE);
}

#[test]
fn tsize_64_bit_and_omitted_for_netascii() {
    let r = req("tsize 0");
    let o = opts(&r);
    let n = negotiate(READ, Mode::Octet, &o, Some(5 << 30), Limits::default(), None);
    assert_eq!(oack(&n, &o), b"\x00\x06tsize\x005368709120\x00");
    let n = negotiate(READ, Mode::Netascii, &o, None, Limits::default(), None);
    assert!(!n.has_oack());
    // A write echoes the client's size.
    let r = req("tsize 12345");
    let n = negotiate(RequestKind::Write, Mode::Octet, &opts(&r), None, Limits::default(), None);
    assert_eq!(n.tsize, Some(12345));
}

#[test]
fn client_spelling_order_and_duplicates() {
    let r = req("BLKSIZE 1432 foo bar TSize 0 blksize 512 msftwindow 31416");
    let o = opts(&r);
    let n = negotiate(READ, Mode::Octet, &o, Some(77), Limits::default(), None);
    assert_eq!(n.blksize, 1432, "first occurrence wins");
    assert_eq!(oack(&n, &o), b"\x00\x06BLKSIZE\x001432\x00TSize\x0077\x00");
}

#[test]
fn oack_written_again_from_its_shape() {
    let r = req("BLKSIZE 1432 foo bar TSize 0 blksize 512 windowsize 4 timeout 3");
    let o = opts(&r);
    let n = negotiate(READ, Mode::Octet, &o, Some(77), Limits::default(), None);
    let again = Negotiated::with_shape(n.shape(), n.blksize, n.windowsize, n.timeout, n.tsize);
    assert_eq!(again, n);
    assert_eq!(OackShape::from_bits(n.shape().to_bits()), n.shape());
    let mut buf = [0u8; 512];
    let len = again.encode_oack_again(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"\x00\x06blksize\x001432\x00tsize\x0077\x00windowsize\x004\x00timeout\x003\x00");
    let r = req("tsize 0 blksize 1468 windowsize 4");
    let o = opts(&r);
    let n = negotiate(READ, Mode::Octet, &o, Some(5), Limits::default(), None);
    let len = n.encode_oack_again(&mut buf).unwrap();
    assert_eq!(&buf[..len], oack(&n, &o), "the same bytes as the first OACK for a lower-case request");
}

#[test]
fn window_bytes_cap_blksize_and_windowsize() {
    let lim = Limits { max_window_bytes: Some(5000), ..Limits::default() };
    let r = req("blksize 1468 windowsize 64");
    let n = negotiate(READ, Mode::Octet, &opts(&r), Some(1 << 20), lim, None);
    assert_eq!((n.blksize, n.windowsize), (1468, 3), "three 1,500-byte datagrams fit 5,000 bytes");
    let r = req("blksize 65464 windowsize 4");
    let n = negotiate(READ, Mode::Octet, &opts(&r), Some(1 << 20), lim, None);
    assert_eq!((n.blksize, n.windowsize), (4968, 1), "one datagram of at most 5,000 bytes");
    let r = req("windowsize 64");
    assert_eq!(negotiate(READ, Mode::Octet, &opts(&r), Some(1), lim, None).windowsize, 9, "512-byte blocks");
}

#[test]
fn mtu_arithmetic() {
    assert_eq!(blksize_for_mtu(1500, false), 1468);
    assert_eq!(blksize_for_mtu(1500, true), 1448);
    assert_eq!(blksize_for_mtu(9000, false), 8968);
    assert_eq!(blksize_for_mtu(65536, false), MAX_BLKSIZE);
    assert_eq!(blksize_for_mtu(0, false), MIN_BLKSIZE);
}

/// A refused option is never granted: the request is answered as if it had not been asked, so
/// a request whose only options are refused gets DATA 1 (no OACK), and the others are granted
/// as usual, the OACK leaving the refused ones out.
#[test]
fn refused_options_are_answered_as_if_not_asked() {
    let all = Refused { blksize: true, tsize: true, timeout: true, windowsize: true };
    let r = req("blksize 1468 tsize 0 timeout 3 windowsize 8");
    let o = opts(&r);
    let n = negotiate(READ, Mode::Octet, &o, Some(100), Limits { refuse: all, ..Limits::default() }, None);
    assert_eq!(n, Negotiated::PLAIN);
    assert!(!n.has_oack(), "only refused options: DATA 1, not an OACK");
    let r = req("blksize 1468");
    let lim = Limits { refuse: Refused { blksize: true, ..Refused::default() }, ..Limits::default() };
    let n = negotiate(READ, Mode::Octet, &opts(&r), Some(100), lim, None);
    assert!(!n.has_oack(), "--refuse-option blksize alone");
    assert_eq!(n.blksize, DEFAULT_BLKSIZE);
    // Each one alone: the others are granted, in the client's order, the refused one left out.
    let cases: [(Refused, &[u8]); 4] = [
        (
            Refused { blksize: true, ..Refused::default() },
            b"\x00\x06tsize\x00100\x00timeout\x003\x00windowsize\x008\x00",
        ),
        (
            Refused { tsize: true, ..Refused::default() },
            b"\x00\x06blksize\x001468\x00timeout\x003\x00windowsize\x008\x00",
        ),
        (
            Refused { timeout: true, ..Refused::default() },
            b"\x00\x06blksize\x001468\x00tsize\x00100\x00windowsize\x008\x00",
        ),
        (
            Refused { windowsize: true, ..Refused::default() },
            b"\x00\x06blksize\x001468\x00tsize\x00100\x00timeout\x003\x00",
        ),
    ];
    let r = req("blksize 1468 tsize 0 timeout 3 windowsize 8");
    let o = opts(&r);
    for (refuse, want) in cases {
        let n = negotiate(READ, Mode::Octet, &o, Some(100), Limits { refuse, ..Limits::default() }, None);
        assert_eq!(oack(&n, &o), want, "{refuse:?}");
        let mut buf = [0u8; 512];
        let len = n.encode_oack_again(&mut buf).unwrap();
        assert_eq!(&buf[..len], want, "written again: {refuse:?}");
        assert_eq!(n.blksize, if refuse.blksize { DEFAULT_BLKSIZE } else { 1468 });
        assert_eq!(n.windowsize, if refuse.windowsize { 1 } else { 8 });
        assert_eq!(n.timeout, if refuse.timeout { None } else { Some(3) });
        assert_eq!(n.tsize, if refuse.tsize { None } else { Some(100) });
    }
    // Writes too: a refused tsize is not echoed.
    let r = req("tsize 12345");
    let lim = Limits { refuse: Refused { tsize: true, ..Refused::default() }, ..Limits::default() };
    assert_eq!(negotiate(RequestKind::Write, Mode::Octet, &opts(&r), None, lim, None), Negotiated::PLAIN);
    // A small limit is not a refusal: blksize is still granted (RFC 2347), at 512.
    let r = req("blksize 1468 windowsize 4");
    let lim = Limits { max_blksize: 512, max_windowsize: 1, ..Limits::default() };
    let n = negotiate(READ, Mode::Octet, &opts(&r), Some(100), lim, None);
    assert!(n.has_oack());
    assert_eq!((n.blksize, n.windowsize), (512, 1));
}
