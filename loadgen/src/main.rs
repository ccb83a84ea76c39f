//! loadgen: drives thousands of concurrent TFTP transfers against any TFTP server, verifies every
//! byte, and reports throughput and latency percentiles (human-readable, or `--json` for the
//! benchmark harness). `loadgen ceiling` measures the machine's raw-UDP ceiling, and
//! `loadgen ceiling --pingpong` its lockstep (one DATA, one ACK) ceiling.

mod ceiling;
mod driver;
mod flood;
mod load;
mod pingpong;
mod plan;
mod proc;
mod stats;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bootstorm::proto::{ClientConfig, RequestOptions};
use clap::{Args, Parser, Subcommand};

use crate::plan::{Arrivals, FileSpec, Plan, Profile};

/// Load generator for TFTP servers.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, args_conflicts_with_subcommands = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run transfers (the default).
    Run(Box<RunArgs>),
    /// Reflection: requests from sources that never answer; bytes sent back per request byte.
    Reflect {
        /// Server address.
        #[arg(long)]
        server: SocketAddr,
        /// File to request.
        #[arg(long)]
        file: String,
        /// Option to send, NAME=VALUE (repeatable), e.g. blksize=1468.
        #[arg(long = "option", value_name = "NAME=VALUE", value_parser = parse_option)]
        options: Vec<(String, String)>,
        /// Requests (each from a new socket).
        #[arg(long, default_value_t = 100)]
        requests: u64,
        /// Seconds over which the requests are spread.
        #[arg(long, default_value_t = 1.0)]
        spread: f64,
        /// Seconds to keep listening after the last request.
        #[arg(long, default_value_t = 25.0)]
        window: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Flood: requests at a fixed rate, each from a new socket; counts answers and silence.
    Flood {
        /// Server address.
        #[arg(long)]
        server: SocketAddr,
        /// File to request.
        #[arg(long)]
        file: String,
        /// Option to send, NAME=VALUE (repeatable).
        #[arg(long = "option", value_name = "NAME=VALUE", value_parser = parse_option)]
        options: Vec<(String, String)>,
        /// Requests per second.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Seconds of flood.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Source addresses to spread over (127.2.0.1 and up; 1 = all from 127.0.0.1).
        #[arg(long, default_value_t = 1000)]
        sources: u32,
        /// Seconds to wait for each request's first answer.
        #[arg(long, default_value_t = 2.0)]
        wait: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the raw-UDP ceiling of this machine over loopback (sendmmsg → recvmmsg).
    Ceiling {
        /// Datagram size in bytes (1472 = a 1468-byte block and its header).
        #[arg(long, default_value_t = 1472)]
        size: usize,
        /// Seconds to measure.
        #[arg(long, default_value_t = 2.0)]
        duration: f64,
        /// Send N datagrams per send with UDP GSO and receive with UDP GRO: the ceiling for a
        /// server that sends windows as GSO sends to a receiver that takes them with GRO.
        #[arg(long, value_name = "N")]
        gso: Option<usize>,
        /// Lockstep ping-pong instead: --flows flows, each with one datagram in flight, a
        /// 4-byte request (an ACK) answered with one --size-byte datagram (a DATA: 1472 = a
        /// 1468-byte block and its header) and that answered with the next request; each side
        /// batches all its flows with recvmmsg/sendmmsg on one socket. Reports round trips/s
        /// and the lockstep goodput (the block's bytes once per round trip).
        #[arg(long, conflicts_with = "gso")]
        pingpong: bool,
        /// Flows of --pingpong (at most 4096).
        #[arg(long, value_name = "N", default_value_t = 32, requires = "pingpong")]
        flows: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Server address.
    #[arg(long, value_name = "ADDR:PORT")]
    server: Option<SocketAddr>,
    /// File to fetch; repeat for a list fetched in order by every session (boot loader, config,
    /// kernel, initrd...).
    #[arg(long = "file", value_name = "NAME")]
    files: Vec<String>,
    /// Concurrent clients (closed loop: a client starts a new session when one ends).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Sessions to run in all (closed loop).
    #[arg(long, value_name = "M")]
    transfers: Option<u64>,
    /// Stop starting sessions after SECS seconds (closed loop).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Boot storm: N clients arriving evenly over --ramp seconds, each running one session.
    #[arg(long, value_name = "N", conflicts_with_all = ["transfers", "duration"])]
    storm: Option<u64>,
    /// Arrival ramp of a boot storm, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    ramp: f64,
    /// blksize to ask for.
    #[arg(long)]
    blksize: Option<u16>,
    /// windowsize to ask for.
    #[arg(long)]
    windowsize: Option<u16>,
    /// Ask for the transfer size (tsize 0).
    #[arg(long)]
    tsize: bool,
    /// timeout option (seconds) to ask for.
    #[arg(long = "timeout-option", value_name = "SECS")]
    timeout_option: Option<u8>,
    /// Client retransmission timeout, milliseconds.
    #[arg(long = "client-timeout", value_name = "MS", default_value_t = 1000)]
    client_timeout: u64,
    /// Client retransmissions before giving up.
    #[arg(long, default_value_t = 5)]
    retries: u8,
    /// Restarts a session may make, as PXE firmware does: a transfer that fails (timeout after
    /// --retries, an ERROR other than a configured miss's file-not-found, a protocol violation,
    /// wrong or missing bytes) starts again, same file, from a new port on the same address,
    /// after --retry-pause; the session fails when its restarts are spent.
    #[arg(long, value_name = "N", default_value_t = 0)]
    session_retries: u32,
    /// Pause before a restart (--session-retries), milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    retry_pause: u64,
    /// Send every request of a client from one port, as some firmware does: every step of a
    /// session and, closed loop, the client's next sessions (a restart, --session-retries, still
    /// takes a new port, as firmware does after a failure). Without it each step has its own
    /// port. A late packet of the previous transfer (a retransmitted last DATA, an ERROR 5
    /// answering a duplicate ACK) can then arrive after the next request went out, and is not
    /// hidden. A packet no client takes for the first answer (a DATA other than block 1 to a
    /// read; to a write, a DATA or an ACK other than 0) is ignored, as RFC 1350 clients ignore
    /// a block they do not expect, and counted as `stale_packets`. Otherwise the first answer
    /// to a request sets the transfer ID, whichever transfer sent it; a "wrong answer"
    /// (`wrong_answers`) is one that provably belongs to another transfer: ERROR 5 as the
    /// first answer, or DATA whose bytes differ from the file's (--verify compares every
    /// byte). A wrong answer is counted and its transfer fails (restarted if
    /// --session-retries allows). Only the server's address is answered from (the first answer
    /// from another address is a stray, as firmware takes it); datagrams from a source other
    /// than the transfer ID are ignored as RFC 1350 says; both are counted as `stray_packets`.
    #[arg(long)]
    reuse_port: bool,
    /// Firmware pattern to follow.
    #[arg(long, value_enum, default_value_t = Profile::Plain)]
    profile: Profile,
    /// Configuration-file misses per session [default: 9 with --profile pxelinux, else 0].
    #[arg(long)]
    misses: Option<u32>,
    /// Fraction of received DATA to drop on purpose (exercises the server's retransmission).
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Upload the files instead (WRQ, to `<name>.<client>`; the bytes come from --verify DIR). The
    /// server needs --allow-write --upload-dir DIR --create --overwrite.
    #[arg(long, requires = "verify")]
    upload: bool,
    /// Hold each ACK this many milliseconds before sending it (keeps transfers open).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    hold: u64,
    /// Spread clients over this many source addresses: from --source-base, or without it
    /// 127.1.0.1 and up (IPv4 loopback servers only).
    #[arg(long, value_name = "N", default_value_t = 1)]
    source_ips: u32,
    /// First source address (IPv4 or IPv6, the server's family): client k binds to ADDR plus
    /// (k mod --source-ips), whatever the server's address. Every address of the range must be
    /// bindable: assigned, or in a local route (`ip route add local 198.18.128.0/20 dev lo`;
    /// IPv6 also needs `sysctl net.ipv6.ip_nonlocal_bind=1`).
    #[arg(long, value_name = "ADDR")]
    source_base: Option<IpAddr>,
    /// Directory with local copies of the files: every byte received is compared.
    #[arg(long, value_name = "DIR")]
    verify: Option<PathBuf>,
    /// The server's PID, to report its CPU time per GiB and its memory.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Threads, each with its own ring and share of the clients.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Receive buffers per thread (a power of two; at most 256 are used with --gro, which
    /// makes each 64 KiB).
    #[arg(long, default_value_t = 4096)]
    rx_buffers: u16,
    /// Receive with UDP GRO: DATA a server sent as one GSO send arrives as one buffer and is
    /// split here, as a NIC that segments in hardware would spare the server the work. Changes
    /// nothing for servers that send one datagram per send.
    #[arg(long)]
    gro: bool,
    /// Seed for deliberate drops.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Prints `report` as one line of JSON (for the harness) or as the text `human` makes of it.
fn print_report<T: serde::Serialize>(json: bool, report: &T, human: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{}", human(report));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Ceiling { size, duration, pingpong: true, flows, json, .. }) => {
            if flows == 0 || flows > pingpong::MAX_FLOWS || !(5..=65_507).contains(&size) {
                bail!("--pingpong takes 1 to {} --flows and a --size of 5 to 65507", pingpong::MAX_FLOWS);
            }
            let p = pingpong::measure(flows, size, Duration::from_secs_f64(duration))?;
            print_report(json, &p, |p| {
                format!(
                    "lockstep ping-pong ceiling: {:.0} round trips/s over {} flows ({} B request, {} B answer): {:.1} MB/s of {}-byte blocks{}",
                    p.round_trips_per_s,
                    p.flows,
                    p.request_bytes,
                    p.reply_bytes,
                    p.mbps,
                    p.block_bytes,
                    if p.resent > 0 { format!(", {} requests sent again", p.resent) } else { String::new() }
                )
            })
        }
        Some(Cmd::Ceiling { size, duration, gso, json, .. }) => {
            let duration = Duration::from_secs_f64(duration);
            let c = match gso {
                Some(n) => ceiling::measure_gso(size, n, duration)?,
                None => ceiling::measure(size, duration)?,
            };
            print_report(json, &c, |c| {
                format!("raw UDP ceiling: {:.1} MB/s ({:.0} datagrams/s of {} bytes)", c.mbps, c.datagrams_per_s, size)
            })
        }
        Some(Cmd::Reflect { server, file, options, requests, spread, window, json }) => {
            bootstorm::sys::rlimit::raise_fd_limit();
            let r = flood::reflect(
                server,
                &file,
                &options,
                requests,
                Duration::from_secs_f64(spread),
                Duration::from_secs_f64(window),
            )?;
            print_report(json, &r, |r| {
                format!(
                    "{} requests ({} B on the wire): {} datagrams back ({} B), amplification {:.1}x, {:.2} datagrams per request, last {:.1} s after its request",
                    r.requests,
                    r.request_bytes_on_wire,
                    r.responses,
                    r.response_bytes_on_wire,
                    r.amplification,
                    r.packets_per_request,
                    r.last_packet_after_s
                )
            })
        }
        Some(Cmd::Flood { server, file, options, rate, duration, sources, wait, json }) => {
            bootstorm::sys::rlimit::raise_fd_limit();
            let f = flood::flood(
                server,
                &file,
                &options,
                rate,
                Duration::from_secs_f64(duration),
                sources,
                Duration::from_secs_f64(wait),
            )?;
            print_report(json, &f, |f| {
                format!(
                    "{} requests at {}/s from {} sources: {} served, {} refused busy, {} other errors, {} silent ({:.1}% answered; answer p50 {:.2} ms p99 {:.2} ms)",
                    f.requests,
                    f.rate,
                    f.sources,
                    f.served,
                    f.refused_busy,
                    f.other_errors,
                    f.silent,
                    f.answered_share * 100.0,
                    f.answer_p50_ms,
                    f.answer_p99_ms
                )
            })
        }
        Some(Cmd::Run(args)) => run(*args),
        None => run(cli.run),
    }
}

/// Parses a `--option NAME=VALUE`.
fn parse_option(s: &str) -> Result<(String, String), String> {
    let (n, v) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok((n.to_string(), v.to_string()))
}

/// Resolves the run's arguments into the plan every thread shares: checks them, reads the
/// files to verify against, and applies the profile's defaults.
fn plan(a: RunArgs) -> anyhow::Result<Plan> {
    let Some(server) = a.server else { bail!("--server ADDR:PORT is required") };
    if a.files.is_empty() {
        bail!("at least one --file is needed");
    }
    if a.threads == 0 || a.clients == 0 {
        bail!("--threads and --clients must be at least 1");
    }
    if !a.rx_buffers.is_power_of_two() {
        bail!("--rx-buffers must be a power of two");
    }
    let source_ips = a.source_ips.max(1);
    if let Some(base) = a.source_base {
        if base.is_ipv4() != server.is_ipv4() {
            bail!("--source-base {base} and --server {server} are of different address families");
        }
        if plan::nth_address(base, u64::from(source_ips) - 1).is_none() {
            bail!("--source-base {base} with --source-ips {source_ips} runs past the last address of its family");
        }
    }
    let mut files = Vec::new();
    for name in a.files {
        let expect = match &a.verify {
            Some(dir) => {
                let p = dir.join(name.trim_start_matches('/'));
                Some(Arc::from(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?))
            }
            None => None,
        };
        files.push(FileSpec { name, expect });
    }
    let (def_blk, def_win, def_tsize) = match a.profile {
        Profile::Plain => (None, None, false),
        Profile::Uefi => (Some(1468), Some(4), true),
        Profile::Pxelinux => (Some(1408), None, true),
        Profile::Grub => (Some(1024), None, true),
    };
    let options = RequestOptions {
        blksize: a.blksize.or(def_blk),
        windowsize: a.windowsize.or(def_win),
        tsize: a.tsize || def_tsize,
        timeout: a.timeout_option,
    };
    let arrivals = match a.storm {
        Some(total) => Arrivals::Storm { total, ramp: Duration::from_secs_f64(a.ramp) },
        None => Arrivals::Closed {
            clients: a.clients,
            total: a.transfers.or(if a.duration.is_none() { Some(a.clients as u64) } else { None }),
            duration: a.duration.map(Duration::from_secs_f64),
        },
    };
    Ok(Plan {
        server,
        files,
        options,
        client: ClientConfig { timeout: Duration::from_millis(a.client_timeout), max_retries: a.retries },
        profile: a.profile,
        misses: a.misses.unwrap_or(if a.profile == Profile::Pxelinux { 9 } else { 0 }),
        drop: a.drop,
        upload: a.upload,
        hold: Duration::from_millis(a.hold),
        arrivals,
        threads: a.threads,
        source_ips,
        source_base: a.source_base,
        seed: a.seed,
        session_retries: a.session_retries,
        retry_pause: Duration::from_millis(a.retry_pause),
        reuse_port: a.reuse_port,
        rx_buffers: if a.gro { a.rx_buffers.min(256) } else { a.rx_buffers },
        gro: a.gro,
    })
}

/// Runs the transfers `a` describes and prints the report; exits with status 2 if any failed.
fn run(a: RunArgs) -> anyhow::Result<()> {
    bootstorm::sys::rlimit::raise_fd_limit();
    let json = a.json;
    let pid = a.server_pid;
    let report = load::run(plan(a)?, pid)?;
    print_report(json, &report, |r| r.human().trim_end().to_string())?;
    if report.transfers_failed > 0 {
        std::process::exit(2);
    }
    Ok(())
}
