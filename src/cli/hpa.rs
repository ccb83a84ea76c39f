//! tftp-hpa's command line (`in.tftpd`, version 5.2 as Debian ships it): when the binary is
//! started as `in.tftpd` or as `bootstorm hpa`, its flags are read with their tftp-hpa meaning and
//! turned into bootstorm's own flags, which then go through the same parse, checks, configuration
//! file and reload as any bootstorm command line. What the process does around the server is
//! returned beside them ([`Hpa`]): leave the foreground once listening (`-l`), serve the socket
//! inetd passes on standard input and exit when idle (neither `-l` nor `-L`), the umask of
//! created files. A flag bootstorm cannot honour is refused by name, never ignored.
//!
//! Parsing follows `getopt_long`: short flags may be grouped (`-vvvv`, `-ls`) and take their value
//! attached or as the next word (`-B1468`, `-B 1468`); long flags take `--flag=value` or
//! `--flag value` and may be shortened to any unambiguous prefix; words that are not flags are the
//! directories, wherever they stand; `--` ends the flags.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::parse::{parse_listen, parse_port_range, parse_umask};

/// The name the binary answers to as a tftp-hpa drop-in.
pub(crate) const PROGRAM: &str = "in.tftpd";
/// The subcommand of `bootstorm` that reads tftp-hpa's flags.
pub(crate) const SUBCOMMAND: &str = "hpa";
/// The tftp-hpa version whose command line this is.
const HPA_VERSION: &str = "5.2";

/// What an `in.tftpd` command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HpaCommand {
    /// Serve with these bootstorm arguments.
    Serve(Hpa),
    /// `-V`: print the version.
    Version,
    /// `-h`: print the usage.
    Help,
}

/// An `in.tftpd` command line in bootstorm's terms.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Hpa {
    /// bootstorm's arguments, program name first.
    pub(crate) args: Vec<OsString>,
    /// `-l` without `-L`: leave the foreground once serving (the parent exits 0 when the server
    /// listens, 1 when it cannot start), as tftp-hpa's `daemon()` after binding.
    pub(crate) detach: bool,
    /// The process's umask for the files uploads create (tftp-hpa sets it: `-U`, else 0, else
    /// with `-p` the one it was started with); `None`: left as it is.
    pub(crate) umask: Option<u32>,
    /// Neither `-l` nor `-L`: started by inetd (or systemd with `StandardInput=socket`), the
    /// socket on standard input; exit once idle this long (`-t`, 900 s by default), to be
    /// started again by the next request.
    pub(crate) inetd: Option<Duration>,
}

/// An `in.tftpd` command line bootstorm refuses: the flag, as given, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HpaError {
    /// The flag (or word) at fault.
    pub(crate) flag: String,
    /// Why.
    pub(crate) message: String,
}

impl fmt::Display for HpaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for HpaError {}

fn refuse(flag: impl Into<String>, message: impl Into<String>) -> HpaError {
    HpaError { flag: flag.into(), message: message.into() }
}

/// The `in.tftpd` flags: long name, short letter, whether it takes a value.
const FLAGS: &[(&str, Option<char>, bool)] = &[
    ("ipv4", Some('4'), false),
    ("ipv6", Some('6'), false),
    ("create", Some('c'), false),
    ("secure", Some('s'), false),
    ("permissive", Some('p'), false),
    ("verbose", Some('v'), false),
    ("verbosity", None, true),
    ("version", Some('V'), false),
    ("listen", Some('l'), false),
    ("foreground", Some('L'), false),
    ("address", Some('a'), true),
    ("blocksize", Some('B'), true),
    ("user", Some('u'), true),
    ("umask", Some('U'), true),
    ("refuse", Some('r'), true),
    ("timeout", Some('t'), true),
    ("retransmit", Some('T'), true),
    ("port-range", Some('R'), true),
    ("map-file", Some('m'), true),
    ("pidfile", Some('P'), true),
    ("help", Some('h'), false),
];

/// Whether `argv` (program name first) is an `in.tftpd` command line: the program is named
/// `in.tftpd`, or the first argument is `hpa`. Returns the flags after the name or subcommand.
pub(crate) fn invoked(argv: &[OsString]) -> Option<&[OsString]> {
    let name = argv.first().map(Path::new).and_then(Path::file_name);
    if name == Some(OsStr::new(PROGRAM)) {
        return Some(&argv[1..]);
    }
    (argv.get(1).map(OsString::as_os_str) == Some(OsStr::new(SUBCOMMAND))).then(|| &argv[2..])
}

