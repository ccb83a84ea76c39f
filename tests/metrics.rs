//! `--metrics`: the real binary serves the Prometheus text exposition over HTTP, and its numbers
//! agree with the transfers made (a download, a miss, a size probe); `promtool check metrics`
//! accepts it where promtool is installed; and a real Prometheus server scrapes it during a
//! transfer load and gives the same numbers back through its HTTP API.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bootstorm::proto::wire::{self, Mode, Packet};
use bootstorm::proto::{ErrorCode, RequestOptions};
use common::{Raw, Root, bin};

/// `GET /metrics` with a plain TCP stream: the status line and the body.
fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .parse()
        .unwrap()
}

/// Starts bootstorm on `root` with two workers, a metrics endpoint and the file class
/// `pxe=pxelinux`, all on 127.0.0.1 ports the kernel picks; returns it and its TFTP and
/// metrics addresses (read from its stdout).
fn start_with_metrics(root: &Root) -> (std::process::Child, SocketAddr, SocketAddr) {
    start_with_metrics_and(root, &[])
}

/// As [`start_with_metrics`], with `extra` flags.
fn start_with_metrics_and(root: &Root, extra: &[&str]) -> (std::process::Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(bin())
        .args(["--root", root.path().to_str().unwrap(), "-l", "127.0.0.1:0", "--workers", "2"])
        .args(["--metrics", "127.0.0.1:0", "--metrics-file-class", "pxe=pxelinux"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bootstorm");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let tftp: SocketAddr = lines.next().and_then(|l| l.strip_prefix("listening on ")?.parse().ok()).unwrap();
    let http: SocketAddr = lines.next().and_then(|l| l.strip_prefix("metrics on ")?.parse().ok()).unwrap();
    (child, tftp, http)
}

#[test]
fn scrape_counts_transfers_by_outcome_and_passes_promtool() {
    let root = Root::new();
    root.write("pxelinux.0", &common::bytes(3000, 1));
    root.write("other.bin", &common::bytes(100, 2));
    let (mut child, tftp, http) = start_with_metrics(&root);

    let c = Raw::new(tftp);
    assert_eq!(c.fetch("pxelinux.0", Mode::Octet, RequestOptions::default()).unwrap(), root.file("pxelinux.0"));
    assert_eq!(c.fetch("other.bin", Mode::Octet, RequestOptions::default()).unwrap().len(), 100);
    assert_eq!(c.fetch("missing", Mode::Octet, RequestOptions::default()).unwrap_err().0, 1);
    // A size probe: tsize asked, the OACK read, then ERROR 8 as EDK2 sends it.
    let probe = Raw::new(tftp);
    probe.rrq("pxelinux.0", &[("tsize", "0")]);
    let (oack, from) = probe.expect(Duration::from_secs(5));
    assert!(matches!(Packet::decode(&oack), Ok(Packet::Oack(_))));
    let mut buf = [0u8; 64];
    let n = wire::encode_error(ErrorCode(8), b"User aborted the transfer", &mut buf).unwrap();
    probe.send(from, &buf[..n]);

    // The probe's end is recorded when the server reads the ERROR: wait for it.
    let mut body = String::new();
    for _ in 0..100 {
        let (status, b) = scrape(http);
        assert!(status.contains("200"), "{status}");
        body = b;
        if value(&body, "bootstorm_probes_total") == 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = |outcome: &str| {
        value(&body, &format!("bootstorm_transfers_finished_total{{direction=\"read\",outcome=\"{outcome}\"}}"))
    };
    assert_eq!((read("ok"), read("not_found"), read("probe"), read("timeout")), (2.0, 1.0, 1.0, 0.0));
    assert_eq!(value(&body, "bootstorm_ok_total"), 2.0);
    assert_eq!(value(&body, "bootstorm_requests_total"), 4.0);
    assert_eq!(value(&body, "bootstorm_bytes_total"), 3100.0);
    assert_eq!(value(&body, "bootstorm_upload_commits_total"), 0.0);
    assert_eq!(value(&body, "bootstorm_transfer_duration_seconds_count{file_class=\"pxe\"}"), 1.0);
    assert_eq!(value(&body, "bootstorm_transfer_duration_seconds_count{file_class=\"other\"}"), 1.0);
    assert_eq!(value(&body, "bootstorm_negotiated_blksize_bytes_count"), 3.0);
    // Both downloads were acknowledged (ACK 1 in lockstep); the probe never was.
    assert_eq!(value(&body, "bootstorm_time_to_first_ack_seconds_count{file_class=\"pxe\"}"), 1.0);
    assert_eq!(value(&body, "bootstorm_time_to_first_ack_seconds_count{file_class=\"other\"}"), 1.0);
    assert_eq!(value(&body, "bootstorm_active{worker=\"0\"}") + value(&body, "bootstorm_active{worker=\"1\"}"), 0.0);
    assert!(body.contains("bootstorm_io_info{backend="), "{body}");
    assert!(body.contains(&format!("bootstorm_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    assert!(!body.contains("missing") && !body.contains("127.0.0.1"), "no file names or addresses as labels");

    match Command::new("promtool")
        .arg("check")
        .arg("metrics")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut p) => {
            p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && text.trim().is_empty(), "promtool check metrics: {text}\n{body}");
        }
        Err(_) => common::cannot_run("promtool check metrics: promtool not installed (apt-get install prometheus)"),
    }

    // SAFETY: kill(2) on the PID of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// A drain is watched to its end: after SIGTERM the server takes no new request but finishes
/// the transfer in progress during its grace period, and scrapes are answered all that time,
/// showing the transfer still active and then finished.
#[test]
fn scrapes_are_answered_through_the_grace_period() {
    let root = Root::new();
    root.write("kernel", &common::bytes(512 * 4 + 10, 3));
    let (mut child, tftp, http) = start_with_metrics_and(&root, &["--grace", "20"]);
    let c = Raw::new(tftp);
    c.rrq("kernel", &[]);
    let (data, from) = c.expect(Duration::from_secs(5));
    assert_eq!(common::data_of(&data).0, 1);

    // SAFETY: kill(2) on the PID of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    let active =
        |body: &str| value(body, "bootstorm_active{worker=\"0\"}") + value(body, "bootstorm_active{worker=\"1\"}");
    let (status, body) = scrape(http);
    assert!(status.contains("200"), "a scrape during the grace period: {status}");
    assert_eq!(active(&body), 1.0, "the transfer in progress");

    // The client finishes; the last scrape before the exit sees it done.
    let mut block = 1;
    loop {
        c.ack(from, block);
        let (p, _) = c.expect(Duration::from_secs(5));
        let (n, bytes) = common::data_of(&p);
        assert_eq!(n, block + 1);
        block = n;
        if bytes.len() < 512 {
            break;
        }
    }
    let (status, body) = scrape(http);
    assert!(status.contains("200"), "{status}");
    assert_eq!(value(&body, "bootstorm_requests_total"), 1.0);
    c.ack(from, block);
    assert!(child.wait().unwrap().success());
}

/// A child process stopped by its PID (SIGTERM, then reaped) when dropped: a failing test
/// leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// How long any one wait of the Prometheus test may take before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// `GET path` from `addr` over plain HTTP/1.0: the status code and the body, or `None` when
/// nothing answers (yet).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).ok()?;
    let mut all = String::new();
    s.read_to_string(&mut all).ok()?;
    let (head, body) = all.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// `s` percent-encoded for a URL query.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the instant PromQL query `q` (a single sample), or `None` when it has none.
fn promql(prometheus: SocketAddr, q: &str) -> Option<f64> {
    let (code, body) = http_get(prometheus, &format!("/api/v1/query?query={}", url_encode(q)))?;
    assert_eq!(code, 200, "query {q}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {q}: {e}: {body}"));
    assert_eq!(v["status"], "success", "query {q}: {body}");
    let result = v["data"]["result"].as_array()?;
    assert!(result.len() <= 1, "query {q}: one sample expected: {body}");
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// Polls `f` every 200 ms until it gives `Some`, for at most [`PATIENCE`].
fn within<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up after {PATIENCE:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn prometheus_scrapes_a_transfer_load_and_reads_back_its_counts() {
    if Command::new("prometheus").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        common::cannot_run("the prometheus binary is not installed (apt-get install prometheus)");
        return;
    }
    let root = Root::new();
    root.write("pxelinux.0", &common::bytes(3000, 1));
    root.write("vmlinuz", &common::bytes(20_000, 2));
    let (child, tftp, http) = start_with_metrics(&root);
    let bootstorm = Running(child);

    let dir = common::scratch();
    let web = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = dir.path().join("p.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: bootstorm\n    static_configs:\n      - targets: ['{http}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus"),
    );
    let prometheus_log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    within("Prometheus to be ready", || http_get(web, "/-/ready").filter(|(c, _)| *c == 200));
    within("Prometheus's first scrape of bootstorm", || promql(web, "up{job=\"bootstorm\"}").filter(|&v| v == 1.0));

    // The load: downloads of two file classes, lockstep and with options, and misses.
    let c = Raw::new(tftp);
    let windowed = RequestOptions { blksize: Some(1468), windowsize: Some(4), ..RequestOptions::default() };
    for i in 0..50 {
        let (name, opts) = if i % 5 < 3 { ("pxelinux.0", RequestOptions::default()) } else { ("vmlinuz", windowed) };
        assert_eq!(c.fetch(name, Mode::Octet, opts).unwrap(), root.file(name));
    }
    for i in 0..10 {
        assert_eq!(c.fetch(&format!("missing-{i}"), Mode::Octet, RequestOptions::default()).unwrap_err().0, 1);
    }
    let (ok, misses, bytes) = (50.0, 10.0, 30.0 * 3000.0 + 20.0 * 20_000.0);

    // Wait until a scrape that began a second after the load (so at least the second since)
    // is stored: every transfer's record is in it.
    let done = unix_now();
    within("two scrapes after the load", || {
        promql(web, "timestamp(bootstorm_requests_total)").filter(|&t| t >= done + 1.0)
    });
    let q = |query: &str| promql(web, query).unwrap_or_else(|| panic!("no sample for {query}\n{}", prometheus_log()));
    assert_eq!(q("sum(bootstorm_transfers_finished_total{outcome=\"ok\"})"), ok);
    assert_eq!(q("sum(bootstorm_transfers_finished_total{direction=\"read\",outcome=\"not_found\"})"), misses);
    assert_eq!(q("sum(bootstorm_transfers_finished_total)"), ok + misses);
    assert_eq!(q("bootstorm_requests_total"), ok + misses);
    assert_eq!(q("bootstorm_bytes_total"), bytes);
    assert_eq!(q("sum(bootstorm_active)"), 0.0);
    assert_eq!(q("bootstorm_transfer_duration_seconds_count{file_class=\"pxe\"}"), 30.0);
    assert_eq!(q("bootstorm_transfer_duration_seconds_count{file_class=\"other\"}"), 20.0);
    assert_eq!(q("bootstorm_time_to_first_ack_seconds_count{file_class=\"pxe\"}"), 30.0);
    assert_eq!(q("bootstorm_time_to_first_ack_seconds_count{file_class=\"other\"}"), 20.0);
    // Loopback answers in well under the 10 s top bound: every sample is in a finite bucket.
    assert_eq!(q("sum(bootstorm_time_to_first_ack_seconds_bucket{le=\"10\"})"), ok);
    assert_eq!(
        q(
            "sum(bootstorm_negotiated_windowsize_blocks_bucket{le=\"4\"}) - sum(bootstorm_negotiated_windowsize_blocks_bucket{le=\"2\"})"
        ),
        20.0
    );

    drop(prometheus);
    drop(bootstorm);
}
