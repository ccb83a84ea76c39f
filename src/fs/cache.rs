//! The per-worker cache of open files and their memory maps.
//!
//! All transfers of a file on a worker share one [`FileVersion`]: one descriptor, one mapping.
//! Each new request revalidates the cached version with one `statx` (device, inode, size,
//! modification and change times): a file replaced by rename or rewritten in place is opened
//! and mapped again for new clients, while transfers in flight keep the version they started
//! with (for a rename, the old bytes; a rewrite in place changes the shared pages, which no
//! server can prevent). A reload forgets every cached version ([`FileCache::forget`]).
//!
//! # Truncation and SIGBUS
//! Reading a mapped page beyond the end of a file truncated after mapping raises SIGBUS. The
//! server never reads mapped bytes in user space: it hands their address to the kernel
//! (`sendmsg`), and a kernel-mode copy from such a page fails the send with `EFAULT` instead of
//! signalling. That error ends the affected transfer with an ERROR. netascii blocks are read
//! with `pread`, not through the mapping, for the same reason.
//!
//! # World-readable files only
//! By default ([`FileCache::set_world_readable_only`]) a file is served only if its mode lets
//! anyone read it (`S_IROTH`), as tftpd-hpa running as `nobody` and dnsmasq do: a server
//! running as root would otherwise hand out a root-owned 0600 file. The mode comes from the
//! same `statx` or `fstat` that identifies the version, and is checked on every request, cached
//! or not, whatever the transfer mode.
//!
//! # netascii
//! No translated copy of a file is kept: a version holds the length of its netascii form and a
//! sparse index ([`super::netascii`]), and each block is translated when it is sent into the
//! worker's scratch ([`super::scratch`]), shared by the versions of one cache.

use std::cell::{OnceCell, RefCell, UnsafeCell};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use memmap2::{Advice, Mmap, MmapOptions};

pub use super::netascii::NetasciiError;
use super::netascii::NetasciiIndex;
use super::nocase::Listings;
use super::root::{OpenError, Root};
use super::scratch::Scratch;
use crate::proto::time::Timestamp;

/// Largest file served in netascii mode. Its index is built in one pass over the file,
/// synchronously on the worker, so it is kept small: netascii is for configuration files.
pub const MAX_NETASCII_SOURCE: u64 = 4 << 20;

/// Mapped files up to this size are read ahead in full when mapped (boot files are read whole).
const WILLNEED_LIMIT: u64 = 256 << 20;

/// How long an unused entry stays in the cache.
const IDLE_EVICT: Duration = Duration::from_secs(30);

/// What identifies one version of a file's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
    /// Type and permission bits (`st_mode`).
    mode: u32,
}

impl FileId {
    /// Whether others may read the file (`S_IROTH`).
    fn world_readable(&self) -> bool {
        self.mode & libc::S_IROTH != 0
    }

    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            ctime: (meta.ctime(), meta.ctime_nsec() as u32),
            mode: meta.mode(),
        }
    }

    /// `statx` of `rel` relative to `root`, without opening it. `rel` must not contain NUL.
    fn stat_at(root: &Root, rel: &[u8]) -> io::Result<Self> {
        let mut path = [0u8; crate::proto::wire::MAX_FILENAME_LEN + 1];
        let Some(dst) = path.get_mut(..rel.len()) else {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        };
        dst.copy_from_slice(rel);
        // SAFETY: statx is plain data; all-zero is a valid value.
        let mut sx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated (zero-filled beyond `rel`, which has no NUL), and `sx`
        // is a valid out-pointer for the duration of the call.
        let rc = unsafe {
            libc::statx(
                root.as_raw_fd(),
                path.as_ptr().cast(),
                libc::AT_STATX_SYNC_AS_STAT,
                libc::STATX_BASIC_STATS,
                &mut sx,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            dev: libc::makedev(sx.stx_dev_major, sx.stx_dev_minor),
            ino: sx.stx_ino,
            size: sx.stx_size,
            mtime: (sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec),
            ctime: (sx.stx_ctime.tv_sec, sx.stx_ctime.tv_nsec),
            mode: u32::from(sx.stx_mode),
        })
    }
}

/// What a DATA send reads and keeps alive until the kernel is done with it: one version of a
/// file (its descriptor, its mapping, and its netascii index once asked for), or a chunk of a
/// worker's scratch holding translated netascii blocks.
#[derive(Debug)]
pub struct FileVersion {
    name: Box<str>,
    id: FileId,
    bytes: Bytes,
}

#[derive(Debug)]
enum Bytes {
    File {
        file: File,
        map: Option<Mmap>,
        netascii: OnceCell<Result<NetasciiIndex, NetasciiError>>,
        /// The worker's scratch, shared by the versions of one cache.
        scratch: Rc<RefCell<Scratch>>,
    },
    /// Written only where no slice handed out lies (see [`Scratch::write`]).
    Scratch(Box<[UnsafeCell<u8>]>),
}

