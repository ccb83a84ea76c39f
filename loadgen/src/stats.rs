//! What a run measured: counters and histograms per thread, merged into one report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Per-thread measurements.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) ok: u64,
    pub(crate) failed: BTreeMap<String, u64>,
    pub(crate) bytes: u64,
    pub(crate) sessions: u64,
    pub(crate) probes: u64,
    pub(crate) misses: u64,
    pub(crate) retransmits: u64,
    pub(crate) dropped: u64,
    /// Failed steps started again (`--session-retries`), in all and by cause.
    pub(crate) restarts: u64,
    pub(crate) restart_causes: BTreeMap<String, u64>,
    /// Sessions that completed after at least one restart.
    pub(crate) recovered: u64,
    /// Answers that provably belong to another transfer, and of them those that came from the
    /// client's previous transfer ID.
    pub(crate) wrong_answers: u64,
    pub(crate) wrong_from_previous: u64,
    /// Datagrams from a source other than the transfer's ID, or with no transfer running.
    pub(crate) stray: u64,
    /// Late packets of another transfer ignored before a request's first answer, and of them
    /// those from the client's previous transfer ID.
    pub(crate) stale: u64,
    pub(crate) stale_from_previous: u64,
    /// Request to final block, completed transfers, microseconds.
    pub(crate) transfer: Histogram<u64>,
    /// Request to first DATA, microseconds.
    pub(crate) first_block: Histogram<u64>,
    /// Session start to end, microseconds.
    pub(crate) session: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).clamp(1, 3_600_000_000));
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            ok: 0,
            failed: BTreeMap::new(),
            bytes: 0,
            sessions: 0,
            probes: 0,
            misses: 0,
            retransmits: 0,
            dropped: 0,
            restarts: 0,
            restart_causes: BTreeMap::new(),
            recovered: 0,
            wrong_answers: 0,
            wrong_from_previous: 0,
            stray: 0,
            stale: 0,
            stale_from_previous: 0,
            transfer: histogram(),
            first_block: histogram(),
            session: histogram(),
        }
    }

    pub(crate) fn fail(&mut self, cause: String) {
        *self.failed.entry(cause).or_default() += 1;
    }

    pub(crate) fn restart(&mut self, cause: String) {
        self.restarts += 1;
        *self.restart_causes.entry(cause).or_default() += 1;
    }

    pub(crate) fn stale(&mut self, from_previous_tid: bool) {
        self.stale += 1;
        self.stale_from_previous += u64::from(from_previous_tid);
    }

    pub(crate) fn wrong_answer(&mut self, from_previous_tid: bool) {
        self.wrong_answers += 1;
        self.wrong_from_previous += u64::from(from_previous_tid);
    }

    pub(crate) fn transfer_done(&mut self, bytes: u64, total: Duration, first: Option<Duration>) {
        self.ok += 1;
        self.bytes += bytes;
        record(&mut self.transfer, total);
        if let Some(f) = first {
            record(&mut self.first_block, f);
        }
    }

    pub(crate) fn session_done(&mut self, d: Duration) {
        self.sessions += 1;
        record(&mut self.session, d);
    }

    pub(crate) fn merge(&mut self, o: &Self) {
        self.ok += o.ok;
        for (k, v) in &o.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        self.bytes += o.bytes;
        self.sessions += o.sessions;
        self.probes += o.probes;
        self.misses += o.misses;
        self.retransmits += o.retransmits;
        self.dropped += o.dropped;
        self.restarts += o.restarts;
        for (k, v) in &o.restart_causes {
            *self.restart_causes.entry(k.clone()).or_default() += v;
        }
        self.recovered += o.recovered;
        self.wrong_answers += o.wrong_answers;
        self.wrong_from_previous += o.wrong_from_previous;
        self.stray += o.stray;
        self.stale += o.stale;
        self.stale_from_previous += o.stale_from_previous;
        let _ = self.transfer.add(&o.transfer);
        let _ = self.first_block.add(&o.first_block);
        let _ = self.session.add(&o.session);
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) count: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            count: h.len(),
        }
    }
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) transfers_ok: u64,
    /// Sessions that failed for good (their restarts spent).
    pub(crate) transfers_failed: u64,
    /// The final failures by cause: "timeout", "server error N", "protocol: ...", "wrong data",
    /// "wrong answer: ERROR 5 first", "short file",
    /// "expected a miss, got the file", "no socket".
    pub(crate) failures: BTreeMap<String, u64>,
    /// Failed steps started again from a new port (`--session-retries`).
    pub(crate) retried_transfers: u64,
    /// Their causes, named as in `failures`.
    pub(crate) retry_causes: BTreeMap<String, u64>,
    /// Sessions that completed after at least one restart.
    pub(crate) sessions_recovered: u64,
    /// Answers taken for the answer to the current request that provably belong to another
    /// transfer: ERROR 5 first, or DATA whose bytes differ (see `--reuse-port`); each failed
    /// its transfer.
    pub(crate) wrong_answers: u64,
    /// Of the wrong answers, those sent from the client's previous transfer ID: a late packet of
    /// that transfer (with a server on one port for all transfers, all of them are).
    pub(crate) wrong_answers_from_previous_tid: u64,
    /// Datagrams from a source other than the transfer's ID, or to a client with no transfer
    /// running: ignored.
    pub(crate) stray_packets: u64,
    /// Late packets of another transfer that arrived before a request's first answer and that
    /// no client takes for it (a DATA other than block 1): ignored, as RFC 1350 clients do.
    pub(crate) stale_packets: u64,
    /// Of the stale packets, those from the client's previous transfer ID.
    pub(crate) stale_packets_from_previous_tid: u64,
    pub(crate) sessions: u64,
    pub(crate) probes: u64,
    pub(crate) misses: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed_s: f64,
    /// Time from the first session's start to the last session's end.
    pub(crate) makespan_s: f64,
    /// Verified payload bytes per second, in MB/s (10^6).
    pub(crate) goodput_mbps: f64,
    pub(crate) transfers_per_s: f64,
    pub(crate) retransmits: u64,
    pub(crate) dropped_on_purpose: u64,
    pub(crate) transfer_ms: Percentiles,
    pub(crate) first_block_ms: Percentiles,
    pub(crate) session_ms: Percentiles,
    /// Server CPU seconds (user + system, reaped children included), when --server-pid was given.
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) server_cpu_s_per_gib: Option<f64>,
    /// Server resident memory at the end, kB, when --server-pid was given.
    pub(crate) server_rss_kb: Option<u64>,
    /// The load generator's own CPU seconds (user + system) over the run.
    pub(crate) loadgen_cpu_s: Option<f64>,
    /// The same per GiB of verified payload.
    pub(crate) loadgen_cpu_s_per_gib: Option<f64>,
    /// The load generator's CPU seconds per second of the run and per thread: near 1, its
    /// threads never waited for the server, and the run measured the client's limit as much as
    /// the server's.
    pub(crate) loadgen_busy: Option<f64>,
}

