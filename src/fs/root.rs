//! The served directory, and opening files beneath it with the kernel enforcing containment.
//! (One file on purpose, a little over 400 lines: the open and its fallback walk without
//! openat2 must be read together.)
//!
//! Files are opened with `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` relative to a
//! descriptor of the root: no `..`, absolute path, absolute symlink, symlink pointing outside or
//! `/proc` magic link can resolve to anything outside the root, whatever races happen on the
//! file system. Symbolic links that stay inside the root are followed unless symlinks are refused
//! altogether. On kernels without `openat2` (before 5.6), the path is walked one component at a
//! time with `O_NOFOLLOW`, so every symlink is refused, with its own error
//! ([`OpenError::SymlinkWithoutOpenat2`]) so that the client's ERROR and the log name the cause
//! (docs/kernel.md lists what each kernel feature brings). Only regular files are served; opening
//! never blocks and never opens anything but a regular file: a FIFO or device in the root is
//! refused without being opened.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use crate::proto::{ErrorCode, LocalFailure};

/// Why a file could not be opened for a client.
///
/// The ERROR that refuses the request is [`LocalFailure::from`] it: 1 for
/// [`NotFound`](Self::NotFound), 2 for [`Denied`](Self::Denied),
/// [`NotRegular`](Self::NotRegular), [`NotWorldReadable`](Self::NotWorldReadable) and
/// [`SymlinkWithoutOpenat2`](Self::SymlinkWithoutOpenat2) (whose message names the cause), 0 for
/// [`Io`](Self::Io); its `Display` is for the log.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No such file (or a path component is not a directory).
    #[error("file not found")]
    NotFound,
    /// Outside the root, a refused symlink, or not readable.
    #[error("access violation")]
    Denied,
    /// A directory, device, FIFO or socket.
    #[error("not a regular file")]
    NotRegular,
    /// Others may not read it (mode without `S_IROTH`) and only world-readable files are
    /// served (the default; `--serve-private-files` turns it off).
    #[error("not world-readable")]
    NotWorldReadable,
    /// A symbolic link, which is followed only with `openat2` (Linux 5.6) to keep it beneath
    /// the root, on a kernel without it.
    #[error("symlinks not served: kernel lacks openat2 (Linux 5.6)")]
    SymlinkWithoutOpenat2,
    /// Anything else the system said.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl OpenError {
    /// The code of the ERROR that refuses the request.
    pub fn code(&self) -> ErrorCode {
        LocalFailure::from(self).code()
    }

    /// The message of that ERROR: says no more than the code (the cause is for the log).
    pub fn message(&self) -> &'static str {
        LocalFailure::from(self).message()
    }

    fn from_errno(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG) => Self::NotFound,
            Some(libc::EXDEV | libc::ELOOP | libc::EACCES | libc::EPERM) => Self::Denied,
            Some(libc::ENXIO | libc::ENODEV) => Self::NotRegular,
            _ => Self::Io(e),
        }
    }
}

impl From<&OpenError> for LocalFailure {
    fn from(e: &OpenError) -> Self {
        match e {
            OpenError::NotFound => Self::NotFound,
            OpenError::Denied | OpenError::NotRegular | OpenError::NotWorldReadable => Self::Denied,
            OpenError::SymlinkWithoutOpenat2 => Self::SymlinkWithoutOpenat2,
            OpenError::Io(_) => Self::ReadFailed,
        }
    }
}

impl From<&OpenError> for ErrorCode {
    fn from(e: &OpenError) -> Self {
        e.code()
    }
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens the directory at `path` (`O_PATH`), the base every later open is resolved beneath.
/// `what` names it in the error for a path with a NUL byte.
pub(crate) fn open_base_dir(path: &Path, what: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("NUL in {what} path")))?;
    // SAFETY: `c` is a valid NUL-terminated string; the returned descriptor is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(2)` of `path` relative to `dir` with `flags` (plus `O_CLOEXEC`) and the `resolve`
/// restrictions (`RESOLVE_*`).
pub(crate) fn openat2(dir: RawFd, path: &CStr, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve };
    // SAFETY: openat2 reads `how` (size given) and the NUL-terminated `path`; both outlive the
    // call. The result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, dir, path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return is a descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The root directory files are served from.
#[derive(Debug)]
pub struct Root {
    dir: OwnedFd,
    /// The absolute paths it is known by (see [`Root::paths`]).
    paths: Vec<PathBuf>,
    follow_symlinks: bool,
    has_openat2: bool,
}

