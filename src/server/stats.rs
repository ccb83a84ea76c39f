//! Worker counters and latency histograms.
//!
//! Each worker owns its counters (single writer, relaxed atomics, cache-padded so that workers
//! never share a line) and its histograms (no synchronisation at all). The main thread reads the
//! counters whenever it reports and receives the histograms when a worker ends. The metrics
//! histograms (transfer duration by file class, negotiated blksize and windowsize) are fixed
//! buckets of relaxed atomics beside the counters, recorded once per finished transfer, read by
//! a scrape at any time.
//!
//! [`Counter`] names every counter once: its log name, its help text and its place in
//! [`Counters`]. A new counter is one variant and one line in each of `name`, `help` and `ALL`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// One counter of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Requests received (RRQ and WRQ).
    Requests,
    /// Transfers completed.
    Ok,
    /// Size probes (tsize asked, then ERROR 8 "User aborted" right after the OACK).
    Probes,
    /// OACKs the client refused with an ERROR right after them (old ROMs), probes aside.
    Rejected,
    /// Transfers ended by an ERROR from either side.
    Errors,
    /// Transfers given up on a silent client.
    Timeouts,
    /// Requests for files that do not exist.
    NotFound,
    /// Requests refused (access, mode, writes).
    Refused,
    /// Requests refused because the worker was full.
    Busy,
    /// Repeated requests absorbed by an existing transfer.
    DuplicateRequests,
    /// Packets from a wrong port answered with ERROR 5.
    Foreign,
    /// Datagrams that did not decode.
    Malformed,
    /// Bytes acknowledged by clients.
    Bytes,
    /// Bytes received in uploads.
    Uploaded,
    /// Requests ignored: from outside the allow list, or to a broadcast address.
    Ignored,
    /// New transfers dropped by the per-source rate limit.
    RateLimited,
    /// DATA blocks and first answers sent again.
    Retransmits,
    /// Sends the kernel refused.
    SendErrors,
    /// ERRORs not sent to a malformed or foreign datagram: over the unasked-reply budget.
    ErrorsWithheld,
    /// Transfers whose client had shown nothing, ended to make room for a new request.
    Evicted,
    /// Transfers in progress (a gauge).
    Active,
}

impl Counter {
    /// How many counters there are.
    pub const COUNT: usize = 21;

    /// Every counter, in report order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Requests,
        Self::Ok,
        Self::Probes,
        Self::Rejected,
        Self::Errors,
        Self::Timeouts,
        Self::NotFound,
        Self::Refused,
        Self::Busy,
        Self::DuplicateRequests,
        Self::Foreign,
        Self::Malformed,
        Self::Bytes,
        Self::Uploaded,
        Self::Ignored,
        Self::RateLimited,
        Self::Retransmits,
        Self::SendErrors,
        Self::ErrorsWithheld,
        Self::Evicted,
        Self::Active,
    ];

    /// Its name in reports and log lines (snake case; tests and scripts parse it).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Ok => "ok",
            Self::Probes => "probes",
            Self::Rejected => "rejected",
            Self::Errors => "errors",
            Self::Timeouts => "timeouts",
            Self::NotFound => "not_found",
            Self::Refused => "refused",
            Self::Busy => "busy",
            Self::DuplicateRequests => "duplicate_requests",
            Self::Foreign => "foreign",
            Self::Malformed => "malformed",
            Self::Bytes => "bytes",
            Self::Uploaded => "uploaded",
            Self::Ignored => "ignored",
            Self::RateLimited => "rate_limited",
            Self::Retransmits => "retransmits",
            Self::SendErrors => "send_errors",
            Self::ErrorsWithheld => "errors_withheld",
            Self::Evicted => "evicted",
            Self::Active => "active",
        }
    }

    /// One line saying what it counts, for a metrics endpoint.
    pub const fn help(self) -> &'static str {
        match self {
            Self::Requests => "Requests received (RRQ and WRQ).",
            Self::Ok => "Transfers completed.",
            Self::Probes => "Size probes: tsize asked, then ERROR 8 (User aborted) right after the OACK.",
            Self::Rejected => "OACKs refused by the client with another ERROR right after them (old ROMs).",
            Self::Errors => "Transfers ended by an ERROR from either side.",
            Self::Timeouts => "Transfers given up on a silent client.",
            Self::NotFound => "Requests for files that do not exist.",
            Self::Refused => "Requests refused (access, mode, writes).",
            Self::Busy => "Requests refused because the worker was full.",
            Self::DuplicateRequests => "Repeated requests absorbed by an existing transfer.",
            Self::Foreign => "Packets from a wrong port, answered with ERROR 5.",
            Self::Malformed => "Datagrams that did not decode.",
            Self::Bytes => "Bytes acknowledged by clients.",
            Self::Uploaded => "Bytes received in uploads.",
            Self::Ignored => "Requests ignored: outside the allow list, or to a broadcast address.",
            Self::RateLimited => "New transfers dropped by the per-source rate limit.",
            Self::Retransmits => "DATA blocks and first answers sent again.",
            Self::SendErrors => "Sends the kernel refused.",
            Self::ErrorsWithheld => "ERRORs not sent to malformed or foreign datagrams (over the budget).",
            Self::Evicted => "Transfers of silent clients ended to make room for a new request.",
            Self::Active => "Transfers in progress.",
        }
    }

    /// Whether it is a gauge (a current value) rather than a count that only grows.
    pub const fn is_gauge(self) -> bool {
        matches!(self, Self::Active)
    }
}

