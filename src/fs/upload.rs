//! Uploads that lose nothing and half-write nothing.
//!
//! An upload is written to a temporary file created (`O_EXCL`, mode from the umask) in the
//! target's directory, and only when the final block has arrived is it synced and renamed over
//! the target: `renameat2` is atomic, so readers see the old file or the new one, never a mix,
//! and two uploads of the same name leave exactly one of them. Without overwrite permission the
//! rename is `RENAME_NOREPLACE`, so a file that appeared meanwhile is not clobbered. A refused,
//! failed, aborted or abandoned upload removes its temporary file (also when an [`Upload`] is
//! dropped) and leaves the old file untouched.
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
use crate::proto::netascii;

/// Why an upload was refused or failed, each mapping to a TFTP error code.
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
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

impl UploadRoot {
    /// Opens `path` as the upload root.
    pub fn open(path: &Path) -> io::Result<Self> {
        let dir = open_base_dir(path, "upload")?;
        let mut root = Self { dir, has_openat2: true };
        if let Err(e) = root.open_dir(b".") {
            if e.raw_os_error() == Some(libc::ENOSYS) {
                root.has_openat2 = false;
            } else {
                return Err(e);
            }
        }
        Ok(root)
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
        if let Some(n) = announced {
            // SAFETY: plain data out-parameter of fstatvfs on our descriptor.
            let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            if unsafe { libc::fstatvfs(parent.as_raw_fd(), &mut vfs) } == 0 {
                let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
                if n > free {
                    return Err(UploadError::DiskFull);
                }
            }
        }
        let tmp = CString::new(format!(
            ".{}.{}-{}.upload",
            String::from_utf8_lossy(name.as_bytes()),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
        .map_err(|_| UploadError::Denied)?;
        // SAFETY: `parent` is a directory descriptor and `tmp` a NUL-terminated name.
        let fd = cvt(unsafe {
            libc::openat(
                parent.as_raw_fd(),
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                policy.mode as libc::c_uint,
            )
        })
        .map_err(UploadError::from_errno)?;
        // SAFETY: a new descriptor we own.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Upload {
            parent,
            name,
            tmp,
            file,
            written: 0,
            decoder: netascii.then(netascii::Decoder::new),
            max_size: policy.max_size,
            overwrite: policy.overwrite,
            done: false,
        })
    }
}

fn stat_nofollow(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: plain data out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is a directory descriptor, `name` NUL-terminated, `st` a valid out-pointer.
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// An upload in progress: a temporary file beside its target.
#[derive(Debug)]
pub struct Upload {
    parent: OwnedFd,
    name: CString,
    tmp: CString,
    file: File,
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
        self.file.write_all_at(data, self.written).map_err(UploadError::from_errno)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the upload durable and puts it in place: sync the file, rename it over the target
    /// (atomically; without overwrite permission only if the target still does not exist), sync
    /// the directory. Blocks on the disk: run it off the workers. On failure the temporary file
    /// is removed.
    pub fn commit(mut self) -> Result<u64, UploadError> {
        if let Some(mut d) = self.decoder.take() {
            let mut tail = Vec::new();
            d.finish(|b| tail.extend_from_slice(b));
            self.append(&tail)?;
        }
        self.file.sync_all().map_err(UploadError::from_errno)?;
        let flags = if self.overwrite { 0 } else { libc::RENAME_NOREPLACE };
        let p = self.parent.as_raw_fd();
        // SAFETY: both names are NUL-terminated and relative to our directory descriptor.
        cvt(unsafe { libc::renameat2(p, self.tmp.as_ptr(), p, self.name.as_ptr(), flags) })
            .map_err(UploadError::from_errno)?;
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
        if !self.done {
            // SAFETY: removes our own temporary file by name, relative to its directory.
            unsafe { libc::unlinkat(self.parent.as_raw_fd(), self.tmp.as_ptr(), 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: WritePolicy = WritePolicy { create: true, overwrite: true, mode: 0o644, max_size: 1 << 20 };

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
        assert_eq!(files(d.path()).len(), 2, "temp file beside the target");
        assert_eq!(u.commit().unwrap(), 3);
        assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"new");
        assert_eq!(files(d.path()), ["cfg"]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(d.path().join("cfg")).unwrap().permissions().mode() & 0o777, 0o644);
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