impl Root {
    /// Opens `path` as the root. With `follow_symlinks` false, no symlink is followed at all.
    pub fn open(path: &Path, follow_symlinks: bool) -> io::Result<Self> {
        let dir = open_base_dir(path, "root")?;
        let mut paths: Vec<PathBuf> = Vec::with_capacity(2);
        if path.is_absolute() {
            // As given, `.` and repeated or trailing slashes dropped (`..` is left to the kernel).
            paths.push(path.components().filter(|c| *c != Component::CurDir).collect());
        }
        if let Ok(canonical) = std::fs::canonicalize(path) {
            if !paths.contains(&canonical) {
                paths.push(canonical);
            }
        }
        let mut root = Self { dir, paths, follow_symlinks, has_openat2: true };
        // Probe openat2 once: ENOSYS means an old kernel (or a seccomp policy).
        if let Err(e) = root.openat2(c".", libc::O_PATH | libc::O_DIRECTORY) {
            if e.raw_os_error() == Some(libc::ENOSYS) {
                root.has_openat2 = false;
            } else {
                return Err(e);
            }
        }
        Ok(root)
    }

    /// The component walk from now on, as on a kernel without `openat2`.
    #[cfg(test)]
    pub(super) fn disable_openat2_for_tests(&mut self) {
        self.has_openat2 = false;
    }

    /// Whether the kernel's `openat2` is in use (otherwise the component walk).
    pub fn uses_openat2(&self) -> bool {
        self.has_openat2
    }

