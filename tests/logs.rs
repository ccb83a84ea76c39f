//! The logs of the real `bootstorm` binary are safe to parse (docs/logs.md):
//!
//! - a client-chosen file name with spaces, `=`, quotes, backslashes and newlines comes back from
//!   the text (logfmt) and the JSON records as exactly one field with exactly its value, and
//!   creates no field of its own;
//! - JSON records parse, one per line, and carry `ts`, `level`, `msg` and the fields of each
//!   outcome;
//! - the `counters` record has the same key set every time, totals over the workers;
//! - `--log-level` wins over `RUST_LOG`, which applies without it;
//! - with `JOURNAL_STREAM` set (systemd), no `ts=`;
//! - a start-up error is printed once;
//! - every event the code emits is documented in docs/logs.md.
//!
//! `BOOTSTORM_TEST_BIN` runs these against another build of the binary (an older one, to see
//! them fail there). Traffic goes only to 127.0.0.0/8.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bootstorm::proto::RequestOptions;
use bootstorm::proto::wire::{Mode, Packet};
use common::{Raw, Root};

const SEC: Duration = Duration::from_secs(1);

/// The binary under test: `BOOTSTORM_TEST_BIN`, or this build's.
fn bin() -> PathBuf {
    std::env::var_os("BOOTSTORM_TEST_BIN").map_or_else(|| common::bin().into(), PathBuf::from)
}

/// A running server with its stderr in a file, stopped by PID.
struct Proc {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts the binary on 127.0.0.1 (port from the kernel) with `args` and the environment
    /// `env` (RUST_LOG and JOURNAL_STREAM unset unless given there).
    fn start(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(bin());
        cmd.args(["--root", root.to_str().unwrap(), "-l", "127.0.0.1:0", "--io", "epoll", "--workers", "2"])
            .args(["--no-pin", "--grace", "2"])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("spawn bootstorm");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            match rx.recv_timeout(10 * SEC) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        break a.parse().unwrap();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
        };
        Self { child: Some(child), addr, log, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; returns the whole log.
    fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        // SAFETY: signals our own child, by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + 20 * SEC;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "server did not stop: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One logfmt record: its fields in order, or `None` if the line is not logfmt as docs/logs.md
/// defines it (bare values of `[A-Za-z0-9_.:/@+-]`, or quoted with `\" \\ \n \r \t \xNN`).
fn logfmt(line: &str) -> Option<Vec<(String, String)>> {
    let b = line.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let k0 = i;
        while i < b.len() && b[i] != b'=' {
            if !(b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                return None;
            }
            i += 1;
        }
        let key = line.get(k0..i)?.to_string();
        if key.is_empty() || i == b.len() {
            return None;
        }
        i += 1;
        let mut val = Vec::new();
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match *b.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        i += 1;
                        match *b.get(i)? {
                            b'"' => val.push(b'"'),
                            b'\\' => val.push(b'\\'),
                            b'n' => val.push(b'\n'),
                            b'r' => val.push(b'\r'),
                            b't' => val.push(b'\t'),
                            b'x' => {
                                val.push(u8::from_str_radix(line.get(i + 1..i + 3)?, 16).ok()?);
                                i += 2;
                            }
                            _ => return None,
                        }
                    }
                    c => val.push(c),
                }
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && b[i] != b' ' {
                if !(b[i].is_ascii_alphanumeric() || b"_.:/@+-".contains(&b[i])) {
                    return None;
                }
                val.push(b[i]);
                i += 1;
            }
            if val.is_empty() {
                return None;
            }
        }
        out.push((key, String::from_utf8(val).ok()?));
        match b.get(i) {
            None => {}
            Some(b' ') => i += 1,
            Some(_) => return None,
        }
    }
    Some(out)
}

/// Every line of a text log, parsed; panics on a line that is not logfmt.
fn text_records(log: &str) -> Vec<Vec<(String, String)>> {
    log.lines().map(|l| logfmt(l).unwrap_or_else(|| panic!("not logfmt: {l:?}\n{log}"))).collect()
}

/// Every line of a JSON log, parsed; panics on a line that is not one JSON object.
fn json_records(log: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    log.lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => panic!("not a JSON object: {l:?}\n{log}"),
        })
        .collect()
}

fn get<'a>(r: &'a [(String, String)], key: &str) -> Option<&'a str> {
    r.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn keys(r: &[(String, String)]) -> Vec<&str> {
    r.iter().map(|(k, _)| k.as_str()).collect()
}

