//! `bootstorm map-test FILE [NAME...]` (also spelled `bootstorm --map-test FILE`): what each
//! name becomes under a map file and the name fixes, as the server resolves it, printed one line
//! per name; no socket is opened.
//!
//! The steps are the server's, in its order (`docs/remap.md`): the map file's rules on the name
//! as sent ([`Rules::rewrite_checked`], with `E` rules asking whether the file exists beneath
//! `--root`), then the bytes `--trim-name-garbage` drops, the root's own absolute path taken off,
//! [`normalize`], and the first `--strip-prefix` that matches. What is opened beneath that path
//! (a `--client-dir` view, a `--case-insensitive` search) is the file system's answer at request
//! time and is not shown.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use bootstorm::config::StripPrefix;
use bootstorm::fs::{Root, normalize};
use bootstorm::proto::wire::MAX_FILENAME_LEN;
use bootstorm::remap::{Client, Rewrite, Rules};

/// The arguments of `map-test`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MapTest {
    /// The map file (tftp-hpa's rules, as --map-file takes them).
    #[arg(value_name = "FILE")]
    pub(crate) map_file: PathBuf,

    /// Names to resolve, as a client would send them; none: one per line from standard input.
    #[arg(value_name = "NAME")]
    pub(crate) names: Vec<OsString>,

    /// The client's address, for \i and \x in replacements and for 4 and 6 rules.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub(crate) client: IpAddr,

    /// Resolve as an upload (WRQ): P rules apply, G rules do not.
    #[arg(long)]
    pub(crate) write: bool,

    /// The directory served: its absolute path is taken off names, and E rules see which files
    /// exist beneath it. [default: none; E rules then never end the rules]
    #[arg(long, value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,

    /// As the server's --strip-prefix.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) strip_prefix: Vec<String>,

    /// As the server's --trim-name-garbage.
    #[arg(long)]
    pub(crate) trim_name_garbage: bool,
}

/// What a name became.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The path opened beneath the root; the rule that last rewrote the name, if any.
    Path {
        /// The path, relative to the root.
        path: Vec<u8>,
        /// What decided, as the server logs it (`lookup=`): `rule:4+prefix`; empty: the name
        /// was only normalised.
        decided: String,
    },
    /// Refused with ERROR 2 by a rule: its message (`None`: the server's own), its line.
    Denied {
        /// The ERROR's message.
        message: Option<String>,
        /// The rule's line.
        rule: usize,
    },
    /// Names no file: empty, `..`, a control character, too long.
    Invalid(String),
}

/// The rules and the fixes, ready to resolve names.
pub(crate) struct Resolver {
    rules: Rules,
    client: Client,
    root: Option<Root>,
    strip: Vec<StripPrefix>,
    trim: bool,
}

impl Resolver {
    /// Reads the map file and opens the root; the messages name what is wrong.
    pub(crate) fn new(t: &MapTest) -> Result<Self, String> {
        let rules = Rules::load(&t.map_file).map_err(|e| format!("--map-file {}: {e}", t.map_file.display()))?;
        let root = t
            .root
            .as_ref()
            .map(|r| Root::open(r, true).map_err(|e| format!("--root {}: {e}", r.display())))
            .transpose()?;
        let strip =
            t.strip_prefix.iter().map(|p| StripPrefix::new(p).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
        Ok(Self { rules, client: Client { addr: t.client, write: t.write }, root, strip, trim: t.trim_name_garbage })
    }

    /// What `name` becomes.
    pub(crate) fn resolve(&self, name: &[u8]) -> Outcome {
        let exists = |n: &[u8]| {
            let mut out = [0; MAX_FILENAME_LEN];
            match (&self.root, self.fix(n, &mut out)) {
                (Some(root), Ok((rel, _))) => root.open_file(rel).is_ok(),
                _ => false,
            }
        };
        let (name, rule) = match self.rules.rewrite_checked(name, &self.client, exists) {
            Rewrite::Unchanged => (name.to_vec(), None),
            Rewrite::Name { name, rule } => (name, Some(rule)),
            Rewrite::Denied { message, rule } => return Outcome::Denied { message, rule },
        };
        let mut out = [0; MAX_FILENAME_LEN];
        match self.fix(&name, &mut out) {
            Ok((path, fixes)) => {
                let mut decided: Vec<String> = rule.map(|r| format!("rule:{r}")).into_iter().collect();
                decided.extend(fixes.into_iter().map(str::to_string));
                Outcome::Path { path: path.to_vec(), decided: decided.join("+") }
            }
            Err(e) => Outcome::Invalid(e),
        }
    }

    /// The name fixes after the rules: trimmed, the root's path taken off, normalised, a
    /// prefix taken off; the path and the fixes that applied.
    fn fix<'o>(&self, name: &[u8], out: &'o mut [u8; MAX_FILENAME_LEN]) -> Result<(&'o [u8], Vec<&str>), String> {
        let mut fixes = Vec::new();
        let mut name = name;
        if self.trim {
            let end = name.iter().rposition(|&b| !matches!(b, 0xff | 0x7f | 0)).map_or(0, |i| i + 1);
            if end < name.len() {
                fixes.push("trim");
            }
            name = &name[..end];
        }
        if let Some(root) = &self.root {
            let mut paths: Vec<&[u8]> = root.paths().iter().map(|p| p.as_os_str().as_bytes()).collect();
            paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in paths {
                let p = &p[..p.iter().rposition(|&c| c != b'/').map_or(0, |i| i + 1)];
                if let Some(rest) = name.strip_prefix(p).filter(|r| !p.is_empty() && r.first() == Some(&b'/')) {
                    name = rest;
                    break;
                }
            }
        }
        let len = normalize(name, out).map_err(|e| e.to_string())?.len();
        match self.strip.iter().find_map(|p| p.strip(&out[..len])).map(<[u8]>::len) {
            Some(kept) => {
                fixes.push("prefix");
                out.copy_within(len - kept..len, 0);
                Ok((&out[..kept], fixes))
            }
            None => Ok((&out[..len], fixes)),
        }
    }
}

