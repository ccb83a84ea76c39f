//! Running a resolved plan: one driver thread per `--threads`, the live progress line on a
//! terminal, the end of a duration-bound run, and the merged report (with the server's CPU
//! time and memory when its PID is known, and the load generator's own CPU time).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::driver::{self, Shared};
use crate::plan::{Arrivals, Plan};
use crate::proc;
use crate::stats::{OwnCpu, Report, Stats};

/// Runs `plan` to the end on its threads and reports what they measured; `server_pid` is the
/// server's process, to measure its CPU time and memory.
pub(crate) fn run(plan: Plan, server_pid: Option<u32>) -> anyhow::Result<Report> {
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared::new());
    let cpu0 = server_pid.and_then(proc::cpu_seconds);
    let own0 = proc::cpu_seconds(std::process::id());
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..plan.threads)
        .map(|t| {
            let (plan, shared) = (Arc::clone(&plan), Arc::clone(&shared));
            std::thread::Builder::new().name(format!("loadgen-{t}")).spawn(move || driver::run(&plan, &shared, t))
        })
        .collect::<Result<_, _>>()?;
    let live = std::io::stderr().is_terminal();
    let duration = match plan.arrivals {
        Arrivals::Closed { duration, .. } => duration,
        Arrivals::Storm { .. } => None,
    };
    let mut last_bytes = 0;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        let elapsed = shared.clock.elapsed();
        if duration.is_some_and(|d| elapsed >= d) {
            shared.closing.store(true, Ordering::Relaxed);
        }
        if live && elapsed.as_millis() % 1000 < 100 {
            let bytes = shared.bytes.load(Ordering::Relaxed);
            eprint!(
                "\r{:>6.1} s  {} ok  {} failed  {:.1} MB/s   ",
                elapsed.as_secs_f64(),
                shared.ok.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed),
                (bytes - last_bytes) as f64 / 1e6
            );
            last_bytes = bytes;
        }
    }
    if live {
        eprintln!();
    }
    let mut stats = Stats::new();
    for h in handles {
        let s = h.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        stats.merge(&s);
    }
    let own = own0.zip(proc::cpu_seconds(std::process::id())).map(|(a, b)| OwnCpu {
        cpu_s: b - a,
        wall_s: started.elapsed().as_secs_f64(),
        threads: plan.threads,
    });
    let makespan = Duration::from_micros(shared.last_end_us.load(Ordering::Relaxed));
    let elapsed = makespan.max(Duration::from_micros(1));
    let cpu = match (cpu0, server_pid.and_then(proc::cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(Report::new(&stats, elapsed, makespan, cpu, server_pid.and_then(proc::rss_kb), own))
}
