//! The load generator's scale-out flags against a scripted server: source addresses from a
//! base (`--source-base`), restarts of failed transfers (`--session-retries`) and one port for
//! every request of a client (`--reuse-port`), with what the report says of each.

mod fake;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use fake::{Answer, FakeServer};

/// A two-block file, so that its last DATA is block 2.
fn two_blocks() -> Vec<u8> {
    (0..700u32).map(|i| (i * 7 + 3) as u8).collect()
}

/// Runs the load generator against `server` with `args` (verifying against `dir`); returns its
/// exit status and its JSON report.
fn loadgen(server: &FakeServer, dir: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--server", &server.addr.to_string(), "--verify", dir.to_str().unwrap(), "--json"])
        .args(["--client-timeout", "200", "--retries", "2"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("loadgen {args:?}: {e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

/// A directory holding `files`, for `--verify`.
fn dir_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in files {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    dir
}

#[test]
fn source_base_spreads_clients_over_consecutive_addresses() {
    let data = two_blocks();
    let files = [("boot", &data[..])];
    let dir = dir_with(&files);
    let s = FakeServer::start(&files, |_| Answer::Serve);
    let (code, r) = loadgen(
        &s,
        dir.path(),
        &["--file", "boot", "--clients", "8", "--transfers", "8", "--source-base", "127.2.0.1", "--source-ips", "4"],
    );
    assert_eq!((code, r["transfers_ok"].as_u64()), (0, Some(8)), "{r}");
    assert!(s.requests().iter().all(|q| q.file == "boot"));
    let sources: BTreeSet<IpAddr> = s.requests().iter().map(|q| q.from.ip()).collect();
    let want: BTreeSet<IpAddr> = (1..=4).map(|i| format!("127.2.0.{i}").parse().unwrap()).collect();
    assert_eq!(sources, want);
}

#[test]
fn source_base_refuses_a_range_past_the_family_or_of_the_other_family() {
    for (base, n, server, why) in [
        ("255.255.255.254", "3", "127.0.0.1:69", "runs past the last address"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "3", "[::1]:69", "runs past the last address"),
        ("::1", "1", "127.0.0.1:69", "different address families"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--server", server, "--file", "f", "--source-base", base, "--source-ips", n])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{base} x {n}: {err}");
    }
}

#[test]
fn session_retries_restart_a_refused_transfer_from_a_new_port() {
    let data = two_blocks();
    let files = [("boot", &data[..])];
    let dir = dir_with(&files);
    // ERROR 0 to the first request, the file to the second.
    let s = FakeServer::start(&files, |n| if n == 0 { Answer::Refuse(0) } else { Answer::Serve });
    let (code, r) = loadgen(&s, dir.path(), &["--file", "boot", "--session-retries", "2", "--retry-pause", "50"]);
    assert_eq!((code, r["transfers_ok"].as_u64(), r["transfers_failed"].as_u64()), (0, Some(1), Some(0)), "{r}");
    assert_eq!((r["retried_transfers"].as_u64(), r["sessions_recovered"].as_u64()), (Some(1), Some(1)), "{r}");
    assert_eq!(r["retry_causes"]["server error 0"].as_u64(), Some(1), "{r}");
    assert!(r["failures"].as_object().unwrap().is_empty(), "{r}");
    let q = s.requests();
    assert_eq!(q.len(), 2);
    assert!(q[0].from.ip() == q[1].from.ip() && q[0].from.port() != q[1].from.port(), "{q:?}");
}

#[test]
fn session_retries_restart_after_a_timeout_and_fail_once_spent() {
    let data = two_blocks();
    let files = [("boot", &data[..])];
    let dir = dir_with(&files);
    // Silent to the first three requests (one attempt: the request and its two retransmissions),
    // then serving.
    let s = FakeServer::start(&files, |n| if n < 3 { Answer::Silent } else { Answer::Serve });
    let (code, r) = loadgen(&s, dir.path(), &["--file", "boot", "--session-retries", "1", "--retry-pause", "0"]);
    assert_eq!((code, r["transfers_ok"].as_u64(), r["sessions_recovered"].as_u64()), (0, Some(1), Some(1)), "{r}");
    assert_eq!(r["retry_causes"]["timeout"].as_u64(), Some(1), "{r}");

    // Refused every time: two attempts, then one final failure (and only one).
    let s = FakeServer::start(&files, |_| Answer::Refuse(2));
    let (code, r) = loadgen(&s, dir.path(), &["--file", "boot", "--session-retries", "1", "--retry-pause", "0"]);
    assert_eq!((code, r["transfers_failed"].as_u64(), r["retried_transfers"].as_u64()), (2, Some(1), Some(1)), "{r}");
    assert_eq!(r["failures"]["server error 2"].as_u64(), Some(1), "{r}");
    assert_eq!(r["sessions_recovered"].as_u64(), Some(0), "{r}");
    assert_eq!(s.requests().len(), 2);
}

#[test]
fn session_retries_never_restart_an_expected_miss() {
    let data = two_blocks();
    let files = [("boot", &data[..])];
    let dir = dir_with(&files);
    // The configuration misses' ERROR 1 still counts as misses, never as restarts.
    let s = FakeServer::start(&files, |_| Answer::Serve);
    let (code, r) = loadgen(
        &s,
        dir.path(),
        &["--profile", "pxelinux", "--misses", "2", "--file", "boot", "--storm", "20", "--session-retries", "1"],
    );
    assert_eq!((code, r["transfers_ok"].as_u64(), r["misses"].as_u64()), (0, Some(20), Some(40)), "{r}");
    assert_eq!(r["retried_transfers"].as_u64(), Some(0), "{r}");
}

#[test]
fn session_retries_recover_a_whole_refused_storm() {
    let data = two_blocks();
    let files = [("boot", &data[..])];
    let dir = dir_with(&files);
    // The storm's 50 first requests refused, the restarts (300 ms later) served.
    let s = FakeServer::start(&files, |n| if n < 50 { Answer::Refuse(0) } else { Answer::Serve });
    let (code, r) = loadgen(
        &s,
        dir.path(),
        &["--file", "boot", "--storm", "50", "--threads", "2", "--session-retries", "1", "--retry-pause", "300"],
    );
    assert_eq!((code, r["transfers_ok"].as_u64(), r["sessions_recovered"].as_u64()), (0, Some(50), Some(50)), "{r}");
    assert_eq!(r["retried_transfers"].as_u64(), Some(50), "{r}");
    assert!(r["makespan_s"].as_f64().unwrap() >= 0.3, "{r}");
    let ports: BTreeSet<u16> = s.requests().iter().map(|q| q.from.port()).collect();
    assert_eq!(ports.len(), 100);
}

/// Three files for the one-port tests: a one-block configuration file and two two-block files.
fn three_files() -> [(&'static str, Vec<u8>); 3] {
    let data = two_blocks();
    [("cfg", data[..100].to_vec()), ("boot", data.clone()), ("kernel", data.iter().rev().copied().collect())]
}

/// Runs a session fetching `names` against a server that answers the second request with
/// `stale` first; returns the exit status, the report and the requests the server saw.
fn stale_run(names: [&str; 2], stale: Answer, extra: &[&str]) -> (i32, serde_json::Value, Vec<fake::Request>) {
    let files = three_files();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, &d[..])).collect();
    let dir = dir_with(&files);
    let s = FakeServer::start(&files, move |n| if n == 1 { stale } else { Answer::Serve });
    let mut args = vec!["--file", names[0], "--file", names[1], "--retry-pause", "100"];
    args.extend_from_slice(extra);
    let (code, r) = loadgen(&s, dir.path(), &args);
    (code, r, s.requests())
}

#[test]
fn reuse_port_ignores_a_stale_last_data_and_counts_it() {
    // One port: the previous transfer's block 2 comes first; no client takes it for the first
    // answer (it is not block 1): ignored and counted, and the real answer is taken.
    let (code, r, q) = stale_run(["boot", "kernel"], Answer::StaleData, &["--reuse-port"]);
    assert_eq!((code, r["transfers_ok"].as_u64(), r["wrong_answers"].as_u64()), (0, Some(2), Some(0)), "{r}");
    assert_eq!(r["stale_packets"].as_u64(), Some(1), "{r}");
    assert_eq!(r["stale_packets_from_previous_tid"].as_u64(), Some(1), "{r}");
    assert_eq!(r["retried_transfers"].as_u64(), Some(0), "{r}");
    // Both files of the session from one port.
    assert!(q.len() == 2 && q[0].from == q[1].from, "{q:?}");

    // A port per step: the stale DATA goes to the previous step's port, closed by now.
    let (code, r, q) = stale_run(["boot", "kernel"], Answer::StaleData, &[]);
    assert_eq!((code, r["transfers_ok"].as_u64(), r["wrong_answers"].as_u64()), (0, Some(2), Some(0)), "{r}");
    assert_eq!(r["stale_packets"].as_u64(), Some(0), "{r}");
    assert!(q.len() == 2 && q[0].from.ip() == q[1].from.ip() && q[0].from != q[1].from, "{q:?}");
}

#[test]
fn reuse_port_counts_a_first_error_5_and_wrong_bytes() {
    let (code, r, _) =
        stale_run(["boot", "kernel"], Answer::StaleError(5), &["--reuse-port", "--session-retries", "1"]);
    assert_eq!((code, r["transfers_ok"].as_u64(), r["wrong_answers"].as_u64()), (0, Some(2), Some(1)), "{r}");
    assert_eq!(r["retry_causes"]["wrong answer: ERROR 5 first"].as_u64(), Some(1), "{r}");

    // The previous file's only block is block 1, as the next file's first is: the bytes tell.
    let (code, r, _) = stale_run(["cfg", "kernel"], Answer::StaleData, &["--reuse-port", "--session-retries", "1"]);
    assert_eq!((code, r["transfers_ok"].as_u64(), r["wrong_answers"].as_u64()), (0, Some(2), Some(1)), "{r}");
    assert_eq!(r["retry_causes"]["wrong data"].as_u64(), Some(1), "{r}");
}

#[test]
fn reuse_port_keeps_the_port_across_closed_loop_sessions() {
    let data = two_blocks();
    let files = [("boot", &data[..])];
    let dir = dir_with(&files);
    let s = FakeServer::start(&files, |_| Answer::Serve);
    let (code, r) = loadgen(&s, dir.path(), &["--file", "boot", "--clients", "2", "--transfers", "6", "--reuse-port"]);
    assert_eq!((code, r["transfers_ok"].as_u64(), r["wrong_answers"].as_u64()), (0, Some(6), Some(0)), "{r}");
    let ports: BTreeSet<u16> = s.requests().iter().map(|q| q.from.port()).collect();
    assert_eq!(ports.len(), 2, "{:?}", s.requests());
}

#[test]
fn a_first_answer_from_another_address_is_a_stray() {
    // A DATA 1 of other bytes from 127.0.0.2 arrives first: firmware takes answers only from
    // the address it asked, and so does the load generator.
    let (code, r, _) = stale_run(["boot", "kernel"], Answer::FromElsewhere, &[]);
    assert_eq!((code, r["transfers_ok"].as_u64(), r["wrong_answers"].as_u64()), (0, Some(2), Some(0)), "{r}");
    assert_eq!(r["stray_packets"].as_u64(), Some(1), "{r}");
}
