//! netascii (RFC 1350, after the Telnet NVT of RFC 764): line ends travel as CR LF and a bare
//! CR travels as CR NUL.
//!
//! [`Encoder`] turns local text into netascii, [`Decoder`] turns it back. Both are streaming:
//! a pair split across blocks (a CR that ends one block and its NUL or LF that starts the next)
//! is carried over, which is where servers get netascii wrong (FreeBSD PR 178055).

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const NUL: u8 = 0;

/// Streaming netascii encoder.
#[derive(Clone, Copy, Debug, Default)]
pub struct Encoder {
    /// Second byte of a pair whose CR ended the previous output buffer.
    pending: Option<u8>,
}

impl Encoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills `out` from `input`, returning `(bytes consumed, bytes written)`. Stops when `out`
    /// is full or `input` is used up; a pair that does not fit is split, its second byte kept
    /// for the next call.
    pub fn encode(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        let (mut i, mut o) = (0, 0);
        if let Some(b) = self.pending {
            if out.is_empty() {
                return (0, 0);
            }
            out[0] = b;
            o = 1;
            self.pending = None;
        }
        while i < input.len() && o < out.len() {
            let (first, second) = match input[i] {
                LF => (CR, Some(LF)),
                CR => (CR, Some(NUL)),
                b => (b, None),
            };
            out[o] = first;
            o += 1;
            i += 1;
            if let Some(s) = second {
                if o < out.len() {
                    out[o] = s;
                    o += 1;
                } else {
                    self.pending = Some(s);
                }
            }
        }
        (i, o)
    }

    /// Appends the netascii form of `input` to `out`.
    pub fn encode_to_vec(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 1);
        if let Some(b) = self.pending.take() {
            out.push(b);
        }
        for &b in input {
            match b {
                LF => out.extend_from_slice(&[CR, LF]),
                CR => out.extend_from_slice(&[CR, NUL]),
                b => out.push(b),
            }
        }
    }

    /// Whether a split pair is waiting to be written.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// An encoder resuming where another stopped: `pending` is what [`pending`](Self::pending)
    /// returned there (the second byte of a pair split before it).
    pub fn resume(pending: Option<u8>) -> Self {
        Self { pending }
    }

    /// The second byte of a pair whose CR was the last byte written, if any.
    pub fn pending(&self) -> Option<u8> {
        self.pending
    }

    /// Advances by up to `skip` bytes of output without writing them, returning
    /// `(bytes consumed, bytes skipped)` like [`encode`](Self::encode).
    pub fn skip(&mut self, input: &[u8], skip: usize) -> (usize, usize) {
        let (mut i, mut o) = (0, 0);
        if o < skip && self.pending.take().is_some() {
            o = 1;
        }
        while i < input.len() && o < skip {
            let b = input[i];
            i += 1;
            o += 1;
            if b == CR || b == LF {
                if o < skip {
                    o += 1;
                } else {
                    self.pending = Some(if b == LF { LF } else { NUL });
                }
            }
        }
        (i, o)
    }
}

/// Length of the netascii form of `input`: each CR and LF takes two bytes.
pub fn encoded_len(input: &[u8]) -> u64 {
    input.len() as u64 + input.iter().filter(|&&b| b == CR || b == LF).count() as u64
}

/// The second byte of the pair `b` encodes to, if it encodes to two.
pub fn second_of(b: u8) -> Option<u8> {
    match b {
        LF => Some(LF),
        CR => Some(NUL),
        _ => None,
    }
}

/// Streaming netascii decoder: CR LF becomes LF, CR NUL becomes CR. A CR followed by anything
/// else is kept as it is, since being lenient costs nothing here.
#[derive(Clone, Copy, Debug, Default)]
pub struct Decoder {
    pending_cr: bool,
}

