//! Finding a file whose name matches a request's with ASCII case ignored
//! (`--case-insensitive`): `PXELINUX.CFG/01-AA-BB-…` is served from `pxelinux.cfg/01-aa-bb-…`.
//!
//! Each component is looked for in its directory, which is opened beneath the root exactly as
//! files are ([`Root`]'s `openat2` with `RESOLVE_BENEATH`, or the component walk without it), so
//! the search can never leave the root; a component whose exact spelling exists is taken as it
//! is, else the directory is read and the first entry in byte order that matches with case
//! ignored is taken. The search runs only after the exact name was not found, so names clients
//! spell right cost nothing more.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use super::root::{OpenError, Root};

impl Root {
    /// The path beneath the root whose components match those of `rel` (a normalised relative
    /// path) with ASCII case ignored, written into `out`; [`OpenError::NotFound`] when some
    /// component has no match. What the path names is not checked here: it is opened as any
    /// other.
    pub fn find_case_insensitive<'o>(&self, rel: &[u8], out: &'o mut [u8]) -> Result<&'o [u8], OpenError> {
        let mut len = 0;
        for comp in rel.split(|&b| b == b'/') {
            let dir = if len == 0 { self.open_dir(c".")? } else { self.open_dir(&cstr(&out[..len])?)? };
            let found = match exists_at(&dir, comp)? {
                true => None,
                false => Some(matching_entry(dir, comp)?.ok_or(OpenError::NotFound)?),
            };
            let name = found.as_deref().unwrap_or(comp);
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

fn cstr(b: &[u8]) -> Result<CString, OpenError> {
    CString::new(b).map_err(|_| OpenError::Denied)
}

/// Whether `name` exists in `dir` as spelled (symlinks not followed: the open that follows
/// decides about them).
fn exists_at(dir: &OwnedFd, name: &[u8]) -> Result<bool, OpenError> {
    let c = cstr(name)?;
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is an open directory, `c` NUL-terminated, `st` a valid out-pointer.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    Ok(rc == 0)
}

/// The entry of `dir` equal to `name` with ASCII case ignored, the first in byte order when
/// several are.
fn matching_entry(dir: OwnedFd, name: &[u8]) -> Result<Option<Vec<u8>>, OpenError> {
    // SAFETY: `dir` is an open directory descriptor; fdopendir takes it over (closed by
    // closedir below), and on failure it is still ours to close.
    let stream = unsafe { libc::fdopendir(dir.as_raw_fd()) };
    if stream.is_null() {
        return Err(OpenError::Io(std::io::Error::last_os_error()));
    }
    let _ = dir.into_raw_fd();
    let mut best: Option<Vec<u8>> = None;
    loop {
        // SAFETY: `stream` is an open directory stream, read by this thread only.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated; it stays valid
        // until the next readdir on this stream, and is copied before then.
        let entry_name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if entry_name.eq_ignore_ascii_case(name) && best.as_deref().is_none_or(|b| entry_name < b) {
            best = Some(entry_name.to_vec());
        }
    }
    // SAFETY: `stream` is open and closed once, here.
    unsafe { libc::closedir(stream) };
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(root: &Root, rel: &str) -> Result<String, OpenError> {
        let mut out = [0; 512];
        root.find_case_insensitive(rel.as_bytes(), &mut out).map(|b| String::from_utf8_lossy(b).into())
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
}
