//! tftp-hpa's filename remapping (`in.tftpd --map-file`): a map file of rules, each a
//! regular expression and what to do when it matches, applied to the filename of a request
//! as the client sent it.
//!
//! [`Rules::parse`] reads a map file; [`Rules::rewrite`] runs it on one name for one client
//! and says what the name became, or that a rule refused the request. The language is
//! tftp-hpa's, whole: the operations `r g i e s a G P ~` of the 5.2 releases that
//! distributions ship, and the newer `gg E j 4 6` and `:label` lines; `\0`–`\9`, `\i`, `\x`,
//! `\U \L \E` in replacements. Patterns are POSIX extended regular expressions compiled by
//! the C library, as tftp-hpa compiles them, so they match leftmost-longest and exactly as
//! there (see `docs/remap.md`, which also lists the few places where results differ).
//!
//! Rewriting knows nothing of the file system: the name it gives goes through the server's
//! normalisation and containment like any request's name, so no rule can lead outside the
//! root.

mod parse;
mod posix;
mod rewrite;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use parse::RemapError;

/// The most rules one rewrite may visit, counted as tftp-hpa 5.2 counts them (its
/// `DEADMAN_MAX_STEPS`): a rule set that loops fails the request instead.
pub const MAX_RULE_VISITS: usize = 1024;

/// The most steps one rewrite may take, rule visits and every repetition of a global (`g`)
/// rule together (tftp-hpa 5.3's limit).
pub const MAX_STEPS: usize = 4096;

/// The longest name a rewrite may build (`PATH_MAX`); a longer one fails the request like a
/// loop does.
pub const MAX_NAME_LEN: usize = 4096;

/// The ERROR message of a request whose rewrite failed (a loop, a jump to no label, a name too
/// long), tftp-hpa's.
pub const FAILURE_MESSAGE: &str = "Remap table failure";

/// Rules parsed from a tftp-hpa map file.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<parse::Rule>,
}

impl Rules {
    /// Parses a map file. Every line is checked; the error names the first line that is not a
    /// rule, a label, a comment or blank, and why.
    pub fn parse(text: &[u8]) -> Result<Rules, RemapError> {
        parse::parse(text).map(|rules| Rules { rules })
    }

    /// Reads and parses the map file at `path`.
    pub fn load(path: &Path) -> Result<Rules, RemapError> {
        let text = std::fs::read(path).map_err(|source| RemapError::Read { path: PathBuf::from(path), source })?;
        Self::parse(&text)
    }

    /// The number of rules and labels.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the file held no rule (only comments and blank lines): every name is then left
    /// as it is, without allocating.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rewrites `name` (as the client sent it) for `client`.
    ///
    /// An `E` rule ends the rewrite only when its result names a file that can be transferred;
    /// this knows no files, so it takes every such name as unusable and `E` rules never end a
    /// rewrite here (see [`rewrite_checked`](Self::rewrite_checked)).
    pub fn rewrite(&self, name: &[u8], client: &Client) -> Rewrite {
        self.rewrite_checked(name, client, |_| false)
    }

    /// [`rewrite`](Self::rewrite), with `usable` saying whether a name an `E` rule built names
    /// a file that can be transferred for this request.
    pub fn rewrite_checked(&self, name: &[u8], client: &Client, usable: impl FnMut(&[u8]) -> bool) -> Rewrite {
        if self.rules.is_empty() {
            return Rewrite::Unchanged;
        }
        rewrite::run(&self.rules, name, client, usable)
    }
}

/// What the rules know of the client and its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client's address: `\i` and `\x` in replacements, `4` and `6` rules. An IPv4 client
    /// seen through an IPv6 socket (`::ffff:a.b.c.d`) counts as IPv4.
    pub addr: IpAddr,
    /// A write request (WRQ): `P` rules apply to it, `G` rules do not.
    pub write: bool,
}

/// What a name became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// No rule changed it (or the rules gave back the same name).
    Unchanged,
    /// The name to resolve instead.
    Name {
        /// The new name: any bytes but NUL, not yet normalised.
        name: Vec<u8>,
        /// The line of the last rule that rewrote the name.
        rule: usize,
    },
    /// The request is refused with ERROR 2 (access violation).
    Denied {
        /// The ERROR's message: an `a` rule's replacement, expanded, or
        /// [`FAILURE_MESSAGE`] when the rewrite failed; `None` for an `a` rule without one
        /// (the server's own message for access violations).
        message: Option<String>,
        /// The line of the rule that refused the request or where the rewrite failed.
        rule: usize,
    },
}
