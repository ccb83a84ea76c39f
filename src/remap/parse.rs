//! A map file, line by line, into rules.
//!
//! A line holds up to three fields separated by whitespace: the operation (flag letters), the
//! pattern and the replacement. A backslash keeps the next character in its field (whitespace
//! or `#`) and stays in the field: the pattern goes to the regular-expression compiler as it
//! is written, the replacement is expanded when the rule runs. An unescaped `#` ends the line.
//! A NUL byte ends its line too, as in tftp-hpa 5.2, which reads lines as C strings.

use std::path::PathBuf;

use super::posix::Regex;

/// Why a map file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RemapError {
    /// A letter that is no operation.
    #[error("map file line {line}: unknown operation {flag:?}")]
    UnknownFlag {
        /// The line (from 1).
        line: usize,
        /// The letter.
        flag: char,
    },
    /// Two operations that contradict each other.
    #[error("map file line {line}: operations {flags} cannot be combined")]
    Combination {
        /// The line (from 1).
        line: usize,
        /// The two letters.
        flags: &'static str,
    },
    /// Operations and no pattern.
    #[error("map file line {line}: no regular expression")]
    NoPattern {
        /// The line (from 1).
        line: usize,
    },
    /// The C library refused the pattern.
    #[error("map file line {line}: bad regular expression: {message}")]
    BadPattern {
        /// The line (from 1).
        line: usize,
        /// The C library's message.
        message: String,
    },
    /// A `:` with no label name after it.
    #[error("map file line {line}: label without a name")]
    EmptyLabel {
        /// The line (from 1).
        line: usize,
    },
    /// The file could not be read.
    #[error("map file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

impl RemapError {
    /// The line of the map file at fault, when the file could be read.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::UnknownFlag { line, .. }
            | Self::Combination { line, .. }
            | Self::NoPattern { line }
            | Self::BadPattern { line, .. }
            | Self::EmptyLabel { line } => Some(*line),
            Self::Read { .. } => None,
        }
    }
}

/// The operations of one rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    /// `r`: replace the match.
    pub(crate) rewrite: bool,
    /// `g` (with `r`): again until the pattern no longer matches, searching from the start.
    pub(crate) global: bool,
    /// `gg` (with `r`): again, searching after the last replacement (sed's `g`).
    pub(crate) sed_global: bool,
    /// `e`: stop after this rule when it matched.
    pub(crate) exit: bool,
    /// `E`: stop after this rule when its result names a usable file; otherwise undo it.
    pub(crate) has_file: bool,
    /// `s`: start again from the top when it matched.
    pub(crate) restart: bool,
    /// `a`: refuse the request when it matched.
    pub(crate) abort: bool,
    /// `j`: jump to the label the replacement names when it matched.
    pub(crate) jump: bool,
    /// `~`: the rule runs when the pattern does *not* match.
    pub(crate) inverse: bool,
    /// `4`: IPv4 clients only.
    pub(crate) ipv4: bool,
    /// `6`: IPv6 clients only.
    pub(crate) ipv6: bool,
    /// `G`: read requests only.
    pub(crate) get_only: bool,
    /// `P`: write requests only.
    pub(crate) put_only: bool,
}

/// One line of a map file that does something.
#[derive(Debug)]
pub(crate) struct Rule {
    /// Its line in the file (from 1).
    pub(crate) line: usize,
    /// What it does.
    pub(crate) flags: Flags,
    /// The compiled pattern; `None` for a label.
    pub(crate) regex: Option<Regex>,
    /// The replacement (or message, or label to jump to), unexpanded; a label's name.
    pub(crate) text: Vec<u8>,
}

impl Rule {
    /// Whether this is a `:label` line.
    pub(crate) fn is_label(&self) -> bool {
        self.regex.is_none()
    }
}

/// The first combination of operations in `f` that is refused (tftp-hpa 5.3's list; those
/// that tftp-hpa 5.2 accepted, `ra`, `as`, `ae` and `es`, keep its meaning: `a` wins over `r`
/// and `s`, `e` over `s`).
fn refused(f: &Flags) -> Option<&'static str> {
    [
        (f.rewrite && f.inverse, "r~"),
        (f.rewrite && f.jump, "rj"),
        (f.abort && f.jump, "aj"),
        (f.exit && f.jump, "ej"),
        (f.exit && f.has_file, "eE"),
        (f.has_file && f.jump, "Ej"),
        (f.has_file && f.abort, "aE"),
        (f.has_file && f.restart, "Es"),
    ]
    .into_iter()
    .find_map(|(bad, flags)| bad.then_some(flags))
}

/// Parses a whole map file.
pub(crate) fn parse(text: &[u8]) -> Result<Vec<Rule>, RemapError> {
    let mut rules = Vec::new();
    for (i, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let line = line.split(|&b| b == 0).next().unwrap_or_default();
        if let Some(rule) = parse_line(line, i + 1)? {
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// C's `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// The next field of `rest`: leading whitespace skipped, then up to an unescaped whitespace
/// or `#`. Backslashes stay in the field. After a `#`, every field is empty.
fn field<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let start = rest.iter().position(|&b| !is_space(b)).unwrap_or(rest.len());
    let s = &rest[start..];
    let mut escaped = false;
    let mut end = s.len();
    for (i, &b) in s.iter().enumerate() {
        if !escaped && (is_space(b) || b == b'#') {
            end = i;
            break;
        }
        // Two backslashes leave the next character unescaped.
        escaped = !escaped && b == b'\\';
    }
    *rest = &s[end..];
    &s[..end]
}

fn parse_line(mut rest: &[u8], line: usize) -> Result<Option<Rule>, RemapError> {
    let ops = field(&mut rest);
    if ops.is_empty() {
        return Ok(None);
    }
    if let Some(name) = ops.strip_prefix(b":") {
        if name.is_empty() {
            return Err(RemapError::EmptyLabel { line });
        }
        return Ok(Some(Rule { line, flags: Flags::default(), regex: None, text: name.to_vec() }));
    }
    let mut f = Flags::default();
    let mut icase = false;
    for &c in ops {
        match c {
            b'r' => f.rewrite = true,
            b'g' if f.global => f.sed_global = true,
            b'g' => f.global = true,
            b'e' => f.exit = true,
            b'E' => f.has_file = true,
            b's' => f.restart = true,
            b'a' => f.abort = true,
            b'j' => f.jump = true,
            b'i' => icase = true,
            b'~' => f.inverse = true,
            b'4' => f.ipv4 = true,
            b'6' => f.ipv6 = true,
            b'G' => f.get_only = true,
            b'P' => f.put_only = true,
            _ => return Err(RemapError::UnknownFlag { line, flag: char::from(c) }),
        }
    }
    if let Some(flags) = refused(&f) {
        return Err(RemapError::Combination { line, flags });
    }
    if !f.rewrite {
        f.global = false;
        f.sed_global = false;
    }
    let pattern = field(&mut rest);
    if pattern.is_empty() {
        return Err(RemapError::NoPattern { line });
    }
    let regex = Regex::new(pattern, icase).map_err(|message| RemapError::BadPattern { line, message })?;
    let text = field(&mut rest).to_vec();
    Ok(Some(Rule { line, flags: f, regex: Some(regex), text }))
}
