//! The bootstorm server binary: parse flags, start the workers, wait for SIGINT or SIGTERM, stop
//! gracefully and exit 0.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bootstorm::server::Server;
use bootstorm::server::stats::CounterSnapshot;
use clap::Parser;
use tracing::{error, info, warn};

use crate::cli::{Cli, LogFormat, Settings};

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    small_pages_only();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("bootstorm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process. The allocator advises huge pages for its
/// arena, so the first touch of any 2 MiB span would make all of it resident: with tables that
/// grow a little per transfer, memory would rise in 2 MiB steps that have nothing to do with what
/// the server uses. The hot data (slot table, receive buffers) is a few MiB, well within the
/// reach of ordinary pages.
fn small_pages_only() {
    // SAFETY: prctl with integer arguments only; failure leaves the default, which is harmless.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Logs to stderr at `level` when one was given (flags win over the environment), else by
/// `RUST_LOG`, else at `info`.
fn init_logging(level: Option<&str>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.json().flatten_event(true).init(),
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and so in the workers it starts), to take them with
/// `sigtimedwait` instead of a handler.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set, then applied to this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `timeout` for one of the signals in `set`.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts =
        libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: `set` and `ts` are valid for the call; no siginfo is requested.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Settings { server: cfg, log_level, log_format, stats_interval: stats_every } =
        Settings::try_from(cli).context("invalid arguments")?;
    init_logging(log_level.as_deref(), log_format);
    let set = block_signals();
    let server = Server::start(cfg.clone()).context("cannot start")?;
    {
        // One line per address on stdout, for scripts that asked for port 0.
        let mut out = std::io::stdout().lock();
        for a in server.local_addrs() {
            writeln!(out, "listening on {a}")?;
        }
        out.flush()?;
    }
    info!(
        root = %cfg.root.display(),
        workers = cfg.workers,
        backend = %server.backend(),
        single_port = cfg.io.single_port,
        "bootstorm started"
    );
    let tick = stats_every.unwrap_or(Duration::from_secs(3600));
    loop {
        match wait_signal(&set, tick) {
            Some(sig) => {
                info!(signal = sig, grace_secs = cfg.grace.as_secs_f64(), "stopping: no new transfers");
                break;
            }
            None => {
                if stats_every.is_some() {
                    report_counters(&server.counters());
                }
            }
        }
    }
    let control = server.control();
    control.stop();
    // A second signal ends the transfers still running at once.
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let waiter = std::thread::spawn(move || {
        let r = server.wait();
        let _ = done_tx.send(());
        r
    });
    let mut aborted = false;
    while done_rx.recv_timeout(Duration::from_millis(50)).is_err() {
        if !aborted && wait_signal(&set, Duration::ZERO).is_some() {
            warn!("second signal: ending transfers now");
            aborted = true;
            control.abort();
        }
    }
    let report = waiter.join().map_err(|_| anyhow::anyhow!("waiter panicked"))??;
    report_counters(&report.workers);
    info!("{}", report.latencies.summary());
    info!("stopped");
    Ok(())
}

fn report_counters(workers: &[CounterSnapshot]) {
    for (i, w) in workers.iter().enumerate() {
        let line: Vec<String> = w.iter().filter(|(_, v)| *v != 0).map(|(c, v)| format!("{}={v}", c.name())).collect();
        info!(worker = i, "{}", if line.is_empty() { "idle".to_string() } else { line.join(" ") });
    }
}