/// File names chosen to forge fields, each with a record of its own.
const FORGERIES: [&str; 6] = [
    "missing file outcome=ok",
    "msg=x outcome=ok",
    "a=b",
    "say \"hi\" outcome=ok",
    "back\\slash\\\" outcome=ok",
    "new\nline ts=1 level=error msg=\"x\" outcome=ok",
];

/// A served file's forged name: control characters are refused in paths and a backslash is
/// read as a separator, so it has the rest.
const SERVED: &str = "served \"file\" outcome=timeout x=1 msg=\"x\"";

/// Sends an RRQ for each forged name (from its own loopback address, so that no two fold
/// together) and serves one forged name that exists; returns the log.
fn forge(format: &str) -> String {
    let root = Root::new();
    let served = SERVED;
    root.write(served, b"hello");
    let s = Proc::start(root.path(), &["--log-format", format, "--log-level", "debug"], &[]);
    for (i, name) in std::iter::once(&"plain-missing").chain(FORGERIES.iter()).enumerate() {
        let c = Raw::from(&format!("127.0.0.{}:0", 10 + i), s.addr);
        c.rrq(name, &[]);
        let (p, _) = c.expect(2 * SEC);
        assert!(matches!(Packet::decode(&p).unwrap(), Packet::Error { .. }), "{name:?}: {p:?}");
    }
    let got = Raw::from("127.0.0.40:0", s.addr).fetch(served, Mode::Octet, RequestOptions::default());
    assert_eq!(got.unwrap(), b"hello");
    std::thread::sleep(SEC / 2);
    s.stop()
}

#[test]
fn forged_names_stay_one_field_in_text() {
    let log = forge("text");
    let records = text_records(&log);
    for r in &records {
        let ks = keys(r);
        let unique: BTreeSet<_> = ks.iter().collect();
        assert_eq!(unique.len(), ks.len(), "a field twice: {r:?}");
    }
    let plain = records
        .iter()
        .find(|r| r.iter().any(|(_, v)| v == "plain-missing"))
        .unwrap_or_else(|| panic!("no record about plain-missing:\n{log}"));
    for name in FORGERIES.iter().chain(std::iter::once(&SERVED)) {
        let r = records
            .iter()
            .find(|r| r.iter().any(|(_, v)| v == name))
            .unwrap_or_else(|| panic!("no record with {name:?} as one field:\n{log}"));
        if *name != SERVED {
            assert_eq!(keys(r), keys(plain), "{name:?} changed the fields:\n{log}");
        } else {
            assert_eq!(get(r, "msg"), Some("transfer finished"), "{r:?}");
            assert_eq!(get(r, "outcome"), Some("ok"), "{r:?}");
        }
        // Only the fields that name a file (as asked, as resolved, or first and last of a fold).
        for (k, _) in r.iter().filter(|(_, v)| v == name) {
            assert!(["file", "path", "first", "last"].contains(&k.as_str()), "{name:?} as {k}: {r:?}");
        }
    }
}

#[test]
fn forged_names_stay_one_field_in_json() {
    let log = forge("json");
    // Keys twice in one object would be merged by the parser: count them in the raw line.
    for line in log.lines() {
        let m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        for k in m.keys() {
            assert_eq!(line.matches(&format!("{}:", serde_json::Value::from(k.as_str()))).count(), 1, "{line}");
        }
    }
    let records = json_records(&log);
    let has = |r: &serde_json::Map<String, serde_json::Value>, name: &str| r.values().any(|v| v.as_str() == Some(name));
    let plain = records.iter().find(|r| has(r, "plain-missing")).unwrap_or_else(|| panic!("no plain record:\n{log}"));
    let plain_keys: Vec<&String> = plain.keys().collect();
    for name in FORGERIES {
        let r = records.iter().find(|r| has(r, name)).unwrap_or_else(|| panic!("no record with {name:?}:\n{log}"));
        assert_eq!(r.keys().collect::<Vec<_>>(), plain_keys, "{name:?} changed the fields:\n{log}");
    }
    let done = records.iter().find(|r| has(r, SERVED)).unwrap_or_else(|| panic!("no transfer record:\n{log}"));
    assert_eq!(done["msg"], "transfer finished");
    assert_eq!(done["outcome"], "ok");
}

/// The fields a `transfer finished` record carries (docs/logs.md; issue 11 item 2).
const FINISHED: [&str; 12] = [
    "client",
    "local",
    "worker",
    "file",
    "path",
    "direction",
    "mode",
    "outcome",
    "bytes",
    "blocks",
    "retransmits",
    "ms",
];

