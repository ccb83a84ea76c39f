//! Dropping root after the privileged set-up: a user and group looked up by name
//! ([`Identity::lookup`]), then [`Identity::become_it`]: supplementary groups cleared, group and
//! user set for real, effective and saved ids, so there is no way back.

use std::ffi::{CStr, CString};
use std::io;
use std::path::Path;

/// A user to run as, and the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's name, as given.
    pub user: String,
    /// The user id.
    pub uid: libc::uid_t,
    /// The group's name (the user's primary group when none was given).
    pub group: String,
    /// The group id.
    pub gid: libc::gid_t,
}

/// Why the identity cannot be looked up or taken on. Every message names the user.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// No such user in the password database.
    #[error("--user {0}: no such user")]
    NoUser(String),
    /// No such group in the group database.
    #[error("--group {0}: no such group")]
    NoGroup(String),
    /// The user's lookup failed.
    #[error("--user {user}: cannot look the user up")]
    Lookup {
        /// The user or group name.
        user: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A call of the drop failed (not root, or refused by a security module).
    #[error("cannot switch to user {user} (group {group}): {call} failed (run as root, or without --user)")]
    Switch {
        /// The user.
        user: String,
        /// The group.
        group: String,
        /// The call that failed.
        call: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The dropped user cannot use a directory the server needs.
    #[error("user {user} cannot {what} {} (give the user access, or choose another --user)", .path.display())]
    Access {
        /// The user.
        user: String,
        /// What it needs to do: `read --root`, `write to --upload-dir`.
        what: &'static str,
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A buffer size for the `get*_r` calls: what the system suggests, at least 1 KiB.
fn lookup_buffer(which: libc::c_int) -> Vec<libc::c_char> {
    // SAFETY: sysconf has no memory arguments.
    let n = unsafe { libc::sysconf(which) };
    vec![0; usize::try_from(n).unwrap_or(0).max(1024)]
}

/// Calls a `get*_r` function with `buf` (where the strings of the result then point), growing
/// it on `ERANGE`; `Ok(false)` when not found.
fn with_growing_buffer(
    buf: &mut Vec<libc::c_char>,
    mut call: impl FnMut(&mut [libc::c_char]) -> libc::c_int,
) -> io::Result<bool> {
    loop {
        match call(buf) {
            0 => return Ok(true),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            // Not found is 0 with a null result (handled by the caller), or one of these.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(false),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

impl Identity {
    /// Looks `user` up (`getpwnam_r`) and `group` (`getgrnam_r`), or the user's primary group.
    pub fn lookup(user: &str, group: Option<&str>) -> Result<Self, PrivilegeError> {
        let lookup_err = |source| PrivilegeError::Lookup { user: user.to_string(), source };
        let c_user = CString::new(user).map_err(|_| PrivilegeError::NoUser(user.to_string()))?;
        // SAFETY: plain data out-parameter; all-zero is valid.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let ok = with_growing_buffer(&mut lookup_buffer(libc::_SC_GETPW_R_SIZE_MAX), |buf| {
            // SAFETY: every pointer is to memory we own for the call; `found` is set to `&pw` or null.
            unsafe { libc::getpwnam_r(c_user.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) }
        })
        .map_err(lookup_err)?;
        if !ok || found.is_null() {
            return Err(PrivilegeError::NoUser(user.to_string()));
        }
        let (uid, primary) = (pw.pw_uid, pw.pw_gid);
        let Some(name) = group else {
            let group = group_name(primary).unwrap_or_else(|| primary.to_string());
            return Ok(Self { user: user.to_string(), uid, group, gid: primary });
        };
        let c_group = CString::new(name).map_err(|_| PrivilegeError::NoGroup(name.to_string()))?;
        // SAFETY: plain data out-parameter; all-zero is valid.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let ok = with_growing_buffer(&mut lookup_buffer(libc::_SC_GETGR_R_SIZE_MAX), |buf| {
            // SAFETY: as above.
            unsafe { libc::getgrnam_r(c_group.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut found) }
        })
        .map_err(lookup_err)?;
        if !ok || found.is_null() {
            return Err(PrivilegeError::NoGroup(name.to_string()));
        }
        Ok(Self { user: user.to_string(), uid, group: name.to_string(), gid: gr.gr_gid })
    }

    /// Becomes this user for good, in every thread of the process (glibc applies the set*id
    /// calls to all threads): supplementary groups cleared, then the group, then the user (real,
    /// effective and saved ids: root cannot be regained). Checks afterwards that it took.
    pub fn become_it(&self) -> Result<(), PrivilegeError> {
        let fail =
            |call, source| PrivilegeError::Switch { user: self.user.clone(), group: self.group.clone(), call, source };
        // SAFETY: setgroups with an empty list reads no memory.
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
            return Err(fail("setgroups", io::Error::last_os_error()));
        }
        // SAFETY: integer arguments only.
        if unsafe { libc::setresgid(self.gid, self.gid, self.gid) } != 0 {
            return Err(fail("setgid", io::Error::last_os_error()));
        }
        // SAFETY: integer arguments only.
        if unsafe { libc::setresuid(self.uid, self.uid, self.uid) } != 0 {
            return Err(fail("setuid", io::Error::last_os_error()));
        }
        // A non-root user must not be able to take root back.
        // SAFETY: integer arguments only; success is what is checked against.
        if self.uid != 0 && unsafe { libc::setuid(0) } == 0 {
            return Err(fail("setuid", io::Error::other("root could be regained after the drop")));
        }
        Ok(())
    }

    /// Checks, as the current (dropped) user, that `dir` can be searched and read, or with
    /// `write` also written: the kernel's own check (`faccessat` with the effective ids).
    pub fn check_access(&self, dir: &Path, write: bool, what: &'static str) -> Result<(), PrivilegeError> {
        use std::os::unix::ffi::OsStrExt;
        let access_err =
            |source| PrivilegeError::Access { user: self.user.clone(), what, path: dir.to_path_buf(), source };
        let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| access_err(io::ErrorKind::InvalidInput.into()))?;
        let mode = libc::R_OK | libc::X_OK | if write { libc::W_OK } else { 0 };
        // SAFETY: a NUL-terminated path we own; integer flags.
        if unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) } != 0 {
            return Err(access_err(io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// The name of group `gid`, when it has one.
fn group_name(gid: libc::gid_t) -> Option<String> {
    // SAFETY: plain data out-parameter; all-zero is valid.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    let mut buf = lookup_buffer(libc::_SC_GETGR_R_SIZE_MAX);
    let ok = with_growing_buffer(&mut buf, |buf| {
        // SAFETY: every pointer is to memory we own for the call.
        unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut found) }
    })
    .ok()?;
    if !ok || found.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points into `buf`, still alive, NUL-terminated; copied here.
    Some(unsafe { CStr::from_ptr(gr.gr_name) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_with_its_primary_group() {
        let id = Identity::lookup("root", None).unwrap();
        assert_eq!((id.uid, id.gid, id.group.as_str()), (0, 0, "root"));
    }

    #[test]
    fn unknown_names_are_named_in_the_error() {
        let e = Identity::lookup("no-such-user-bootstorm", None).unwrap_err();
        assert_eq!(e.to_string(), "--user no-such-user-bootstorm: no such user");
        let e = Identity::lookup("root", Some("no-such-group-bootstorm")).unwrap_err();
        assert_eq!(e.to_string(), "--group no-such-group-bootstorm: no such group");
    }
}
