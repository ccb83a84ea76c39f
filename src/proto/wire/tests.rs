//! Codec tests: hand-written byte vectors for every packet kind, then property round trips.

use super::*;
use proptest::prelude::*;

fn decode(b: &[u8]) -> Result<Packet<'_>, DecodeError> {
    Packet::decode(b)
}

fn roundtrip(b: &[u8]) {
    let p = decode(b).expect("valid packet");
    let mut out = [0u8; 4096];
    let n = p.encode(&mut out).expect("fits");
    assert_eq!(&out[..n], b, "re-encoding {p:?}");
}

#[test]
fn rrq_plain() {
    let b = b"\x00\x01pxelinux.0\x00octet\x00";
    let Packet::Request(r) = decode(b).unwrap() else { panic!() };
    assert_eq!(r.kind, RequestKind::Read);
    assert_eq!(r.filename, b"pxelinux.0");
    assert_eq!(r.mode, Mode::Octet);
    assert!(r.options.is_empty());
    roundtrip(b);
}

#[test]
fn wrq_netascii_mixed_case_mode() {
    let b = b"\x00\x02log.txt\x00NetASCII\x00";
    let Packet::Request(r) = decode(b).unwrap() else { panic!() };
    assert_eq!(r.kind, RequestKind::Write);
    assert_eq!(r.mode, Mode::Netascii);
    assert_eq!(r.mode_raw, b"NetASCII");
    roundtrip(b);
}

#[test]
fn mail_mode_is_recognised() {
    let Packet::Request(r) = decode(b"\x00\x01f\x00MAIL\x00").unwrap() else { panic!() };
    assert_eq!(r.mode, Mode::Mail);
}

#[test]
fn rrq_with_every_option_edk2_spelling() {
    // What OVMF sends for its size probe (real-clients.md), plus timeout and an unknown option.
    let b = b"\x00\x01grubx64.efi\x00octet\x00tsize\x000\x00blksize\x001468\x00windowsize\x004\x00timeout\x005\x00msftwindow\x0031416\x00";
    let Packet::Request(r) = decode(b).unwrap() else { panic!() };
    assert_eq!(r.options.len(), 5);
    assert_eq!(r.options.get("tsize"), Some((&b"tsize"[..], &b"0"[..])));
    assert_eq!(r.options.get("BLKSIZE"), Some((&b"blksize"[..], &b"1468"[..])));
    assert_eq!(r.options.get("windowsize").unwrap().1, b"4");
    assert_eq!(r.options.get("timeout").unwrap().1, b"5");
    assert_eq!(r.options.get("msftwindow").unwrap().1, b"31416");
    let names: Vec<&[u8]> = r.options.iter().map(|(n, _)| n).collect();
    assert_eq!(names, [&b"tsize"[..], b"blksize", b"windowsize", b"timeout", b"msftwindow"]);
    roundtrip(b);
}

#[test]
fn option_names_keep_client_spelling() {
    let b = b"\x00\x01f\x00octet\x00BlkSize\x001024\x00";
    let Packet::Request(r) = decode(b).unwrap() else { panic!() };
    assert_eq!(r.options.get("blksize"), Some((&b"BlkSize"[..], &b"1024"[..])));
}

#[test]
fn request_nul_padding_tolerated() {
    let Packet::Request(r) = decode(b"\x00\x01f\x00octet\x00tsize\x000\x00\x00\x00\x00").unwrap() else { panic!() };
    assert_eq!(r.options.len(), 1);
    assert_eq!(r.options.as_bytes(), b"tsize\x000\x00");
}

#[test]
fn request_errors() {
    assert_eq!(decode(b""), Err(DecodeError::TooShort));
    assert_eq!(decode(b"\x00"), Err(DecodeError::TooShort));
    assert_eq!(decode(b"\x00\x01file"), Err(DecodeError::MissingNul));
    assert_eq!(decode(b"\x00\x01file\x00octet"), Err(DecodeError::MissingNul));
    assert_eq!(decode(b"\x00\x01\x00octet\x00"), Err(DecodeError::EmptyFilename));
    assert_eq!(decode(b"\x00\x01f\x00binary\x00"), Err(DecodeError::BadMode));
    assert_eq!(decode(b"\x00\x01f\x00octet\x00blksize\x00"), Err(DecodeError::MissingOptionValue));
    assert_eq!(decode(b"\x00\x01f\x00octet\x00blksize\x00512"), Err(DecodeError::MissingNul));
    assert_eq!(decode(b"\x00\x01f\x00octet\x00\x00x\x00"), Err(DecodeError::BadOption));
    let mut long = b"\x00\x01".to_vec();
    long.extend(std::iter::repeat_n(b'a', MAX_FILENAME_LEN + 1));
    long.extend(b"\x00octet\x00");
    assert_eq!(decode(&long), Err(DecodeError::FilenameTooLong));
    let mut many = b"\x00\x01f\x00octet\x00".to_vec();
    for i in 0..=MAX_OPTIONS {
        many.extend(format!("opt{i}\x001\x00").bytes());
    }
    assert_eq!(decode(&many), Err(DecodeError::TooManyOptions));
    let mut big_value = b"\x00\x01f\x00octet\x00x\x00".to_vec();
    big_value.extend(std::iter::repeat_n(b'9', MAX_OPTION_LEN + 1));
    big_value.push(0);
    assert_eq!(decode(&big_value), Err(DecodeError::BadOption));
}

