//! A worker's scratch memory for DATA that is not a slice of a mapping: netascii blocks,
//! translated when they are sent.
//!
//! The kernel reads a send's bytes until its completion (io_uring) or its return (`sendmsg`),
//! and a send keeps alive the [`FileVersion`] it was handed. Scratch is therefore cut into
//! chunks that are file versions of their own ([`FileVersion::scratch`]): blocks are written one
//! after another into the current chunk, each send keeps the chunk its blocks lie in, and a
//! chunk is written from its start again only once nothing but the pool holds it (no send in
//! flight, no run being gathered). Memory is at most [`MAX_CHUNKS`] chunks per worker, whatever
//! the number of files or transfers; chunks left free are dropped by [`Scratch::trim`]. When
//! every chunk is in flight, a block gets no room and is not sent: like a datagram lost on the
//! way, the retransmission timer sends it again.

use std::rc::Rc;

use super::cache::{FileVersion, RawSlice};

/// Bytes per chunk: a whole run of DATA ([`crate::server`]'s 65,000 bytes) or a DATA of the
/// largest blksize fits, twice.
pub const CHUNK: usize = 128 << 10;

/// Most chunks per worker: 4 MiB of DATA in flight.
pub const MAX_CHUNKS: usize = 32;

/// The chunks of one worker.
#[derive(Debug, Default)]
pub struct Scratch {
    chunks: Vec<Rc<FileVersion>>,
    /// The chunk being written, and how far.
    current: usize,
    fill: usize,
}

impl Scratch {
    /// An empty pool: chunks are made when first needed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `len` bytes: the chunk they lie in (a new reference, which the caller keeps
    /// until the send is handed over) and the slice to write, or `None` while every chunk is in
    /// flight. `write` fills the slice; on its error nothing is kept.
    pub fn write<E>(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Option<(Rc<FileVersion>, RawSlice)>, E> {
        if len > CHUNK {
            return Ok(None);
        }
        let free = |c: &Rc<FileVersion>| Rc::strong_count(c) == 1;
        match self.chunks.get(self.current) {
            // Nothing holds the current chunk: start it over.
            Some(c) if free(c) => self.fill = 0,
            Some(_) if self.fill + len <= CHUNK => {}
            _ => {
                let n = self.chunks.len();
                if let Some(i) = (1..=n).map(|d| (self.current + d) % n).find(|&i| free(&self.chunks[i])) {
                    self.current = i;
                } else if n < MAX_CHUNKS {
                    self.chunks.push(Rc::new(FileVersion::scratch(CHUNK)));
                    self.current = n;
                } else {
                    return Ok(None);
                }
                self.fill = 0;
            }
        }
        let chunk = &self.chunks[self.current];
        // SAFETY: no slice of [fill, fill + len) has been handed out since the chunk was last
        // free (nothing but the pool held it): handed-out slices lie below `fill`.
        let Some(slice) = (unsafe { chunk.write_scratch(self.fill, len, write) }) else {
            return Ok(None);
        };
        let slice = slice?;
        self.fill += len;
        Ok(Some((Rc::clone(chunk), slice)))
    }

    /// Drops the chunks nothing holds (an idle worker gives its scratch back).
    pub fn trim(&mut self) {
        self.chunks.retain(|c| Rc::strong_count(c) > 1);
        self.current = self.chunks.len();
        self.fill = 0;
    }

    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(s: &mut Scratch, len: usize, byte: u8) -> Option<(Rc<FileVersion>, RawSlice)> {
        s.write(len, |out| {
            out.fill(byte);
            Ok::<_, ()>(())
        })
        .unwrap()
    }

    fn read(s: &RawSlice) -> Vec<u8> {
        // SAFETY: the caller holds the chunk, so the bytes are neither freed nor rewritten.
        unsafe { std::slice::from_raw_parts(s.ptr, s.len) }.to_vec()
    }

    #[test]
    fn held_bytes_are_never_rewritten_and_memory_is_bounded() {
        let mut s = Scratch::new();
        // Sends in flight hold their chunks: every block gets bytes of its own until the cap.
        let mut held = Vec::new();
        for i in 0..MAX_CHUNKS * (CHUNK / 60_000) {
            held.push((write(&mut s, 60_000, i as u8).unwrap(), i as u8));
        }
        assert_eq!(s.chunks(), MAX_CHUNKS);
        assert!(write(&mut s, 60_000, 0xff).is_none(), "no room while every chunk is in flight");
        for ((_, slice), b) in &held {
            assert!(read(slice).iter().all(|x| x == b), "a block in flight was overwritten");
        }
        // Completions release the chunks: they are written again, and trimmed once idle.
        held.clear();
        let (c, slice) = write(&mut s, 100, 7).unwrap();
        assert_eq!(read(&slice), [7; 100]);
        drop(c);
        s.trim();
        assert_eq!(s.chunks(), 0);
        assert!(write(&mut s, CHUNK + 1, 0).is_none());
    }
}
