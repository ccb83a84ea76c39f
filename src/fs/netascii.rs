//! The netascii form of a file version without a copy of it: its length and a sparse index of
//! marks (where each [`STRIDE`] bytes of netascii output begin in the file), built in one pass,
//! so that any block is translated on its own, by `pread` from the nearest mark before it.
//!
//! Memory is the index, 16 bytes per [`STRIDE`] of output (at most 32 KiB for the largest file
//! served in netascii), not the translation. A block costs one `pread` of at most [`STRIDE`]
//! bytes more than it needs; a block that follows the last one translated starts where that one
//! ended (the file's bytes are read once, for a lone sequential transfer).
//!
//! Bytes are read with `pread`, never through the mapping, so that a file truncated under a
//! transfer ends it with an error instead of a SIGBUS.

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::proto::netascii::{self, Encoder};
use crate::proto::{ErrorCode, LocalFailure};

/// netascii output bytes between two marks.
pub const STRIDE: u64 = 4096;

/// Bytes read per `pread`.
const READ: usize = 8192;

/// Why a netascii block could not be translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetasciiError {
    /// The file is larger than the limit for netascii mode.
    #[error("file too large for netascii mode")]
    TooLarge,
    /// Reading the file failed, or it no longer holds the bytes it held when indexed.
    #[error("read error")]
    Read,
}

impl NetasciiError {
    /// The code of the ERROR that refuses a netascii request for the file.
    pub fn code(self) -> ErrorCode {
        LocalFailure::from(self).code()
    }

    /// The message of that ERROR.
    pub fn message(self) -> &'static str {
        LocalFailure::from(self).message()
    }
}

impl From<NetasciiError> for LocalFailure {
    fn from(e: NetasciiError) -> Self {
        match e {
            NetasciiError::TooLarge => Self::NetasciiTooLarge,
            NetasciiError::Read => Self::ReadFailed,
        }
    }
}

/// Where a netascii offset lies in the file: the next file byte to encode, and the second byte
/// of a pair split just before it (the offset falls between a CR and its LF or NUL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mark {
    raw: u64,
    pending: Option<u8>,
}

/// The length of a file's netascii form and its marks.
#[derive(Debug)]
pub struct NetasciiIndex {
    len: u64,
    /// `marks[k]` is where netascii offset `k * STRIDE` lies.
    marks: Box<[Mark]>,
    /// Where the last block translated ended: `(netascii offset, mark)`.
    last: Cell<(u64, Mark)>,
}

impl NetasciiIndex {
    /// Reads `file` (`size` bytes) once and indexes it.
    pub fn build(file: &File, size: u64) -> Result<Self, NetasciiError> {
        let mut marks = Vec::with_capacity((size / STRIDE) as usize + 1);
        marks.push(Mark::default());
        let mut buf = [0u8; READ];
        let (mut raw, mut out) = (0u64, 0u64);
        while raw < size {
            let want = READ.min((size - raw) as usize);
            let n = file.read_at(&mut buf[..want], raw).map_err(|_| NetasciiError::Read)?;
            if n == 0 {
                return Err(NetasciiError::Read);
            }
            for &b in &buf[..n] {
                raw += 1;
                out += 1;
                let next = marks.len() as u64 * STRIDE;
                if let Some(second) = netascii::second_of(b) {
                    if out == next {
                        // The mark falls between the CR and its second byte.
                        marks.push(Mark { raw, pending: Some(second) });
                    }
                    out += 1;
                }
                if out == marks.len() as u64 * STRIDE {
                    marks.push(Mark { raw, pending: None });
                }
            }
        }
        Ok(Self { len: out, marks: marks.into_boxed_slice(), last: Cell::new((0, Mark::default())) })
    }

    /// Length of the netascii form.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the netascii form is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the netascii bytes at `offset` into `out` (all of it: the caller asks for a range
    /// within [`len`](Self::len)), reading `file`.
    pub fn fill(&self, file: &File, offset: u64, out: &mut [u8]) -> Result<(), NetasciiError> {
        let end = offset.checked_add(out.len() as u64).ok_or(NetasciiError::Read)?;
        if end > self.len {
            return Err(NetasciiError::Read);
        }
        let k = (offset / STRIDE) as usize;
        let mut at = (k as u64 * STRIDE, *self.marks.get(k).ok_or(NetasciiError::Read)?);
        let last = self.last.get();
        if last.0 <= offset && last.0 > at.0 {
            at = last;
        }
        let mut enc = Encoder::resume(at.1.pending);
        let mut raw = at.1.raw;
        let mut skip = (offset - at.0) as usize;
        let mut done = 0;
        let mut buf = [0u8; READ];
        while done < out.len() {
            let mut input: &[u8] = &[];
            if !enc.has_pending() || skip > 0 {
                let n = file.read_at(&mut buf, raw).map_err(|_| NetasciiError::Read)?;
                input = &buf[..n];
                if n == 0 && !enc.has_pending() {
                    // The file shrank since it was indexed.
                    return Err(NetasciiError::Read);
                }
            }
            let (mut used, skipped) = enc.skip(input, skip);
            skip -= skipped;
            if skip == 0 {
                let (u, wrote) = enc.encode(&input[used..], &mut out[done..]);
                used += u;
                done += wrote;
            }
            raw += used as u64;
        }
        self.last.set((end, Mark { raw, pending: enc.pending() }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn encoded(raw: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        Encoder::new().encode_to_vec(raw, &mut v);
        v
    }

    /// Every block of every blksize, in order, out of order and again, equals the whole's slice.
    fn check(raw: &[u8], blksize: usize) {
        let f = file_of(raw);
        let idx = NetasciiIndex::build(&f, raw.len() as u64).unwrap();
        let whole = encoded(raw);
        assert_eq!(idx.len(), whole.len() as u64);
        let blocks: Vec<usize> = (0..whole.len().div_ceil(blksize)).collect();
        let order = blocks.iter().chain(blocks.iter().rev()).chain(blocks.iter().step_by(3));
        for &b in order {
            let at = b * blksize;
            let len = blksize.min(whole.len() - at);
            let mut out = vec![0xaa; len];
            idx.fill(&f, at as u64, &mut out).unwrap();
            assert_eq!(out, &whole[at..at + len], "block {b} of {blksize}");
        }
    }

    #[test]
    fn marks_between_a_cr_and_its_second_byte() {
        // Strides of CR LF pairs and bare CRs: marks land both on and inside pairs.
        let mut raw = vec![b'a'; STRIDE as usize - 1];
        raw.extend_from_slice(b"\n\r\r\nx");
        raw.extend(std::iter::repeat_n(b'\n', 3 * STRIDE as usize));
        raw.push(b'\r');
        for blksize in [1, 7, 8, 512, 4096, 4097, 65464] {
            check(&raw, blksize);
        }
        check(b"", 512);
        check(b"\r", 1);
    }

    #[test]
    fn a_shrunk_file_is_an_error() {
        let raw = b"a\nb\n".repeat(5000);
        let f = file_of(&raw);
        let idx = NetasciiIndex::build(&f, raw.len() as u64).unwrap();
        f.set_len(100).unwrap();
        let mut out = [0u8; 512];
        assert_eq!(idx.fill(&f, 20_000, &mut out), Err(NetasciiError::Read));
        assert_eq!(idx.fill(&f, idx.len(), &mut out[..1]), Err(NetasciiError::Read), "past the end");
    }

    proptest! {
        #[test]
        fn any_block_equals_the_whole(raw in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(0u8), any::<u8>()], 0..20_000), blksize in 1usize..9000) {
            check(&raw, blksize);
        }
    }
}