#[test]
fn unknown_opcodes() {
    assert_eq!(decode(b"\x00\x00abc"), Err(DecodeError::UnknownOpcode(0)));
    assert_eq!(decode(b"\x00\x07"), Err(DecodeError::UnknownOpcode(7)));
    assert_eq!(decode(b"\xff\xff"), Err(DecodeError::UnknownOpcode(0xffff)));
}

#[test]
fn data_packets() {
    let b = b"\x00\x03\x00\x01hello";
    assert_eq!(decode(b).unwrap(), Packet::Data { block: 1, data: b"hello" });
    roundtrip(b);
    // An empty DATA ends a transfer whose size is a multiple of blksize.
    assert_eq!(decode(b"\x00\x03\xff\xff").unwrap(), Packet::Data { block: 65535, data: b"" });
    assert_eq!(decode(b"\x00\x03\x00"), Err(DecodeError::TooShort));
    assert_eq!(data_header(0x1234), [0, 3, 0x12, 0x34]);
}

#[test]
fn ack_packets() {
    assert_eq!(decode(b"\x00\x04\x00\x00").unwrap(), Packet::Ack { block: 0 });
    assert_eq!(decode(b"\x00\x04\xff\xfe").unwrap(), Packet::Ack { block: 65534 });
    assert_eq!(decode(b"\x00\x04\x00"), Err(DecodeError::TooShort));
    assert_eq!(decode(b"\x00\x04\x00\x01\x00"), Err(DecodeError::TrailingBytes));
    assert_eq!(ack(258), [0, 4, 1, 2]);
    roundtrip(b"\x00\x04\x01\x02");
}

#[test]
fn error_packets() {
    // EDK2's probe abort.
    let b = b"\x00\x05\x00\x08User aborted the transfer\x00";
    assert_eq!(
        decode(b).unwrap(),
        Packet::Error { code: ErrorCode::OPTION_REFUSED, message: b"User aborted the transfer" }
    );
    roundtrip(b);
    // Missing NUL is tolerated so that any ERROR can stop a transfer.
    assert_eq!(
        decode(b"\x00\x05\x00\x00closed").unwrap(),
        Packet::Error { code: ErrorCode::NOT_DEFINED, message: b"closed" }
    );
    // Unknown codes survive.
    let Packet::Error { code, .. } = decode(b"\x00\x05\x01\x00\x00").unwrap() else { panic!() };
    assert_eq!(code, ErrorCode(256));
    assert_eq!(code.name(), None);
    assert_eq!(decode(b"\x00\x05\x00"), Err(DecodeError::TooShort));
    let mut out = [0u8; 64];
    let n = encode_error(ErrorCode::FILE_NOT_FOUND, b"File not found", &mut out).unwrap();
    assert_eq!(&out[..n], b"\x00\x05\x00\x01File not found\x00");
}

#[test]
fn oack_packets() {
    let b = b"\x00\x06blksize\x001432\x00tsize\x008247232\x00";
    let Packet::Oack(o) = decode(b).unwrap() else { panic!() };
    assert_eq!(o.len(), 2);
    assert_eq!(o.get("tsize").unwrap().1, b"8247232");
    roundtrip(b);
    let mut out = [0u8; 64];
    let mut w = OackWriter::new(&mut out).unwrap();
    w.option(b"blksize", 1432).unwrap();
    w.option(b"tsize", 8_247_232).unwrap();
    let n = w.finish();
    assert_eq!(&out[..n], b);
}

#[test]
fn encode_into_small_buffer_fails() {
    let mut out = [0u8; 3];
    assert_eq!(Packet::Ack { block: 1 }.encode(&mut out), Err(BufferTooSmall));
    assert_eq!(encode_error(ErrorCode::NOT_DEFINED, b"", &mut [0u8; 4]), Err(BufferTooSmall));
    assert!(OackWriter::new(&mut [0u8; 1]).is_err());
}

