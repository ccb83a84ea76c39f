//! Folding the records of requests that become no transfer: the first refusal or ignore of a
//! kind from a client is written at once, its repeats within a short window are only counted
//! and written as one `requests folded` record when the window closes. PXELINUX's search for
//! its configuration (up to ten misses in a row from one client) is then two records, and a
//! flood of ignored or rate-limited requests a few per client and window.
//!
//! Memory is bounded and allocated once, at the first use: a set-associative table of
//! [`SETS`] × [`WAYS`] entries keyed by (client address, reason), each with the first and last
//! file name cut at [`NAME_MAX`] bytes. When a set is full of open windows, the request is
//! counted by reason only ("unattributed") and reported at the next sweep. Nothing here
//! allocates per request.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hashbrown::DefaultHashBuilder;

use crate::proto::Timestamp;
use crate::server::stats::Counter;

/// Sets of the table.
const SETS: usize = 256;
/// Entries per set.
const WAYS: usize = 4;
/// File name bytes kept per entry (first and last); longer names are cut.
pub(super) const NAME_MAX: usize = 48;
/// A window closes this long after its last repeat.
pub(super) const WINDOW: Duration = Duration::from_secs(1);
/// ... and at the latest this long after it opened, so that a steady flood is still reported.
pub(super) const SPAN: Duration = Duration::from_secs(10);

/// Why a request became no transfer: the `reason` of its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Reason {
    /// No such file (ERROR 1).
    NotFound,
    /// Outside the root, a refused symlink, not a regular file, or not permitted (ERROR 2).
    AccessDenied,
    /// The file is not readable by others, and only world-readable files are served.
    NotWorldReadable,
    /// The file could not be read.
    ReadFailed,
    /// netascii mode asked for a file larger than it serves.
    TooLarge,
    /// Mail mode.
    Mode,
    /// The server is stopping.
    ShuttingDown,
    /// Uploads are disabled.
    WritesDisabled,
    /// Uploads are not accepted from the source.
    WriteNotAllowed,
    /// The upload would replace a file and overwriting is off.
    Exists,
    /// The upload does not fit.
    DiskFull,
    /// The upload could not be started.
    WriteFailed,
    /// No room for another transfer (ERROR 0 "server busy").
    Busy,
    /// Ignored: from outside the allow list.
    NotAllowed,
    /// Ignored: sent to a broadcast address.
    Broadcast,
    /// Ignored: over the per-source rate limit.
    RateLimited,
}

impl Reason {
    /// How many reasons there are.
    const COUNT: usize = 16;

    /// Its name in log records.
    pub(super) const fn name(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::AccessDenied => "access_denied",
            Self::NotWorldReadable => "not_world_readable",
            Self::ReadFailed => "read_failed",
            Self::TooLarge => "too_large",
            Self::Mode => "mode",
            Self::ShuttingDown => "shutting_down",
            Self::WritesDisabled => "writes_disabled",
            Self::WriteNotAllowed => "write_not_allowed",
            Self::Exists => "exists",
            Self::DiskFull => "disk_full",
            Self::WriteFailed => "write_failed",
            Self::Busy => "busy",
            Self::NotAllowed => "not_allowed",
            Self::Broadcast => "broadcast",
            Self::RateLimited => "rate_limited",
        }
    }

    /// Whether the request is dropped without an answer (`request ignored`) rather than
    /// answered with an ERROR (`request refused`).
    pub(super) const fn is_ignored(self) -> bool {
        matches!(self, Self::NotAllowed | Self::Broadcast | Self::RateLimited)
    }

    /// The counter an ignored request counts in.
    pub(super) const fn ignore_counter(self) -> Counter {
        match self {
            Self::RateLimited => Counter::RateLimited,
            _ => Counter::Ignored,
        }
    }

    /// `outcome` of a folded record: `ignored` or `refused`.
    pub(super) const fn outcome(self) -> &'static str {
        if self.is_ignored() { "ignored" } else { "refused" }
    }

    const fn index(self) -> usize {
        self as usize
    }

    const ALL: [Self; Self::COUNT] = [
        Self::NotFound,
        Self::AccessDenied,
        Self::NotWorldReadable,
        Self::ReadFailed,
        Self::TooLarge,
        Self::Mode,
        Self::ShuttingDown,
        Self::WritesDisabled,
        Self::WriteNotAllowed,
        Self::Exists,
        Self::DiskFull,
        Self::WriteFailed,
        Self::Busy,
        Self::NotAllowed,
        Self::Broadcast,
        Self::RateLimited,
    ];
}