#[test]
fn json_records_carry_their_fields_for_each_outcome() {
    let root = Root::new();
    let s = Proc::start(root.path(), &["--log-format", "json"], &[]);
    // ok
    let c = Raw::from("127.0.0.11:0", s.addr);
    assert_eq!(c.fetch("small.bin", Mode::Octet, RequestOptions::default()).unwrap(), root.file("small.bin"));
    // not found
    let c = Raw::from("127.0.0.12:0", s.addr);
    c.rrq("no-such-file", &[]);
    c.expect(2 * SEC);
    // an EDK2 size probe: tsize, then ERROR 8 after the OACK
    let c = Raw::from("127.0.0.13:0", s.addr);
    c.rrq("vmlinuz", &[("tsize", "0"), ("blksize", "1468")]);
    let (_, tid) = c.expect(2 * SEC);
    c.send(tid, b"\x00\x05\x00\x08User aborted the transfer\x00");
    std::thread::sleep(SEC / 2);
    let log = s.stop();
    let records = json_records(&log);
    for r in &records {
        for k in ["ts", "level", "msg"] {
            assert!(r.get(k).is_some_and(serde_json::Value::is_string), "no {k}: {r:?}");
        }
    }
    for line in log.lines() {
        assert!(line.starts_with("{\"ts\":\""), "ts first: {line}");
        let (level, msg) = (line.find(",\"level\":"), line.find(",\"msg\":"));
        assert!(level.is_some() && level < msg, "then level and msg: {line}");
    }
    let finished = |outcome: &str| {
        records
            .iter()
            .find(|r| r["msg"] == "transfer finished" && r["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} record:\n{log}"))
    };
    for outcome in ["ok", "probe"] {
        let r = finished(outcome);
        for k in FINISHED {
            assert!(r.contains_key(k), "{outcome}: no {k}: {r:?}");
        }
        assert!(r["bytes"].is_u64() && r["blocks"].is_u64() && r["worker"].is_u64(), "{r:?}");
        // Milliseconds with fixed precision: a number, or a decimal in a string.
        let ms = &r["ms"];
        assert!(ms.is_number() || ms.as_str().is_some_and(|m| m.parse::<f64>().is_ok()), "{r:?}");
    }
    assert_eq!(finished("ok")["bytes"], 3000);
    let refused = records
        .iter()
        .find(|r| r.values().any(|v| v == "no-such-file"))
        .unwrap_or_else(|| panic!("no record of the missing file at info:\n{log}"));
    assert_eq!(refused["msg"], "request refused", "{refused:?}");
    assert_eq!(refused["reason"], "not_found", "{refused:?}");
    assert!(refused.contains_key("client") && refused.contains_key("code"), "{refused:?}");
}

/// The name lookup in the records (docs/names.md): `path` as resolved and `lookup` saying what
/// decided it, in both formats, on a served transfer and on a refused request; a name only
/// normalised has no `lookup`.
#[test]
fn records_name_what_decided_the_file() {
    let root = Root::new();
    std::fs::create_dir_all(root.path().join("clients/127.0.0.21")).unwrap();
    std::fs::write(root.path().join("clients/127.0.0.21/small.bin"), b"own").unwrap();
    let map = root.path().join("names.map");
    std::fs::write(&map, "r ^alias/ \n").unwrap();
    for format in ["json", "text"] {
        let args = ["--log-format", format, "--map-file", map.to_str().unwrap(), "--client-dir", "clients/{ip}"];
        let s = Proc::start(root.path(), &args, &[]);
        let c = Raw::from("127.0.0.21:0", s.addr);
        assert_eq!(c.fetch("alias/small.bin", Mode::Octet, RequestOptions::default()).unwrap(), b"own");
        assert_eq!(c.fetch("alias/missing", Mode::Octet, RequestOptions::default()).unwrap_err().0, 1);
        assert_eq!(c.fetch("vmlinuz", Mode::Octet, RequestOptions::default()).unwrap().len(), 100_000);
        std::thread::sleep(SEC / 2);
        let log = s.stop();
        // Every record as a map of strings, whichever the format.
        let records: Vec<BTreeMap<String, String>> = match format {
            "json" => json_records(&log)
                .into_iter()
                .map(|r| r.into_iter().map(|(k, v)| (k, v.as_str().map_or(v.to_string(), str::to_owned))).collect())
                .collect(),
            _ => text_records(&log).into_iter().map(|r| r.into_iter().collect()).collect(),
        };
        let of = |file: &str| {
            records
                .iter()
                .find(|r| r.get("file").is_some_and(|f| f == file))
                .unwrap_or_else(|| panic!("{format}: no record of {file}:\n{log}"))
        };
        let served = of("alias/small.bin");
        assert_eq!(served["msg"], "transfer finished", "{served:?}");
        assert_eq!((&*served["path"], &*served["lookup"]), ("clients/127.0.0.21/small.bin", "rule:1+view"));
        let refused = of("alias/missing");
        assert_eq!(refused["msg"], "request refused", "{refused:?}");
        assert_eq!((&*refused["path"], &*refused["lookup"]), ("missing", "rule:1"));
        let plain = of("vmlinuz");
        assert!(plain.get("path").is_some_and(|p| p == "vmlinuz") && !plain.contains_key("lookup"), "{plain:?}");
    }
}

