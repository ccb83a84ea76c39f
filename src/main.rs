//! The bootstorm server binary: read the flags and the configuration file, start the workers,
//! reload the configuration on SIGHUP, wait for SIGINT or SIGTERM, stop gracefully and exit 0.
//! `bootstorm check` checks a configuration without serving; `bootstorm manpage` prints the man
//! page.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bootstorm::config::{Cidr, ServerConfig};
use bootstorm::server::Server;
use bootstorm::server::stats::{Counter, CounterSnapshot, Latencies};
use bootstorm::sys::privilege::{Identity, PrivilegeError};
use sd_notify::NotifyState;
use tracing::{debug, error, info, warn};

use crate::cli::hpa::{self, HpaCommand};
use crate::cli::process::{self, Detached, PidFile};
use crate::cli::{Args, Invocation, LoadError, Settings};

mod cli;
mod logging;
mod metrics;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The version `--version` prints and the `starting` record carries: the crate version, the
/// commit it was built from (see build.rs) and what this binary can use where the kernel has it.
pub(crate) const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BOOTSTORM_COMMIT"), "; io_uring, epoll, gso, openat2)");

fn main() -> ExitCode {
    small_pages_only();
    let argv: Vec<OsString> = std::env::args_os().collect();
    // Started as `in.tftpd` or `bootstorm hpa`: tftpd-hpa's flags, turned into bootstorm's.
    let (argv, launch) = match hpa::invoked(&argv) {
        None => (argv, Launch::default()),
        Some(flags) => match hpa::parse(flags, process::is_root(), process::umask()) {
            Ok(HpaCommand::Serve(h)) => {
                if let Some(mask) = h.umask {
                    process::set_umask(mask);
                }
                if h.inetd.is_some() {
                    if let Err(e) = process::socket_from_stdin() {
                        eprintln!("{}: {e}", hpa::PROGRAM);
                        return ExitCode::from(64);
                    }
                }
                (h.args, Launch { detach: h.detach, idle_exit: h.inetd })
            }
            Ok(HpaCommand::Version) => {
                println!("{}", hpa::version(VERSION, true));
                return ExitCode::SUCCESS;
            }
            Ok(HpaCommand::Help) => {
                print!("{}", hpa::USAGE);
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("{}: {e}", hpa::PROGRAM);
                // tftp-hpa's exit status for a command line it refuses (EX_USAGE).
                return ExitCode::from(64);
            }
        },
    };
    match Invocation::parse_from(argv) {
        Ok(Invocation::Serve(args)) => serve(args, launch),
        Ok(Invocation::Check(args)) => check(&args),
        Ok(Invocation::MapTest(t)) => match cli::maptest::run(&t) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bootstorm map-test: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Invocation::Probe(p)) => cli::probe::main(&p),
        Ok(Invocation::Manpage) => match cli::manpage(&mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bootstorm: cannot write the man page: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => e.exit(),
    }
}

/// How the process runs around the server, beyond its settings (in.tftpd's modes).
#[derive(Clone, Copy, Debug, Default)]
struct Launch {
    /// Leave the foreground once listening.
    detach: bool,
    /// Exit once no request has come for this long and no transfer is in progress (inetd mode).
    idle_exit: Option<Duration>,
}

