//! Client tests: request encoding, the strict OACK check, retries, and a download's DATA.

use super::*;
use crate::proto::time::Timestamp;
use crate::proto::wire::Packet;

fn t(ms: u64) -> Timestamp {
    Timestamp::from_micros(ms * 1000)
}

const CFG: ClientConfig = ClientConfig { timeout: Duration::from_millis(100), max_retries: 2 };

#[test]
fn request_encoding_and_retries() {
    let mut c = ReadClient::new(t(0), RequestOptions { blksize: Some(1432), tsize: true, ..Default::default() });
    let mut buf = [0u8; 128];
    let n = c.encode_request(b"boot.ipxe", Mode::Octet, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"\x00\x01boot.ipxe\x00octet\x00tsize\x000\x00blksize\x001432\x00");
    assert_eq!(c.poll_transmit(t(0), &CFG), Some(ClientTransmit::Request));
    assert_eq!(c.poll_timeout(), Some(t(100)));
    c.handle_timeout(t(100), &CFG);
    assert_eq!(c.poll_transmit(t(100), &CFG), Some(ClientTransmit::Request));
    c.handle_timeout(t(200), &CFG);
    c.handle_timeout(t(300), &CFG);
    assert_eq!(c.outcome(), Some(ClientOutcome::TimedOut));
}

#[test]
fn strict_oack_checks() {
    /// An OACK, and the violation it is refused for with the message that says it.
    type Case = (&'static [u8], Option<(Violation, &'static str)>);
    let cases: [Case; 6] = [
        (b"\x00\x06blksize\x001432\x00tsize\x0099\x00", None),
        (b"\x00\x06blksize\x002000\x00", Some((Violation::OackBlksizeOutOfRange, "OACK blksize out of range"))),
        (
            b"\x00\x06windowsize\x004\x00",
            Some((Violation::OackUnaskedWindowsize, "OACK has windowsize we did not ask for")),
        ),
        (b"\x00\x06timeout\x005\x00", Some((Violation::OackUnaskedTimeout, "OACK has timeout we did not ask for"))),
        (b"\x00\x06foo\x001\x00", Some((Violation::OackUnaskedOption, "OACK has an option we did not ask for"))),
        (b"\x00\x06tsize\x00x\x00", Some((Violation::OackNotANumber, "OACK value is not a number"))),
    ];
    for (oack, err) in cases {
        let mut c = ReadClient::new(t(0), RequestOptions { blksize: Some(1432), tsize: true, ..Default::default() });
        c.poll_transmit(t(0), &CFG);
        c.handle_packet(t(1), &Packet::decode(oack).unwrap(), &CFG);
        match err {
            None => {
                assert_eq!(c.poll_transmit(t(1), &CFG), Some(ClientTransmit::Ack(0)));
                assert_eq!(c.tsize(), Some(99));
                assert_eq!(c.blksize(), 1432);
            }
            Some((why, message)) => {
                assert_eq!(
                    c.poll_transmit(t(1), &CFG),
                    Some(ClientTransmit::Error { code: ErrorCode::OPTION_REFUSED, message })
                );
                assert_eq!(c.outcome(), Some(ClientOutcome::ProtocolError(why)));
                assert_eq!(c.outcome().and_then(ClientOutcome::error), Some(TransferError::Violation(why)));
                assert_eq!(why.to_string(), message);
            }
        }
    }
}

#[test]
fn data_without_oack_uses_defaults() {
    let mut c = ReadClient::new(t(0), RequestOptions { blksize: Some(1432), ..Default::default() });
    c.poll_transmit(t(0), &CFG);
    let got = c.handle_packet(t(1), &Packet::Data { block: 1, data: &[7; 512] }, &CFG);
    assert_eq!(got.map(|(o, d)| (o, d.len())), Some((0, 512)));
    assert_eq!(c.poll_transmit(t(1), &CFG), Some(ClientTransmit::Ack(1)));
    c.handle_packet(t(2), &Packet::Data { block: 2, data: &[7; 3] }, &CFG);
    assert_eq!(c.poll_transmit(t(2), &CFG), Some(ClientTransmit::Ack(2)));
    assert_eq!(c.outcome(), Some(ClientOutcome::Complete));
}

/// A DATA with wire number `block` (a full block) to `c`: what it returned and what `c`
/// sends next.
fn feed(c: &mut ReadClient, block: u16) -> (Option<u64>, Option<ClientTransmit>) {
    let got = c.handle_packet(t(1), &Packet::Data { block, data: &[0; 512] }, &CFG).map(|(o, _)| o);
    (got, c.poll_transmit(t(1), &CFG))
}

/// Every wire block number, before and after block 1, in lock step: the expected block is
/// taken at its offset and acknowledged; block 1 again is acknowledged again; a block ahead
/// (up to half the number space) is a gap, reported once with an ACK of the last block in
/// order; anything else is stale and ignored. Nothing else is taken or acknowledged, and
/// the download goes on to its end afterwards.
#[test]
fn any_data_number_is_safe() {
    for block in 0..=u16::MAX {
        // Nothing received yet: only block 1 is the next; 2..=32768 are ahead of it.
        let mut c = ReadClient::new(t(0), RequestOptions::default());
        c.poll_transmit(t(0), &CFG);
        let want = match block {
            1 => (Some(0), Some(ClientTransmit::Ack(1))),
            2..=32768 => (None, Some(ClientTransmit::Ack(0))),
            _ => (None, None),
        };
        assert_eq!(feed(&mut c, block), want, "block {block} first");
        assert_eq!(c.outcome(), None, "block {block} first");
        if block != 1 {
            assert_eq!(feed(&mut c, 1), (Some(0), Some(ClientTransmit::Ack(1))), "block 1 after {block}");
        }
        // Block 1 received: 2 is the next, 1 a duplicate, 3..=32769 ahead.
        let want = match block {
            2 => (Some(512), Some(ClientTransmit::Ack(2))),
            1 => (None, Some(ClientTransmit::Ack(1))),
            3..=32769 => (None, Some(ClientTransmit::Ack(1))),
            _ => (None, None),
        };
        assert_eq!(feed(&mut c, block), want, "block {block} after block 1");
        assert_eq!(c.outcome(), None, "block {block} after block 1");
        // The download goes on: the next block in order, short, ends it.
        let (next, offset) = if block == 2 { (3, 1024) } else { (2, 512) };
        let last = c.handle_packet(t(2), &Packet::Data { block: next, data: &[0; 10] }, &CFG);
        assert_eq!(last.map(|(o, d)| (o, d.len())), Some((offset, 10)), "after block {block}");
        assert_eq!(c.poll_transmit(t(2), &CFG), Some(ClientTransmit::Ack(next)), "after block {block}");
        assert_eq!(c.outcome(), Some(ClientOutcome::Complete), "after block {block}");
    }
}

#[test]
fn timeout_resends_last_ack() {
    let mut c = ReadClient::new(t(0), RequestOptions::default());
    c.poll_transmit(t(0), &CFG);
    c.handle_packet(t(1), &Packet::Data { block: 1, data: &[0; 512] }, &CFG);
    c.poll_transmit(t(1), &CFG);
    c.handle_timeout(t(101), &CFG);
    assert_eq!(c.poll_transmit(t(101), &CFG), Some(ClientTransmit::Ack(1)));
    assert_eq!(c.retransmits(), 1);
}