/// The version line `-V` prints: tftp-hpa's form (scripts look for "with remap"), then bootstorm's.
pub(crate) fn version(bootstorm: &str, remap: bool) -> String {
    let remap = if remap { ", with remap" } else { "" };
    format!("tftp-hpa {HPA_VERSION} command line{remap}, served by bootstorm {bootstorm}")
}

/// The usage `-h` prints.
pub(crate) const USAGE: &str = "\
Usage: in.tftpd [-c][-p][-s][-l][-L][-a address][-B blocksize][-u user][-U umask]
       [-r option...][-t timeout][-T retransmit_usec][-R port:port][-m mapfile]
       [-P pidfile][-v][-4|-6] directory

bootstorm reading tftp-hpa 5.2's command line; see `bootstorm --help` for its own flags.
Without -l or -L: inetd mode, the socket on standard input; exits after -t seconds idle.
Not supported, refused: several directories.
Without -s, names are taken beneath the directory as with it.
";

/// A flag as parsed: its long name, how it was written (for messages), its value.
struct Given {
    long: &'static str,
    /// As written on the command line, for messages.
    written: String,
    value: Option<String>,
}

/// Splits `args` into flags and directories, `getopt_long` style.
fn lex(args: &[OsString]) -> Result<(Vec<Given>, Vec<OsString>), HpaError> {
    let mut flags = Vec::new();
    let mut dirs = Vec::new();
    let mut it = args.iter();
    let text = |a: &OsString| a.to_str().map(str::to_string).ok_or_else(|| refuse(a.to_string_lossy(), "not UTF-8"));
    while let Some(arg) = it.next() {
        let Some(s) = arg.to_str() else {
            // Only directories may be any bytes.
            dirs.push(arg.clone());
            continue;
        };
        if s == "--" {
            dirs.extend(it.by_ref().cloned());
            break;
        }
        if let Some(long) = s.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let exact = FLAGS.iter().find(|f| f.0 == name);
            let prefixed: Vec<_> = FLAGS.iter().filter(|f| f.0.starts_with(name)).collect();
            let &(full, _, takes) = match (exact, prefixed.as_slice()) {
                (Some(f), _) => f,
                (None, [f]) => f,
                (None, []) => return Err(refuse(format!("--{name}"), "not an in.tftpd flag")),
                (None, many) => {
                    let names: Vec<String> = many.iter().map(|f| format!("--{}", f.0)).collect();
                    return Err(refuse(format!("--{name}"), format!("ambiguous: {}", names.join(", "))));
                }
            };
            let written = format!("--{full}");
            let value = match (takes, inline) {
                (true, Some(v)) => Some(v),
                (true, None) => {
                    Some(it.next().map(text).transpose()?.ok_or_else(|| refuse(&written, "needs a value"))?)
                }
                (false, Some(_)) => return Err(refuse(&written, "takes no value")),
                (false, None) => None,
            };
            flags.push(Given { long: full, written, value });
        } else if s.len() > 1 && s.starts_with('-') {
            for (i, c) in s[1..].char_indices() {
                let Some(&(full, _, takes)) = FLAGS.iter().find(|f| f.1 == Some(c)) else {
                    return Err(refuse(format!("-{c}"), "not an in.tftpd flag"));
                };
                let written = format!("-{c}");
                if takes {
                    let rest = &s[1 + i + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        it.next().map(text).transpose()?.ok_or_else(|| refuse(&written, "needs a value"))?
                    } else {
                        rest.to_string()
                    };
                    flags.push(Given { long: full, written, value: Some(value) });
                    break;
                }
                flags.push(Given { long: full, written, value: None });
            }
        } else {
            dirs.push(arg.clone());
        }
    }
    Ok((flags, dirs))
}

/// What the flags ask for, before it becomes bootstorm's arguments.
#[derive(Default)]
struct Options {
    ipv4: bool,
    ipv6: bool,
    create: bool,
    secure: bool,
    permissive: bool,
    verbosity: u32,
    listen: bool,
    foreground: bool,
    address: Option<String>,
    blocksize: Option<u16>,
    user: Option<String>,
    umask: Option<u32>,
    refuse: Vec<&'static str>,
    retransmit_us: Option<u64>,
    timeout: Option<u64>,
    port_range: Option<(u16, u16)>,
    map_file: Option<String>,
    pidfile: Option<String>,
}

