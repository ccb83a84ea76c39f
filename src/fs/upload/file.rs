//! One upload's file: made at the first DATA (unnamed, or a named temporary file), written,
//! and at the end synced and put in place under the target's name, or left behind as nothing.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{UploadError, WritePolicy, cvt};
use crate::proto::netascii;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A short temporary name, unique in this process (it never depends on the target's name, so it
/// always fits `NAME_MAX`).
fn temp_name(what: &str) -> CString {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    CString::new(format!(".bootstorm-{}-{n}.{what}", std::process::id())).expect("no NUL in a formatted number")
}

/// Gives the unnamed file `file` the name `name` in `dir`; fails with `EEXIST` if that name
/// exists.
pub(super) fn link_unnamed(file: &File, dir: &OwnedFd, name: &CStr) -> io::Result<()> {
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
pub(super) fn link_via_proc(file: &File, dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    let proc = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL in a formatted number");
    // SAFETY: both paths are NUL-terminated; the magic link is followed to our own file.
    cvt(unsafe {
        libc::linkat(libc::AT_FDCWD, proc.as_ptr(), dir.as_raw_fd(), name.as_ptr(), libc::AT_SYMLINK_FOLLOW)
    })?;
    Ok(())
}

/// The file an upload is written to.
#[derive(Debug)]
pub(super) enum Staged {
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
    pub(super) parent: OwnedFd,
    name: CString,
    mode: u32,
    unnamed: bool,
    /// `None` until the first DATA.
    pub(super) file: Option<Staged>,
    written: u64,
    decoder: Option<netascii::Decoder>,
    max_size: u64,
    overwrite: bool,
    done: bool,
}

impl Upload {
    /// An upload of `name` in `parent` under `policy`; nothing is created before the first DATA.
    pub(super) fn new(parent: OwnedFd, name: CString, policy: &WritePolicy, unnamed: bool, netascii: bool) -> Self {
        Self {
            parent,
            name,
            mode: policy.mode,
            unnamed,
            file: None,
            written: 0,
            decoder: netascii.then(netascii::Decoder::new),
            max_size: policy.max_size,
            overwrite: policy.overwrite,
            done: false,
        }
    }

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
                let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                self.exact_mode(&file)?;
                return Ok(Staged::Unnamed(file));
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
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        if let Err(e) = self.exact_mode(&file) {
            // SAFETY: `p` is our directory descriptor and `tmp` the NUL-terminated name just made.
            unsafe { libc::unlinkat(p, tmp.as_ptr(), 0) };
            return Err(e);
        }
        Ok(Staged::Named(file, tmp))
    }

    /// Gives a new file exactly the policy's mode: creation applies the process umask too (a
    /// unit's `UMask=0022` would turn `--umask 002`'s 0664 into 0644).
    fn exact_mode(&self, file: &File) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(self.mode))
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
        // fsync needs a descriptor opened for reading (not the O_PATH one `p` is), so the
        // directory is opened again as itself.
        // SAFETY: `p` is our directory descriptor and "." a NUL-terminated literal.
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