    /// The absolute paths the root is known by, as opened: the path given, when absolute, and
    /// the canonical one (symlinks resolved), when they differ. A DHCP server's file name is
    /// sometimes one of them followed by the file (`/srv/tftp/pxelinux.0`).
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The root's descriptor, for `statx` relative to it.
    pub fn as_raw_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// Opens the regular file at `rel` (a normalised relative path) for reading.
    ///
    /// The path is opened with `O_PATH` first, which has no effect on what it names, and only a
    /// regular file is then reopened for reading, through `/proc/self/fd` so that it is the very
    /// same inode: a device or FIFO under the root is never actually opened.
    pub fn open_file(&self, rel: &[u8]) -> Result<File, OpenError> {
        let c = CString::new(rel).map_err(|_| OpenError::Denied)?;
        let flags = libc::O_PATH;
        let path_fd = if self.has_openat2 {
            self.openat2(&c, flags).map_err(OpenError::from_errno)?
        } else {
            self.walk(rel, flags)?
        };
        let meta = File::from(path_fd.try_clone()?).metadata()?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            // Only the component walk (no openat2) stops at a final symlink.
            return Err(self.symlink_refused());
        }
        if !kind.is_file() {
            return Err(OpenError::NotRegular);
        }
        let proc_path =
            CString::new(format!("/proc/self/fd/{}", path_fd.as_raw_fd())).map_err(|_| OpenError::Denied)?;
        // SAFETY: a NUL-terminated path; the result is checked.
        let fd = unsafe { libc::open(proc_path.as_ptr(), libc::O_RDONLY | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: a new descriptor we own.
            return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        // No /proc: open the path itself, non-blocking, and check again what was opened.
        let flags = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK;
        let fd = if self.has_openat2 {
            self.openat2(&c, flags).map_err(OpenError::from_errno)?
        } else {
            self.walk(rel, flags)?
        };
        let file = File::from(fd);
        if !file.metadata()?.file_type().is_file() {
            return Err(OpenError::NotRegular);
        }
        Ok(file)
    }

    pub(super) fn openat2(&self, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        let mut resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        if !self.follow_symlinks {
            resolve |= libc::RESOLVE_NO_SYMLINKS;
        }
        openat2(self.dir.as_raw_fd(), path, flags, resolve)
    }

    /// Why a symlink met on the way was refused: by the configuration, or for want of openat2.
    fn symlink_refused(&self) -> OpenError {
        if self.follow_symlinks && !self.has_openat2 { OpenError::SymlinkWithoutOpenat2 } else { OpenError::Denied }
    }

    /// Fallback for kernels without openat2: one component at a time, never following a link.
    /// A component that is a symlink is refused as such (the kernel says only `ENOTDIR` or
    /// `ELOOP`; a second look at the failed component, on this refusal path only, tells).
    pub(super) fn walk(&self, rel: &[u8], flags: libc::c_int) -> Result<OwnedFd, OpenError> {
        let mut comps = rel.split(|&b| b == b'/').peekable();
        let mut dir: Option<OwnedFd> = None;
        while let Some(comp) = comps.next() {
            let c = CString::new(comp).map_err(|_| OpenError::Denied)?;
            let last = comps.peek().is_none();
            let f = if last { flags } else { libc::O_PATH | libc::O_DIRECTORY };
            let base = dir.as_ref().map_or(self.dir.as_raw_fd(), AsRawFd::as_raw_fd);
            // SAFETY: `base` is an open directory descriptor and `c` a NUL-terminated name.
            let fd = unsafe { libc::openat(base, c.as_ptr(), f | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
            if fd < 0 {
                let err = io::Error::last_os_error();
                if matches!(err.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) && is_symlink_at(base, &c) {
                    return Err(self.symlink_refused());
                }
                return Err(OpenError::from_errno(err));
            }
            // SAFETY: a new descriptor we own.
            dir = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        dir.ok_or(OpenError::NotFound)
    }
}

/// Whether `name` in the directory `dir` is a symbolic link (not followed).
fn is_symlink_at(dir: RawFd, name: &CStr) -> bool {
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is an open directory descriptor, `name` NUL-terminated, `st` a valid
    // out-pointer for the call.
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// Each refusal is answered with the same ERROR as when the engine mapped it itself.
    #[test]
    fn errors_map_to_their_wire_errors() {
        let cases = [
            (OpenError::NotFound, ErrorCode::FILE_NOT_FOUND, "file not found"),
            (OpenError::Denied, ErrorCode::ACCESS_VIOLATION, "access violation"),
            (OpenError::NotRegular, ErrorCode::ACCESS_VIOLATION, "access violation"),
            (OpenError::NotWorldReadable, ErrorCode::ACCESS_VIOLATION, "access violation"),
            (
                OpenError::SymlinkWithoutOpenat2,
                ErrorCode::ACCESS_VIOLATION,
                "symlinks not served: kernel lacks openat2",
            ),
            (OpenError::Io(io::Error::from_raw_os_error(libc::EIO)), ErrorCode::NOT_DEFINED, "cannot read file"),
        ];
        for (e, code, message) in cases {
            assert_eq!((e.code(), e.message()), (code, message), "{e:?}");
            assert_eq!(ErrorCode::from(&e), code);
            assert_eq!(LocalFailure::from(&e).message(), message);
        }
        assert_eq!(crate::fs::netascii::NetasciiError::TooLarge.message(), "file too large for netascii, use octet");
        assert_eq!(crate::fs::netascii::NetasciiError::Read.message(), "cannot read file");
    }

    fn setup() -> (tempfile::TempDir, tempfile::TempDir) {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("boot")).unwrap();
        std::fs::write(root.path().join("boot/vmlinuz"), b"kernel").unwrap();
        symlink("boot/vmlinuz", root.path().join("inside-link")).unwrap();
        symlink(outside.path().join("secret"), root.path().join("abs-link")).unwrap();
        symlink("../../../../../../../../etc/passwd", root.path().join("rel-escape")).unwrap();
        symlink("/proc/self/root/etc/passwd", root.path().join("magic")).unwrap();
        std::fs::create_dir(root.path().join("dir")).unwrap();
        (root, outside)
    }

    fn read(root: &Root, p: &str) -> Result<Vec<u8>, OpenError> {
        let mut f = root.open_file(p.as_bytes())?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        Ok(v)
    }

    #[test]
    fn containment_openat2() {
        let (dir, _outside) = setup();
        let root = Root::open(dir.path(), true).unwrap();
        assert!(root.uses_openat2());
        assert_eq!(read(&root, "boot/vmlinuz").unwrap(), b"kernel");
        assert_eq!(read(&root, "inside-link").unwrap(), b"kernel", "links inside the root are followed");
        assert!(matches!(read(&root, "abs-link"), Err(OpenError::Denied)));
        assert!(matches!(read(&root, "rel-escape"), Err(OpenError::Denied)));
        assert!(matches!(read(&root, "magic"), Err(OpenError::Denied)));
        assert!(matches!(read(&root, "../etc/passwd"), Err(OpenError::Denied)));
        assert!(matches!(read(&root, "missing"), Err(OpenError::NotFound)));
        assert!(matches!(read(&root, "boot/vmlinuz/x"), Err(OpenError::NotFound)));
        assert!(matches!(read(&root, "dir"), Err(OpenError::NotRegular)));
    }

    #[test]
    fn no_symlinks_mode_and_fallback_walk() {
        let (dir, _outside) = setup();
        let strict = Root::open(dir.path(), false).unwrap();
        assert!(matches!(read(&strict, "inside-link"), Err(OpenError::Denied)));
        assert_eq!(read(&strict, "boot/vmlinuz").unwrap(), b"kernel");
        let mut walk = Root::open(dir.path(), true).unwrap();
        walk.has_openat2 = false;
        assert_eq!(read(&walk, "boot/vmlinuz").unwrap(), b"kernel");
        for p in ["inside-link", "abs-link", "rel-escape", "magic"] {
            assert!(matches!(read(&walk, p), Err(OpenError::SymlinkWithoutOpenat2)), "{p}");
        }
        assert!(matches!(read(&walk, "missing"), Err(OpenError::NotFound)));
    }

    /// Without openat2 a symlink is refused with an error that names the cause, in the last
    /// component (Cobbler's and Foreman's `pxelinux.cfg/01-<mac> -> ../templates/x`) as in a
    /// directory on the way; with symlinks turned off it stays a plain access violation.
    #[test]
    fn symlinks_without_openat2_name_the_cause() {
        let (dir, _outside) = setup();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("templates/x"), b"default menu").unwrap();
        std::fs::create_dir(dir.path().join("pxelinux.cfg")).unwrap();
        symlink("../templates/x", dir.path().join("pxelinux.cfg/01-52-54-00-12-34-56")).unwrap();
        symlink("boot", dir.path().join("bootlink")).unwrap();
        let mut walk = Root::open(dir.path(), true).unwrap();
        // The seam: what Root::open sets when the probe of openat2 says ENOSYS.
        walk.has_openat2 = false;
        for p in ["pxelinux.cfg/01-52-54-00-12-34-56", "bootlink/vmlinuz", "inside-link", "abs-link"] {
            let e = read(&walk, p).unwrap_err();
            assert!(matches!(e, OpenError::SymlinkWithoutOpenat2), "{p}: {e:?}");
            assert_eq!(
                (e.code(), e.message()),
                (ErrorCode::ACCESS_VIOLATION, "symlinks not served: kernel lacks openat2")
            );
            assert_eq!(e.to_string(), "symlinks not served: kernel lacks openat2 (Linux 5.6)");
        }
        assert_eq!(read(&walk, "templates/x").unwrap(), b"default menu");
        assert!(matches!(read(&walk, "boot/vmlinuz/x"), Err(OpenError::NotFound)), "a file on the way is no link");
        let mut strict = Root::open(dir.path(), false).unwrap();
        strict.has_openat2 = false;
        assert!(matches!(read(&strict, "pxelinux.cfg/01-52-54-00-12-34-56"), Err(OpenError::Denied)));
        assert!(matches!(read(&strict, "bootlink/vmlinuz"), Err(OpenError::Denied)));
        // With openat2 the same links inside the root are followed.
        let root = Root::open(dir.path(), true).unwrap();
        assert_eq!(read(&root, "pxelinux.cfg/01-52-54-00-12-34-56").unwrap(), b"default menu");
        assert_eq!(read(&root, "bootlink/vmlinuz").unwrap(), b"kernel");
    }

    #[test]
    fn devices_and_fifos_are_refused_without_being_opened() {
        let (dir, _outside) = setup();
        let p = CString::new(dir.path().join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);
        let root = Root::open(dir.path(), true).unwrap();
        assert!(matches!(read(&root, "fifo"), Err(OpenError::NotRegular)));
        // A FIFO nobody writes to would block a plain open(O_RDONLY) forever; this returned.
        std::os::unix::fs::symlink("/dev/null", dir.path().join("devlink")).unwrap();
        let root = Root::open(dir.path(), true).unwrap();
        assert!(matches!(read(&root, "devlink"), Err(OpenError::Denied)), "outside the root");
        // A character device inside the root (the null device, 1:3): refused, not opened.
        let dev = CString::new(dir.path().join("null").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path string; creating device nodes needs root, which the suite runs as.
        let rc = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(rc, 0, "mknod: {}", io::Error::last_os_error());
        assert!(matches!(read(&root, "null"), Err(OpenError::NotRegular)));
    }
}
