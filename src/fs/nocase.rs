//! Finding a file whose name matches a request's with ASCII case ignored
//! (`--case-insensitive`): `PXELINUX.CFG/01-AA-BB-…` is served from `pxelinux.cfg/01-aa-bb-…`.
//!
//! Each component is looked for in its directory, which is read beneath the root exactly as
//! files are opened ([`Root`]'s `openat2` with `RESOLVE_BENEATH`, or the component walk without
//! it), so the search can never leave the root. A component spelled as on disk is taken as it
//! is, else the first entry in byte order equal to it with case ignored. The search runs only
//! after the exact name was not found, so names clients spell right cost nothing more.
//!
//! The directories read are kept ([`Listings`], one per worker's file cache) and used again while
//! their identity (inode, modification and change times, from one `statx`) stays: the dozen
//! misses of a PXELINUX configuration search then cost a `statx` per directory each, not a
//! directory read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use super::root::{OpenError, Root};
use crate::proto::wire::MAX_FILENAME_LEN;

/// Directories kept at most; beyond, the least recently read is dropped.
const MAX_LISTINGS: usize = 256;

/// Entries of one directory kept at most; a larger directory is read on every search.
const MAX_ENTRIES: usize = 65_536;

/// Directory listings for the case-insensitive search, by path beneath the root.
#[derive(Debug, Default)]
pub struct Listings {
    dirs: HashMap<Box<[u8]>, Listing>,
    /// Reads so far, to drop the oldest listing when full.
    reads: u64,
}

impl Listings {
    /// Forgets every listing.
    pub fn clear(&mut self) {
        self.dirs.clear();
    }

    /// Listings kept.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

/// One directory's entries, by name folded to lower case: every spelling, in byte order.
#[derive(Clone, Debug)]
struct Listing {
    id: DirId,
    read: u64,
    by_folded: HashMap<Box<[u8]>, Vec<Box<[u8]>>>,
}

impl Listing {
    /// The entry spelled `name`, else the first equal to it with case ignored.
    fn find(&self, name: &[u8]) -> Option<&[u8]> {
        let mut folded = [0u8; MAX_FILENAME_LEN];
        let folded = folded.get_mut(..name.len())?;
        folded.copy_from_slice(name);
        folded.make_ascii_lowercase();
        let all = self.by_folded.get(&*folded)?;
        all.iter().find(|n| ***n == *name).or(all.first()).map(|n| &**n)
    }
}

/// What identifies a directory's contents: a new entry changes its modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirId {
    dev: (u32, u32),
    ino: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

/// How recent a directory's change must be for its listing not to be kept: file system
/// timestamps advance by a clock tick, so an entry added within the tick after the listing was
/// read leaves the directory's identity unchanged. A listing read after its directory has been
/// still for this long is kept.
const SETTLE_SECS: i64 = 2;

impl DirId {
    /// Whether the directory changed too recently for its listing to be trusted later.
    fn is_recent(&self) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        i64::try_from(now).unwrap_or(i64::MAX).saturating_sub(self.mtime.0.max(self.ctime.0)) < SETTLE_SECS
    }
}