/// Counters of one worker: the [`Counter`]s, the finished requests by [`Direction`] and
/// [`Finish`], and live histograms (fixed buckets of atomics, recorded once per transfer).
#[derive(Debug, Default)]
pub struct Counters {
    values: [AtomicU64; Counter::COUNT],
    finished: [[AtomicU64; Finish::COUNT]; 2],
    duration: [AtomicHistogram<DURATION_SLOTS>; FILE_CLASSES_MAX + 1],
    blksize: AtomicHistogram<BLKSIZE_SLOTS>,
    windowsize: AtomicHistogram<WINDOWSIZE_SLOTS>,
}

/// A plain copy of one worker's counters and histograms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    values: [u64; Counter::COUNT],
    finished: [[u64; Finish::COUNT]; 2],
    duration: [HistogramSnapshot<DURATION_SLOTS>; FILE_CLASSES_MAX + 1],
    blksize: HistogramSnapshot<BLKSIZE_SLOTS>,
    windowsize: HistogramSnapshot<WINDOWSIZE_SLOTS>,
}

impl CounterSnapshot {
    /// The value of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize]
    }

    /// Every counter with its value, in report order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(|&c| (c, self.get(c)))
    }

    /// Requests of `direction` that ended as `finish`.
    pub fn finished(&self, direction: Direction, finish: Finish) -> u64 {
        self.finished[direction as usize][finish as usize]
    }

    /// Durations of completed transfers of file class `class` (an index of
    /// [`FileClasses::names`], or its length for `other`), in microseconds, bucketed by
    /// [`DURATION_BOUNDS_US`].
    pub fn duration(&self, class: usize) -> &HistogramSnapshot<DURATION_SLOTS> {
        &self.duration[class.min(FILE_CLASSES_MAX)]
    }

    /// Negotiated blksize of finished transfers, bucketed by [`BLKSIZE_BOUNDS`].
    pub fn blksize(&self) -> &HistogramSnapshot<BLKSIZE_SLOTS> {
        &self.blksize
    }

    /// Negotiated windowsize of finished transfers, bucketed by [`WINDOWSIZE_BOUNDS`].
    pub fn windowsize(&self) -> &HistogramSnapshot<WINDOWSIZE_SLOTS> {
        &self.windowsize
    }
}

