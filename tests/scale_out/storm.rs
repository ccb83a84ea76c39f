//! A boot storm from the client namespace: the load generator (built beside this test, as
//! `cargo test --workspace` builds it) run in the background with a deadline, its JSON report
//! read back, and one row of the table the test prints.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::common::netns::Netns;
use crate::lab::{CLIENT_BASE, VIP};

/// One storm at a time in this test binary: two CPUs shared by three servers and a load
/// generator are enough; a second storm beside it would only measure the contention.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds the machine for one set-up.
pub(crate) fn exclusive() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The boot loader every client fetches first (the size of pxelinux.0).
pub(crate) const LOADER: &str = "pxelinux.0";
/// The kernel every client fetches last.
pub(crate) const KERNEL: &str = "vmlinuz";

/// The shape of a storm: every client boots once as PXELINUX does (the boot loader, one
/// configuration file that is not there, the kernel), every byte compared with the root.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Storm {
    /// Clients, each on its own address from [`CLIENT_BASE`].
    pub(crate) clients: u32,
    /// Seconds over which they arrive.
    pub(crate) ramp: f64,
    /// The client's retransmission timeout, milliseconds.
    pub(crate) timeout_ms: u64,
    /// Retransmissions before a transfer is given up.
    pub(crate) retries: u8,
    /// Times a failed transfer starts again from a new port, as PXE firmware retries.
    pub(crate) session_retries: u32,
    /// Pause before such a restart, milliseconds.
    pub(crate) retry_pause_ms: u64,
    /// Every request of a client from one port (`--reuse-port`), as some firmware does, instead
    /// of a new port for each file.
    pub(crate) reuse_port: bool,
}

impl Storm {
    /// A thousand clients over two seconds, no restarts.
    pub(crate) const BASE: Self = Self {
        clients: 1000,
        ramp: 2.0,
        timeout_ms: 1000,
        retries: 5,
        session_retries: 0,
        retry_pause_ms: 0,
        reuse_port: false,
    };

    /// Starts the load generator in `client` against the VIP, its files in `root`.
    pub(crate) fn start(self, client: &Netns, root: &Path) -> Running {
        let loadgen = crate::common::loadgen().expect("the load generator is built");
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &client.name])
            .arg(loadgen)
            .args(["run", "--server", &format!("{VIP}:69"), "--json"])
            .args(["--storm", &self.clients.to_string(), "--ramp", &self.ramp.to_string()])
            .args(["--source-base", &CLIENT_BASE.to_string(), "--source-ips", &self.clients.to_string()])
            .args(["--profile", "pxelinux", "--misses", "1", "--file", LOADER, "--file", KERNEL])
            .args(["--verify", root.to_str().unwrap()])
            .args(["--client-timeout", &self.timeout_ms.to_string(), "--retries", &self.retries.to_string()]);
        if self.reuse_port {
            cmd.arg("--reuse-port");
        }
        if self.session_retries > 0 {
            cmd.args(["--session-retries", &self.session_retries.to_string()])
                .args(["--retry-pause", &self.retry_pause_ms.to_string()]);
        }
        // `ip netns exec` execs the load generator: the child's PID is its own.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("spawn the load generator");
        Running { child: Some(child), out, err, started: Instant::now(), deadline: self.deadline(), _dir: dir }
    }

    /// The longest the storm may take: the ramp, then every transfer of a session timing out
    /// on every attempt, and a margin for a slow machine.
    fn deadline(self) -> Duration {
        let transfer = self.timeout_ms * (u64::from(self.retries) + 1);
        let attempt = 3 * transfer + self.retry_pause_ms;
        Duration::from_secs_f64(self.ramp)
            + Duration::from_millis(attempt * u64::from(self.session_retries + 1)) * 2
            + Duration::from_secs(60)
    }
}

/// A storm in progress; the load generator is killed by PID on drop.
pub(crate) struct Running {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
    deadline: Duration,
    _dir: tempfile::TempDir,
}

impl Running {
    /// How long it has run.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for the end (panics past the deadline) and reads the report.
    pub(crate) fn finish(mut self) -> Report {
        let status = loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                break st;
            }
            assert!(
                self.started.elapsed() < self.deadline,
                "the storm did not end within {:?}: {}",
                self.deadline,
                std::fs::read_to_string(&self.err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("the load generator's report is not JSON ({e}; {status}): {out}\n{err}"));
        Report { json, status, raw: out.trim().to_string() }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The load generator's report.
pub(crate) struct Report {
    /// As parsed.
    pub(crate) json: serde_json::Value,
    /// Its exit status (2 when any transfer failed).
    pub(crate) status: ExitStatus,
    /// As printed.
    pub(crate) raw: String,
}

impl Report {
    /// A count from the report (0 when absent).
    pub(crate) fn count(&self, key: &str) -> u64 {
        self.json[key].as_u64().unwrap_or(0)
    }

    /// Transfers completed.
    pub(crate) fn ok(&self) -> u64 {
        self.count("transfers_ok")
    }

    /// Transfers that failed for good.
    pub(crate) fn failed(&self) -> u64 {
        self.count("transfers_failed")
    }

    /// Transfers started again from a new port after a failure.
    pub(crate) fn retried(&self) -> u64 {
        self.count("retried_transfers")
    }

    /// Failures by cause.
    pub(crate) fn failures(&self) -> Vec<(String, u64)> {
        self.json["failures"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
            .unwrap_or_default()
    }

    /// Restarts by cause (what failed the attempt that was restarted).
    pub(crate) fn retry_causes(&self) -> Vec<(String, u64)> {
        self.json["retry_causes"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
            .unwrap_or_default()
    }

    /// Failures whose cause contains `needle`.
    pub(crate) fn failures_with(&self, needle: &str) -> u64 {
        self.failures().iter().filter(|(k, _)| k.contains(needle)).map(|(_, v)| v).sum()
    }

    /// First request to last block, seconds.
    pub(crate) fn makespan(&self) -> f64 {
        self.json["makespan_s"].as_f64().unwrap_or(f64::NAN)
    }
}

/// The table's heading.
pub(crate) const HEADING: &str = "set-up                                             | ports             | makespan s |  ok  | failed | retried | recovered | per instance    | wrong source | server outcomes              | client failures and restarts";

/// One row of the table.
pub(crate) fn row(
    setup: &str,
    ports: &str,
    r: &Report,
    spread: &[usize],
    wrong_source: u64,
    server: &BTreeMap<String, usize>,
) -> String {
    let spread: Vec<String> = spread.iter().map(usize::to_string).collect();
    let mut failures: Vec<String> = r.failures().iter().map(|(k, v)| format!("{k}: {v}")).collect();
    failures.extend(r.retry_causes().iter().map(|(k, v)| format!("restarted after {k}: {v}")));
    let server: Vec<String> = server.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "{setup:<50} | {ports:<17} | {:>10.2} | {:>4} | {:>6} | {:>7} | {:>9} | {:<15} | {:>12} | {:<28} | {}",
        r.makespan(),
        r.ok(),
        r.failed(),
        r.retried(),
        r.count("sessions_recovered"),
        spread.join("/"),
        wrong_source,
        server.join(", "),
        if failures.is_empty() { "-".to_string() } else { failures.join(", ") }
    )
}
