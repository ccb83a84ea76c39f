//! The guides are checked against what they describe:
//!
//! - every bootstorm flag written in `docs/operations.md` and `docs/pxe.md` appears in the real
//!   binary's `--help`;
//! - the dnsmasq configuration of `docs/pxe.md` is, byte for byte, `tests/pxe/dnsmasq.conf`, the
//!   file the real-firmware test boots its machines with, and `dnsmasq --test` accepts it;
//! - the Kea configuration of `docs/pxe.md` passes `kea-dhcp4 -t`;
//! - every log record of `docs/pxe.md` (`msg="..."`, `outcome=...`, `reason=...`) is in
//!   `docs/logs.md`, and every metric name of the guides is served by `--metrics`.
//!
//! Which flags are bootstorm's, by the convention the documents state at their top:
//!
//! - in a fenced block, every flag of a command line whose program is `bootstorm` (a path ending
//!   in it, after an optional `ExecStart=` or `sudo`), with `\` continuation lines joined;
//! - outside fenced blocks, every flag of an inline code span that starts with `bootstorm ` or
//!   with a dash.
//!
//! Flags of other programs are written with the program's name in the span (`in.tftpd -B 1468`)
//! or in their configuration-file form (`tftp-max=50`), so they are never taken for bootstorm's.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The documents whose flags and metric names are checked, relative to the package root.
const DOCS: [&str; 2] = ["docs/operations.md", "docs/pxe.md"];

/// The PXE guide, relative to the package root.
const PXE_DOC: &str = "docs/pxe.md";

/// The dnsmasq configuration the real-firmware test runs with, relative to the package root.
const DNSMASQ_CONF: &str = "tests/pxe/dnsmasq.conf";

/// The comment that stands right before the dnsmasq block of the PXE guide.
const DNSMASQ_MARKER: &str = "<!-- tests/pxe/dnsmasq.conf:";

/// The comment that stands right before the Kea block of the PXE guide.
const KEA_MARKER: &str = "<!-- kea-dhcp4.conf:";

/// A file of the package, by its path relative to the package root.
fn package_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The text of a file of the package.
fn read(path: &str) -> String {
    std::fs::read_to_string(package_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The flag tokens (`-v`, `--root`) of a command or a span; values, `=`-suffixes and trailing
/// punctuation are dropped.
fn flag_tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace().filter_map(|word| {
        let word = word.split('=').next().unwrap_or(word);
        let word = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        let rest = word.strip_prefix("--").or_else(|| word.strip_prefix('-'))?;
        let is_flag = rest.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        is_flag.then(|| word.to_owned())
    })
}

/// Whether a line of a fenced block runs bootstorm.
fn runs_bootstorm(line: &str) -> bool {
    let line = line.trim_start();
    let line = line.strip_prefix("ExecStart=").unwrap_or(line);
    let line = line.strip_prefix("sudo ").unwrap_or(line);
    line.split_whitespace().next().is_some_and(|program| program == "bootstorm" || program.ends_with("/bootstorm"))
}

/// Every bootstorm flag the document mentions, each with the line it is first found on.
fn documented_flags(doc: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut in_fence = false;
    let mut command = String::new();
    let mut command_line = 0;
    for (index, line) in doc.lines().enumerate() {
        let number = index + 1;
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            command.clear();
            continue;
        }
        if in_fence {
            if command.is_empty() {
                command_line = number;
            }
            command.push_str(line.trim_end().trim_end_matches('\\'));
            command.push(' ');
            if line.trim_end().ends_with('\\') {
                continue;
            }
            if runs_bootstorm(&command) {
                found.extend(flag_tokens(&command).map(|flag| (flag, command_line)));
            }
            command.clear();
            continue;
        }
        // Inline code spans: the text between each pair of backticks.
        for span in line.split('`').skip(1).step_by(2) {
            if span.starts_with("bootstorm ") || span.starts_with('-') {
                found.extend(flag_tokens(span).map(|flag| (flag, number)));
            }
        }
    }
    found
}

