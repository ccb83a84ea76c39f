//! POSIX extended regular expressions, compiled and run by the C library (`regcomp`,
//! `regexec`): the engine tftp-hpa uses, so a pattern matches here exactly as it does there
//! (leftmost-longest, glibc's extensions such as back-references included).

use std::ffi::CString;
use std::mem::MaybeUninit;

/// Capture slots kept per match: the whole match and groups 1 to 9, as tftp-hpa keeps.
pub(crate) const SLOTS: usize = 10;

/// Where each capture matched, as byte ranges of the subject; `None` for a group that took no
/// part in the match.
pub(crate) type Captures = [Option<(usize, usize)>; SLOTS];

/// No captures: what a rule that ran because its pattern did *not* match (`~`) sees.
pub(crate) const NO_CAPTURES: Captures = [None; SLOTS];

/// A compiled pattern.
pub(crate) struct Regex {
    /// Boxed so that its address never changes between `regcomp` and `regfree`.
    raw: Box<libc::regex_t>,
}

// SAFETY: a compiled `regex_t` is owned data (heap buffers reachable only through it); moving
// it to another thread and freeing it there is sound.
unsafe impl Send for Regex {}
// SAFETY: glibc's `regexec` takes the pattern as `const regex_t *` and is thread-safe (it
// locks the pattern's internal state itself), so shared references may match concurrently.
unsafe impl Sync for Regex {}

impl Regex {
    /// Compiles `pattern` as an extended regular expression (`REG_EXTENDED`, plus `REG_ICASE`
    /// when `icase`). A NUL byte ends the pattern, as it ends a C string. The error is the C
    /// library's message.
    pub(crate) fn new(pattern: &[u8], icase: bool) -> Result<Regex, String> {
        let end = pattern.iter().position(|&b| b == 0).unwrap_or(pattern.len());
        let c = CString::new(&pattern[..end]).map_err(|e| e.to_string())?;
        let flags = libc::REG_EXTENDED | if icase { libc::REG_ICASE } else { 0 };
        let mut raw: Box<MaybeUninit<libc::regex_t>> = Box::new(MaybeUninit::uninit());
        // SAFETY: `raw` is valid writable memory for a `regex_t`; `c` is NUL-terminated and
        // outlives the call.
        let rc = unsafe { libc::regcomp(raw.as_mut_ptr(), c.as_ptr(), flags) };
        if rc != 0 {
            let mut msg = [0u8; 256];
            // SAFETY: after a failed `regcomp` the pattern may be passed to `regerror` (POSIX),
            // which writes at most `msg.len()` bytes, NUL included.
            unsafe { libc::regerror(rc, raw.as_ptr(), msg.as_mut_ptr().cast(), msg.len()) };
            let len = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
            // A failed `regcomp` leaves nothing to free.
            return Err(String::from_utf8_lossy(&msg[..len]).into_owned());
        }
        // SAFETY: `regcomp` succeeded, so the value is initialised; `Box<MaybeUninit<T>>` and
        // `Box<T>` have the same layout.
        let raw = unsafe { Box::from_raw(Box::into_raw(raw).cast::<libc::regex_t>()) };
        Ok(Regex { raw })
    }

    /// Searches `subject` (which must end with its one NUL byte) from `start`; `notbol` says
    /// that `start` is not the beginning of a line (`^` cannot match there). Returns the
    /// captures, as offsets from `start`, or `None` when the pattern does not match.
    pub(crate) fn exec(&self, subject: &[u8], start: usize, notbol: bool) -> Option<Captures> {
        debug_assert_eq!(subject.iter().position(|&b| b == 0), Some(subject.len() - 1));
        let tail = subject.get(start..).filter(|t| t.last() == Some(&0))?;
        let mut m = [libc::regmatch_t { rm_so: -1, rm_eo: -1 }; SLOTS];
        let flags = if notbol { libc::REG_NOTBOL } else { 0 };
        // SAFETY: `self.raw` was compiled by `regcomp` and not freed; `tail` is a
        // NUL-terminated string that outlives the call; `m` has room for `SLOTS` matches.
        let rc = unsafe { libc::regexec(&*self.raw, tail.as_ptr().cast(), SLOTS, m.as_mut_ptr(), flags) };
        if rc != 0 {
            return None;
        }
        let mut caps = NO_CAPTURES;
        for (c, r) in caps.iter_mut().zip(m) {
            if let (Ok(so), Ok(eo)) = (usize::try_from(r.rm_so), usize::try_from(r.rm_eo)) {
                *c = Some((so, eo));
            }
        }
        Some(caps)
    }
}

impl Drop for Regex {
    fn drop(&mut self) {
        // SAFETY: compiled by `regcomp`, freed once, here.
        unsafe { libc::regfree(&mut *self.raw) };
    }
}

impl std::fmt::Debug for Regex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Regex")
    }
}
