//! Zeroed arrays in pages of their own, mapped from the system ([`Mapped`]): for tables that
//! grow by doubling and must leave no old copy resident, and for memory the kernel requires to
//! be page-aligned (the entries of a provided-buffer ring).

use std::alloc::Layout;
use std::fmt;
use std::io;
use std::ptr::NonNull;

/// A type whose all-zero bytes are a valid value (the empty entry of a [`Mapped`] table) and
/// that needs no drop (a mapping is unmapped without dropping its entries).
///
/// # Safety
/// Every bit pattern of zeros must be a valid value of the type, and the type must have no drop
/// glue.
pub unsafe trait Zeroed {}

// SAFETY: zero is a u32, which has nothing to drop.
unsafe impl Zeroed for u32 {}

// SAFETY: zero is a u8, which has nothing to drop.
unsafe impl Zeroed for u8 {}

// SAFETY: a plain C struct of integers (address, length, buffer ID, reserved): zero is valid,
// nothing to drop.
unsafe impl Zeroed for io_uring::types::BufRingEntry {}

/// A zeroed array in pages of its own, mapped from the system and unmapped when dropped: a
/// table that grows by doubling leaves no old copy resident, where an allocator keeps what was
/// freed for later (the server's workers allocate nothing per packet, so that later may never
/// come). Pages become resident as they are first written; the array starts page-aligned.
pub struct Mapped<T: Zeroed> {
    ptr: NonNull<T>,
    len: usize,
}

impl<T: Zeroed> Mapped<T> {
    /// `len` zeroed entries (at least one page's worth of bytes is mapped); out of memory ends
    /// the process, as a failed allocation of a `Vec` does.
    pub fn new(len: usize) -> Self {
        Self::try_new(len)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::array::<T>(len).unwrap_or(Layout::new::<T>())))
    }

    /// `len` zeroed entries, or the error of `mmap(2)`.
    pub fn try_new(len: usize) -> io::Result<Self> {
        let bytes = Self::bytes(len);
        // SAFETY: an anonymous private mapping, zero-filled by the kernel; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match NonNull::new(p.cast::<T>()) {
            Some(ptr) if p != libc::MAP_FAILED => Ok(Self { ptr, len }),
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn bytes(len: usize) -> usize {
        (len * std::mem::size_of::<T>()).max(1)
    }

    /// Gives back to the system the pages that lie wholly within `entries`: those entries read
    /// as zeros again (a valid value, see [`Zeroed`]) and cost no memory until next written.
    /// Entries that share a page with one outside the range keep their values.
    pub fn discard(&mut self, entries: std::ops::Range<usize>) {
        let (size, page) = (std::mem::size_of::<T>(), page_size());
        let first = (entries.start * size).next_multiple_of(page);
        // The mapping is whole pages: past its last entry, the rest of the page goes too.
        let last = match entries.end >= self.len {
            true => Self::bytes(self.len).next_multiple_of(page),
            false => entries.end * size / page * page,
        };
        if first >= last {
            return;
        }
        // SAFETY: whole pages of this mapping (from `first`, within its `len` entries, up to
        // `last`, at most the end of its last page); `&mut self` means no reference into them
        // lives, and the zeros they read as afterwards are valid entries with nothing to drop
        // (`T: Zeroed`).
        unsafe { give_back(self.ptr.as_ptr().cast::<u8>().add(first), last - first) }
    }

    /// Which of the pages holding the first `entries` entries are resident (`mincore(2)`);
    /// `None` under Miri, which cannot say.
    #[cfg(test)]
    pub(crate) fn resident(&self, entries: usize) -> Option<Vec<bool>> {
        if cfg!(miri) {
            return None;
        }
        let page = page_size();
        let pages = (entries * std::mem::size_of::<T>()).div_ceil(page);
        let mut v = vec![0u8; pages];
        // SAFETY: pages of this mapping (the caller asks for no more entries than it has);
        // `v` has one byte per page.
        let rc = unsafe { libc::mincore(self.ptr.as_ptr().cast(), pages * page, v.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        Some(v.iter().map(|b| b & 1 != 0).collect())
    }

    /// The first entry's address, for the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// The first entry's address, for reads (and atomic stores) through raw pointers.
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }
}

/// Gives `len` bytes of whole pages at `start` back to the system; they read as zeros again.
///
/// # Safety
/// `start..start + len` must be whole pages of a private anonymous mapping that nothing borrows.
#[cfg(not(miri))]
unsafe fn give_back(start: *mut u8, len: usize) {
    // SAFETY: as the caller vouches; MADV_DONTNEED on a private anonymous mapping only drops the
    // pages' contents, which read as zeros afterwards.
    unsafe { libc::madvise(start.cast(), len, libc::MADV_DONTNEED) };
}

/// Under Miri, which has no `madvise`: the same effect as the program sees it, zeros.
///
/// # Safety
/// As the system call's version.
#[cfg(miri)]
unsafe fn give_back(start: *mut u8, len: usize) {
    // SAFETY: the caller vouches that these bytes are ours and unborrowed.
    unsafe { std::ptr::write_bytes(start, 0, len) };
}

/// The system's page size: the unit [`Mapped::discard`] gives back, in bytes.
pub fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no memory arguments.
    *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1))
}

impl<T: Zeroed> std::ops::Deref for Mapped<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is a page-aligned mapping (aligned for any entry) of at least `len`
        // entries, all initialised (zero is a valid `T`), owned by `self` until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroed> std::ops::DerefMut for Mapped<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroed> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `try_new`, of this length, unmapped once, here.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), Self::bytes(self.len)) };
    }
}

impl<T: Zeroed> fmt::Debug for Mapped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapped").field("len", &self.len).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_table_starts_zeroed_page_aligned_and_keeps_what_is_written() {
        let mut m = Mapped::<u32>::new(5000);
        assert_eq!(m.len(), 5000);
        assert!(m.iter().all(|&v| v == 0));
        assert_eq!(m.as_mut_ptr() as usize % 4096, 0);
        m[4999] = 7;
        m[0] = 1;
        assert_eq!((m[0], m[4999], m[1]), (1, 7, 0));
        let _one = Mapped::<u32>::new(0);
    }

    #[test]
    fn discarding_gives_back_only_the_pages_wholly_within_the_entries_and_they_read_zero() {
        let per_page = page_size() / 4;
        let mut m = Mapped::<u32>::new(4 * per_page);
        m.iter_mut().for_each(|v| *v = 9);
        assert!(m.resident(m.len()).is_none_or(|r| r == [true; 4]));
        // From the middle of page 0 to the middle of page 3: pages 1 and 2.
        m.discard(per_page / 2..3 * per_page + 1);
        assert!(m.resident(m.len()).is_none_or(|r| r == [true, false, false, true]));
        // Less than a page, or past the end: nothing, or up to the end.
        m.discard(1..per_page);
        m.discard(3 * per_page..usize::MAX / 8);
        assert!(m.resident(m.len()).is_none_or(|r| r == [true, false, false, false]));
        // (Reading a page given back maps the system's shared zero page.)
        assert!(m[per_page / 2..per_page].iter().all(|&v| v == 9));
        assert!(m[per_page..].iter().all(|&v| v == 0));
        assert!(m[..per_page].iter().all(|&v| v == 9));
    }
}