/// Serves with `args` until SIGINT or SIGTERM (or, with `launch.idle_exit`, until idle); with
/// `launch.detach`, in the background once listening.
fn serve(args: Args, launch: Launch) -> ExitCode {
    // Before logging is set up, an error has only stderr; after, it is one `error` record (on
    // stderr too), never both.
    let settings = match args.settings() {
        Ok(s) => s,
        Err(LoadError::CommandLine(e)) => e.exit(),
        Err(e @ LoadError::File(_)) => {
            eprintln!("bootstorm: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("bootstorm: invalid arguments: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before any thread: the parent waits for the child to listen, and exits with its verdict.
    let detached = match launch.detach.then(process::detach).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bootstorm: cannot leave the foreground: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log_level = logging::init(settings.log_level.as_deref(), settings.log_format);
    match run(settings, &args, &log_level, detached, launch.idle_exit) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `bootstorm check`: everything a start checks before it binds a socket.
fn check(args: &Args) -> ExitCode {
    let name = args.config().map_or_else(|| "the command line".to_string(), |p| p.display().to_string());
    match checked(args) {
        Ok(()) => {
            println!("{name}: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bootstorm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The settings of `args`, the directories they name and the user they drop to.
fn checked(args: &Args) -> anyhow::Result<()> {
    let s = args.settings()?;
    let dir = |flag: &str, path: &std::path::Path| -> anyhow::Result<()> {
        let meta = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?;
        anyhow::ensure!(meta.is_dir(), "{flag} {}: not a directory", path.display());
        Ok(())
    };
    dir("--root", &s.server.root)?;
    if s.server.write.is_some() {
        dir("--upload-dir", s.server.upload_dir().unwrap_or(&s.server.root))?;
    }
    if let Some((user, group)) = &s.run_as {
        Identity::lookup(user, group.as_deref())?;
    }
    Ok(())
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

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in the workers it starts), to take
/// them with `sigtimedwait` instead of a handler; returns the stop signals and all three.
fn block_signals() -> (libc::sigset_t, libc::sigset_t) {
    // SAFETY: sigset manipulation on local sets, then applied to this thread only.
    unsafe {
        let mut stop: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut stop);
        libc::sigaddset(&mut stop, libc::SIGINT);
        libc::sigaddset(&mut stop, libc::SIGTERM);
        let mut all = stop;
        libc::sigaddset(&mut all, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        (stop, all)
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

fn run(
    settings: Settings,
    args: &Args,
    log_level: &logging::LogLevel,
    detached: Option<Detached>,
    idle_exit: Option<Duration>,
) -> anyhow::Result<()> {
    // What is in force: what the binary itself applies (the log level, the stats interval), and
    // what a reload cannot change (kept to tell a change that waits for a restart).
    let mut current = settings.clone();
    let Settings { server: cfg, metrics: metrics_addr, file_classes, run_as, pid_file, .. } = settings;
    let (stop_set, set) = block_signals();
    // Before the workers start: they read the classes when a transfer ends.
    let _ = bootstorm::server::stats::set_file_classes(file_classes);
    // Looked up before anything is bound: an unknown user is refused at once.
    let run_as = match run_as {
        Some((user, group)) => Some(Identity::lookup(&user, group.as_deref())?),
        None => None,
    };
    // The pid file is written once the sockets are bound, before privileges are dropped.
    let mut pid = None;
    let server = Server::start_then(cfg.clone(), || -> anyhow::Result<()> {
        if let Some(path) = &pid_file {
            pid = Some(PidFile::write(path).with_context(|| format!("--pid-file {}: cannot write", path.display()))?);
        }
        Ok(drop_root(run_as.as_ref(), &cfg)?)
    })
    .context("cannot start")?;
    let exporter = match metrics_addr {
        Some(addr) => Some(metrics::Exporter::start(addr, &server, env!("BOOTSTORM_COMMIT"))?),
        None => None,
    };
    {
        // One line per address on stdout, for scripts that asked for port 0.
        let mut out = std::io::stdout().lock();
        for a in server.local_addrs() {
            writeln!(out, "listening on {a}")?;
        }
        if let Some(e) = &exporter {
            writeln!(out, "metrics on {}", e.addr())?;
        }
        out.flush()?;
    }
    if let Some(d) = detached {
        d.ready().context("cannot tell the parent process that the server listens")?;
    }
    log_starting(&cfg, &server);
    notify(&[NotifyState::Ready, NotifyState::Status(&serving_status(&server))]);
    // With WatchdogSec= in the unit, a sign of life twice per period.
    let watchdog = sd_notify::watchdog_enabled().map(|period| period / 2);
    let mut last_stats = std::time::Instant::now();
    // Inetd mode: the requests seen so far, and since when.
    let mut idle = (requests(&server), std::time::Instant::now());
    let idle_tick = idle_exit.map(|d| (d / 4).max(Duration::from_millis(100)));
    loop {
        let stats_every = current.stats_interval;
        let tick = [stats_every, watchdog, idle_tick].into_iter().flatten().min().unwrap_or(Duration::from_secs(3600));
        match wait_signal(&set, tick) {
            Some(libc::SIGHUP) => {
                reload(&server, args, &mut current, log_level);
            }
            Some(sig) => {
                info!(signal = sig, grace_secs = server.config().grace.as_secs_f64(), "stopping");
                let status = format!("stopping: {} transfers in progress", in_flight(&server));
                notify(&[NotifyState::Stopping, NotifyState::Status(&status)]);
                break;
            }
            None => {
                if let Some(limit) = idle_exit {
                    let seen = requests(&server);
                    if seen != idle.0 || in_flight(&server) > 0 {
                        idle = (seen, std::time::Instant::now());
                    } else if idle.1.elapsed() >= limit {
                        info!(idle_secs = limit.as_secs_f64(), "no request for the idle timeout: exiting");
                        break;
                    }
                }
                if watchdog.is_some() {
                    notify(&[NotifyState::Watchdog, NotifyState::Status(&serving_status(&server))]);
                }
                // Every tick when the stats set it; with a shorter watchdog tick, once due.
                if stats_every.is_some_and(|every| last_stats.elapsed() + tick / 2 >= every) {
                    last_stats = std::time::Instant::now();
                    log_counters(&server.counters(), None);
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
        if !aborted && wait_signal(&stop_set, Duration::ZERO).is_some() {
            warn!("second signal: ending transfers now");
            aborted = true;
            control.abort();
        }
    }
    let report = waiter.join().map_err(|_| anyhow::anyhow!("waiter panicked"))??;
    // Scrapes go on through the grace period, so a drain can be watched to its end.
    if let Some(e) = exporter {
        e.stop();
    }
    log_counters(&report.workers, Some(&report.latencies));
    if let Some(Err((path, e))) = pid.map(PidFile::remove) {
        warn!(path = %path.display(), error = %e, "cannot remove the pid file");
    }
    info!("stopped");
    Ok(())
}

/// SIGHUP: reads the configuration again (the file, merged with the command line as given) and
/// applies it: the serving policy in every worker, for new transfers; the log level and the
/// stats interval here. A configuration that does not parse or check is refused and the one in
/// force stays; settings that need a restart are named in a warning.
fn reload(server: &Server, args: &Args, current: &mut Settings, log_level: &logging::LogLevel) {
    let mut reloading = vec![NotifyState::Reloading];
    reloading.extend(NotifyState::monotonic_usec_now().ok());
    notify(&reloading);
    let config = args.config().map_or_else(|| "none".to_string(), |p| p.display().to_string());
    let applied = args.settings().map_err(|e| e.to_string()).and_then(|new| {
        let r = server.reload(&new.server).map_err(|e| e.to_string())?;
        Ok((new, r))
    });
    match applied {
        Err(e) => {
            metrics::count_reload(false);
            error!(config = %config, error = %e, "reload refused");
        }
        Ok((new, r)) => {
            metrics::count_reload(true);
            let mut changed: Vec<&str> = r.changed.clone();
            let mut not_applied: Vec<&str> = r.not_applied.clone();
            if new.log_level != current.log_level {
                match log_level.set(new.log_level.as_deref()) {
                    Ok(()) => {
                        changed.push("--log-level");
                        current.log_level.clone_from(&new.log_level);
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot change the log level");
                        not_applied.push("--log-level");
                    }
                }
            }
            if new.stats_interval != current.stats_interval {
                changed.push("--stats-interval");
                current.stats_interval = new.stats_interval;
            }
            let fixed = [
                (new.log_format != current.log_format, "--log-format"),
                (new.metrics != current.metrics, "--metrics"),
                (new.file_classes != current.file_classes, "--metrics-file-class"),
                (new.run_as.as_ref().map(|r| &r.0) != current.run_as.as_ref().map(|r| &r.0), "--user"),
                (new.run_as.as_ref().map(|r| &r.1) != current.run_as.as_ref().map(|r| &r.1), "--group"),
                (new.pid_file != current.pid_file, "--pid-file"),
            ];
            not_applied.extend(fixed.into_iter().filter_map(|(differs, flag)| differs.then_some(flag)));
            info!(config = %config, changed = %list(&changed), "reloaded");
            if !not_applied.is_empty() {
                warn!(config = %config, settings = %list(&not_applied), "not applied until restart");
            }
        }
    }
    notify(&[NotifyState::Ready, NotifyState::Status(&serving_status(server))]);
}

/// Flag names, comma-separated; `none` when there are none.
fn list(flags: &[&str]) -> String {
    if flags.is_empty() { "none".to_string() } else { flags.join(",") }
}

/// Tells the service manager (systemd's `Type=notify`, through `$NOTIFY_SOCKET`) `states`;
/// nothing without the variable. A failure is logged and never stops the server.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager");
    }
}

/// Requests received over all workers.
fn requests(server: &Server) -> u64 {
    server.counters().iter().map(|w| w.get(Counter::Requests)).sum()
}

/// Transfers in progress over all workers.
fn in_flight(server: &Server) -> u64 {
    server.counters().iter().map(|w| w.get(Counter::Active)).sum()
}

/// The `STATUS=` line `systemctl status` shows while serving.
fn serving_status(server: &Server) -> String {
    let listen: Vec<String> = server.local_addrs().iter().map(ToString::to_string).collect();
    format!("serving on {}: {} transfers in progress", listen.join(", "), in_flight(server))
}

/// Becomes `run_as`, when given, before the first request is served; then checks, as that user,
/// that the root can be read and the upload directory written (the descriptors opened as root
/// still work, but every file is looked up with the new user's rights).
fn drop_root(run_as: Option<&Identity>, cfg: &ServerConfig) -> Result<(), PrivilegeError> {
    let Some(id) = run_as else { return Ok(()) };
    id.become_it()?;
    id.check_access(&cfg.root, false, "read --root")?;
    if cfg.write.is_some() {
        id.check_access(cfg.upload_dir().unwrap_or(&cfg.root), true, "write to the upload directory")?;
    }
    info!(user = %id.user, uid = id.uid, group = %id.group, gid = id.gid, "dropped privileges");
    Ok(())
}

/// The `starting` record: what is in force, the listen addresses as bound.
fn log_starting(cfg: &ServerConfig, server: &Server) {
    let policy = cfg.effective_policy();
    let root = std::fs::canonicalize(&cfg.root).unwrap_or_else(|_| cfg.root.clone());
    let listen: Vec<String> = server.local_addrs().iter().map(ToString::to_string).collect();
    let limits = &policy.limits;
    let refused: Vec<&str> = [
        (limits.refuse.blksize, "blksize"),
        (limits.refuse.tsize, "tsize"),
        (limits.refuse.timeout, "timeout"),
        (limits.refuse.windowsize, "windowsize"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let rto = policy.retransmit.rto;
    let rate = policy.rate_per_source.filter(|r| r.per_second > 0.0);
    let uploads = match &cfg.write {
        None => "off".to_string(),
        Some(_) => {
            let dir = cfg.upload_dir().unwrap_or(&cfg.root);
            let (u, dir) = (&policy.upload, std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()));
            format!("dir={} create={} overwrite={} max_size={}", dir.display(), u.create, u.overwrite, u.max_size)
        }
    };
    let ports = if cfg.io.single_port {
        "single".to_string()
    } else if let Some((lo, hi)) = cfg.io.port_range {
        format!("{lo}-{hi}")
    } else {
        "ephemeral".to_string()
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("BOOTSTORM_COMMIT"),
        root = %root.display(),
        listen = %listen.join(","),
        workers = cfg.workers,
        backend = %server.backend(),
        gso = server.gso(),
        allow = %cidrs(&policy.allow, "any"),
        allow_write_from = %cidrs(&policy.allow_write_from, "allowed"),
        max_blksize = limits.max_blksize,
        max_windowsize = limits.max_windowsize,
        max_window_bytes = limits.max_window_bytes.map_or_else(|| "none".to_string(), |b| b.to_string()),
        refuse = %if refused.is_empty() { "none".to_string() } else { refused.join(",") },
        timeout_ms = rto.initial.as_millis() as u64,
        min_timeout_ms = rto.min.as_millis() as u64,
        max_timeout_ms = rto.max.as_millis() as u64,
        retries = policy.retransmit.max_retries,
        rate_per_source = rate.map_or(0.0, |r| r.per_second),
        burst_per_source = rate.map_or(0.0, |r| r.burst),
        rate_limit_always = policy.rate_limit_always,
        world_readable_only = policy.world_readable_only,
        log_requests = policy.log_requests,
        uploads = %uploads,
        ports = %ports,
        max_transfers = cfg.io.max_transfers,
        nofile = server.nofile_limit(),
        recv_buffer = server.recv_buffer_granted(),
        "starting"
    );
}

/// A list of networks, comma-separated; `empty` when there are none.
fn cidrs(list: &[Cidr], empty: &str) -> String {
    if list.is_empty() { empty.to_string() } else { list.iter().map(ToString::to_string).collect::<Vec<_>>().join(",") }
}

/// The `counters` record: every counter summed over the workers (a stable key set, zeros
/// included), with the latency quantiles at exit; each worker's own at `debug`.
fn log_counters(workers: &[CounterSnapshot], latencies: Option<&Latencies>) {
    for (i, w) in workers.iter().enumerate() {
        debug!(worker = i, fields = %counter_pairs(std::slice::from_ref(w)), "worker counters");
    }
    let mut fields = counter_pairs(workers);
    if let Some(l) = latencies {
        fields.push(' ');
        fields.push_str(&latency_pairs(l));
    }
    info!(workers = workers.len(), fields = %fields, "counters");
}

/// `name=value` for every counter, summed over `workers` (gauges too: the server's total).
fn counter_pairs(workers: &[CounterSnapshot]) -> String {
    Counter::ALL
        .iter()
        .map(|&c| format!("{}={}", c.name(), workers.iter().map(|w| w.get(c)).sum::<u64>()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Transfer-time quantiles in milliseconds (3 decimals) and how many transfers they cover; all 0
/// when no transfer completed.
fn latency_pairs(l: &Latencies) -> String {
    let h = &l.transfer;
    let ms = |us: u64| if h.is_empty() { 0.0 } else { us as f64 / 1000.0 };
    format!(
        "completed={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    )
}
