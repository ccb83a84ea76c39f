//! `--config FILE`: a TOML file whose keys are the long flag names (`root = "/srv/tftp"`,
//! `max-blksize = 1468`, `allow = ["10.0.0.0/8"]`, `single-port = true`), turned into the
//! arguments those flags would be, so every value goes through the same parser and every check
//! as on the command line.
//!
//! Values: a string or a number is the flag's value as written on the command line; `true`
//! gives a switch (`single-port = true` is `--single-port`) and `false` leaves it off; an array
//! repeats a flag that may be repeated. Tables, dates and a `config` key are refused, as is a
//! key that is no flag (with the nearest flag name, when one is close).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command};
use toml::{Spanned, Value};

/// Keys that name no setting of the file, though they are flags.
const NOT_IN_FILE: [&str; 3] = ["config", "help", "version"];

/// The arguments a file gives, and where each key was.
#[derive(Debug, Default)]
pub(crate) struct FileArgs {
    /// `--key=value` (or `--key`) for every key not given on the command line, in file order.
    pub(crate) args: Vec<OsString>,
    /// Each key turned into arguments, with the line it is on.
    keys: Vec<(String, usize)>,
}

impl FileArgs {
    /// The line of `key`, when the file gave it (and the command line did not).
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        self.keys.iter().find(|(k, _)| k == key).map(|&(_, line)| line)
    }
}

/// A configuration file refused: the file, the line and the key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileError {
    /// The file, as named by `--config`.
    pub(crate) path: PathBuf,
    /// The line (from 1), when known.
    pub(crate) line: Option<usize>,
    /// The key, when the fault is one key's.
    pub(crate) key: Option<String>,
    /// What is wrong.
    pub(crate) message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

/// Reads `path` and turns it into arguments of `cmd`, leaving out every key for which `given`
/// (called with the argument's id) says the command line has the flag: flags win.
pub(crate) fn read(path: &Path, cmd: &Command, given: &dyn Fn(&str) -> bool) -> Result<FileArgs, FileError> {
    let err = |line, key: Option<&str>, message: String| FileError {
        path: path.to_path_buf(),
        line,
        key: key.map(str::to_string),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(None, None, format!("cannot read: {e}")))?;
    parse(&text, cmd, given).map_err(|(line, key, message)| err(line, key.as_deref(), message))
}

/// A fault in the text: its line, its key, the message.
type TextError = (Option<usize>, Option<String>, String);

/// [`read`] of the text itself.
fn parse(text: &str, cmd: &Command, given: &dyn Fn(&str) -> bool) -> Result<FileArgs, TextError> {
    let line_at = |offset: usize| text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1;
    let table: std::collections::BTreeMap<String, Spanned<Value>> = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_at(s.start));
        (line, None, format!("not valid TOML: {}", e.message().trim_end()))
    })?;
    let mut entries: Vec<(String, Spanned<Value>)> = table.into_iter().collect();
    entries.sort_by_key(|(_, v)| v.span().start);
    let mut out = FileArgs::default();
    for (key, value) in entries {
        let line = line_at(value.span().start);
        let fail = |message: String| (Some(line), Some(key.clone()), message);
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_IN_FILE.contains(&key.as_str()))
            .ok_or_else(|| fail(unknown_key(&key, cmd)))?;
        if given(arg.get_id().as_str()) {
            continue;
        }
        let flag = format!("--{key}");
        let value = value.into_inner();
        match arg.get_action() {
            ArgAction::SetTrue => match value {
                Value::Boolean(true) => out.args.push(flag.into()),
                Value::Boolean(false) => {}
                other => return Err(fail(format!("a switch: true or false, not {}", kind(&other)))),
            },
            ArgAction::Set => out.args.push(format!("{flag}={}", scalar(&key, &value).map_err(fail)?).into()),
            ArgAction::Append => {
                let values = match value {
                    Value::Array(items) => items,
                    one => vec![one],
                };
                for v in &values {
                    out.args.push(format!("{flag}={}", scalar(&key, v).map_err(fail)?).into());
                }
            }
            _ => return Err(fail(unknown_key(&key, cmd))),
        }
        out.keys.push((key, line));
    }
    Ok(out)
}

/// A value as the command line would write it.
fn scalar(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(_) if key == "umask" => {
            Err("octal digits in a string, as on the command line: umask = \"022\"".to_string())
        }
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        other => Err(format!("a string or a number, not {}", kind(other))),
    }
}

