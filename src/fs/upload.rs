//! Uploads that lose nothing and half-write nothing.
//!
//! [`UploadRoot::begin`] only checks a request (directory, target, policy, announced size) and
//! creates nothing: the upload's file is made when its first DATA is written, so a request that
//! is never followed by data (a forged one, say) leaves no trace on the disk.
//!
//! That file is an unnamed one (`O_TMPFILE`, mode from the umask) in the target's directory: no
//! request can fetch it while it is written, nothing of it survives a crash, and its name costs
//! nothing, so every name up to `NAME_MAX` can be uploaded. Only when the final block has arrived
//! is it synced and given its name: without overwrite permission by `linkat` to the target name
//! itself, which fails if that name exists, so a file that appeared meanwhile is not clobbered;
//! with it, by `linkat` to a short temporary name and `renameat2` over the target, which is
//! atomic, so readers see the old file or the new one, never a mix. Two uploads of the same name
//! leave exactly one of them. On file systems without `O_TMPFILE` the file is a named temporary
//! file (short name, `O_EXCL`) beside the target, renamed over it (`RENAME_NOREPLACE` without
//! overwrite permission). A refused, failed, aborted or abandoned upload leaves no file (a named
//! temporary file is removed, also when an [`Upload`] is dropped) and the old file untouched.
//!
//! The target's directory is resolved beneath the upload root by the kernel with no symlink
//! followed at all (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), and an existing target must be a
//! regular file: a symlink at the target name is refused, not followed.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::root::{open_base_dir, openat2};
use crate::proto::{ErrorCode, LocalFailure, netascii};

/// Why an upload was refused or failed, each mapping to a TFTP error code.
///
/// The ERROR that reports it is [`LocalFailure::from`] it; its `Display` is for the log.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The directory does not exist, or the file does not and creating is not allowed (1).
    #[error("file not found")]
    NotFound,
    /// Outside the root, through a symlink, or not a regular file (2).
    #[error("access violation")]
    Denied,
    /// Larger than allowed or than the free space (3).
    #[error("disk full or allocation exceeded")]
    DiskFull,
    /// The file exists and overwriting is not allowed (6).
    #[error("file already exists")]
    Exists,
    /// Anything else the system said (0).
    #[error("{0}")]
    Io(io::Error),
}

impl UploadError {
    /// The code of the ERROR that refuses or ends the upload.
    pub fn code(&self) -> ErrorCode {
        LocalFailure::from(self).code()
    }

    /// The message of that ERROR: says no more than the code (the cause is for the log).
    pub fn message(&self) -> &'static str {
        LocalFailure::from(self).message()
    }

    fn from_errno(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Self::NotFound,
            Some(libc::EXDEV | libc::ELOOP | libc::EACCES | libc::EPERM | libc::EROFS | libc::EISDIR) => Self::Denied,
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => Self::DiskFull,
            Some(libc::EEXIST) => Self::Exists,
            _ => Self::Io(e),
        }
    }
}

impl From<&UploadError> for LocalFailure {
    fn from(e: &UploadError) -> Self {
        match e {
            UploadError::NotFound => Self::NotFound,
            UploadError::Denied => Self::Denied,
            UploadError::DiskFull => Self::DiskFull,
            UploadError::Exists => Self::Exists,
            UploadError::Io(_) => Self::WriteFailed,
        }
    }
}

impl From<&UploadError> for ErrorCode {
    fn from(e: &UploadError) -> Self {
        e.code()
    }
}

/// What uploads may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritePolicy {
    /// New files may be created.
    pub create: bool,
    /// Existing files may be replaced.
    pub overwrite: bool,
    /// Mode of new files (0o666 with the umask applied).
    pub mode: u32,
    /// Largest upload in bytes.
    pub max_size: u64,
}