/// The load generator's own CPU time over a run, and what to weigh it against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OwnCpu {
    /// User + system seconds of the whole process.
    pub(crate) cpu_s: f64,
    /// Wall-clock seconds of the run.
    pub(crate) wall_s: f64,
    /// Load threads.
    pub(crate) threads: usize,
}

impl Report {
    pub(crate) fn new(
        s: &Stats,
        elapsed: Duration,
        makespan: Duration,
        cpu: Option<f64>,
        rss: Option<u64>,
        own: Option<OwnCpu>,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let gib = s.bytes as f64 / (1u64 << 30) as f64;
        Self {
            transfers_ok: s.ok,
            transfers_failed: s.failed.values().sum(),
            failures: s.failed.clone(),
            retried_transfers: s.restarts,
            retry_causes: s.restart_causes.clone(),
            sessions_recovered: s.recovered,
            wrong_answers: s.wrong_answers,
            wrong_answers_from_previous_tid: s.wrong_from_previous,
            stray_packets: s.stray,
            stale_packets: s.stale,
            stale_packets_from_previous_tid: s.stale_from_previous,
            sessions: s.sessions,
            probes: s.probes,
            misses: s.misses,
            bytes: s.bytes,
            elapsed_s: elapsed.as_secs_f64(),
            makespan_s: makespan.as_secs_f64(),
            goodput_mbps: s.bytes as f64 / secs / 1e6,
            transfers_per_s: s.ok as f64 / secs,
            retransmits: s.retransmits,
            dropped_on_purpose: s.dropped,
            transfer_ms: Percentiles::of(&s.transfer),
            first_block_ms: Percentiles::of(&s.first_block),
            session_ms: Percentiles::of(&s.session),
            server_cpu_s: cpu,
            server_cpu_s_per_gib: cpu.filter(|_| gib > 0.0).map(|c| c / gib),
            server_rss_kb: rss,
            loadgen_cpu_s: own.map(|o| o.cpu_s),
            loadgen_cpu_s_per_gib: own.filter(|_| gib > 0.0).map(|o| o.cpu_s / gib),
            loadgen_busy: own
                .filter(|o| o.wall_s > 0.0 && o.threads > 0)
                .map(|o| o.cpu_s / (o.wall_s * o.threads as f64)),
        }
    }

