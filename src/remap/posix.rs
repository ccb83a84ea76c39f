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

/// The most positions a pattern may expand to. glibc compiles `x+` as `xx*` and `x{n,m}` as
/// `m` copies of `x`, so stacked or nested repetitions grow exponentially (`y++++…` or
/// `((a{99}){99}){99}` take gigabytes to compile, `(x|y)*****…` minutes); patterns of real map
/// files expand to a few dozen.
pub(crate) const MAX_EXPANDED: u64 = 4096;

/// An upper bound of the number of positions glibc builds for `pattern`: every character, bracket
/// expression and escape one, each repetition multiplying what it repeats.
fn expanded_size(pattern: &[u8]) -> u64 {
    // The size of the enclosing groups' sequences so far, and of the current one.
    let mut outer: Vec<u64> = Vec::new();
    let mut seq: u64 = 0;
    // The size of the last atom (what a repetition applies to).
    let mut last: u64 = 0;
    let mut i = 0;
    while let Some(&c) = pattern.get(i) {
        i += 1;
        match c {
            b'\\' => {
                i += 1;
                (seq, last) = (seq.saturating_add(1), 1);
            }
            b'[' => {
                // `[]…]`, `[^]…]` and `[:class:]` inside: skip to the closing `]`.
                i += usize::from(pattern.get(i) == Some(&b'^'));
                i += usize::from(pattern.get(i) == Some(&b']'));
                while let Some(&b) = pattern.get(i) {
                    i += 1;
                    match b {
                        b']' => break,
                        b'[' if matches!(pattern.get(i), Some(b':' | b'.' | b'=')) => {
                            let close = pattern[i + 1..].windows(2).position(|w| w[1] == b']' && w[0] == pattern[i]);
                            i += close.map_or(pattern.len(), |p| p + 3);
                        }
                        _ => {}
                    }
                }
                (seq, last) = (seq.saturating_add(1), 1);
            }
            b'(' => {
                outer.push(seq);
                (seq, last) = (0, 0);
            }
            b')' => {
                let group = seq.max(1);
                seq = outer.pop().unwrap_or(0).saturating_add(group);
                last = group;
            }
            b'|' => last = 0,
            // `x*` and `x?` are not copied, but glibc's compile time doubles with each one
            // stacked on another (`(x|y)**…`: 12 stars take a second, 23 minutes), so each
            // counts as much as what it repeats.
            b'*' | b'?' | b'+' => {
                seq = seq.saturating_add(last);
                last = last.saturating_mul(2);
            }
            b'{' => {
                let close = pattern[i..].iter().position(|&b| b == b'}').map_or(pattern.len(), |p| i + p);
                let bounds = &pattern[i..close];
                let number = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<u64>().ok();
                let copies = match bounds.iter().position(|&b| b == b',') {
                    Some(comma) => {
                        let n = number(&bounds[..comma]).unwrap_or(0);
                        number(&bounds[comma + 1..]).unwrap_or(n.saturating_add(1))
                    }
                    None => number(bounds).unwrap_or(1),
                }
                .max(1);
                i = close + 1;
                seq = seq.saturating_add(last.saturating_mul(copies - 1));
                last = last.saturating_mul(copies);
            }
            _ => (seq, last) = (seq.saturating_add(1), 1),
        }
    }
    outer.into_iter().fold(seq, u64::saturating_add)
}

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
        if expanded_size(&pattern[..end]) > MAX_EXPANDED {
            return Err(format!("too large: its repetitions expand past {MAX_EXPANDED} positions"));
        }
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