/// A file name cut at [`NAME_MAX`] bytes, kept inline.
#[derive(Clone, Copy, Debug)]
struct Name {
    len: u8,
    bytes: [u8; NAME_MAX],
}

impl Name {
    const EMPTY: Self = Self { len: 0, bytes: [0; NAME_MAX] };

    fn set(&mut self, name: &[u8]) {
        let n = name.len().min(NAME_MAX);
        self.bytes[..n].copy_from_slice(&name[..n]);
        self.len = n as u8;
    }

    fn get(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Repeats of one (client, reason) within one window.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// `None`: the entry is free.
    reason: Option<Reason>,
    client: IpAddr,
    opened: Timestamp,
    last: Timestamp,
    /// Repeats folded (the first request is not among them: it was written).
    count: u32,
    first_file: Name,
    last_file: Name,
}

impl Entry {
    const FREE: Self = Self {
        reason: None,
        client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        opened: Timestamp::ZERO,
        last: Timestamp::ZERO,
        count: 0,
        first_file: Name::EMPTY,
        last_file: Name::EMPTY,
    };

    fn is_open(&self, now: Timestamp) -> bool {
        now < self.last + WINDOW && now < self.opened + SPAN
    }

    fn folded(&self) -> Option<Folded<'_>> {
        let reason = self.reason?;
        (self.count > 0).then(|| Folded {
            client: Some(self.client),
            reason,
            count: self.count,
            first_file: self.first_file.get(),
            last_file: self.last_file.get(),
        })
    }
}

/// Repeats folded into one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Folded<'a> {
    /// The client; `None` for requests the full table could not attribute.
    pub(super) client: Option<IpAddr>,
    /// What became of them.
    pub(super) reason: Reason,
    /// How many (besides the first, which was written on its own).
    pub(super) count: u32,
    /// The first folded request's file name (cut at [`NAME_MAX`] bytes).
    pub(super) first_file: &'a [u8],
    /// The last one's.
    pub(super) last_file: &'a [u8],
}

/// The folding table of one worker. See the module documentation.
#[derive(Debug)]
pub(super) struct Fold {
    /// Empty until the first request is noted.
    entries: Box<[Entry]>,
    /// Requests the table had no room for, by reason.
    unattributed: [u32; Reason::COUNT],
    hasher: DefaultHashBuilder,
}

impl Default for Fold {
    fn default() -> Self {
        Self { entries: Box::default(), unattributed: [0; Reason::COUNT], hasher: DefaultHashBuilder::default() }
    }
}