/// The `counters` records of a text log, as maps.
fn counters(log: &str) -> Vec<BTreeMap<String, String>> {
    text_records(log)
        .into_iter()
        .filter(|r| get(r, "msg") == Some("counters"))
        .map(|r| r.into_iter().collect())
        .collect()
}

#[test]
fn counters_have_a_stable_key_set_and_are_totals() {
    let root = Root::new();
    let s = Proc::start(root.path(), &["--stats-interval", "1"], &[]);
    std::thread::sleep(SEC * 3 / 2);
    for i in 0..4 {
        let c = Raw::from(&format!("127.0.0.{}:0", 20 + i), s.addr);
        assert_eq!(c.fetch("small.bin", Mode::Octet, RequestOptions::default()).unwrap(), root.file("small.bin"));
    }
    std::thread::sleep(SEC * 3 / 2);
    let log = s.stop();
    let all = counters(&log);
    assert!(all.len() >= 3, "periodic and exit records: {log}");
    let periodic: BTreeSet<&String> = all[0].keys().collect();
    for c in &all[..all.len() - 1] {
        assert_eq!(c.keys().collect::<BTreeSet<_>>(), periodic, "{log}");
    }
    for k in ["workers", "requests", "ok", "not_found", "bytes", "active", "ignored", "rate_limited"] {
        assert!(periodic.contains(&k.to_string()), "no {k}: {log}");
    }
    assert_eq!(all[0]["workers"], "2");
    assert_eq!(all[0]["ok"], "0", "zeros are written: {log}");
    let last = all.last().unwrap();
    assert!(periodic.iter().all(|k| last.contains_key(*k)), "the exit record has every counter: {log}");
    for k in ["completed", "p50_ms", "p99_ms", "max_ms"] {
        assert!(last.contains_key(k), "the exit record has the latencies: {log}");
    }
    // Totals: four transfers whichever workers served them, in one record.
    assert_eq!(last["ok"], "4", "{log}");
    assert_eq!(last["bytes"], "12000", "{log}");
    assert_eq!(last["completed"], "4", "{log}");
    assert_eq!(text_records(&log).iter().filter(|r| get(r, "msg") == Some("counters")).count(), all.len());
}

/// Whether a debug record (a file-not-found or a per-worker line) is in the log of a server
/// that saw one missing file.
fn logs_debug(args: &[&str], env: &[(&str, &str)]) -> bool {
    let root = Root::new();
    let s = Proc::start(root.path(), args, env);
    let c = Raw::new(s.addr);
    c.rrq("no-such-file", &[]);
    c.expect(2 * SEC);
    let log = s.stop();
    text_records(&log).iter().any(|r| get(r, "level") == Some("debug"))
}

#[test]
fn log_level_wins_over_rust_log_which_applies_without_it() {
    assert!(!logs_debug(&["--log-level", "warn"], &[("RUST_LOG", "debug")]), "--log-level warn wins");
    assert!(logs_debug(&[], &[("RUST_LOG", "debug")]), "RUST_LOG applies without --log-level");
    assert!(!logs_debug(&[], &[]), "info by default");
}

#[test]
fn no_timestamp_under_journald() {
    let root = Root::new();
    let s = Proc::start(root.path(), &[], &[("JOURNAL_STREAM", "8:12345")]);
    let log = s.stop();
    let records = text_records(&log);
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r[0].0 == "level" && get(r, "ts").is_none()), "{log}");
    let s = Proc::start(root.path(), &[], &[]);
    let log = s.stop();
    for r in text_records(&log) {
        let ts = get(&r, "ts").unwrap_or_else(|| panic!("no ts: {log}"));
        // 2024-05-01T12:00:00.123Z
        assert_eq!((ts.len(), &ts[10..11], &ts[19..20], &ts[23..]), (24, "T", ".", "Z"), "{ts}");
    }
}