/// The options tftp-hpa knows for `-r`, and the one bootstorm refuses for each (`None`: an option
/// bootstorm never grants, so refusing it changes nothing).
const REFUSABLE: &[(&str, Option<&str>)] = &[
    ("blksize", Some("blksize")),
    ("tsize", Some("tsize")),
    ("timeout", Some("timeout")),
    ("windowsize", Some("windowsize")),
    ("blksize2", None),
    ("utimeout", None),
    ("rollover", None),
];

/// Reads an `in.tftpd` command line (the flags after the program name or `hpa`). `effective_root`
/// says whether the process runs as root, where tftp-hpa drops to `nobody` unless `-u` names
/// another user; `process_umask` is the umask it was started with (`-p -c` keeps it).
pub(crate) fn parse(args: &[OsString], effective_root: bool, process_umask: u32) -> Result<HpaCommand, HpaError> {
    let (flags, dirs) = lex(args)?;
    let mut o = Options::default();
    for g in &flags {
        let v = g.value.as_deref().unwrap_or("");
        let number = |what: &str| v.trim().parse::<u64>().map_err(|_| refuse(&g.written, format!("{what}: {v:?}")));
        match g.long {
            "help" => return Ok(HpaCommand::Help),
            "version" => return Ok(HpaCommand::Version),
            "ipv4" => o.ipv4 = true,
            "ipv6" => o.ipv6 = true,
            "create" => o.create = true,
            "secure" => o.secure = true,
            "permissive" => o.permissive = true,
            "verbose" => o.verbosity += 1,
            "verbosity" => o.verbosity = u32::try_from(number("not a verbosity")?).unwrap_or(u32::MAX),
            "listen" => o.listen = true,
            "foreground" => o.foreground = true,
            "address" => o.address = Some(v.to_string()),
            "blocksize" => {
                let b = number("not a block size")?;
                o.blocksize = Some(
                    u16::try_from(b)
                        .ok()
                        .filter(|b| (512..=65464).contains(b))
                        .ok_or_else(|| refuse(&g.written, format!("{b}: the block size must be 512 to 65464")))?,
                );
            }
            "user" => o.user = Some(v.to_string()),
            "umask" => o.umask = Some(parse_umask(v).map_err(|e| refuse(&g.written, e))?),
            "refuse" => {
                let name = v.trim().to_ascii_lowercase();
                let Some(&(_, ours)) = REFUSABLE.iter().find(|r| r.0 == name) else {
                    return Err(refuse(&g.written, format!("{v:?} is not a TFTP option tftp-hpa negotiates")));
                };
                o.refuse.extend(ours);
            }
            // Standalone, tftp-hpa ignores the inetd idle timeout.
            "timeout" => o.timeout = Some(number("not a number of seconds")?),
            "retransmit" => {
                let us = number("not a number of microseconds")?;
                if !(10_000..=60_000_000).contains(&us) {
                    return Err(refuse(
                        &g.written,
                        format!("{us} µs: bootstorm takes 10000 (10 ms) to 60000000 (60 s)"),
                    ));
                }
                o.retransmit_us = Some(us);
            }
            "port-range" => o.port_range = Some(parse_port_range(v).map_err(|e| refuse(&g.written, e))?),
            "map-file" => o.map_file = Some(v.to_string()),
            "pidfile" => o.pidfile = Some(v.to_string()),
            other => return Err(refuse(&g.written, format!("--{other} is not handled"))),
        }
    }
    Ok(HpaCommand::Serve(o.into_bootstorm(dirs, effective_root, process_umask)?))
}