/// The directory uploads go into.
#[derive(Debug)]
pub struct UploadRoot {
    dir: OwnedFd,
    has_openat2: bool,
    /// Try unnamed files (`O_TMPFILE`) first; off only in tests of the fallback.
    unnamed: bool,
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

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
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
    fn named_only(mut self) -> Self {
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
        Ok(Upload {
            parent,
            name,
            mode: policy.mode,
            unnamed: self.unnamed,
            file: None,
            written: 0,
            decoder: netascii.then(netascii::Decoder::new),
            max_size: policy.max_size,
            overwrite: policy.overwrite,
            done: false,
        })
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

/// A short temporary name, unique in this process (it never depends on the target's name, so it
/// always fits `NAME_MAX`).
fn temp_name(what: &str) -> CString {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    CString::new(format!(".bootstorm-{}-{n}.{what}", std::process::id())).expect("no NUL in a formatted number")
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

/// Gives the unnamed file `file` the name `name` in `dir`; fails with `EEXIST` if that name
/// exists.
fn link_unnamed(file: &File, dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: links our own descriptor (empty path, AT_EMPTY_PATH) to a NUL-terminated name
    // relative to our directory descriptor.
    let rc =
        unsafe { libc::linkat(file.as_raw_fd(), c"".as_ptr(), dir.as_raw_fd(), name.as_ptr(), libc::AT_EMPTY_PATH) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EPERM | libc::EINVAL)) {
        return Err(e);
    }
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH on kernels before 6.10; /proc needs nothing.
    link_via_proc(file, dir, name)
}

/// [`link_unnamed`] through `/proc/self/fd` (open(2) on `O_TMPFILE`), for kernels that refuse
/// `AT_EMPTY_PATH` to a process without `CAP_DAC_READ_SEARCH`.
fn link_via_proc(file: &File, dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    let proc = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL in a formatted number");
    // SAFETY: both paths are NUL-terminated; the magic link is followed to our own file.
    cvt(unsafe {
        libc::linkat(libc::AT_FDCWD, proc.as_ptr(), dir.as_raw_fd(), name.as_ptr(), libc::AT_SYMLINK_FOLLOW)
    })?;
    Ok(())
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

/// The file an upload is written to.
#[derive(Debug)]
enum Staged {
    /// Unnamed (`O_TMPFILE`): gone by itself unless linked.
    Unnamed(File),
    /// A named temporary file beside the target, removed unless renamed.
    Named(File, CString),
}

impl Staged {
    fn file(&self) -> &File {
        match self {
            Self::Unnamed(f) | Self::Named(f, _) => f,
        }
    }
}

/// An upload in progress: an unnamed file in its target's directory, made at the first DATA.
#[derive(Debug)]
pub struct Upload {
    parent: OwnedFd,
    name: CString,
    mode: u32,
    unnamed: bool,
    /// `None` until the first DATA.
    file: Option<Staged>,
    written: u64,
    decoder: Option<netascii::Decoder>,
    max_size: u64,
    overwrite: bool,
    done: bool,
}

impl Upload {
    /// Appends received bytes (decoded first in netascii mode).
    pub fn write(&mut self, data: &[u8]) -> Result<(), UploadError> {
        match self.decoder.as_mut() {
            None => self.append(data),
            Some(d) => {
                let mut d = *d;
                let mut result = Ok(());
                d.decode(data, |run| {
                    if result.is_ok() {
                        result = self.append(run);
                    }
                });
                self.decoder = Some(d);
                result
            }
        }
    }

    fn append(&mut self, data: &[u8]) -> Result<(), UploadError> {
        if self.written + data.len() as u64 > self.max_size {
            return Err(UploadError::DiskFull);
        }
        let written = self.written;
        self.staged()?.file().write_all_at(data, written).map_err(UploadError::from_errno)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// The upload's file, made on first use: unnamed where the file system allows, else a
    /// named temporary file.
    fn staged(&mut self) -> Result<&Staged, UploadError> {
        if self.file.is_none() {
            self.file = Some(self.create().map_err(UploadError::from_errno)?);
        }
        Ok(self.file.as_ref().expect("just made"))
    }

    fn create(&self) -> io::Result<Staged> {
        let p = self.parent.as_raw_fd();
        let mode = self.mode as libc::c_uint;
        if self.unnamed {
            // SAFETY: `p` is our directory descriptor and "." a NUL-terminated name.
            let fd =
                unsafe { libc::openat(p, c".".as_ptr(), libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC, mode) };
            if fd >= 0 {
                // SAFETY: a new descriptor we own.
                return Ok(Staged::Unnamed(File::from(unsafe { OwnedFd::from_raw_fd(fd) })));
            }
            let e = io::Error::last_os_error();
            // The file system or the kernel has no O_TMPFILE: fall back to a named file.
            if !matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)) {
                return Err(e);
            }
        }
        let tmp = temp_name("upload");
        // SAFETY: `p` is our directory descriptor and `tmp` a NUL-terminated name.
        let fd = cvt(unsafe {
            libc::openat(
                p,
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
        })?;
        // SAFETY: a new descriptor we own.
        Ok(Staged::Named(File::from(unsafe { OwnedFd::from_raw_fd(fd) }), tmp))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the upload durable and puts it in place: sync the file, give it the target's name
    /// (atomically; without overwrite permission only if the target still does not exist), sync
    /// the directory. Blocks on the disk: run it off the workers. On failure nothing of the
    /// upload is left.
    pub fn commit(mut self) -> Result<u64, UploadError> {
        if let Some(mut d) = self.decoder.take() {
            let mut tail = Vec::new();
            d.finish(|b| tail.extend_from_slice(b));
            self.append(&tail)?;
        }
        // An empty upload has written nothing yet.
        self.staged()?.file().sync_all().map_err(UploadError::from_errno)?;
        let p = self.parent.as_raw_fd();
        match &self.file {
            Some(Staged::Unnamed(file)) if !self.overwrite => {
                link_unnamed(file, &self.parent, &self.name).map_err(UploadError::from_errno)?;
            }
            Some(Staged::Unnamed(file)) => {
                // No call links over an existing name: link to a temporary name, rename that.
                let tmp = temp_name("commit");
                link_unnamed(file, &self.parent, &tmp).map_err(UploadError::from_errno)?;
                // SAFETY: both names are NUL-terminated and relative to our directory descriptor.
                if let Err(e) = cvt(unsafe { libc::renameat2(p, tmp.as_ptr(), p, self.name.as_ptr(), 0) }) {
                    // SAFETY: removes the name we just made, relative to its directory.
                    unsafe { libc::unlinkat(p, tmp.as_ptr(), 0) };
                    return Err(UploadError::from_errno(e));
                }
            }
            Some(Staged::Named(_, tmp)) => {
                let flags = if self.overwrite { 0 } else { libc::RENAME_NOREPLACE };
                // SAFETY: both names are NUL-terminated and relative to our directory descriptor.
                cvt(unsafe { libc::renameat2(p, tmp.as_ptr(), p, self.name.as_ptr(), flags) })
                    .map_err(UploadError::from_errno)?;
            }
            None => unreachable!("staged above"),
        }
        self.done = true;
        // The rename is durable once the directory is synced; a failure here cannot be undone.
        // SAFETY: fsync of our own descriptor (an O_PATH directory descriptor works for fsync).
        let dir = unsafe { libc::openat(p, c".".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if dir >= 0 {
            // SAFETY: a descriptor we just opened and close right after.
            unsafe {
                libc::fsync(dir);
                libc::close(dir);
            }
        }
        Ok(self.written)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // An unnamed file goes with its descriptor; a named one must be removed.
        if let (false, Some(Staged::Named(_, tmp))) = (self.done, &self.file) {
            // SAFETY: removes our own temporary file by name, relative to its directory.
            unsafe { libc::unlinkat(self.parent.as_raw_fd(), tmp.as_ptr(), 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: WritePolicy = WritePolicy { create: true, overwrite: true, mode: 0o644, max_size: 1 << 20 };

    /// Each refusal is answered with the same ERROR as when the engine mapped it itself.
    #[test]
    fn errors_map_to_their_wire_errors() {
        let cases = [
            (UploadError::NotFound, ErrorCode::FILE_NOT_FOUND, "file not found"),
            (UploadError::Denied, ErrorCode::ACCESS_VIOLATION, "access violation"),
            (UploadError::DiskFull, ErrorCode::DISK_FULL, "disk full or upload too large"),
            (UploadError::Exists, ErrorCode::FILE_EXISTS, "file already exists"),
            (UploadError::Io(io::Error::from_raw_os_error(libc::EIO)), ErrorCode::NOT_DEFINED, "cannot write file"),
        ];
        for (e, code, message) in cases {
            assert_eq!((e.code(), e.message()), (code, message), "{e:?}");
            assert_eq!(ErrorCode::from(&e), code);
            assert_eq!(LocalFailure::from(&e).message(), message);
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn commit_replaces_atomically_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cfg"), b"old").unwrap();
        let root = UploadRoot::open(d.path()).unwrap();
        let mut u = root.begin(b"cfg", &ALL, Some(3), false).unwrap();
        u.write(b"new").unwrap();
        assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"old", "untouched until the commit");
        assert_eq!(files(d.path()), ["cfg"], "the upload's file has no name");
        assert_eq!(u.commit().unwrap(), 3);
        assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"new");
        assert_eq!(files(d.path()), ["cfg"]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(d.path().join("cfg")).unwrap().permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn nothing_exists_before_the_first_data() {
        let d = tempfile::tempdir().unwrap();
        let root = UploadRoot::open(d.path()).unwrap();
        for r in [&root, &UploadRoot::open(d.path()).unwrap().named_only()] {
            let u = r.begin(b"new", &ALL, Some(3), false).unwrap();
            assert!(files(d.path()).is_empty());
            drop(u);
            // An empty upload (DATA 1 with no bytes) is a file too.
            let mut u = r.begin(b"empty", &ALL, Some(0), false).unwrap();
            u.write(b"").unwrap();
            assert_eq!(u.commit().unwrap(), 0);
            assert_eq!(files(d.path()), ["empty"]);
            std::fs::remove_file(d.path().join("empty")).unwrap();
        }
    }

    #[test]
    fn named_fallback_keeps_every_guarantee() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cfg"), b"old").unwrap();
        let root = UploadRoot::open(d.path()).unwrap().named_only();
        let mut u = root.begin(b"cfg", &ALL, None, false).unwrap();
        u.write(b"new").unwrap();
        let during = files(d.path());
        assert_eq!(during.len(), 2, "a named temporary file beside the target");
        assert!(during[0].starts_with(".bootstorm-") && during[0].len() < 40, "a short name: {during:?}");
        u.commit().unwrap();
        assert_eq!(files(d.path()), ["cfg"]);
        assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"new");
        // Abandoned: removed.
        let mut u = root.begin(b"cfg", &ALL, None, false).unwrap();
        u.write(b"partial").unwrap();
        drop(u);
        assert_eq!(files(d.path()), ["cfg"]);
        // Without overwrite the first to commit wins: see the test below.
    }

    #[test]
    fn names_up_to_name_max() {
        let d = tempfile::tempdir().unwrap();
        for root in [UploadRoot::open(d.path()).unwrap(), UploadRoot::open(d.path()).unwrap().named_only()] {
            for len in [236, 250, 255] {
                let name = vec![b'n'; len];
                for content in [&b"one"[..], b"two"] {
                    let mut u = root.begin(&name, &ALL, None, false).unwrap();
                    u.write(content).unwrap();
                    u.commit().unwrap();
                    assert_eq!(std::fs::read(d.path().join(std::str::from_utf8(&name).unwrap())).unwrap(), content);
                }
            }
            assert_eq!(files(d.path()).len(), 3);
            assert!(root.begin(&[b'n'; 256], &ALL, None, false).is_err(), "over NAME_MAX");
        }
    }

    #[test]
    fn unnamed_files_are_checked_at_open_and_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let root = UploadRoot::open(d.path()).unwrap();
        assert!(root.unnamed, "this kernel and file system link unnamed files");
        assert!(files(d.path()).is_empty(), "the check leaves no file behind");
    }

    #[test]
    fn unnamed_file_linked_through_proc() {
        let d = tempfile::tempdir().unwrap();
        let root = UploadRoot::open(d.path()).unwrap();
        let mut u = root.begin(b"f", &ALL, None, false).unwrap();
        u.write(b"via proc").unwrap();
        let Some(Staged::Unnamed(file)) = &u.file else { panic!("an unnamed file on this file system") };
        file.sync_all().unwrap();
        link_via_proc(file, &u.parent, c"f").unwrap();
        assert!(matches!(link_via_proc(file, &u.parent, c"f"), Err(e) if e.raw_os_error() == Some(libc::EEXIST)));
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"via proc");
    }

    #[test]
    fn relation_to_the_served_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir(d.path().join("other")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), d.path().join("sneaky")).unwrap();
        let rel = |p: &Path| UploadRoot::open(p).unwrap().relation_to(&root).unwrap();
        assert_eq!(rel(&root), TreeRelation::Same);
        assert_eq!(rel(&root.join("sub/deeper")), TreeRelation::Inside);
        assert_eq!(rel(&d.path().join("sneaky")), TreeRelation::Inside, "through a symlink");
        assert_eq!(rel(&root.join("sub/../sub")), TreeRelation::Inside);
        assert_eq!(rel(d.path()), TreeRelation::Contains);
        assert_eq!(rel(&d.path().join("other")), TreeRelation::Separate);
    }

    #[test]
    fn aborted_upload_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cfg"), b"old").unwrap();
        let root = UploadRoot::open(d.path()).unwrap();
        let mut u = root.begin(b"cfg", &ALL, None, false).unwrap();
        u.write(b"partial").unwrap();
        drop(u);
        assert_eq!(files(d.path()), ["cfg"]);
        assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"old");
    }

    #[test]
    fn policy_refusals() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("exists"), b"x").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("sub", d.path().join("dirlink")).unwrap();
        let root = UploadRoot::open(d.path()).unwrap();
        let no_over = WritePolicy { overwrite: false, ..ALL };
        let no_create = WritePolicy { create: false, ..ALL };
        assert!(matches!(root.begin(b"exists", &no_over, None, false), Err(UploadError::Exists)));
        assert!(matches!(root.begin(b"new", &no_create, None, false), Err(UploadError::NotFound)));
        assert!(matches!(root.begin(b"link", &ALL, None, false), Err(UploadError::Denied)), "symlink target");
        assert!(matches!(root.begin(b"dirlink/x", &ALL, None, false), Err(UploadError::Denied)), "through a symlink");
        assert!(matches!(root.begin(b"sub", &ALL, None, false), Err(UploadError::Denied)), "a directory");
        assert!(matches!(root.begin(b"missing/x", &ALL, None, false), Err(UploadError::NotFound)));
        assert!(matches!(root.begin(b"big", &ALL, Some(2 << 20), false), Err(UploadError::DiskFull)));
        assert!(
            matches!(root.begin(b"huge", &ALL, Some(u64::MAX / 2), false), Err(UploadError::DiskFull)),
            "free space"
        );
        assert!(root.begin(b"sub/new", &ALL, None, false).is_ok());
        assert_eq!(files(d.path()), ["dirlink", "exists", "link", "sub"]);
    }

    #[test]
    fn size_limit_while_writing() {
        let d = tempfile::tempdir().unwrap();
        let root = UploadRoot::open(d.path()).unwrap();
        let mut u = root.begin(b"f", &WritePolicy { max_size: 10, ..ALL }, None, false).unwrap();
        u.write(&[0; 8]).unwrap();
        assert!(matches!(u.write(&[0; 8]), Err(UploadError::DiskFull)));
    }

    #[test]
    fn no_replace_loses_to_a_file_that_appeared_meanwhile() {
        let d = tempfile::tempdir().unwrap();
        let root = UploadRoot::open(d.path()).unwrap();
        let p = WritePolicy { overwrite: false, ..ALL };
        let mut a = root.begin(b"f", &p, None, false).unwrap();
        let mut b = root.begin(b"f", &p, None, false).unwrap();
        a.write(b"aaa").unwrap();
        b.write(b"bbb").unwrap();
        a.commit().unwrap();
        assert!(matches!(b.commit(), Err(UploadError::Exists)));
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"aaa");
        assert_eq!(files(d.path()), ["f"]);
    }

    #[test]
    fn netascii_upload_is_decoded() {
        let d = tempfile::tempdir().unwrap();
        let root = UploadRoot::open(d.path()).unwrap();
        let mut u = root.begin(b"t", &ALL, None, true).unwrap();
        u.write(b"a\r\nb\r").unwrap();
        u.write(b"\0c\r").unwrap();
        u.commit().unwrap();
        assert_eq!(std::fs::read(d.path().join("t")).unwrap(), b"a\nb\rc\r");
    }
}