#[test]
fn the_starting_record_says_what_is_in_force() {
    let root = Root::new();
    let s = Proc::start(root.path(), &["--allow", "127.0.0.0/8", "--max-blksize", "1468"], &[]);
    let port = s.addr.port();
    let log = s.stop();
    let r = text_records(&log)
        .into_iter()
        .find(|r| get(r, "msg") == Some("starting"))
        .unwrap_or_else(|| panic!("no starting record: {log}"));
    let root_dir = std::fs::canonicalize(root.path()).unwrap();
    assert_eq!(get(&r, "root"), root_dir.to_str());
    let listen: SocketAddr = get(&r, "listen").and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!((listen.ip().to_string(), listen.port()), ("127.0.0.1".to_string(), port), "{r:?}");
    assert_eq!(get(&r, "allow"), Some("127.0.0.0/8"));
    assert_eq!(get(&r, "max_blksize"), Some("1468"));
    assert_eq!(get(&r, "workers"), Some("2"));
    assert_eq!(get(&r, "backend"), Some("epoll"));
    for k in ["version", "commit", "gso", "allow_write_from", "max_windowsize", "refuse", "timeout_ms", "retries"] {
        assert!(get(&r, k).is_some(), "no {k}: {r:?}");
    }
    for k in ["rate_per_source", "uploads", "ports", "nofile", "recv_buffer"] {
        assert!(get(&r, k).is_some(), "no {k}: {r:?}");
    }
    let commit = get(&r, "commit").unwrap();
    assert!(commit == "unknown" || commit.len() >= 12, "{commit}");
    let out = Command::new(bin()).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains(&format!("commit {commit}")) && version.contains("io_uring"), "{version}");
}

#[test]
fn a_start_up_error_is_printed_once() {
    let missing = tempfile::tempdir().unwrap().path().join("nonexistent");
    let out = Command::new(bin())
        .args(["--root", missing.to_str().unwrap(), "-l", "127.0.0.1:0", "--io", "epoll", "--workers", "1"])
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("cannot open root")).collect();
    assert_eq!(lines.len(), 1, "once: {err}");
    assert_eq!(lines[0].matches("No such file or directory").count(), 1, "the cause once: {err}");
    let r = logfmt(lines[0]).unwrap_or_else(|| panic!("one record: {err}"));
    assert_eq!(get(&r, "level"), Some("error"));
    assert!(get(&r, "msg").unwrap().starts_with("cannot start: cannot open root "), "{r:?}");
    // Before logging is set up (a bad argument), stderr only, once.
    let out = Command::new(bin()).args(["--root", "/", "-l", "127.0.0.1:0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "{err}");
    assert!(err.starts_with("bootstorm: invalid arguments: "), "{err}");
}

/// The message of every `info!`/`warn!`/`error!`/`debug!` under src/ that is a string literal
/// without placeholders: the names of the events.
fn events_in_code() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut events = BTreeSet::new();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        for mac in ["info!(", "warn!(", "error!(", "debug!("] {
            for (at, _) in src.match_indices(mac) {
                // The macro's arguments up to its closing parenthesis (messages hold none).
                let mut depth = 0;
                let mut end = at + mac.len();
                for (i, ch) in src[at + mac.len() - 1..].char_indices() {
                    match ch {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = at + mac.len() - 1 + i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let args = src[at + mac.len()..end].trim_end().trim_end_matches(',');
                // The message is the last argument; a string literal, taken when it formats nothing.
                if let Some(lit) = last_literal(args)
                    && !lit.contains('{')
                {
                    events.insert(unwrap_lines(lit));
                }
            }
        }
    }
    events
}

/// A literal's text with its line continuations (`\\` at the end of a line, then indentation)
/// removed, as the compiler does.
fn unwrap_lines(lit: &str) -> String {
    let mut out = String::new();
    let mut rest = lit;
    while let Some(at) = rest.find("\\\n") {
        out.push_str(&rest[..at]);
        rest = rest[at + 2..].trim_start();
    }
    out.push_str(rest);
    out
}

/// The string literal `args` ends with, without its quotes.
fn last_literal(args: &str) -> Option<&str> {
    let body = args.strip_suffix('"')?;
    let b = body.as_bytes();
    let open = (0..b.len()).rev().find(|&i| b[i] == b'"' && (i == 0 || b[i - 1] != b'\\'))?;
    Some(&body[open + 1..])
}

#[test]
fn every_event_in_the_code_is_documented() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/logs.md"))
        .expect("docs/logs.md exists");
    let events = events_in_code();
    for must in ["starting", "stopping", "stopped", "counters", "transfer finished"] {
        assert!(events.contains(must), "the scan finds {must:?}: {events:?}");
    }
    let missing: Vec<&String> = events.iter().filter(|e| !doc.contains(&format!("`{e}`"))).collect();
    assert!(missing.is_empty(), "events not in docs/logs.md (as `name`): {missing:?}");
}