impl Decoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `input`, calling `emit` with runs of output bytes.
    pub fn decode(&mut self, input: &[u8], mut emit: impl FnMut(&[u8])) {
        let mut start = 0;
        let mut i = 0;
        if self.pending_cr {
            self.pending_cr = false;
            match input.first() {
                None => {
                    self.pending_cr = true;
                    return;
                }
                Some(&LF) => {
                    emit(&[LF]);
                    i = 1;
                }
                Some(&NUL) => {
                    emit(&[CR]);
                    i = 1;
                }
                Some(_) => emit(&[CR]),
            }
            start = i;
        }
        while i < input.len() {
            if input[i] == CR {
                emit(&input[start..i]);
                match input.get(i + 1) {
                    None => {
                        self.pending_cr = true;
                        return;
                    }
                    Some(&LF) => {
                        emit(&[LF]);
                        i += 2;
                    }
                    Some(&NUL) => {
                        emit(&[CR]);
                        i += 2;
                    }
                    Some(_) => {
                        emit(&[CR]);
                        i += 1;
                    }
                }
                start = i;
            } else {
                i += 1;
            }
        }
        emit(&input[start..]);
    }

    /// Ends the stream: a CR left dangling at the very end is emitted as it is.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if std::mem::take(&mut self.pending_cr) {
            emit(&[CR]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(input: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        Encoder::new().encode_to_vec(input, &mut v);
        v
    }

    fn decode_all(input: &[u8]) -> Vec<u8> {
        let mut d = Decoder::new();
        let mut v = Vec::new();
        d.decode(input, |b| v.extend_from_slice(b));
        d.finish(|b| v.extend_from_slice(b));
        v
    }

    #[test]
    fn vectors() {
        // The sample used to probe the peer servers (features.md §8).
        assert_eq!(encode_all(b"line1\nline2\rbare\r\nend"), b"line1\r\nline2\r\0bare\r\0\r\nend");
        assert_eq!(encode_all(b""), b"");
        assert_eq!(encode_all(b"\r"), b"\r\0");
        assert_eq!(decode_all(b"line1\r\nline2\r\0bare\r\0\r\nend"), b"line1\nline2\rbare\r\nend");
        assert_eq!(decode_all(b"a\rb"), b"a\rb");
        assert_eq!(decode_all(b"a\r"), b"a\r");
    }

    #[test]
    fn cr_ending_a_block_carries_its_nul() {
        // 3 bytes of room: "ab" then the CR; its NUL must start the next block.
        let mut e = Encoder::new();
        let mut out = [0u8; 3];
        assert_eq!(e.encode(b"ab\rc", &mut out), (3, 3));
        assert_eq!(&out, b"ab\r");
        assert!(e.has_pending());
        let mut out2 = [0u8; 8];
        assert_eq!(e.encode(b"c", &mut out2), (1, 2));
        assert_eq!(&out2[..2], b"\0c");
        // Same for LF.
        let mut e = Encoder::new();
        assert_eq!(e.encode(b"xy\n", &mut out), (3, 3));
        assert_eq!(e.encode(b"", &mut out2), (0, 1));
        assert_eq!(out2[0], b'\n');
    }

    #[test]
    fn decoder_joins_pairs_split_across_blocks() {
        let mut d = Decoder::new();
        let mut v = Vec::new();
        d.decode(b"ab\r", |b| v.extend_from_slice(b));
        d.decode(b"\0c\r", |b| v.extend_from_slice(b));
        d.decode(b"\n", |b| v.extend_from_slice(b));
        d.finish(|b| v.extend_from_slice(b));
        assert_eq!(v, b"ab\rc\n");
    }

    proptest! {
        /// Skipping to any offset and encoding from there, or resuming from any split, gives the
        /// same bytes as encoding the whole: what serving any block alone relies on.
        #[test]
        fn skip_and_resume_equal_whole(input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(0u8), any::<u8>()], 0..300), at in 0usize..700, len in 1usize..40) {
            let whole = encode_all(&input);
            prop_assert_eq!(encoded_len(&input), whole.len() as u64);
            let at = at.min(whole.len());
            let mut e = Encoder::new();
            let (used, skipped) = e.skip(&input, at);
            prop_assert_eq!(skipped, at);
            let mut e = Encoder::resume(e.pending());
            let mut out = vec![0u8; len];
            let (_, wrote) = e.encode(&input[used..], &mut out);
            let end = (at + len).min(whole.len());
            prop_assert_eq!(&out[..wrote], &whole[at..end]);
        }

        #[test]
        fn blockwise_equals_whole(input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(0u8), any::<u8>()], 0..400), block in 1usize..20) {
            let whole = encode_all(&input);
            let mut e = Encoder::new();
            let mut got = Vec::new();
            let mut rest = &input[..];
            let mut buf = vec![0u8; block];
            loop {
                let (used, wrote) = e.encode(rest, &mut buf);
                got.extend_from_slice(&buf[..wrote]);
                rest = &rest[used..];
                if rest.is_empty() && !e.has_pending() { break; }
            }
            prop_assert_eq!(&got, &whole);
            // And it decodes back, whatever the block boundaries on the way in.
            let mut d = Decoder::new();
            let mut back = Vec::new();
            for chunk in whole.chunks(block) {
                d.decode(chunk, |b| back.extend_from_slice(b));
            }
            d.finish(|b| back.extend_from_slice(b));
            prop_assert_eq!(back, input);
        }
    }
}