#[test]
fn an_error_message_too_long_for_the_buffer_is_shortened_never_dropped() {
    let mut out = [0u8; 10];
    let n = encode_error(ErrorCode::NOT_DEFINED, b"too long a message", &mut out).unwrap();
    assert_eq!(&out[..n], b"\x00\x05\x00\x00too l\x00");
    // A character is not cut in half: "é" is two bytes and would straddle the end.
    let n = encode_error(ErrorCode::ACCESS_VIOLATION, "abcdé".as_bytes(), &mut out).unwrap();
    assert_eq!(&out[..n], b"\x00\x05\x00\x02abcd\x00");
    // Not UTF-8: cut where the room ends.
    let n = encode_error(ErrorCode::NOT_DEFINED, b"\xff\xfe\xfd\xfc\xfb\xfa", &mut out).unwrap();
    assert_eq!(&out[..n], b"\x00\x05\x00\x00\xff\xfe\xfd\xfc\xfb\x00");
    assert_eq!(encode_error(ErrorCode::NOT_DEFINED, b"x", &mut [0u8; 5]), Ok(5));
}

#[test]
fn request_encoding() {
    let mut out = [0u8; 128];
    let opts: [(&[u8], &[u8]); 2] = [(b"tsize", b"0"), (b"blksize", b"1408")];
    let n = encode_request(RequestKind::Read, b"ldlinux.c32", Mode::Octet, opts, &mut out).unwrap();
    assert_eq!(&out[..n], b"\x00\x01ldlinux.c32\x00octet\x00tsize\x000\x00blksize\x001408\x00");
}

#[test]
fn numbers() {
    let mut d = [0u8; 20];
    assert_eq!(format_u64(0, &mut d), b"0");
    assert_eq!(format_u64(u64::MAX, &mut d), b"18446744073709551615");
    assert_eq!(parse_u64(b"5368709120"), Some(5_368_709_120));
    assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_u64(b"18446744073709551616"), None);
    assert_eq!(parse_u64(b""), None);
    assert_eq!(parse_u64(b"-1"), None);
    assert_eq!(parse_u64(b" 1"), None);
}

fn cstring() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 1..40)
}

fn options() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    proptest::collection::vec((cstring(), proptest::collection::vec(1u8..=255, 0..20)), 0..MAX_OPTIONS)
}

proptest! {
    #[test]
    fn request_roundtrip(name in cstring(), write: bool, mode in 0..3u8, opts in options()) {
        let mode = [Mode::Octet, Mode::Netascii, Mode::Mail][mode as usize];
        let kind = if write { RequestKind::Write } else { RequestKind::Read };
        let mut buf = [0u8; 8192];
        let n = encode_request(kind, &name, mode, opts.iter().map(|(a, b)| (&a[..], &b[..])), &mut buf).unwrap();
        let Packet::Request(r) = Packet::decode(&buf[..n]).unwrap() else { panic!() };
        prop_assert_eq!(r.kind, kind);
        prop_assert_eq!(r.filename, &name[..]);
        prop_assert_eq!(r.mode, mode);
        let got: Vec<(Vec<u8>, Vec<u8>)> = r.options.iter().map(|(a, b)| (a.to_vec(), b.to_vec())).collect();
        prop_assert_eq!(got, opts);
        let mut again = [0u8; 8192];
        let m = Packet::Request(r).encode(&mut again).unwrap();
        prop_assert_eq!(&again[..m], &buf[..n]);
    }

    #[test]
    fn data_roundtrip(block: u16, data in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let p = Packet::Data { block, data: &data };
        let mut buf = [0u8; 2048];
        let n = p.encode(&mut buf).unwrap();
        prop_assert_eq!(&buf[..4], &data_header(block));
        prop_assert_eq!(Packet::decode(&buf[..n]).unwrap(), p);
    }

    #[test]
    fn ack_and_error_roundtrip(block: u16, code: u16, msg in proptest::collection::vec(1u8..=255, 0..100)) {
        let a = ack(block);
        prop_assert_eq!(Packet::decode(&a).unwrap(), Packet::Ack { block });
        let e = Packet::Error { code: ErrorCode(code), message: &msg };
        let mut buf = [0u8; 256];
        let n = e.encode(&mut buf).unwrap();
        prop_assert_eq!(Packet::decode(&buf[..n]).unwrap(), e);
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(p) = Packet::decode(&bytes) {
            // Whatever decodes re-encodes, and the re-encoding decodes to the same packet.
            let mut buf = [0u8; 4096];
            let n = p.encode(&mut buf).unwrap();
            prop_assert_eq!(Packet::decode(&buf[..n]).unwrap(), p);
        }
    }

    #[test]
    fn numbers_roundtrip(v: u64) {
        let mut d = [0u8; 20];
        prop_assert_eq!(parse_u64(format_u64(v, &mut d)), Some(v));
    }
}