/// One line of output: the name, `->`, what it became.
pub(crate) fn line(name: &[u8], outcome: &Outcome) -> String {
    let shown = |b: &[u8]| b.escape_ascii().to_string();
    match outcome {
        Outcome::Path { path, decided } if decided.is_empty() => format!("{} -> {}", shown(name), shown(path)),
        Outcome::Path { path, decided } => format!("{} -> {} ({decided})", shown(name), shown(path)),
        Outcome::Denied { message: Some(m), rule } => {
            format!("{} -> refused: ERROR 2 {:?} (rule:{rule})", shown(name), m)
        }
        Outcome::Denied { message: None, rule } => format!("{} -> refused: ERROR 2 (rule:{rule})", shown(name)),
        Outcome::Invalid(why) => format!("{} -> refused: {why}", shown(name)),
    }
}

/// Runs `map-test`: every name resolved and printed; an error when the map file or the root
/// cannot be used.
pub(crate) fn run(t: &MapTest) -> Result<(), String> {
    let r = Resolver::new(t)?;
    let mut out = io::stdout().lock();
    let mut print = |name: &[u8]| writeln!(out, "{}", line(name, &r.resolve(name))).map_err(|e| e.to_string());
    if t.names.is_empty() {
        for name in io::stdin().lock().split(b'\n') {
            print(&name.map_err(|e| e.to_string())?)?;
        }
    } else {
        for name in &t.names {
            print(name.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(map: &str, extra: &[&str]) -> (Resolver, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map");
        std::fs::write(&path, map).unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::write(dir.path().join("root/there"), b"x").unwrap();
        let root = dir.path().join("root");
        let mut argv = vec!["map-test", path.to_str().unwrap(), "--root", root.to_str().unwrap()];
        argv.extend_from_slice(extra);
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            t: MapTest,
        }
        let t = <P as clap::Parser>::parse_from(argv).t;
        (Resolver::new(&t).unwrap(), dir)
    }

    fn shown(r: &Resolver, name: &str) -> String {
        line(name.as_bytes(), &r.resolve(name.as_bytes()))
    }

    #[test]
    fn rules_then_fixes() {
        let (r, dir) = resolver(
            "rg \\\\ /\nr ^alias$ there\na ^secret.* no\\ secrets\nr ^ip$ \\x/\\i\n",
            &["--strip-prefix", "/tftpboot/", "--client", "192.0.2.169"],
        );
        assert_eq!(shown(&r, "a\\b"), "a\\\\b -> a/b (rule:1)");
        assert_eq!(shown(&r, "alias"), "alias -> there (rule:2)");
        assert_eq!(shown(&r, "secret.bin"), "secret.bin -> refused: ERROR 2 \"no secrets\" (rule:3)");
        assert_eq!(shown(&r, "ip"), "ip -> C00002A9/192.0.2.169 (rule:4)");
        assert_eq!(shown(&r, "/tftpboot/x"), "/tftpboot/x -> x (prefix)");
        assert_eq!(shown(&r, "plain"), "plain -> plain");
        assert_eq!(shown(&r, "../etc/passwd"), "../etc/passwd -> refused: path leaves the root");
        let root = dir.path().join("root");
        assert_eq!(shown(&r, &format!("{}/there", root.display())), format!("{}/there -> there", root.display()));
    }
}