impl Options {
    fn into_bootstorm(self, dirs: Vec<OsString>, effective_root: bool, process_umask: u32) -> Result<Hpa, HpaError> {
        let inetd = !self.listen && !self.foreground;
        if inetd && self.address.is_some() {
            return Err(refuse(
                "-a",
                "applies with -l or -L: without them (inetd mode) the socket comes on standard input, bound by inetd",
            ));
        }
        if self.ipv4 && self.ipv6 {
            return Err(refuse("-6", "-4 and -6 together: give one, or neither for both"));
        }
        let dir = match dirs.as_slice() {
            [] => return Err(refuse("(directory)", "a directory to serve is required (in.tftpd -s /srv/tftp)")),
            [d] => d.clone(),
            many => {
                let list: Vec<String> = many.iter().map(|d| d.to_string_lossy().into_owned()).collect();
                let why = if self.secure {
                    "with -s, exactly one directory can be given"
                } else {
                    "bootstorm serves one directory: give one"
                };
                return Err(refuse(list.join(" "), why));
            }
        };
        // Without -s, tftp-hpa takes absolute names beneath the directory (/srv/tftp/x): the
        // server always takes the root's own path off a name, and with -s or without, a name is
        // resolved beneath the directory (a relative name too, which tftp-hpa refuses without -s).
        let mut out: Vec<OsString> = vec!["bootstorm".into(), "--root".into(), dir];
        let mut flag = |f: &str, v: Option<String>| {
            out.push(f.into());
            out.extend(v.map(OsString::from));
        };
        // In inetd mode the socket is the one passed; -4 and -6 have nothing to choose from.
        // Every address on port 69 (Debian's TFTP_ADDRESS=":69") is bootstorm's default, which
        // also starts where IPv6 is turned off, as tftp-hpa does.
        let default =
            matches!(self.address.as_deref().map(str::trim), None | Some("" | ":" | ":69")) && !self.ipv4 && !self.ipv6;
        if !inetd && !default {
            for addr in self.listen_addrs()? {
                flag("--listen", Some(addr.to_string()));
            }
        }
        if self.create {
            flag("--allow-write", None);
            flag("--uploads-in-root", None);
            flag("--create", None);
        }
        // tftp-hpa's default umask for created files is 0, or the process's with -p.
        let umask = self.umask.unwrap_or(if self.permissive { process_umask } else { 0 });
        if self.create || self.umask.is_some() {
            flag("--umask", Some(format!("{umask:03o}")));
        }
        if self.permissive {
            flag("--serve-private-files", None);
        }
        if self.verbosity >= 1 {
            flag("--log-requests", None);
        }
        if self.verbosity >= 3 {
            flag("--log-level", Some("debug".into()));
        }
        if let Some(b) = self.blocksize {
            flag("--max-blksize", Some(b.to_string()));
        }
        match (self.user, effective_root) {
            (Some(u), _) => flag("--user", Some(u)),
            (None, true) => flag("--user", Some("nobody".into())),
            (None, false) => {}
        }
        if !self.refuse.is_empty() {
            flag("--refuse-option", Some(self.refuse.join(",")));
        }
        if let Some(us) = self.retransmit_us {
            flag("--timeout", Some(format!("{}", us as f64 / 1e6)));
        }
        if let Some((lo, hi)) = self.port_range {
            flag("--port-range", Some(format!("{lo}:{hi}")));
        }
        if let Some(m) = self.map_file {
            flag("--map-file", Some(m));
        }
        if let Some(p) = self.pidfile {
            flag("--pid-file", Some(p));
        }
        let umask = (self.create || self.umask.is_some()).then_some(umask);
        let inetd = inetd.then(|| Duration::from_secs(self.timeout.unwrap_or(900)));
        Ok(Hpa { args: out, detach: self.listen && !self.foreground, umask, inetd })
    }

    /// The addresses `-a` and `-4`/`-6` name: tftp-hpa's default is port 69 on every address.
    fn listen_addrs(&self) -> Result<Vec<SocketAddr>, HpaError> {
        let written = "-a";
        let given = self.address.as_deref().unwrap_or(":69").trim();
        // `-a ADDR:` and `-a ""` keep tftp-hpa's defaults for the part left out.
        let given = if given.is_empty() { ":69" } else { given.strip_suffix(':').unwrap_or(given) };
        let addrs = parse_listen(given).map_err(|e| refuse(format!("{written} {given}"), e))?.0;
        let kept: Vec<SocketAddr> =
            addrs.into_iter().filter(|a| if a.is_ipv4() { !self.ipv6 } else { !self.ipv4 }).collect();
        if kept.is_empty() {
            let family = if self.ipv4 { "-4" } else { "-6" };
            return Err(refuse(format!("{written} {given}"), format!("no address of the family {family} asks for")));
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests;