/// A borrowed byte range of a file version, as raw parts for an iovec.
#[derive(Clone, Copy, Debug)]
pub struct RawSlice {
    /// Start address.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl FileVersion {
    /// Maps `file`, whose identity (from its `fstat`) is `id`.
    fn open(file: File, id: FileId, name: &[u8], scratch: &Rc<RefCell<Scratch>>) -> io::Result<Self> {
        let map = if id.size == 0 {
            None
        } else {
            // SAFETY: the mapping is read-only and never read in user space (see the module
            // docs): its address only goes to the kernel, which reports a page gone by
            // truncation as EFAULT rather than SIGBUS. Its length is fixed here, and every slice
            // handed out is checked against it.
            let map = unsafe { MmapOptions::new().len(id.size as usize).map(&file)? };
            let _ = map.advise(Advice::Sequential);
            if id.size <= WILLNEED_LIMIT {
                let _ = map.advise(Advice::WillNeed);
            }
            Some(map)
        };
        let bytes = Bytes::File { file, map, netascii: OnceCell::new(), scratch: Rc::clone(scratch) };
        Ok(Self { name: String::from_utf8_lossy(name).into(), id, bytes })
    }

    /// A version of `len` zero bytes, for tests elsewhere.
    #[cfg(test)]
    pub(crate) fn zeros(len: usize) -> Self {
        Self::scratch(len)
    }

    /// A chunk of scratch of `len` bytes.
    pub(super) fn scratch(len: usize) -> Self {
        let id = FileId { dev: 0, ino: 0, size: len as u64, mtime: (0, 0), ctime: (0, 0), mode: 0 };
        let buf = std::iter::repeat_with(|| UnsafeCell::new(0)).take(len).collect();
        Self { name: "(scratch)".into(), id, bytes: Bytes::Scratch(buf) }
    }

    /// Lets `write` fill `len` bytes at `at` of a scratch chunk; returns their raw parts, or
    /// `None` when the range is not within a chunk.
    ///
    /// # Safety
    /// No slice of those bytes handed out earlier may still be in use (by a send in flight or a
    /// run being gathered), and no other reference to them may exist.
    pub(super) unsafe fn write_scratch<E>(
        &self,
        at: usize,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Option<Result<RawSlice, E>> {
        let Bytes::Scratch(buf) = &self.bytes else { return None };
        let end = at.checked_add(len)?;
        if end > buf.len() {
            return None;
        }
        // SAFETY: `UnsafeCell<u8>` has the layout of `u8`, so the buffer is `buf.len()`
        // contiguous bytes; [at, end) is within it; the caller guarantees nothing else reads or
        // writes them while `out` lives, and cells allow writing through `&self`.
        let out = unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(buf.as_ptr().add(at)), len) };
        let slice = RawSlice { ptr: out.as_ptr(), len };
        Some(write(out).map(|()| slice))
    }

    /// The path relative to the root, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size in bytes when it was mapped.
    pub fn len(&self) -> u64 {
        self.id.size
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.id.size == 0
    }

    /// Raw parts of `len` bytes at `offset` of the mapping (octet: netascii blocks come from
    /// [`netascii_block`](Self::netascii_block)). Returns `None` if the range is out of bounds.
    pub fn raw_slice(&self, offset: u64, len: usize) -> Option<RawSlice> {
        let (base, total): (*const u8, usize) = match &self.bytes {
            Bytes::File { map: Some(m), .. } => (m.as_ptr(), m.len()),
            Bytes::File { map: None, .. } => (std::ptr::NonNull::<u8>::dangling().as_ptr(), 0),
            Bytes::Scratch(buf) => (UnsafeCell::raw_get(buf.as_ptr()).cast_const(), buf.len()),
        };
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        if end > total {
            return None;
        }
        // SAFETY: start <= end <= total, the length of the allocation or mapping at `base`.
        let ptr = unsafe { base.add(start) };
        Some(RawSlice { ptr, len })
    }

    /// Length of the netascii form of the file. The first call reads the file once (with
    /// `pread`) to index it; the index, not the translation, stays with this version.
    pub fn netascii_len(&self) -> Result<u64, NetasciiError> {
        self.netascii_index().map(NetasciiIndex::len)
    }

    fn netascii_index(&self) -> Result<&NetasciiIndex, NetasciiError> {
        let Bytes::File { file, netascii, .. } = &self.bytes else { return Err(NetasciiError::Read) };
        let size = self.id.size;
        let v = netascii.get_or_init(|| {
            if size > MAX_NETASCII_SOURCE {
                return Err(NetasciiError::TooLarge);
            }
            NetasciiIndex::build(file, size)
        });
        v.as_ref().map_err(|e| *e)
    }

    /// The `len` netascii bytes at `offset`, translated into the worker's scratch: the chunk
    /// they lie in, which the send must keep, and their raw parts. `Ok(None)` while every chunk
    /// of scratch is in flight (the block is not sent now; the retransmission timer sends it).
    /// An error when the range is out of bounds or the file no longer holds its bytes.
    pub fn netascii_block(
        &self,
        offset: u64,
        len: usize,
    ) -> Result<Option<(Rc<FileVersion>, RawSlice)>, NetasciiError> {
        let index = self.netascii_index()?;
        let Bytes::File { file, scratch, .. } = &self.bytes else { return Err(NetasciiError::Read) };
        let mut scratch = scratch.try_borrow_mut().map_err(|_| NetasciiError::Read)?;
        scratch.write(len, |out| index.fill(file, offset, out))
    }
}

