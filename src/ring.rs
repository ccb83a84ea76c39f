//! Provided-buffer rings for io_uring multishot receives, shared by the server and the load
//! generator.
//!
//! A [`BufRing`] is registered with a ring as a buffer group. The kernel picks a buffer for each
//! datagram a multishot receive completes and names it in the completion; the owner reads the
//! datagram in place and hands the buffer back with [`BufRing::push`] and [`BufRing::publish`].
//! No buffer is handed over per receive.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring, types};

use crate::sys::pages::Mapped;

/// A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): `count` buffers of `size` bytes that the
/// kernel picks from for multishot receives.
pub struct BufRing {
    /// The ring's entries, page-aligned as the kernel requires; read by the kernel, written here
    /// only through raw pointers past the published tail.
    entries: Mapped<types::BufRingEntry>,
    bufs: Vec<u8>,
    size: usize,
    mask: u16,
    tail: u16,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing").field("count", &(usize::from(self.mask) + 1)).field("size", &self.size).finish()
    }
}

impl BufRing {
    /// Allocates `count` buffers of `size` bytes (`count` a power of two) and registers them with
    /// `ring` as buffer group `bgid`.
    ///
    /// # Safety
    /// The kernel writes received datagrams into these buffers for as long as a receive that
    /// selects from group `bgid` is armed on `ring`. The caller must keep this `BufRing` alive
    /// until every such receive has completed for the last time, or until `ring` is dropped or
    /// the group unregistered, whichever comes first.
    pub unsafe fn new(ring: &IoUring, count: u16, size: usize, bgid: u16) -> io::Result<Self> {
        assert!(count.is_power_of_two(), "buffer count must be a power of two");
        let mut entries = Mapped::try_new(usize::from(count))?;
        let base = entries.as_mut_ptr();
        let mut br = Self { entries, bufs: resident_zeroed(usize::from(count) * size), size, mask: count - 1, tail: 0 };
        // SAFETY: the entries stay mapped until drop, which happens after the ring that uses them
        // has been dropped (the owner declares the ring first) or unregistered.
        unsafe { ring.submitter().register_buf_ring_with_flags(base as u64, count, bgid, 0)? };
        for bid in 0..count {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Hands buffer `bid` back to the kernel (visible after [`publish`](Self::publish)).
    pub fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & self.mask);
        // SAFETY: idx < count, inside the mapped entries; the kernel only reads entries between
        // its head and the published tail, and this one is past the published tail.
        let e = unsafe { &mut *self.entries.as_mut_ptr().add(idx) };
        e.set_addr(self.bufs.as_ptr() as u64 + u64::from(bid) * self.size as u64);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes pushed buffers to the kernel.
    pub fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of the mapped ring; the kernel reads it
        // with acquire semantics, so a release store orders the entry writes before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`, as a completion reported them.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.size;
        &self.bufs[start..start + len.min(self.size)]
    }
}

/// `len` zero bytes, written now: the receive buffers are a fixed pool, so their memory is made
/// resident at start rather than page by page as load first reaches them (which would look like
/// memory growing with the number of transfers).
fn resident_zeroed(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for page in v.chunks_mut(4096) {
        // SAFETY: a write of one byte inside the chunk; volatile so that it is not elided as
        // redundant (the allocation may come zeroed, untouched, from the kernel).
        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
    }
    v
}