impl Counters {
    /// Adds `n` to counter `c` (the worker is its only writer).
    pub fn add(&self, c: Counter, n: u64) {
        self.values[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Sets gauge `c`.
    pub fn set(&self, c: Counter, n: u64) {
        self.values[c as usize].store(n, Ordering::Relaxed);
    }

    /// The value of counter `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    /// Counts a request of `direction` that ended as `finish`.
    pub fn finish(&self, direction: Direction, finish: Finish) {
        self.finished[direction as usize][finish as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a completed transfer of file class `class` that took `d`.
    pub fn record_duration(&self, class: usize, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.duration[class.min(FILE_CLASSES_MAX)].record(&DURATION_BOUNDS_US, us);
    }

    /// Records the blksize and windowsize a finished transfer ran with.
    pub fn record_negotiated(&self, blksize: u16, windowsize: u16) {
        self.blksize.record(&BLKSIZE_BOUNDS, u64::from(blksize));
        self.windowsize.record(&WINDOWSIZE_BOUNDS, u64::from(windowsize));
    }

    /// A plain copy of every counter and histogram.
    pub fn values(&self) -> CounterSnapshot {
        CounterSnapshot {
            values: Counter::ALL.map(|c| self.get(c)),
            finished: [0, 1].map(|d| Finish::ALL.map(|f| self.finished[d][f as usize].load(Ordering::Relaxed))),
            duration: std::array::from_fn(|i| self.duration[i].snapshot()),
            blksize: self.blksize.snapshot(),
            windowsize: self.windowsize.snapshot(),
        }
    }
}

/// The direction of a request: a read (RRQ) or a write (WRQ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A download.
    Read,
    /// An upload.
    Write,
}

impl Direction {
    /// Both, in report order.
    pub const ALL: [Self; 2] = [Self::Read, Self::Write];

    /// Its label: `read` or `write`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// How a request ended: a transfer's outcome, or the refusal that kept it from becoming one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Finish {
    /// Completed.
    Ok,
    /// A size probe.
    Probe,
    /// OACK refused by the client.
    Rejected,
    /// Ended by the client's ERROR.
    ClientError,
    /// Ended by the server's ERROR.
    Error,
    /// Given up on a silent client.
    Timeout,
    /// Refused: no such file.
    NotFound,
    /// Refused: access, mode, writes.
    Refused,
    /// Refused: the worker was full.
    Busy,
}

impl Finish {
    /// How many there are.
    pub const COUNT: usize = 9;

    /// Every one, in report order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Ok,
        Self::Probe,
        Self::Rejected,
        Self::ClientError,
        Self::Error,
        Self::Timeout,
        Self::NotFound,
        Self::Refused,
        Self::Busy,
    ];

    /// Its label (a transfer's as its log record's `outcome`).
    pub const fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Probe => "probe",
            Self::Rejected => "rejected",
            Self::ClientError => "client_error",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::NotFound => "not_found",
            Self::Refused => "refused",
            Self::Busy => "busy",
        }
    }
}

/// Bucket upper bounds of the transfer-duration histograms, in microseconds (1 ms to 60 s).
pub const DURATION_BOUNDS_US: [u64; 14] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    30_000_000, 60_000_000,
];
/// Bucket upper bounds of the negotiated-blksize histogram, in bytes.
pub const BLKSIZE_BOUNDS: [u64; 10] = [512, 1024, 1408, 1432, 1468, 4096, 8192, 16384, 32768, 65464];
/// Bucket upper bounds of the negotiated-windowsize histogram, in blocks.
pub const WINDOWSIZE_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 32768];
/// Slots of the transfer-duration histogram: its buckets and +Inf.
pub const DURATION_SLOTS: usize = DURATION_BOUNDS_US.len() + 1;
/// Slots of the blksize histogram.
pub const BLKSIZE_SLOTS: usize = BLKSIZE_BOUNDS.len() + 1;
/// Slots of the windowsize histogram.
pub const WINDOWSIZE_SLOTS: usize = WINDOWSIZE_BOUNDS.len() + 1;

/// A histogram one worker records into and anyone reads: a count per bucket (not cumulative;
/// the last is above every bound) and the sum of the values, relaxed atomics.
#[derive(Debug)]
pub struct AtomicHistogram<const N: usize> {
    counts: [AtomicU64; N],
    sum: AtomicU64,
}

impl<const N: usize> Default for AtomicHistogram<N> {
    fn default() -> Self {
        Self { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum: AtomicU64::new(0) }
    }
}

