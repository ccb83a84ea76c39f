//! What the binary was asked to do (serve, `check`, `manpage`, `map-test`, `probe`), and the
//! settings it runs with: the configuration file's arguments placed before the command line's,
//! every key the command line gives left out of the file's (flags win), parsed by the same
//! [`Cli`] definition.
//!
//! The command line is kept as given, so a reload (SIGHUP) reads the file again and merges it
//! with the same flags.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args as _, Command, CommandFactory, FromArgMatches};

use super::file::{self, FileArgs, FileError};
use super::maptest::MapTest;
use super::probe::Probe;

use super::{Cli, CliError, Settings};

/// The `check` subcommand's name.
const CHECK: &str = "check";
/// The hidden subcommand that prints the man page.
const MANPAGE: &str = "manpage";
/// The subcommand that shows what names become (also `--map-test`).
const MAP_TEST: &str = "map-test";
/// The TFTP health check.
const PROBE: &str = "probe";

/// What the binary was asked to do.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// Serve with these arguments.
    Serve(Args),
    /// Check these arguments, serving nothing.
    Check(Args),
    /// Print the man page.
    Manpage,
    /// Show what names become under a map file.
    MapTest(MapTest),
    /// Fetch a file from a server, as a health check.
    Probe(Probe),
}

/// The command line's server flags, kept as given, and the configuration file they name.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    /// The flags, without the program name or subcommand.
    argv: Vec<OsString>,
    /// `--config`, when given.
    config: Option<PathBuf>,
    /// The ids of the flags the command line gives.
    given: Vec<String>,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The command line alone is wrong (clap's own message, with the usage).
    CommandLine(clap::Error),
    /// The file, or one of its keys or values.
    File(FileError),
    /// The merged configuration, after parsing (the message names the flags); with the file, if
    /// one was read.
    Settings(CliError, Option<PathBuf>),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CommandLine(e) => f.write_str(&one_line(e)),
            Self::File(e) => e.fmt(f),
            Self::Settings(e, Some(path)) => write!(f, "{}: {e}", path.display()),
            Self::Settings(e, None) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {}

/// The full command: the server's flags (as `--help` prints them) and the subcommands.
pub(crate) fn command() -> Command {
    let server = Cli::command();
    let check = Command::new(CHECK)
        .about("Check a configuration (--config FILE and the flags given) without serving anything")
        .args(server.get_arguments().cloned())
        .mut_arg("root", |a| a.required(false))
        .args_override_self(true)
        .max_term_width(100);
    server
        .mut_arg("root", |a| a.required(false))
        .subcommand(check)
        .subcommand(Command::new(MANPAGE).about("Print the man page (roff, section 8)").hide(true))
        .subcommand(
            MapTest::augment_args(Command::new(MAP_TEST))
                .long_flag(MAP_TEST)
                .about(
                    "Show what each name becomes under a map file and the name fixes, as the server resolves it \
                     (names as arguments, or one per line on standard input)",
                )
                .max_term_width(100),
        )
        .subcommand(
            Probe::augment_args(Command::new(PROBE))
                .about("Download a file from a TFTP server, counting the bytes, as a health check")
                .after_help(
                    "Exit status: 0 when the whole file came (and tsize, when the server sent it, matches), 1 when \
                     the probe failed (an ERROR from the server, no answer, a short file); the reason is printed \
                     on standard error.",
                )
                .max_term_width(100),
        )
        .args_conflicts_with_subcommands(true)
        .subcommand_negates_reqs(true)
        .disable_help_subcommand(true)
}

impl Invocation {
    /// Parses the process's arguments; a command line that is wrong in itself is clap's error.
    pub(crate) fn parse_from<I: IntoIterator<Item = OsString>>(argv: I) -> Result<Self, clap::Error> {
        let argv: Vec<OsString> = argv.into_iter().collect();
        let matches = command().try_get_matches_from(&argv)?;
        let args = |m: &ArgMatches, skip: usize| Args {
            argv: argv.iter().skip(skip).cloned().collect(),
            config: m.get_one::<PathBuf>("config").cloned(),
            given: m
                .ids()
                .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                .map(|id| id.as_str().to_string())
                .collect(),
        };
        Ok(match matches.subcommand() {
            Some((CHECK, m)) => Self::Check(args(m, 2)),
            Some((MANPAGE, _)) => Self::Manpage,
            Some((MAP_TEST, m)) => Self::MapTest(MapTest::from_arg_matches(m)?),
            Some((PROBE, m)) => Self::Probe(Probe::from_arg_matches(m)?),
            _ => Self::Serve(args(&matches, 1)),
        })
    }
}

impl Args {
    /// The configuration file, when one is named.
    pub(crate) fn config(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    /// Reads the file (again, on a reload), merges it with the command line and checks the
    /// result.
    pub(crate) fn settings(&self) -> Result<Settings, LoadError> {
        let server = Cli::command();
        let file = match &self.config {
            Some(path) => {
                file::read(path, &server, &|id| self.given.iter().any(|g| g == id)).map_err(LoadError::File)?
            }
            None => FileArgs::default(),
        };
        let merged = std::iter::once(OsString::from("bootstorm"))
            .chain(file.args.iter().cloned())
            .chain(self.argv.iter().cloned());
        let cli = server
            .try_get_matches_from(merged)
            .and_then(|m| Cli::from_arg_matches(&m))
            .map_err(|e| self.clap_error(e, &file))?;
        let path = self.config.clone();
        Settings::try_from(cli).map_err(|e| match (&e, &path) {
            (CliError::Seconds { flag }, Some(p)) if file.line_of(&flag[2..]).is_some() => LoadError::File(FileError {
                path: p.clone(),
                line: file.line_of(&flag[2..]),
                key: Some(flag[2..].to_string()),
                message: "a non-negative number of seconds".to_string(),
            }),
            _ => LoadError::Settings(e, path.filter(|_| !file.args.is_empty())),
        })
    }

    /// A parse of the merged arguments failed: the file's fault when the flag it names came from
    /// the file.
    fn clap_error(&self, e: clap::Error, file: &FileArgs) -> LoadError {
        let arg = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => Some(arg.as_str()),
            Some(ContextValue::Strings(args)) => args.first().map(String::as_str),
            _ => None,
        };
        let (Some(path), Some(arg)) = (&self.config, arg) else {
            return LoadError::CommandLine(e);
        };
        let key = arg.split_whitespace().next().unwrap_or("").trim_start_matches('-').to_string();
        match file.line_of(&key) {
            Some(line) => LoadError::File(FileError {
                path: path.clone(),
                line: Some(line),
                key: Some(key),
                message: one_line(&e),
            }),
            None if e.kind() == ErrorKind::MissingRequiredArgument && key == "root" => LoadError::File(FileError {
                path: path.clone(),
                line: None,
                key: None,
                message: "no root: give root = \"DIR\" in the file or --root DIR".to_string(),
            }),
            None => LoadError::CommandLine(e),
        }
    }
}

/// A clap error as one line: its message and tips, without the usage or the pointer to --help.
fn one_line(e: &clap::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The man page of the server command (section 8), with the subcommands, the configuration
/// file and the signals in sections of their own.
pub(crate) fn manpage(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    // The root may come from the file: no longer required by the flags alone.
    let man = clap_mangen::Man::new(Cli::command().mut_arg("root", |a| a.required(false))).section("8");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    out.write_all(MAN_EXTRA.as_bytes())?;
    man.render_version_section(out)
}

/// The sections clap does not write: the subcommands, the file, the signals.
const MAN_EXTRA: &str = r#".SH COMMANDS
.TP
\fBbootstorm check\fR [\fB\-\-config\fR \fIFILE\fR] [\fIOPTIONS\fR]
Read the configuration file and the flags given, check them as a start would (values, contradictions, the root a directory, the user and group known) without binding anything; print \fIFILE\fB: ok\fR and exit 0, or the error and exit 1.
.TP
\fBbootstorm map\-test\fR \fIFILE\fR [\fINAME\fR...] [\fB\-\-client\fR \fIADDR\fR] [\fB\-\-write\fR] [\fB\-\-root\fR \fIDIR\fR] [\fB\-\-strip\-prefix\fR \fIPREFIX\fR] [\fB\-\-trim\-name\-garbage\fR]
Also \fBbootstorm \-\-map\-test\fR. Print what each name (the arguments, or one per line on standard input) becomes under the map file \fIFILE\fR and the name fixes, as the server resolves it: \fINAME\fB \-> \fIPATH\fR with the rule that decided, or \fBrefused:\fR and the ERROR the client gets.
.TP
\fBbootstorm hpa\fR \fIIN.TFTPD-OPTIONS\fR, or the binary started as \fBin.tftpd\fR
Read tftp\-hpa 5.2's command line (\fB\-l\fR, \fB\-L\fR, \fB\-s\fR, \fB\-a\fR, \fB\-u\fR, \fB\-c\fR, \fB\-U\fR, \fB\-p\fR, \fB\-B\fR, \fB\-r\fR, \fB\-R\fR, \fB\-m\fR, \fB\-t\fR, \fB\-T\fR, \fB\-v\fR, \fB\-4\fR, \fB\-6\fR, \fB\-P\fR, \fB\-V\fR, and the directory) with its meaning, inetd mode (the socket on standard input) included; a flag that cannot be honoured is refused by name, with exit status 64.
.TP
\fBbootstorm probe\fR \fIADDR\fR[\fB:\fIPORT\fR] \fIFILE\fR [\fB\-\-timeout\fR \fISECS\fR] [\fB\-\-min\-size\fR \fIBYTES\fR] [\fB\-\-blksize\fR \fIN\fR]
Download \fIFILE\fR from the TFTP server at \fIADDR\fR (port 69 unless given) with a real read request (octet, blksize 1468 and tsize asked; \fB\-\-blksize 0\fR asks no options), counting the bytes and writing nothing. Print \fBok\fR, the address, the file, the bytes and the time, and exit 0; or print \fBprobe failed:\fR and the reason (the server's ERROR, no answer within \fB\-\-timeout\fR seconds (2), fewer bytes than tsize or \fB\-\-min\-size\fR) and exit 1.
.SH CONFIGURATION FILE
\fB\-\-config\fR \fIFILE\fR names a TOML file whose keys are the long flag names, with the values the flags take: \fBroot = "/srv/tftp"\fR, \fBmax\-blksize = 1468\fR, \fBallow = ["10.0.0.0/8"]\fR, \fBsingle\-port = true\fR. A flag given on the command line wins over the same key in the file. The packaged file is \fI/etc/bootstorm/bootstorm.toml\fR.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Read the configuration file again and apply the serving policy (allow lists, limits, retransmission bounds, rates, upload policy) to new transfers; transfers in progress go on as they began. A file that does not parse or check is refused and the policy in force stays. Settings that need a restart (listen addresses, workers, I/O backend and the like) are named in a warning.
.TP
\fBSIGINT\fR, \fBSIGTERM\fR
Stop accepting requests, give transfers in progress \fB\-\-grace\fR seconds, then exit; a second signal ends them at once.
"#;
