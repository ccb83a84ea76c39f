//! Running the rules on one name.
//!
//! The name is kept as a C string (its bytes and one NUL) because that is what the C library
//! matches; it never holds another NUL: a name is cut at its first, and no replacement can
//! produce one.

use std::net::IpAddr;

use super::parse::Rule;
use super::posix::{Captures, NO_CAPTURES};
use super::{Client, FAILURE_MESSAGE, MAX_NAME_LEN, MAX_RULE_VISITS, MAX_STEPS, Rewrite};

/// Where an `s` rule resumes: tftp-hpa 5.2 sets its rule pointer to the first rule and then
/// steps past it, so processing starts again at the *second* rule (5.3 starts at the first).
const RESTART_AT: usize = 1;

/// Why a rewrite stopped without a name.
enum Stop {
    /// An `a` rule matched.
    Denied(Option<String>),
    /// A loop, a jump to no label, a name too long.
    Failed,
}

/// Runs `rules` (not empty) on `name` for `client`.
pub(crate) fn run(rules: &[Rule], name: &[u8], client: &Client, mut usable: impl FnMut(&[u8]) -> bool) -> Rewrite {
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    let addr = match client.addr {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        a @ IpAddr::V4(_) => a,
    };
    let mut cur = Vec::with_capacity(name.len() + 1);
    cur.extend_from_slice(name);
    cur.push(0);
    let mut last = None;
    let mut visits = 0;
    let mut steps = 0;
    let mut i = 0;
    let stop = loop {
        let Some(rule) = rules.get(i) else {
            break None;
        };
        let mut next = i + 1;
        let f = &rule.flags;
        let skip = (f.get_only && client.write)
            || (f.put_only && !client.write)
            || (f.ipv4 && !addr.is_ipv4())
            || (f.ipv6 && !addr.is_ipv6());
        // Labels have no pattern and are passed over.
        let Some(regex) = rule.regex.as_ref().filter(|_| !skip) else {
            i = next;
            continue;
        };
        visits += 1;
        steps += 1;
        if visits > MAX_RULE_VISITS || steps > MAX_STEPS {
            break Some((Stop::Failed, rule.line));
        }
        let caps = match (regex.exec(&cur, 0, false), f.inverse) {
            (Some(caps), false) => caps,
            (None, true) => NO_CAPTURES,
            _ => {
                i = next;
                continue;
            }
        };
        if f.abort {
            let message = (!rule.text.is_empty()).then(|| message(&rule.text, &cur, &caps, addr));
            break Some((Stop::Denied(message), rule.line));
        }
        let mut new = None;
        if f.rewrite {
            let (mut s, mut after) = substitute(&rule.text, &cur, 0, &caps, addr);
            // `s` is a C string: the name and its NUL.
            while f.global && s.len() <= MAX_NAME_LEN + 1 {
                let start = if f.sed_global { after } else { 0 };
                if f.sed_global && start >= s.len() - 1 {
                    break;
                }
                let Some(caps) = regex.exec(&s, start, start > 0) else {
                    break;
                };
                steps += 1;
                if steps > MAX_STEPS {
                    break;
                }
                (s, after) = substitute(&rule.text, &s, start, &caps, addr);
            }
            if s.len() > MAX_NAME_LEN + 1 || steps > MAX_STEPS {
                break Some((Stop::Failed, rule.line));
            }
            new = Some(s);
        }
        if f.has_file {
            let candidate = new.as_deref().unwrap_or(&cur);
            if !usable(&candidate[..candidate.len() - 1]) {
                i = next;
                continue;
            }
        }
        if let Some(s) = new {
            cur = s;
            last = Some(rule.line);
        }
        if f.exit || f.has_file {
            break None;
        }
        if f.restart {
            next = RESTART_AT;
        } else if f.jump {
            let label = expand(&rule.text, &cur, 0, &caps, addr, Vec::new());
            match rules.iter().position(|r| r.is_label() && r.text == label) {
                Some(at) if !label.is_empty() => next = at,
                _ => break Some((Stop::Failed, rule.line)),
            }
        }
        i = next;
    };
    match stop {
        Some((Stop::Denied(message), rule)) => Rewrite::Denied { message, rule },
        Some((Stop::Failed, rule)) => Rewrite::Denied { message: Some(FAILURE_MESSAGE.to_owned()), rule },
        None => {
            cur.pop();
            match last {
                Some(rule) if cur != name => Rewrite::Name { name: cur, rule },
                _ => Rewrite::Unchanged,
            }
        }
    }
}

