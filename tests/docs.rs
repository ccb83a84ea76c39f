//! The operator's guide names only flags the binary has: every bootstorm flag written in
//! `docs/operations.md` appears in the real binary's `--help`.
//!
//! Which flags are bootstorm's, by the convention the document states at its top:
//!
//! - in a fenced block, every flag of a command line whose program is `bootstorm` (a path ending
//!   in it, after an optional `ExecStart=` or `sudo`), with `\` continuation lines joined;
//! - outside fenced blocks, every flag of an inline code span that starts with `bootstorm ` or
//!   with a dash.
//!
//! Flags of other programs are written with the program's name in the span (`in.tftpd -B 1468`)
//! or in their configuration-file form (`tftp-max=50`), so they are never taken for bootstorm's.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The document checked, relative to the package root.
const DOC: &str = "docs/operations.md";

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
fn every_flag_in_the_operations_guide_exists() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    let doc = std::fs::read_to_string(&doc_path).expect("docs/operations.md is readable");
    let out = Command::new(env!("CARGO_BIN_EXE_bootstorm")).arg("--help").output().expect("bootstorm --help runs");
    assert!(out.status.success(), "bootstorm --help failed: {}", String::from_utf8_lossy(&out.stderr));
    let help = help_flags(&String::from_utf8_lossy(&out.stdout));
    assert!(help.contains("--root") && help.contains("-r"), "--help was not parsed: {help:?}");

    let documented = documented_flags(&doc);
    assert!(documented.len() > 20, "too few flags found in {DOC}; was the convention changed? {documented:?}");
    let missing: Vec<_> = documented.iter().filter(|(flag, _)| !help.contains(flag)).collect();
    assert!(missing.is_empty(), "{DOC} mentions flags that `bootstorm --help` does not list (flag, line): {missing:?}");
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
