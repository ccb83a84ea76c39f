//! `--metrics`: the Prometheus text exposition of the server's counters, served over HTTP on a
//! thread of its own. The workers only count (relaxed atomics, one writer each, see
//! `bootstorm::server::stats`); a scrape reads every worker's counters and histograms and sums
//! them, so scraping costs the workers nothing. The series are listed in docs/operations.md.
//!
//! It lives in the binary, not the library: HTTP and the exposition format are how this program
//! publishes the library's counters, as the log records are.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use anyhow::Context;
use bootstorm::server::stats::{
    self, BLKSIZE_BOUNDS, Counter, CounterSnapshot, DURATION_BOUNDS_US, Direction, FIRST_ACK_BOUNDS_US, Finish,
    HistogramSnapshot, WINDOWSIZE_BOUNDS,
};
use bootstorm::server::{CounterReader, Server};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tracing::warn;

/// Reloads (SIGHUP) applied and refused, counted by the main thread.
static RELOADS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Counts a reload: applied (`ok`) or refused.
pub(crate) fn count_reload(ok: bool) {
    RELOADS[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
}

/// The media type of the Prometheus text format this endpoint writes.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running exporter: its HTTP server and the thread that answers it.
pub(crate) struct Exporter {
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Exporter {
    /// Binds `addr` and starts answering scrapes of `server`'s counters, which go on until
    /// [`stop`](Self::stop), through the server's stop and grace period.
    pub(crate) fn start(addr: SocketAddr, server: &Server, commit: &'static str) -> anyhow::Result<Self> {
        let http = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("--metrics {addr}: cannot listen"))?;
        let addr = http.server_addr().to_ip().context("--metrics: not an IP address")?;
        let http = Arc::new(http);
        let mut registry = Registry::with_prefix("bootstorm");
        registry.register_collector(Box::new(Scrape {
            counters: server.counter_reader(),
            backend: server.backend().to_string(),
            gso: server.gso().to_string(),
            commit,
        }));
        let h = Arc::clone(&http);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&h, &registry))
            .context("cannot start the metrics thread")?;
        Ok(Self { http, thread: Some(thread), addr })
    }

    /// The address it listens on, as bound.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and waits for the thread to end.
    pub(crate) fn stop(mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers requests until the server is unblocked: `GET /metrics` with the exposition, anything
/// else 404 (or 405 for another method on /metrics).
fn serve(http: &tiny_http::Server, registry: &Registry) {
    for req in http.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let response = match (req.method(), path) {
            (tiny_http::Method::Get, "/metrics") => {
                let mut body = String::new();
                match prometheus_client::encoding::prometheus_text::encode(&mut body, registry) {
                    Ok(()) => tiny_http::Response::from_string(body).with_header(header(CONTENT_TYPE)),
                    Err(_) => tiny_http::Response::from_string("encoding failed\n").with_status_code(500),
                }
            }
            (_, "/metrics") => tiny_http::Response::from_string("GET only\n").with_status_code(405),
            _ => tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404),
        };
        if let Err(e) = req.respond(response) {
            warn!(error = %e, "metrics: cannot answer a scrape");
        }
    }
}

fn header(content_type: &str) -> tiny_http::Header {
    // A constant, valid header: parsing cannot fail.
    tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()).expect("valid header")
}