struct Entry {
    file: Rc<FileVersion>,
    last_used: Timestamp,
}

/// The files a worker has open, by normalised path.
pub struct FileCache {
    root: Arc<Root>,
    entries: HashMap<Box<[u8]>, Entry>,
    max_entries: usize,
    /// Serve only files others may read (see the module docs).
    world_readable_only: bool,
    /// Where netascii blocks are translated (see [`Scratch`]).
    scratch: Rc<RefCell<Scratch>>,
    /// Directories read by the case-insensitive search.
    listings: Listings,
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache").field("entries", &self.entries.len()).finish()
    }
}

impl FileCache {
    /// An empty cache over `root` holding at most `max_entries` files not in use, serving only
    /// world-readable files until told otherwise.
    pub fn new(root: Arc<Root>, max_entries: usize) -> Self {
        Self {
            root,
            entries: HashMap::new(),
            max_entries: max_entries.max(1),
            world_readable_only: true,
            scratch: Default::default(),
            listings: Listings::default(),
        }
    }

    /// Whether only files others may read (mode `S_IROTH`) are served (the default); any other
    /// file is refused with [`OpenError::NotWorldReadable`]. `false` is `--serve-private-files`.
    pub fn set_world_readable_only(&mut self, on: bool) {
        self.world_readable_only = on;
    }

    /// The current version of the file at `rel` (normalised, relative to the root).
    pub fn get(&mut self, rel: &[u8], now: Timestamp) -> Result<Rc<FileVersion>, OpenError> {
        if let Some(e) = self.entries.get_mut(rel) {
            if FileId::stat_at(&self.root, rel).is_ok_and(|id| id == e.file.id) {
                // The identity includes the mode: the cached version's is the file's now.
                if self.world_readable_only && !e.file.id.world_readable() {
                    return Err(OpenError::NotWorldReadable);
                }
                e.last_used = now;
                return Ok(Rc::clone(&e.file));
            }
        }
        let opened = self.root.open_file(rel).and_then(|file| {
            let id = FileId::of(&file.metadata()?);
            // Checked before mapping: a refused file is never read ahead into memory.
            if self.world_readable_only && !id.world_readable() {
                return Err(OpenError::NotWorldReadable);
            }
            Ok((file, id))
        });
        let (file, id) = match opened {
            Ok(f) => f,
            Err(e) => {
                self.entries.remove(rel);
                return Err(e);
            }
        };
        let version = Rc::new(FileVersion::open(file, id, rel, &self.scratch)?);
        if self.entries.len() >= self.max_entries {
            self.sweep(now, true);
        }
        self.entries.insert(rel.into(), Entry { file: Rc::clone(&version), last_used: now });
        Ok(version)
    }

    /// The path beneath the root that `rel` names with ASCII case ignored, into `out` (see
    /// [`Root::find_case_insensitive`]).
    pub fn find_case_insensitive<'o>(&mut self, rel: &[u8], out: &'o mut [u8]) -> Result<&'o [u8], OpenError> {
        self.root.find_case_insensitive(rel, &mut self.listings, out)
    }

    /// Whether `rel` names a file that would be served now (a regular file, world-readable
    /// when only those are served), by one `statx` and without opening it: what a map file's
    /// `E` rule asks of a name.
    pub fn is_servable(&self, rel: &[u8]) -> bool {
        FileId::stat_at(&self.root, rel).is_ok_and(|id| {
            id.mode & libc::S_IFMT == libc::S_IFREG && (!self.world_readable_only || id.world_readable())
        })
    }

    /// Drops versions no transfer uses that have been idle for a while (or, with `all_idle`,
    /// every version no transfer uses), and the chunks of scratch no send holds.
    pub fn sweep(&mut self, now: Timestamp, all_idle: bool) {
        self.entries.retain(|_, e| {
            Rc::strong_count(&e.file) > 1 || (!all_idle && now.saturating_since(e.last_used) < IDLE_EVICT)
        });
        if let Ok(mut s) = self.scratch.try_borrow_mut() {
            s.trim();
        }
    }

    /// Forgets every cached version (a reload): the next request of each file opens, checks and
    /// maps it again, even where its `statx` identity did not change. Transfers keep the versions
    /// they hold, and their sends the chunks of scratch they hold.
    pub fn forget(&mut self, now: Timestamp) {
        self.entries.clear();
        self.listings.clear();
        self.sweep(now, true);
    }

    /// Number of cached versions.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
