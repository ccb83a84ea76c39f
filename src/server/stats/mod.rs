//! Worker counters and latency histograms.
//! (A little over 400 lines on purpose: every counter with its name and help text in one list.)
//!
//! Each worker owns its counters (single writer, relaxed atomics, cache-padded so that workers
//! never share a line) and its histograms (no synchronisation at all). The main thread reads the
//! counters whenever it reports and receives the histograms when a worker ends. The metrics
//! histograms (transfer duration and time to first ACK by file class, negotiated blksize and windowsize) are fixed
//! buckets of relaxed atomics beside the counters, recorded once per finished transfer, read by
//! a scrape at any time.
//!
//! [`Counter`] names every counter once: its log name, its help text and its place in
//! [`Counters`]. A new counter is one variant and one line in each of `name`, `help` and `ALL`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

mod classes;
mod histogram;

pub use classes::{FILE_CLASSES_MAX, FileClassError, FileClasses, file_classes, set_file_classes};
pub use histogram::{
    AtomicHistogram, BLKSIZE_BOUNDS, BLKSIZE_SLOTS, DURATION_BOUNDS_US, DURATION_SLOTS, FIRST_ACK_BOUNDS_US,
    FIRST_ACK_SLOTS, HistogramSnapshot, WINDOWSIZE_BOUNDS, WINDOWSIZE_SLOTS,
};

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
    /// Packets of a transfer that had just ended (single-port mode), dropped without an answer.
    Late,
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
    /// Requests whose name a map file rule rewrote.
    NamesRewritten,
    /// Requests a map file rule refused (`a` rule, or the rewrite failed).
    NamesDenied,
    /// Requests served from the client's own directory (`--client-dir`).
    ClientViews,
    /// Requests served from a file found with case ignored (`--case-insensitive`).
    CaseFixed,
    /// Requests whose name lost a `--strip-prefix` or trailing garbage (`--trim-name-garbage`).
    NamesFixed,
    /// Transfers in progress (a gauge).
    Active,
}

impl Counter {
    /// How many counters there are.
    pub const COUNT: usize = 27;

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
        Self::Late,
        Self::Malformed,
        Self::Bytes,
        Self::Uploaded,
        Self::Ignored,
        Self::RateLimited,
        Self::Retransmits,
        Self::SendErrors,
        Self::ErrorsWithheld,
        Self::Evicted,
        Self::NamesRewritten,
        Self::NamesDenied,
        Self::ClientViews,
        Self::CaseFixed,
        Self::NamesFixed,
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
            Self::Late => "late",
            Self::Malformed => "malformed",
            Self::Bytes => "bytes",
            Self::Uploaded => "uploaded",
            Self::Ignored => "ignored",
            Self::RateLimited => "rate_limited",
            Self::Retransmits => "retransmits",
            Self::SendErrors => "send_errors",
            Self::ErrorsWithheld => "errors_withheld",
            Self::Evicted => "evicted",
            Self::NamesRewritten => "names_rewritten",
            Self::NamesDenied => "names_denied",
            Self::ClientViews => "client_views",
            Self::CaseFixed => "case_fixed",
            Self::NamesFixed => "names_fixed",
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
            Self::DuplicateRequests => {
                "Repeated requests absorbed by an existing transfer, and copies of a request already answered that waited in the queue (dropped)."
            }
            Self::Foreign => "Packets from a wrong port, answered with ERROR 5.",
            Self::Late => "Packets of a transfer that had just ended (single-port mode), dropped without an answer.",
            Self::Malformed => "Datagrams that did not decode.",
            Self::Bytes => "Bytes acknowledged by clients.",
            Self::Uploaded => "Bytes received in uploads.",
            Self::Ignored => "Requests ignored: outside the allow list, or to a broadcast address.",
            Self::RateLimited => "New transfers dropped by the per-source rate limit.",
            Self::Retransmits => "DATA blocks and first answers sent again.",
            Self::SendErrors => "Sends the kernel refused.",
            Self::ErrorsWithheld => "ERRORs not sent to malformed or foreign datagrams (over the budget).",
            Self::Evicted => "Transfers of silent clients ended to make room for a new request.",
            Self::NamesRewritten => "Requests whose name a map file rule rewrote.",
            Self::NamesDenied => "Requests a map file rule refused (an `a` rule, or a failed rewrite).",
            Self::ClientViews => "Requests served from the client's own directory (--client-dir).",
            Self::CaseFixed => "Requests served from a file found with case ignored (--case-insensitive).",
            Self::NamesFixed => "Requests whose name lost a --strip-prefix or trailing garbage (--trim-name-garbage).",
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
    first_ack: [AtomicHistogram<FIRST_ACK_SLOTS>; FILE_CLASSES_MAX + 1],
    blksize: AtomicHistogram<BLKSIZE_SLOTS>,
    windowsize: AtomicHistogram<WINDOWSIZE_SLOTS>,
}

/// A plain copy of one worker's counters and histograms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    values: [u64; Counter::COUNT],
    finished: [[u64; Finish::COUNT]; 2],
    duration: [HistogramSnapshot<DURATION_SLOTS>; FILE_CLASSES_MAX + 1],
    first_ack: [HistogramSnapshot<FIRST_ACK_SLOTS>; FILE_CLASSES_MAX + 1],
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

    /// Times from request to the client's first ACK of downloads of file class `class` (as in
    /// [`duration`](Self::duration)), in microseconds, bucketed by [`FIRST_ACK_BOUNDS_US`].
    pub fn first_ack(&self, class: usize) -> &HistogramSnapshot<FIRST_ACK_SLOTS> {
        &self.first_ack[class.min(FILE_CLASSES_MAX)]
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

    /// Records a download of file class `class` whose client first acknowledged `d` after its
    /// request.
    pub fn record_first_ack(&self, class: usize, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.first_ack[class.min(FILE_CLASSES_MAX)].record(&FIRST_ACK_BOUNDS_US, us);
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
            first_ack: std::array::from_fn(|i| self.first_ack[i].snapshot()),
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
mod tests;