/// The message of an `a` rule: as tftp-hpa 5.2 builds it, the current name with the match
/// replaced by the expanded text (only the expanded text when the rule ran because its pattern
/// did not match: 5.2 crashes there).
fn message(text: &[u8], cur: &[u8], caps: &Captures, addr: IpAddr) -> String {
    let bytes = match caps[0] {
        Some(_) => substitute(text, cur, 0, caps, addr).0,
        None => expand(text, cur, 0, caps, addr, Vec::new()),
    };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `subject` (a C string) with the match at `caps[0]` (offsets from `start`) replaced by the
/// expansion of `text`; also where the expansion ends, for a `gg` rule's next search.
fn substitute(text: &[u8], subject: &[u8], start: usize, caps: &Captures, addr: IpAddr) -> (Vec<u8>, usize) {
    let (so, eo) = caps[0].map_or((0, 0), |(so, eo)| (start + so, start + eo));
    let body = &subject[..subject.len() - 1];
    let mut out = Vec::with_capacity(body.len() + text.len() + 1);
    out.extend_from_slice(&body[..so]);
    let mut out = expand(text, subject, start, caps, addr, out);
    let after = out.len();
    out.extend_from_slice(&body[eo..]);
    out.push(0);
    (out, after)
}

/// A case transform of `\U`, `\L` and `\E` (ASCII, as C's `toupper` in the C locale).
#[derive(Clone, Copy)]
enum Case {
    Keep,
    Upper,
    Lower,
}

impl Case {
    fn apply(self, b: u8) -> u8 {
        match self {
            Case::Keep => b,
            Case::Upper => b.to_ascii_uppercase(),
            Case::Lower => b.to_ascii_lowercase(),
        }
    }
}

/// Appends the expansion of `text` to `out`: `\0`–`\9` the captures (offsets from `start` in
/// `subject`), `\i` and `\x` the client's address, `\U \L \E` case, any other `\c` the
/// character `c`, a last lone `\` itself.
fn expand(text: &[u8], subject: &[u8], start: usize, caps: &Captures, addr: IpAddr, mut out: Vec<u8>) -> Vec<u8> {
    let mut case = Case::Keep;
    let mut p = 0;
    while let Some(&c) = text.get(p) {
        let escaped = (c == b'\\').then(|| text.get(p + 1).copied()).flatten();
        let Some(e) = escaped else {
            out.push(case.apply(c));
            p += 1;
            continue;
        };
        p += 2;
        match e {
            b'0'..=b'9' => {
                if let Some((so, eo)) = caps[usize::from(e - b'0')] {
                    out.extend(subject[start + so..start + eo].iter().map(|&b| case.apply(b)));
                }
            }
            b'U' => case = Case::Upper,
            b'L' => case = Case::Lower,
            b'E' => case = Case::Keep,
            b'i' => out.extend(addr.to_string().bytes().map(|b| case.apply(b))),
            b'x' => {
                let hex = match addr {
                    IpAddr::V4(a) => format!("{:08X}", u32::from(a)),
                    IpAddr::V6(a) => format!("{:032X}", u128::from(a)),
                };
                out.extend(hex.bytes().map(|b| case.apply(b)));
            }
            other => out.push(case.apply(other)),
        }
    }
    out
}