impl Root {
    /// The path beneath the root whose components match those of `rel` (a normalised relative
    /// path) with ASCII case ignored, written into `out`; [`OpenError::NotFound`] when some
    /// component has no match. Directories read are kept in `listings`. What the path names is
    /// not checked here: it is opened as any other.
    pub fn find_case_insensitive<'o>(
        &self,
        rel: &[u8],
        listings: &mut Listings,
        out: &'o mut [u8],
    ) -> Result<&'o [u8], OpenError> {
        let mut len = 0;
        for comp in rel.split(|&b| b == b'/') {
            let dir = if len == 0 { &b"."[..] } else { &out[..len] };
            let listing = self.listing(dir, listings)?;
            let name = listing.find(comp).ok_or(OpenError::NotFound)?;
            let need = name.len() + usize::from(len > 0);
            let slot = out.get_mut(len..len + need).ok_or(OpenError::NotFound)?;
            if len > 0 {
                slot[0] = b'/';
            }
            slot[need - name.len()..].copy_from_slice(name);
            len += need;
        }
        Ok(&out[..len])
    }

    /// The listing of the directory at `dir` beneath the root: the one kept while the
    /// directory's identity stays, else read anew (and kept, when not too large).
    fn listing<'l>(&self, dir: &[u8], listings: &'l mut Listings) -> Result<Cow<'l, Listing>, OpenError> {
        let mut buf = [0u8; MAX_FILENAME_LEN + 1];
        let c = cstr(dir, &mut buf)?;
        let now = dir_id(self.as_raw_fd(), c, 0);
        let kept = now.is_some() && listings.dirs.get(dir).is_some_and(|l| Some(l.id) == now);
        if !kept {
            let fd = self.open_dir(c)?;
            let id = dir_id(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH).ok_or(OpenError::NotFound)?;
            listings.reads += 1;
            let listing = read_listing(fd, id, listings.reads)?;
            if listing.by_folded.values().map(Vec::len).sum::<usize>() > MAX_ENTRIES || id.is_recent() {
                return Ok(Cow::Owned(listing));
            }
            if listings.dirs.len() >= MAX_LISTINGS && !listings.dirs.contains_key(dir) {
                if let Some(oldest) = listings.dirs.iter().min_by_key(|(_, l)| l.read).map(|(k, _)| k.clone()) {
                    listings.dirs.remove(&oldest);
                }
            }
            listings.dirs.insert(dir.into(), listing);
        }
        Ok(Cow::Borrowed(listings.dirs.get(dir).ok_or(OpenError::NotFound)?))
    }

    /// The directory at `rel` beneath the root, opened for reading its entries.
    fn open_dir(&self, rel: &CStr) -> Result<OwnedFd, OpenError> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        if self.uses_openat2() {
            return self.openat2(rel, flags).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => OpenError::NotFound,
                _ => OpenError::Denied,
            });
        }
        match rel.to_bytes() {
            b"." => self.walk_root(flags),
            path => self.walk(path, flags),
        }
    }

    /// The root itself, for reading (the walk has no component to take).
    fn walk_root(&self, flags: libc::c_int) -> Result<OwnedFd, OpenError> {
        // SAFETY: the root's descriptor is an open directory and "." NUL-terminated.
        let fd = unsafe { libc::openat(self.as_raw_fd(), c".".as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(OpenError::Io(std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor we own.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    }
}

/// `b` NUL-terminated in `buf`, without allocating.
fn cstr<'b>(b: &[u8], buf: &'b mut [u8; MAX_FILENAME_LEN + 1]) -> Result<&'b CStr, OpenError> {
    if b.len() >= buf.len() {
        return Err(OpenError::NotFound);
    }
    buf[..b.len()].copy_from_slice(b);
    buf[b.len()] = 0;
    CStr::from_bytes_with_nul(&buf[..=b.len()]).map_err(|_| OpenError::Denied)
}

/// The identity of the directory at `path` relative to `base` (`flags`: `AT_EMPTY_PATH` for
/// `base` itself), if it is one. The path is resolved without `RESOLVE_BENEATH`: the identity
/// only tells whether a listing read beneath the root is still the directory's; a path that now
/// leads elsewhere has another identity and is read again, beneath the root.
fn dir_id(base: libc::c_int, path: &CStr, flags: libc::c_int) -> Option<DirId> {
    // SAFETY: statx is plain data; all-zero is a valid value.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `base` is an open descriptor, `path` NUL-terminated, `sx` a valid out-pointer.
    let rc = unsafe {
        libc::statx(base, path.as_ptr(), flags | libc::AT_STATX_SYNC_AS_STAT, libc::STATX_BASIC_STATS, &mut sx)
    };
    (rc == 0 && u32::from(sx.stx_mode) & libc::S_IFMT == libc::S_IFDIR).then_some(DirId {
        dev: (sx.stx_dev_major, sx.stx_dev_minor),
        ino: sx.stx_ino,
        mtime: (sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec),
        ctime: (sx.stx_ctime.tv_sec, sx.stx_ctime.tv_nsec),
    })
}

/// Reads the entries of the open directory `dir` (`.` and `..` left out).
fn read_listing(dir: OwnedFd, id: DirId, read: u64) -> Result<Listing, OpenError> {
    // SAFETY: `dir` is an open directory descriptor; fdopendir takes it over (closed by
    // closedir below), and on failure it is still ours to close.
    let stream = unsafe { libc::fdopendir(dir.as_raw_fd()) };
    if stream.is_null() {
        return Err(OpenError::Io(std::io::Error::last_os_error()));
    }
    let _ = dir.into_raw_fd();
    let mut by_folded: HashMap<Box<[u8]>, Vec<Box<[u8]>>> = HashMap::new();
    loop {
        // SAFETY: `stream` is an open directory stream, read by this thread only.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated; it stays valid
        // until the next readdir on this stream, and is copied before then.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        by_folded.entry(name.to_ascii_lowercase().into()).or_default().push(name.into());
    }
    // SAFETY: `stream` is open and closed once, here.
    unsafe { libc::closedir(stream) };
    for spellings in by_folded.values_mut() {
        spellings.sort();
    }
    Ok(Listing { id, read, by_folded })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(root: &Root, rel: &str) -> Result<String, OpenError> {
        let mut out = [0; 512];
        let mut listings = Listings::default();
        root.find_case_insensitive(rel.as_bytes(), &mut listings, &mut out).map(|b| String::from_utf8_lossy(b).into())
    }

    #[test]
    fn finds_the_name_as_spelled_on_disk_and_stays_beneath_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pxelinux.cfg")).unwrap();
        std::fs::write(dir.path().join("pxelinux.cfg/01-52-54-00-ab-cd-ef"), b"menu").unwrap();
        std::fs::write(dir.path().join("pxelinux.cfg/Default"), b"d1").unwrap();
        std::fs::write(dir.path().join("pxelinux.cfg/default"), b"d2").unwrap();
        std::fs::create_dir(outside.path().join("Secret")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        let mut roots = vec![Root::open(dir.path(), true).unwrap()];
        let mut walk = Root::open(dir.path(), true).unwrap();
        walk.disable_openat2_for_tests();
        roots.push(walk);
        for root in &roots {
            assert_eq!(find(root, "PXELINUX.CFG/01-52-54-00-AB-CD-EF").unwrap(), "pxelinux.cfg/01-52-54-00-ab-cd-ef");
            assert_eq!(find(root, "pxelinux.cfg/DEFAULT").unwrap(), "pxelinux.cfg/Default", "first in byte order");
            assert_eq!(find(root, "pxelinux.cfg/default").unwrap(), "pxelinux.cfg/default", "as spelled first");
            assert!(matches!(find(root, "pxelinux.cfg/missing"), Err(OpenError::NotFound)));
            assert!(matches!(find(root, "nodir/x"), Err(OpenError::NotFound)));
            // A link out of the root is never read.
            let e = find(root, "out/secret");
            assert!(matches!(e, Err(OpenError::Denied | OpenError::SymlinkWithoutOpenat2)), "{e:?}");
        }
    }

    /// A listing is read once and used while its directory is unchanged; a new entry is seen.
    #[test]
    fn listings_are_kept_until_the_directory_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cfg")).unwrap();
        std::fs::write(dir.path().join("cfg/A"), b"a").unwrap();
        let root = Root::open(dir.path(), true).unwrap();
        let mut listings = Listings::default();
        let mut out = [0; 512];
        let mut find = |name: &str, l: &mut Listings| {
            root.find_case_insensitive(name.as_bytes(), l, &mut out).map(|b| String::from_utf8_lossy(b).into_owned())
        };
        // Just created: too recent to keep.
        assert_eq!(find("CFG/a", &mut listings).unwrap(), "cfg/A");
        assert!(listings.is_empty());
        // Settled (timestamps moved back): kept, and used while unchanged.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for p in [dir.path().to_path_buf(), dir.path().join("cfg")] {
            std::fs::File::open(&p).unwrap().set_modified(old).unwrap();
        }
        // ctime cannot be set back: wait it out.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(find("CFG/a", &mut listings).unwrap(), "cfg/A");
        assert_eq!(listings.len(), 2);
        let reads = listings.reads;
        assert!(matches!(find("cfg/b", &mut listings), Err(OpenError::NotFound)));
        assert_eq!(listings.reads, reads, "no directory read for a miss in a kept listing");
        // A new entry changes the directory: read again.
        std::fs::write(dir.path().join("cfg/b"), b"b").unwrap();
        assert_eq!(find("cfg/B", &mut listings).unwrap(), "cfg/b");
        assert_eq!(listings.reads, reads + 1);
    }
}
