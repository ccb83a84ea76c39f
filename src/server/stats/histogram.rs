//! Live histograms for the metrics: fixed buckets of relaxed atomics that one worker records
//! into and a scrape reads at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket upper bounds of the transfer-duration histograms, in microseconds (1 ms to 60 s).
pub const DURATION_BOUNDS_US: [u64; 14] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    30_000_000, 60_000_000,
];
/// Bucket upper bounds of the time-to-first-ACK histograms, in microseconds (100 µs to 10 s:
/// a LAN client answers in well under a millisecond; seconds mean a lost OACK or DATA 1 and the
/// retransmissions that followed).
pub const FIRST_ACK_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];
/// Bucket upper bounds of the negotiated-blksize histogram, in bytes.
pub const BLKSIZE_BOUNDS: [u64; 10] = [512, 1024, 1408, 1432, 1468, 4096, 8192, 16384, 32768, 65464];
/// Bucket upper bounds of the negotiated-windowsize histogram, in blocks.
pub const WINDOWSIZE_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 32768];
/// Slots of the transfer-duration histogram: its buckets and +Inf.
pub const DURATION_SLOTS: usize = DURATION_BOUNDS_US.len() + 1;
/// Slots of the time-to-first-ACK histogram: its buckets and +Inf.
pub const FIRST_ACK_SLOTS: usize = FIRST_ACK_BOUNDS_US.len() + 1;
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
    pub(super) fn record(&self, bounds: &[u64], v: u64) {
        let i = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len()).min(N - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> HistogramSnapshot<N> {
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
