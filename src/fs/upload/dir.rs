//! The upload directory and its start-up checks: where it lies beside the served root, whether
//! unnamed files can be linked there, and each request's checks before an [`Upload`] starts.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::file::{Upload, link_unnamed};
use super::{UploadError, WritePolicy, cvt};
use crate::fs::root::{open_base_dir, openat2};

/// The directory uploads go into.
#[derive(Debug)]
pub struct UploadRoot {
    dir: OwnedFd,
    has_openat2: bool,
    /// Try unnamed files (`O_TMPFILE`) first; off only in tests of the fallback.
    pub(super) unnamed: bool,
}

/// Where an upload directory lies relative to the served root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeRelation {
    /// Neither contains the other.
    Separate,
    /// The same directory.
    Same,
    /// The upload directory is inside the served root.
    Inside,
    /// The served root is inside the upload directory.
    Contains,
}

impl UploadRoot {
    /// Opens `path` as the upload root.
    pub fn open(path: &Path) -> io::Result<Self> {
        let dir = open_base_dir(path, "upload")?;
        let mut root = Self { dir, has_openat2: true, unnamed: true };
        if let Err(e) = root.open_dir(b".") {
            if e.raw_os_error() == Some(libc::ENOSYS) {
                root.has_openat2 = false;
            } else {
                return Err(e);
            }
        }
        root.unnamed = unnamed_files_work(&root.dir);
        Ok(root)
    }

    /// Where this directory lies relative to the served root `served`, compared by device and
    /// inode along each one's chain of parents (so symlinks and different spellings of a path do
    /// not hide an overlap).
    pub fn relation_to(&self, served: &Path) -> io::Result<TreeRelation> {
        let served = open_base_dir(served, "root")?;
        let up = ancestry(&self.dir)?;
        let root = ancestry(&served)?;
        Ok(if up[0] == root[0] {
            TreeRelation::Same
        } else if up[1..].contains(&root[0]) {
            TreeRelation::Inside
        } else if root[1..].contains(&up[0]) {
            TreeRelation::Contains
        } else {
            TreeRelation::Separate
        })
    }

    /// The same root, writing named temporary files only (the fallback for file systems without
    /// `O_TMPFILE`).
    #[cfg(test)]
    pub(super) fn named_only(mut self) -> Self {
        self.unnamed = false;
        self
    }

    /// Opens directory `rel` beneath the root without following any symlink.
    fn open_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        if self.has_openat2 {
            let c = CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
            return openat2(self.dir.as_raw_fd(), &c, flags, resolve);
        }
        // Old kernels: one component at a time, never following a link.
        let mut cur: Option<OwnedFd> = None;
        for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".") {
            let c = CString::new(comp).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            let base = cur.as_ref().map_or(self.dir.as_raw_fd(), AsRawFd::as_raw_fd);
            // SAFETY: `base` is a directory descriptor and `c` a NUL-terminated name.
            let fd = cvt(unsafe { libc::openat(base, c.as_ptr(), flags | libc::O_NOFOLLOW) })?;
            // SAFETY: a new descriptor we own.
            cur = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        match cur {
            Some(fd) => Ok(fd),
            None => self.dir.try_clone(),
        }
    }

    /// Starts an upload to `rel` (a normalised relative path) under `policy`. `announced` is the
    /// size the client announced (tsize), checked against the limit and the free space before a
    /// byte is accepted.
    pub fn begin(
        &self,
        rel: &[u8],
        policy: &WritePolicy,
        announced: Option<u64>,
        netascii: bool,
    ) -> Result<Upload, UploadError> {
        let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b"."[..], rel),
        };
        if name.is_empty() || name == b"." || name == b".." {
            return Err(UploadError::Denied);
        }
        if announced.is_some_and(|n| n > policy.max_size) {
            return Err(UploadError::DiskFull);
        }
        let parent = self.open_dir(dir).map_err(UploadError::from_errno)?;
        let name = CString::new(name).map_err(|_| UploadError::Denied)?;
        match stat_nofollow(&parent, &name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                if !policy.overwrite {
                    return Err(UploadError::Exists);
                }
            }
            // A symlink, directory, device...: never written through or replaced.
            Ok(_) => return Err(UploadError::Denied),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if !policy.create {
                    return Err(UploadError::NotFound);
                }
            }
            Err(e) => return Err(UploadError::from_errno(e)),
        }
        // SAFETY: plain data out-parameter of fstatvfs on our descriptor.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstatvfs(parent.as_raw_fd(), &mut vfs) } == 0 {
            if vfs.f_flag & libc::ST_RDONLY != 0 {
                return Err(UploadError::Denied);
            }
            let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
            if announced.is_some_and(|n| n > free) {
                return Err(UploadError::DiskFull);
            }
        }
        // Nothing is created before the first DATA.
        Ok(Upload::new(parent, name, policy, self.unnamed, netascii))
    }
}

/// The (device, inode) of `dir` and of each directory above it, up to the process's root.
fn ancestry(dir: &OwnedFd) -> io::Result<Vec<(u64, u64)>> {
    let mut chain = Vec::new();
    let mut cur = dir.try_clone()?;
    loop {
        let st = stat_nofollow(&cur, c"")?;
        let id = (st.st_dev, st.st_ino);
        if chain.last() == Some(&id) || chain.len() >= 4096 {
            return Ok(chain);
        }
        chain.push(id);
        // SAFETY: `cur` is a directory descriptor and ".." a NUL-terminated name.
        let fd = cvt(unsafe {
            libc::openat(cur.as_raw_fd(), c"..".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        })?;
        // SAFETY: a new descriptor we own.
        cur = unsafe { OwnedFd::from_raw_fd(fd) };
    }
}

/// Whether an unnamed file made in `dir` can be given a name there: the file system has
/// `O_TMPFILE`, and this process may link a descriptor (Linux 6.10+, `CAP_DAC_READ_SEARCH`, or
/// `/proc` mounted). Checked once at start, so that uploads never fail at their commit, after
/// all their data arrived; without it uploads use named temporary files.
fn unnamed_files_work(dir: &OwnedFd) -> bool {
    // SAFETY: opens an unnamed file in our directory descriptor with a NUL-terminated path.
    let fd = unsafe {
        libc::openat(dir.as_raw_fd(), c".".as_ptr(), libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC, 0o600)
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    let name = CString::new(format!(".bootstorm-probe-{}", std::process::id())).expect("no NUL in a formatted number");
    let linked = link_unnamed(&file, dir, &name).is_ok();
    if linked {
        // SAFETY: removes the name just made, relative to our directory descriptor.
        unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    }
    linked
}

fn stat_nofollow(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: plain data out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // An empty name stats `dir` itself.
    let flags = libc::AT_SYMLINK_NOFOLLOW | if name.is_empty() { libc::AT_EMPTY_PATH } else { 0 };
    // SAFETY: `dir` is a directory descriptor, `name` NUL-terminated, `st` a valid out-pointer.
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}