impl<const N: usize> AtomicHistogram<N> {
    /// Counts `v` in the first bucket whose bound (of `bounds`, `N - 1` of them) it does not
    /// exceed; never allocates.
    fn record(&self, bounds: &[u64], v: u64) {
        let i = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len()).min(N - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot<N> {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A plain copy of an [`AtomicHistogram`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot<const N: usize> {
    /// Count per bucket, not cumulative; the last is above every bound.
    pub counts: [u64; N],
    /// The sum of the values recorded.
    pub sum: u64,
}

impl<const N: usize> Default for HistogramSnapshot<N> {
    fn default() -> Self {
        Self { counts: [0; N], sum: 0 }
    }
}

impl<const N: usize> HistogramSnapshot<N> {
    /// Adds `other` (another worker's) to this one.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The most file classes `--metrics-file-class` may name (besides `other`): a label's values
/// must stay few.
pub const FILE_CLASSES_MAX: usize = 8;

/// File classes for the transfer-duration histograms: rules that map a requested file name
/// to one of a few operator-chosen names, everything else to `other` (never the name itself:
/// MAC-named files would make a label value per machine).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileClasses {
    names: Vec<String>,
    rules: Vec<(Box<[u8]>, usize)>,
}

/// A file-class rule refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileClassError {
    /// Not `NAME=PATTERN`, or an empty part.
    #[error("file class {0:?}: expected NAME=PATTERN")]
    Syntax(String),
    /// A name that is no Prometheus label value of letters, digits, `_`, `-` and `.`, or `other`.
    #[error("file class name {0:?}: letters, digits, '_', '-' and '.' only, and not \"other\"")]
    Name(String),
    /// More names than [`FILE_CLASSES_MAX`].
    #[error("at most {FILE_CLASSES_MAX} file classes")]
    TooMany,
}

impl FileClasses {
    /// Adds a rule `NAME=PATTERN`: PATTERN is a glob (`*` any bytes, `?` one byte) when it has
    /// `*` or `?`, else a prefix, matched against the file name as the client sent it. Rules
    /// match in the order added; several may share a name.
    pub fn add(&mut self, rule: &str) -> Result<(), FileClassError> {
        let (name, pattern) = rule
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
            .ok_or_else(|| FileClassError::Syntax(rule.to_string()))?;
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid || name == "other" {
            return Err(FileClassError::Name(name.to_string()));
        }
        let class = match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None if self.names.len() == FILE_CLASSES_MAX => return Err(FileClassError::TooMany),
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        };
        self.rules.push((pattern.as_bytes().into(), class));
        Ok(())
    }

    /// The class names, in the order first given; `other` is index `names().len()`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The class of file name `file`: the index of the first rule's name it matches, else
    /// `names().len()` (`other`). Allocates nothing.
    pub fn classify(&self, file: &[u8]) -> usize {
        self.rules.iter().find(|(p, _)| matches(p, file)).map_or(self.names.len(), |&(_, c)| c)
    }
}

/// Whether `name` matches `pattern`: a glob with `*` and `?`, or else a prefix.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    if !pattern.iter().any(|b| matches!(b, b'*' | b'?')) {
        return name.starts_with(pattern);
    }
    // Iterative glob with one backtrack point: linear in practice, no recursion, no allocation.
    let (mut p, mut n, mut star, mut mark) = (0, 0, None, 0);
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some(p);
                mark = n;
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some(s) => {
                    p = s + 1;
                    mark += 1;
                    n = mark;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// The file classes in force: set once by the program before the workers start.
static FILE_CLASSES: OnceLock<FileClasses> = OnceLock::new();

/// Sets the file classes for the whole process, before [`Server::start`](super::Server::start);
/// gives them back when they were set already.
pub fn set_file_classes(classes: FileClasses) -> Result<(), FileClasses> {
    FILE_CLASSES.set(classes)
}

/// The file classes in force (none, so everything is `other`, unless set).
pub fn file_classes() -> &'static FileClasses {
    static NONE: FileClasses = FileClasses { names: Vec::new(), rules: Vec::new() };
    FILE_CLASSES.get().unwrap_or(&NONE)
}

/// Latency histograms of one worker, in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// From request to final ACK, completed transfers only.
    pub transfer: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// Empty histograms covering 1 µs to 1 hour at 3 significant digits.
    pub fn new() -> Self {
        Self { transfer: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds") }
    }

    /// Records a completed transfer's duration; never allocates.
    pub fn record_transfer(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, 3_600_000_000);
        // Clamped into the histogram's range, so recording cannot fail.
        let _ = self.transfer.record(us);
    }

