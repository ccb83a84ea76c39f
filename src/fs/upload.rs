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

mod dir;
mod file;

use std::io;

use crate::proto::{ErrorCode, LocalFailure};

pub use dir::{TreeRelation, UploadRoot};
pub use file::Upload;

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

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

#[cfg(test)]
mod tests;
