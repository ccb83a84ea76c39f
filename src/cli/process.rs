//! The process around the server: leaving the foreground once serving (tftpd-hpa's `-l` without
//! `-L`), the socket inetd passes on standard input, and the pid file (`--pid-file`,
//! tftpd-hpa's `-P`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

/// The child's side of a detach: tells the waiting parent that the server listens.
#[derive(Debug)]
pub(crate) struct Detached {
    ready: File,
}

/// Leaves the foreground: forks, and the parent waits until the child says it serves (then exits
/// 0) or ends without saying so (then exits 1: the child wrote why on the standard error they
/// share). Returns in the child, in a session of its own. Must run before any thread starts.
pub(crate) fn detach() -> io::Result<Detached> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nothing else.
    let (read, write) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (the caller's contract), so the child inherits no lock
    // held by a thread that does not exist in it.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read);
            // SAFETY: a plain system call; the child is not a process group leader, so it cannot fail.
            unsafe { libc::setsid() };
            Ok(Detached { ready: write })
        }
        _ => {
            drop(write);
            let mut byte = [0u8; 1];
            let code = match (&read).read(&mut byte) {
                Ok(1) => 0,
                _ => 1,
            };
            std::process::exit(code)
        }
    }
}

impl Detached {
    /// The server listens: the parent may exit 0. Standard input and output now read and write
    /// nothing (whoever started the server may be waiting for the end of its output); the
    /// standard error stays, for the log.
    pub(crate) fn ready(mut self) -> io::Result<()> {
        let null = File::options().read(true).write(true).open("/dev/null")?;
        for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
            // SAFETY: both descriptors are open; dup2 replaces the standard one atomically.
            if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        self.ready.write_all(b"1")
    }
}

/// Inetd mode: the socket inetd (or systemd's `StandardInput=socket`) passed on standard input
/// becomes a socket passed as systemd's socket activation passes them (descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_PID`), which the server takes at start; unchanged when the service
/// manager passed its sockets that way already. Standard input, and standard output and error
/// where they are the socket too (inetd passes it on all three), then read and write nothing.
/// Must run before any thread starts.
pub(crate) fn socket_from_stdin() -> io::Result<()> {
    let is_socket = |fd: libc::c_int| {
        // SAFETY: a zeroed stat is a valid value of the plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into `st`; a closed descriptor fails.
        let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
        ok && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    let passed = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    if !passed {
        if !is_socket(libc::STDIN_FILENO) {
            return Err(io::Error::other(
                "standard input is not a socket: without -l or -L, in.tftpd runs under inetd, which passes the \
                 socket there; give -l or -L to listen by itself",
            ));
        }
        // SAFETY: both descriptors are valid; descriptor 3 is where socket activation puts the first
        // socket, replaced if open.
        if unsafe { libc::dup2(libc::STDIN_FILENO, 3) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: no other thread exists yet to read the environment (the caller's contract).
        unsafe {
            std::env::set_var("LISTEN_PID", std::process::id().to_string());
            std::env::set_var("LISTEN_FDS", "1");
            std::env::remove_var("LISTEN_FDNAMES");
        }
    }
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        if fd == libc::STDIN_FILENO || is_socket(fd) {
            // SAFETY: both descriptors are open; dup2 replaces the standard one atomically.
            if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// A pid file written by this process; removed by [`PidFile::remove`], or when dropped (an
/// early exit), if it still names this process.
#[derive(Debug)]
pub(crate) struct PidFile {
    /// `None` once removed.
    path: Option<PathBuf>,
}

impl PidFile {
    /// Writes this process's id and a newline to `path`, replacing what was there.
    pub(crate) fn write(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = File::options().write(true).create(true).truncate(true).mode(0o644).open(path)?;
        f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        Ok(Self { path: Some(path.to_path_buf()) })
    }

    /// Removes the file, if it still names this process; on failure, the path and the error.
    pub(crate) fn remove(mut self) -> Result<(), (PathBuf, io::Error)> {
        let Some(path) = self.path.take() else { return Ok(()) };
        let mine =
            std::fs::read_to_string(&path).is_ok_and(|s| s.trim().parse::<u32>().ok() == Some(std::process::id()));
        if mine { std::fs::remove_file(&path).map_err(|e| (path, e)) } else { Ok(()) }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if self.path.is_some() {
            let _ = Self { path: self.path.take() }.remove();
        }
    }
}

/// Sets the process's umask (which the files uploads create are subject to).
pub(crate) fn set_umask(mask: u32) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// The umask the process was started with.
pub(crate) fn umask() -> u32 {
    // SAFETY: umask cannot fail; it is set back at once, before any thread exists to create a file
    // in between (called while the command line is read).
    let old = unsafe { libc::umask(0o022) };
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    old as u32
}

/// Whether the process runs as root (effective user id 0).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}