impl Fold {
    /// Notes a request from `client` that became no transfer for `reason`; returns whether its
    /// record is to be written now (else it was folded). A window of the same key that has
    /// closed but not been swept yet is reported through `emit` first.
    pub(super) fn note(
        &mut self,
        now: Timestamp,
        client: IpAddr,
        reason: Reason,
        file: &[u8],
        mut emit: impl FnMut(&Folded<'_>),
    ) -> bool {
        if self.entries.is_empty() {
            self.entries = vec![Entry::FREE; SETS * WAYS].into_boxed_slice();
        }
        let set = (self.hasher.hash_one((client, reason)) as usize % SETS) * WAYS;
        let ways = &mut self.entries[set..set + WAYS];
        if let Some(e) = ways.iter_mut().find(|e| e.reason == Some(reason) && e.client == client) {
            if e.is_open(now) {
                e.count = e.count.saturating_add(1);
                if e.count == 1 {
                    e.first_file.set(file);
                }
                e.last_file.set(file);
                e.last = now;
                return false;
            }
            if let Some(f) = e.folded() {
                emit(&f);
            }
            *e = Entry { reason: Some(reason), client, opened: now, last: now, ..Entry::FREE };
            return true;
        }
        // A free entry, else one whose window has closed (reported first).
        let slot = ways.iter().position(|e| e.reason.is_none()).or_else(|| ways.iter().position(|e| !e.is_open(now)));
        let Some(i) = slot else {
            let n = &mut self.unattributed[reason.index()];
            *n = n.saturating_add(1);
            return false;
        };
        if let Some(f) = ways[i].folded() {
            emit(&f);
        }
        ways[i] = Entry { reason: Some(reason), client, opened: now, last: now, ..Entry::FREE };
        true
    }

    /// Reports and frees every window that has closed, and the requests that could not be
    /// attributed since the last sweep.
    pub(super) fn sweep(&mut self, now: Timestamp, mut emit: impl FnMut(&Folded<'_>)) {
        for e in self.entries.iter_mut().filter(|e| e.reason.is_some() && !e.is_open(now)) {
            if let Some(f) = e.folded() {
                emit(&f);
            }
            *e = Entry::FREE;
        }
        for reason in Reason::ALL {
            let count = std::mem::take(&mut self.unattributed[reason.index()]);
            if count > 0 {
                emit(&Folded { client: None, reason, count, first_file: b"", last_file: b"" });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_millis(ms)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// What `sweep` reports at `now`, as (client, reason, count, first, last).
    fn swept(f: &mut Fold, now: Timestamp) -> Vec<(Option<IpAddr>, Reason, u32, String, String)> {
        let mut out = Vec::new();
        f.sweep(now, |x| {
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            out.push((x.client, x.reason, x.count, s(x.first_file), s(x.last_file)));
        });
        out
    }

    #[test]
    fn a_search_chain_is_one_record_and_one_count() {
        let mut f = Fold::default();
        let c = ip("192.0.2.10");
        let names = ["01-52-54-00-12-34-56", "C000025B", "C000025", "C00002", "C0000", "C000", "C00", "C0", "C"];
        let written: Vec<bool> = names
            .iter()
            .enumerate()
            .map(|(i, n)| f.note(at(i as u64 * 10), c, Reason::NotFound, n.as_bytes(), |_| panic!("nothing closed")))
            .collect();
        assert_eq!(written, [true, false, false, false, false, false, false, false, false]);
        assert_eq!(swept(&mut f, at(500)), [], "the window is still open");
        let got = swept(&mut f, at(80) + WINDOW);
        assert_eq!(got, [(Some(c), Reason::NotFound, 8, "C000025B".into(), "C".into())]);
        // Closed: the next one is written again.
        assert!(f.note(at(5000), c, Reason::NotFound, b"x", |_| panic!()));
    }

    #[test]
    fn clients_and_reasons_fold_apart() {
        let mut f = Fold::default();
        assert!(f.note(at(0), ip("192.0.2.10"), Reason::NotFound, b"a", |_| {}));
        assert!(f.note(at(0), ip("192.0.2.11"), Reason::NotFound, b"a", |_| {}));
        assert!(f.note(at(0), ip("192.0.2.10"), Reason::Busy, b"a", |_| {}));
        assert!(!f.note(at(1), ip("192.0.2.10"), Reason::NotFound, b"b", |_| {}));
        assert_eq!(swept(&mut f, at(5000)).len(), 1, "only the key with repeats is reported");
    }

    #[test]
    fn a_steady_flood_is_reported_once_per_span() {
        let mut f = Fold::default();
        let c = ip("198.51.100.1");
        let mut written = 0;
        let mut reported = Vec::new();
        for ms in (0..25_000).step_by(100) {
            if f.note(at(ms), c, Reason::RateLimited, b"f", |x| reported.push(x.count)) {
                written += 1;
            }
            f.sweep(at(ms), |x| reported.push(x.count));
        }
        assert_eq!(written, 3, "one record per span of {SPAN:?}");
        assert_eq!(reported, [99, 99], "each span's repeats reported once");
    }

    #[test]
    fn a_full_set_counts_by_reason_only() {
        let mut f = Fold::default();
        // Far more clients than entries: some sets fill up.
        let mut written = 0;
        for i in 0..(SETS * WAYS * 8) as u32 {
            let c = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            if f.note(at(0), c, Reason::NotAllowed, b"f", |_| {}) {
                written += 1;
            }
        }
        assert_eq!(written, SETS * WAYS, "every entry taken, no more");
        let got = swept(&mut f, at(0) + SPAN);
        assert_eq!(got, [(None, Reason::NotAllowed, (SETS * WAYS * 7) as u32, String::new(), String::new())]);
    }

    #[test]
    fn long_names_are_cut() {
        let mut f = Fold::default();
        let c = ip("192.0.2.10");
        let long = [b'a'; 200];
        f.note(at(0), c, Reason::NotFound, &long, |_| {});
        f.note(at(1), c, Reason::NotFound, &long, |_| {});
        let got = swept(&mut f, at(5000));
        assert_eq!(got[0].3.len(), NAME_MAX);
    }

    #[test]
    fn reasons_are_listed_once_each() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