    /// Merges another worker's histograms into these.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.transfer.add(&other.transfer);
    }

    /// `p50 p90 p99 p99.9 max` of transfer times, in milliseconds.
    pub fn summary(&self) -> String {
        let h = &self.transfer;
        if h.is_empty() {
            return "no completed transfers".into();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "transfer ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} (n={})",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            h.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_place_and_a_distinct_name() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} out of place in ALL");
            assert!(!c.help().is_empty());
        }
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::COUNT);
    }

    #[test]
    fn add_set_get_and_values_agree() {
        let c = Counters::default();
        c.add(Counter::Ok, 2);
        c.add(Counter::Ok, 1);
        c.set(Counter::Active, 7);
        assert_eq!((c.get(Counter::Ok), c.get(Counter::Active)), (3, 7));
        let v = c.values();
        assert_eq!(v.get(Counter::Ok), 3);
        let named: Vec<(&str, u64)> = v.iter().map(|(c, n)| (c.name(), n)).collect();
        assert_eq!(named[1], ("ok", 3));
        assert_eq!(named[Counter::COUNT - 1], ("active", 7));
    }

    #[test]
    fn histograms_and_finishes_land_in_their_buckets() {
        let c = Counters::default();
        c.finish(Direction::Write, Finish::NotFound);
        c.record_duration(1, Duration::from_millis(3));
        c.record_duration(99, Duration::from_secs(1000));
        c.record_negotiated(1468, 64);
        let v = c.values();
        assert_eq!(
            (v.finished(Direction::Write, Finish::NotFound), v.finished(Direction::Read, Finish::NotFound)),
            (1, 0)
        );
        assert_eq!(v.duration(1).counts[1], 1);
        assert_eq!((v.duration(FILE_CLASSES_MAX).counts[DURATION_SLOTS - 1], v.duration(1).sum), (1, 3000));
        assert_eq!((v.blksize().counts[4], v.windowsize().counts[6]), (1, 1));
        let mut m = *v.blksize();
        m.merge(v.blksize());
        assert_eq!(m.count(), 2);
    }

    #[test]
    fn file_classes_match_globs_and_prefixes_in_order() {
        let mut f = FileClasses::default();
        f.add("pxe=pxelinux.cfg/").unwrap();
        f.add("efi=*.efi").unwrap();
        f.add("kernel=vmlinuz-?.*").unwrap();
        f.add("pxe=*.0").unwrap();
        assert_eq!(f.names(), ["pxe", "efi", "kernel"]);
        assert_eq!(f.classify(b"pxelinux.cfg/01-aa-bb"), 0);
        assert_eq!(f.classify(b"boot/grubx64.efi"), 1);
        assert_eq!(f.classify(b"vmlinuz-6.1"), 2);
        assert_eq!(f.classify(b"pxelinux.0"), 0);
        assert_eq!(f.classify(b"initrd.img"), 3);
        assert_eq!(f.add("x"), Err(FileClassError::Syntax("x".into())));
        assert_eq!(f.add("other=a"), Err(FileClassError::Name("other".into())));
        assert_eq!(f.add("a b=a"), Err(FileClassError::Name("a b".into())));
        for i in 0..5 {
            f.add(&format!("c{i}=x{i}")).unwrap();
        }
        assert_eq!(f.add("c9=y"), Err(FileClassError::TooMany));
        assert!(matches(b"a*b*c", b"axxbyyc") && !matches(b"a*b", b"ac") && matches(b"*", b""));
    }
}
