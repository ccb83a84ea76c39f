//! Worker counters and latency histograms.
//!
//! Each worker owns its counters (single writer, relaxed atomics, cache-padded so that workers
//! never share a line) and its histograms (no synchronisation at all). The main thread reads the
//! counters whenever it reports and receives the histograms when a worker ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Counters of one worker.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests received (RRQ and WRQ).
    pub requests: AtomicU64,
    /// Transfers completed.
    pub ok: AtomicU64,
    /// Size probes (ERROR 0/8 right after the OACK).
    pub probes: AtomicU64,
    /// Transfers ended by an ERROR from either side.
    pub errors: AtomicU64,
    /// Transfers given up on a silent client.
    pub timeouts: AtomicU64,
    /// Requests for files that do not exist.
    pub not_found: AtomicU64,
    /// Requests refused (access, mode, writes).
    pub refused: AtomicU64,
    /// Requests refused because the worker was full.
    pub busy: AtomicU64,
    /// Repeated requests absorbed by an existing transfer.
    pub duplicate_requests: AtomicU64,
    /// Packets from a wrong port answered with ERROR 5.
    pub foreign: AtomicU64,
    /// Datagrams that did not decode.
    pub malformed: AtomicU64,
    /// Bytes acknowledged by clients.
    pub bytes: AtomicU64,
    /// Bytes received in uploads.
    pub uploaded: AtomicU64,
    /// Requests ignored: from outside the allow list, or to a broadcast address.
    pub ignored: AtomicU64,
    /// New transfers dropped by the per-source rate limit.
    pub rate_limited: AtomicU64,
    /// DATA blocks and first answers sent again.
    pub retransmits: AtomicU64,
    /// Sends the kernel refused.
    pub send_errors: AtomicU64,
    /// ERRORs not sent to a malformed or foreign datagram: over the unasked-reply budget.
    pub errors_withheld: AtomicU64,
    /// Transfers whose client had shown nothing, ended to make room for a new request.
    pub evicted: AtomicU64,
    /// Transfers in progress.
    pub active: AtomicU64,
}

/// How many counters [`Counters::snapshot`] returns.
pub const COUNTERS: usize = 20;

impl Counters {
    /// Adds `n` to a counter (the worker is its only writer).
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(c: &AtomicU64, n: u64) {
        c.store(n, Ordering::Relaxed);
    }

    /// A plain copy of every counter, in declaration order, with names.
    pub fn snapshot(&self) -> [(&'static str, u64); COUNTERS] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("requests", g(&self.requests)),
            ("ok", g(&self.ok)),
            ("probes", g(&self.probes)),
            ("errors", g(&self.errors)),
            ("timeouts", g(&self.timeouts)),
            ("not_found", g(&self.not_found)),
            ("refused", g(&self.refused)),
            ("busy", g(&self.busy)),
            ("duplicate_requests", g(&self.duplicate_requests)),
            ("foreign", g(&self.foreign)),
            ("malformed", g(&self.malformed)),
            ("bytes", g(&self.bytes)),
            ("uploaded", g(&self.uploaded)),
            ("ignored", g(&self.ignored)),
            ("rate_limited", g(&self.rate_limited)),
            ("retransmits", g(&self.retransmits)),
            ("send_errors", g(&self.send_errors)),
            ("errors_withheld", g(&self.errors_withheld)),
            ("evicted", g(&self.evicted)),
            ("active", g(&self.active)),
        ]
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