/// What a TOML value is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "true or false",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// Why `key` is refused, with the nearest setting's name when one is close.
fn unknown_key(key: &str, cmd: &Command) -> String {
    if key == "config" {
        return "a configuration file cannot name another (--config is a command-line flag only)".to_string();
    }
    let names = cmd.get_arguments().filter_map(|a| a.get_long()).filter(|n| !NOT_IN_FILE.contains(n));
    let wanted = key.trim_start_matches('-').replace('_', "-");
    let nearest = names.map(|n| (distance(&wanted, n), n)).min();
    match nearest {
        Some((d, n)) if d <= 2.max(wanted.len() / 4) => format!("no such setting; did you mean {n}?"),
        _ => "no such setting (the keys are the long flag names of bootstorm --help)".to_string(),
    }
}

/// Levenshtein distance between `a` and `b`.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != cb)).min(up + 1).min(row[j] + 1);
            diag = up;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::Cli;

    fn args(text: &str) -> Result<Vec<String>, String> {
        parse(text, &Cli::command(), &|_| false)
            .map(|f| f.args.into_iter().map(|a| a.into_string().unwrap()).collect())
            .map_err(|(line, key, m)| format!("{line:?} {key:?} {m}"))
    }

    #[test]
    fn values_become_flags() {
        let a = args(
            "root = \"/srv/tftp\"\nmax-blksize = 1468\ntimeout = 0.5\nsingle-port = true\nno-gso = false\n\
             allow = [\"10.0.0.0/8\", \"fd00::/8\"]\nlisten = \":69\"\n",
        )
        .unwrap();
        assert_eq!(
            a,
            [
                "--root=/srv/tftp",
                "--max-blksize=1468",
                "--timeout=0.5",
                "--single-port",
                "--allow=10.0.0.0/8",
                "--allow=fd00::/8",
                "--listen=:69"
            ]
        );
        assert_eq!(
            args("grace = 10.0\ngrace-x = 1").unwrap_err(),
            "Some(2) Some(\"grace-x\") no such setting; did you mean grace?"
        );
    }

    #[test]
    fn refusals_name_the_line_and_key() {
        assert_eq!(
            args("max_blksize = 1").unwrap_err(),
            "Some(1) Some(\"max_blksize\") no such setting; did you mean max-blksize?"
        );
        assert!(
            args("\n\nbogus-thing-entirely = 1")
                .unwrap_err()
                .starts_with("Some(3) Some(\"bogus-thing-entirely\") no such setting (the keys")
        );
        assert!(args("config = \"x\"").unwrap_err().contains("cannot name another"));
        assert!(args("help = true").unwrap_err().contains("no such setting"));
        assert_eq!(
            args("single-port = 1").unwrap_err(),
            "Some(1) Some(\"single-port\") a switch: true or false, not an integer"
        );
        assert!(args("root = [\"/a\"]").unwrap_err().contains("a string or a number, not an array"));
        assert!(args("[server]\nroot = \"/a\"").unwrap_err().contains("no such setting"));
        assert!(args("umask = 18").unwrap_err().contains("umask = \"022\""));
        let e = args("root = \"/a\"\nmax-blksize = = 3\n").unwrap_err();
        assert!(e.starts_with("Some(2) None not valid TOML: "), "{e}");
    }

    #[test]
    fn given_flags_are_left_out() {
        let f = parse("root = \"/a\"\nmax-blksize = 1468\n", &Cli::command(), &|id| id == "max_blksize").unwrap();
        assert_eq!(f.args, [OsString::from("--root=/a")]);
        assert_eq!((f.line_of("root"), f.line_of("max-blksize")), (Some(1), None));
    }

    /// The packaged file names every flag, and its defaults are the defaults.
    #[test]
    fn the_packaged_file_is_complete_and_true() {
        let text = include_str!("../../dist/bootstorm.toml");
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            let Some(name) = arg.get_long().filter(|n| !NOT_IN_FILE.contains(n)) else { continue };
            let shown = text.lines().any(|l| {
                let l = l.strip_prefix('#').unwrap_or(l).trim_start();
                l.strip_prefix(name).is_some_and(|rest| rest.starts_with(" = "))
            });
            assert!(shown, "dist/bootstorm.toml lacks {name}");
        }
        // Every "#key = value" line uncommented: the same settings as none of them.
        let defaults: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let settings = |text: &str| {
            let f = parse(text, &cmd, &|_| false).unwrap();
            let argv = std::iter::once(OsString::from("bootstorm")).chain(f.args);
            crate::cli::Settings::try_from(Cli::try_parse_from(argv).unwrap()).unwrap()
        };
        let (all, plain) = (settings(&defaults), settings(text));
        assert_eq!(all.server, plain.server);
        assert_eq!((all.log_format, all.stats_interval), (plain.log_format, plain.stats_interval));
        assert_eq!(plain.server.root, std::path::Path::new("/srv/tftp"));
    }

    #[test]
    fn edit_distance() {
        assert_eq!((distance("", "abc"), distance("kitten", "sitting"), distance("same", "same")), (3, 3, 0));
    }
}