    /// A few human-readable lines.
    pub(crate) fn human(&self) -> String {
        let p = |x: &Percentiles| {
            format!("p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}", x.p50, x.p90, x.p99, x.p999, x.max)
        };
        let mut s = format!(
            "transfers: {} ok, {} failed{}\nsessions: {} (probes {}, misses {})\nbytes: {} in {:.3} s (makespan {:.3} s): {:.1} MB/s, {:.0} transfers/s\nretransmits: {} (deliberately dropped DATA: {})\nrestarts: {}{} ({} sessions recovered); wrong answers: {} ({} from the previous transfer ID), stale packets ignored: {} ({} from the previous transfer ID), stray packets: {}\ntransfer ms: {}\nfirst block ms: {}\n",
            self.transfers_ok,
            self.transfers_failed,
            if self.failures.is_empty() { String::new() } else { format!(" {:?}", self.failures) },
            self.sessions,
            self.probes,
            self.misses,
            self.bytes,
            self.elapsed_s,
            self.makespan_s,
            self.goodput_mbps,
            self.transfers_per_s,
            self.retransmits,
            self.dropped_on_purpose,
            self.retried_transfers,
            if self.retry_causes.is_empty() { String::new() } else { format!(" {:?}", self.retry_causes) },
            self.sessions_recovered,
            self.wrong_answers,
            self.wrong_answers_from_previous_tid,
            self.stale_packets,
            self.stale_packets_from_previous_tid,
            self.stray_packets,
            p(&self.transfer_ms),
            p(&self.first_block_ms),
        );
        if let (Some(c), Some(g)) = (self.server_cpu_s, self.server_cpu_s_per_gib) {
            s += &format!("server cpu: {c:.3} s ({g:.2} s/GiB)\n");
        }
        if let Some(r) = self.server_rss_kb {
            s += &format!("server rss: {r} kB\n");
        }
        if let (Some(c), Some(b)) = (self.loadgen_cpu_s, self.loadgen_busy) {
            let per_gib = self.loadgen_cpu_s_per_gib.map(|g| format!(", {g:.2} s/GiB")).unwrap_or_default();
            s += &format!("load generator cpu: {c:.3} s{per_gib}, {:.0}% of its threads' time\n", 100.0 * b);
        }
        s
    }
}