/// What a scrape reads: the server's counters, each worker's, read at the scrape.
struct Scrape {
    counters: CounterReader,
    /// The `io_info` labels: the backend and whether GSO is in use.
    backend: String,
    gso: String,
    commit: &'static str,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let workers = self.counters.read();
        let sum = |f: &dyn Fn(&CounterSnapshot) -> u64| workers.iter().map(f).sum::<u64>();
        for c in Counter::ALL {
            if c.is_gauge() {
                // A gauge per worker: where transfers pile up shows which worker is loaded.
                let mut m = enc.encode_descriptor(c.name(), c.help(), None, MetricType::Gauge)?;
                for (i, w) in workers.iter().enumerate() {
                    let labels = [("worker", i.to_string())];
                    ConstGauge::new(w.get(c) as i64).encode(m.encode_family(&labels)?)?;
                }
            } else {
                let m = enc.encode_descriptor(c.name(), c.help(), None, MetricType::Counter)?;
                ConstCounter::new(sum(&|w| w.get(c))).encode(m)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "transfers_finished",
            "Requests ended, by direction and outcome: a transfer's outcome, or the refusal (not_found, refused, busy) that kept it from starting.",
            None,
            MetricType::Counter,
        )?;
        for d in Direction::ALL {
            for f in Finish::ALL {
                let labels = [("direction", d.label()), ("outcome", f.label())];
                ConstCounter::new(sum(&|w| w.finished(d, f))).encode(m.encode_family(&labels)?)?;
            }
        }
        let commits = sum(&|w| w.finished(Direction::Write, Finish::Ok));
        let m = enc.encode_descriptor(
            "upload_commits",
            "Uploads put in place (complete write transfers).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(commits).encode(m)?;

        let classes = stats::file_classes();
        let mut m = enc.encode_descriptor(
            "transfer_duration_seconds",
            "Time from request to final ACK of completed transfers, by file class (--metrics-file-class).",
            None,
            MetricType::Histogram,
        )?;
        let names = classes.names().iter().map(String::as_str).chain(["other"]);
        for (i, name) in names.enumerate() {
            let h = merged(&workers, |w| w.duration(i));
            let labels = [("file_class", name)];
            histogram(m.encode_family(&labels)?, &h, &DURATION_BOUNDS_US, 1e6)?;
        }
        let mut m = enc.encode_descriptor(
            "time_to_first_ack_seconds",
            "Time from request to the client's first ACK of a download (ACK 0 of an OACK, ACK 1 in lockstep), by file class (--metrics-file-class).",
            None,
            MetricType::Histogram,
        )?;
        let names = classes.names().iter().map(String::as_str).chain(["other"]);
        for (i, name) in names.enumerate() {
            let h = merged(&workers, |w| w.first_ack(i));
            let labels = [("file_class", name)];
            histogram(m.encode_family(&labels)?, &h, &FIRST_ACK_BOUNDS_US, 1e6)?;
        }
        let m = enc.encode_descriptor(
            "negotiated_blksize_bytes",
            "Block size finished transfers ran with (512 without an OACK).",
            None,
            MetricType::Histogram,
        )?;
        histogram(m, &merged(&workers, CounterSnapshot::blksize), &BLKSIZE_BOUNDS, 1.0)?;
        let m = enc.encode_descriptor(
            "negotiated_windowsize_blocks",
            "Window size finished transfers ran with (1 without an OACK).",
            None,
            MetricType::Histogram,
        )?;
        histogram(m, &merged(&workers, CounterSnapshot::windowsize), &WINDOWSIZE_BOUNDS, 1.0)?;

        let mut m = enc.encode_descriptor(
            "reloads",
            "Reloads of the configuration (SIGHUP): applied (ok) or refused (a file that does not parse or check; the policy in force stays).",
            None,
            MetricType::Counter,
        )?;
        for (i, result) in ["ok", "refused"].into_iter().enumerate() {
            let labels = [("result", result)];
            ConstCounter::new(RELOADS[i].load(Ordering::Relaxed)).encode(m.encode_family(&labels)?)?;
        }

        let mut m = enc.encode_descriptor(
            "io_info",
            "The I/O backend the workers run on and whether UDP GSO is in use (always 1).",
            None,
            MetricType::Gauge,
        )?;
        let labels = [("backend", self.backend.as_str()), ("gso", self.gso.as_str())];
        ConstGauge::new(1i64).encode(m.encode_family(&labels)?)?;
        let mut m = enc.encode_descriptor(
            "build_info",
            "The version and commit of this binary (always 1).",
            None,
            MetricType::Gauge,
        )?;
        let labels = [("version", env!("CARGO_PKG_VERSION")), ("commit", self.commit)];
        ConstGauge::new(1i64).encode(m.encode_family(&labels)?)?;
        ConstGauge::new(workers.len() as i64).encode(enc.encode_descriptor(
            "workers",
            "Worker threads.",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// One histogram summed over the workers.
fn merged<const N: usize>(
    workers: &[CounterSnapshot],
    get: impl Fn(&CounterSnapshot) -> &HistogramSnapshot<N>,
) -> HistogramSnapshot<N> {
    let mut h = HistogramSnapshot::default();
    for w in workers {
        h.merge(get(w));
    }
    h
}

/// Writes `h`, whose bucket bounds are `bounds` (and +Inf), divided by `per_unit` (recorded
/// units per exposed unit: 1e6 for microseconds as seconds; a division keeps 0.025 exact).
fn histogram<const N: usize>(
    mut m: MetricEncoder<'_>,
    h: &HistogramSnapshot<N>,
    bounds: &[u64],
    per_unit: f64,
) -> fmt::Result {
    let upper = bounds.iter().map(|&b| b as f64 / per_unit).chain([f64::INFINITY]);
    let buckets: Vec<(f64, u64)> = upper.zip(h.counts).collect();
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum as f64 / per_unit, h.count(), &buckets, None)
}