/// The flags `bootstorm --help` lists: the dash-led words at the start of its option lines.
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .flat_map(|line| {
            line.split_whitespace()
                .take_while(|word| word.starts_with('-'))
                .map(|word| word.trim_end_matches(',').to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_flag_in_the_guides_exists() {
    let out = Command::new(env!("CARGO_BIN_EXE_bootstorm")).arg("--help").output().expect("bootstorm --help runs");
    assert!(out.status.success(), "bootstorm --help failed: {}", String::from_utf8_lossy(&out.stderr));
    let help = help_flags(&String::from_utf8_lossy(&out.stdout));
    assert!(help.contains("--root") && help.contains("-r"), "--help was not parsed: {help:?}");

    for doc_path in DOCS {
        let documented = documented_flags(&read(doc_path));
        assert!(documented.len() > 20, "too few flags found in {doc_path}; was the convention changed? {documented:?}");
        let missing: Vec<_> = documented.iter().filter(|(flag, _)| !help.contains(flag)).collect();
        assert!(
            missing.is_empty(),
            "{doc_path} mentions flags that `bootstorm --help` does not list (flag, line): {missing:?}"
        );
    }
}

#[test]
fn the_convention_separates_bootstorm_flags_from_other_programs() {
    let doc = "\
| `in.tftpd -B 1468` (`in.tftpd --blocksize`) | `--max-blksize 1468` | `tftp-max=50` |
Run `bootstorm --root /srv/tftp -v`, not `dnsmasq --enable-tftp`.
```ini
ExecStart=/usr/local/bin/bootstorm --root /srv/tftp \\
    --listen [::]:69
port=0
```
```sh
cargo build --release
sudo bootstorm --workers=2
```
";
    let flags: Vec<_> = documented_flags(doc).into_iter().map(|(flag, _)| flag).collect();
    assert_eq!(flags, ["--max-blksize", "--root", "-v", "--root", "--listen", "--workers"]);

    let help = help_flags("  -r, --root <DIR>\n          Directory to serve --not-a-flag\n      --no-pin\n");
    assert_eq!(help, BTreeSet::from(["-r".to_owned(), "--root".to_owned(), "--no-pin".to_owned()]));
}

/// The body of the fenced block that follows the line starting with `marker` (blank lines
/// between them allowed), each line ending in a newline, as a file holding it would.
fn block_after(doc: &str, marker: &str) -> Option<String> {
    let mut lines = doc.lines().skip_while(|line| !line.starts_with(marker)).skip(1);
    let fence = lines.by_ref().find(|line| !line.trim().is_empty())?;
    if !fence.starts_with("```") {
        return None;
    }
    let mut body = String::new();
    for line in lines {
        if line.starts_with("```") {
            return Some(body);
        }
        body.push_str(line);
        body.push('\n');
    }
    None
}

/// The first line where two texts differ (1-based), with both versions of it.
fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    let (mut left, mut right) = (a.lines(), b.lines());
    for number in 1.. {
        match (left.next(), right.next()) {
            (None, None) => return (a != b).then(|| (number, "(end)".to_owned(), "(end)".to_owned())),
            (l, r) if l != r => {
                return Some((number, l.unwrap_or("(end)").to_owned(), r.unwrap_or("(end)").to_owned()));
            }
            _ => {}
        }
    }
    None
}

#[test]
fn the_pxe_guides_dnsmasq_configuration_is_the_file_the_pxe_test_boots_with() {
    let doc = read(PXE_DOC);
    let block = block_after(&doc, DNSMASQ_MARKER)
        .unwrap_or_else(|| panic!("{PXE_DOC}: no fenced block right after the line `{DNSMASQ_MARKER} ...`"));
    let file = read(DNSMASQ_CONF);
    if let Some((line, in_doc, in_file)) = first_difference(&block, &file) {
        panic!(
            "the dnsmasq block of {PXE_DOC} differs from {DNSMASQ_CONF} at its line {line}:\n  doc:  {in_doc}\n  file: {in_file}"
        );
    }
    assert_eq!(block, file, "the dnsmasq block of {PXE_DOC} and {DNSMASQ_CONF} differ");
}

#[test]
fn dnsmasq_accepts_the_pxe_test_configuration() {
    let out = match Command::new("dnsmasq")
        .arg("--test")
        .arg(format!("--conf-file={}", package_file(DNSMASQ_CONF).display()))
        .output()
    {
        Ok(out) => out,
        Err(e) => return common::cannot_run(&format!("dnsmasq --test: {e} (apt-get install dnsmasq-base)")),
    };
    assert!(
        out.status.success(),
        "dnsmasq --test refuses {DNSMASQ_CONF}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kea_accepts_the_pxe_guides_configuration() {
    let doc = read(PXE_DOC);
    let block = block_after(&doc, KEA_MARKER)
        .unwrap_or_else(|| panic!("{PXE_DOC}: no fenced block right after `{KEA_MARKER} ...`"));
    let config: serde_json::Value =
        serde_json::from_str(&block).unwrap_or_else(|e| panic!("the Kea block of {PXE_DOC} is not JSON: {e}\n{block}"));
    if Command::new("kea-dhcp4").arg("-v").output().is_err() {
        return common::cannot_run("kea-dhcp4 is not installed (apt-get install kea-dhcp4-server)");
    }
    // `kea-dhcp4 -t` refuses interfaces that do not exist: it runs in a network namespace that
    // has the configuration's interfaces, as bridges.
    if is_root() {
        let ns = common::netns::Netns::new("bsdocs");
        let interfaces = config["Dhcp4"]["interfaces-config"]["interfaces"].as_array().cloned().unwrap_or_default();
        for name in interfaces.iter().filter_map(|v| v.as_str()).filter(|n| *n != "*") {
            ns.ip(&format!("link add {name} type bridge"));
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kea-dhcp4.conf");
        std::fs::write(&file, &block).unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "kea-dhcp4", "-t"])
            .arg(&file)
            .output()
            .expect("run ip netns exec kea-dhcp4");
        assert!(
            out.status.success(),
            "kea-dhcp4 -t refuses the Kea block of {PXE_DOC}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        common::cannot_run("kea-dhcp4 -t needs the configuration's interfaces: a network namespace, so root");
    }
}

/// Whether the test runs as root (it reads the effective user id from /proc, so no `unsafe`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// A name found in a document, with the line it is on.
type Found = (String, usize);

/// The log records a document names, as written in the text log: each `msg="..."` or `msg=word`,
/// and each `outcome=` and `reason=` value, with the line it is on.
fn documented_records(doc: &str) -> (Vec<Found>, Vec<Found>) {
    let mut messages = Vec::new();
    let mut values = Vec::new();
    for (index, line) in doc.lines().enumerate() {
        for (at, _) in line.match_indices("msg=") {
            let rest = &line[at + 4..];
            let message = match rest.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap_or(""),
                None => rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or(""),
            };
            messages.push((message.to_owned(), index + 1));
        }
        for key in ["outcome=", "reason="] {
            for (at, _) in line.match_indices(key) {
                let value = line[at + key.len()..]
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("");
                // A bare key (`outcome=`) names the field, not a value.
                if !value.is_empty() {
                    values.push((value.to_owned(), index + 1));
                }
            }
        }
    }
    (messages, values)
}

/// The events `docs/logs.md` lists: the first code span of each table row.
fn listed_events(logs: &str) -> BTreeSet<String> {
    logs.lines().filter_map(|line| line.strip_prefix("| `")?.split('`').next().map(str::to_owned)).collect()
}

#[test]
fn every_log_record_in_the_pxe_guide_is_in_the_log_reference() {
    let logs = read("docs/logs.md");
    let events = listed_events(&logs);
    assert!(events.contains("transfer finished") && events.contains("counters"), "logs.md was not parsed: {events:?}");
    let (messages, values) = documented_records(&read(PXE_DOC));
    assert!(
        messages.len() > 10 && values.len() > 10,
        "too few log records found in {PXE_DOC}: {messages:?} {values:?}"
    );
    let unknown: Vec<_> = messages.iter().filter(|(m, _)| !events.contains(m)).collect();
    assert!(
        unknown.is_empty(),
        "{PXE_DOC} names log records that docs/logs.md does not list (record, line): {unknown:?}"
    );
    let unknown: Vec<_> = values.iter().filter(|(v, _)| !logs.contains(&format!("`{v}`"))).collect();
    assert!(
        unknown.is_empty(),
        "{PXE_DOC} names outcome= or reason= values docs/logs.md does not list (value, line): {unknown:?}"
    );
}

#[test]
fn the_log_record_convention_finds_messages_and_values() {
    let (messages, values) = documented_records(
        "see `msg=\"transfer finished\" outcome=probe`, `msg=counters`, `reason=not_found`, its `reason=`.",
    );
    assert_eq!(messages, [("transfer finished".to_owned(), 1), ("counters".to_owned(), 1)]);
    assert_eq!(values, [("probe".to_owned(), 1), ("not_found".to_owned(), 1)]);
    let events = listed_events("| `starting` | info |\n| Event | Level |\n| `request refused` | info | x |\n");
    assert_eq!(events, BTreeSet::from(["starting".to_owned(), "request refused".to_owned()]));
}

/// The metric names a document mentions: every `bootstorm_...` word.
fn documented_metrics(doc: &str) -> BTreeSet<String> {
    doc.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("bootstorm_") && word.len() > "bootstorm_".len())
        .map(str::to_owned)
        .collect()
}

/// The metric names the real binary serves: the families of its `# TYPE` lines and the names of
/// its samples.
fn served_metrics() -> BTreeSet<String> {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bootstorm"))
        .args(["--root", root.path().to_str().unwrap(), "-l", "127.0.0.1:0", "--workers", "1"])
        .args(["--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bootstorm");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let http = lines.find_map(|l| l.strip_prefix("metrics on ").map(str::to_owned)).expect("a `metrics on` line");
    let mut body = String::new();
    let mut stream = TcpStream::connect(&http).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    stream.read_to_string(&mut body).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    body.lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(family) => family.split_whitespace().next(),
            None if line.starts_with("bootstorm_") => line.split(['{', ' ']).next(),
            None => None,
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_in_the_guides_is_served() {
    let served = served_metrics();
    assert!(served.contains("bootstorm_requests_total"), "the scrape was not parsed: {served:?}");
    for doc_path in DOCS {
        let documented = documented_metrics(&read(doc_path));
        assert!(documented.len() > 5, "too few metric names found in {doc_path}: {documented:?}");
        let missing: Vec<_> = documented.difference(&served).collect();
        assert!(missing.is_empty(), "{doc_path} names metrics that --metrics does not serve: {missing:?}");
    }
}
