//! The configuration file (`--config FILE`) with the real binary: a file alone serves; a flag on
//! the command line wins over the same key; an unknown key and a bad value are refused naming
//! the file, the line and the key; `bootstorm check` says ok or why not, by its exit code too;
//! the packaged `dist/bootstorm.toml` checks; `bootstorm manpage` writes a man page.
//!
//! Traffic goes only to 127.0.0.1. `BOOTSTORM_BIN` runs these tests against another build.

mod common;
mod config;

use std::time::Duration;

use bootstorm::proto::wire::Mode;
use common::{Raw, Root};
use config::{ConfigFile, Served, config_text, granted_blksize, run};

#[test]
fn a_file_alone_serves_and_flags_win() {
    let root = Root::new();
    let f = ConfigFile::new(&config_text(root.path(), 1, "io = \"epoll\"\nmax-blksize = 600\nlog-level = \"debug\""));
    let s = Served::start(&["--config", f.arg()], 1).unwrap_or_else(|e| panic!("refused: {e:?}"));
    assert_eq!(granted_blksize(s.addrs[0]), "600");
    assert_eq!(
        Raw::new(s.addrs[0]).fetch("small.bin", Mode::Octet, Default::default()).unwrap(),
        root.file("small.bin")
    );
    let starting = s.wait_records("starting", 1, Duration::from_secs(5));
    assert!(starting.contains(" workers=1 ") && starting.contains(" max_blksize=600 "), "{starting}");
    drop(s);

    // The same key on the command line: the flag wins, the rest of the file still applies.
    let s = Served::start(&["--max-blksize", "700", "--config", f.arg()], 1).unwrap();
    assert_eq!(granted_blksize(s.addrs[0]), "700");
    let starting = s.wait_records("starting", 1, Duration::from_secs(5));
    assert!(starting.contains(" workers=1 ") && starting.contains(" max_blksize=700 "), "{starting}");
    drop(s);
    // Lists too: the command line's --allow replaces the file's, not adds to it.
    let f = ConfigFile::new(&config_text(root.path(), 1, "allow = [\"10.0.0.0/8\"]"));
    let s = Served::start(&["--config", f.arg(), "--allow", "127.0.0.1"], 1).unwrap();
    let starting = s.wait_records("starting", 1, Duration::from_secs(5));
    assert!(starting.contains(" allow=127.0.0.1/32 "), "{starting}");
}

#[test]
fn unknown_keys_and_bad_values_are_refused_by_name() {
    let root = Root::new();
    let refused = |extra: &str, args: &[&str]| {
        let f = ConfigFile::new(&config_text(root.path(), 1, extra));
        let mut argv = vec!["--config", f.arg()];
        argv.extend_from_slice(args);
        match Served::start(&argv, 1) {
            Ok(_) => panic!("{extra:?} was accepted"),
            Err((code, err)) => {
                assert_eq!(code, Some(1), "{err}");
                (err, f.path.display().to_string())
            }
        }
    };
    // The key's line: after the four lines of `config_text`.
    let (err, path) = refused("max_blksize = 1468", &[]);
    assert!(err.contains(&format!("{path}:5: max_blksize: no such setting; did you mean max-blksize?")), "{err}");
    let (err, path) = refused("max-blksize = 70000", &[]);
    assert!(err.contains(&format!("{path}:5: max-blksize: invalid value '70000'")), "{err}");
    assert!(err.contains("70000 is not in 8..=65464"), "{err}");
    let (err, path) = refused("timeout = -1", &[]);
    assert!(err.contains(&format!("{path}:5: timeout: a non-negative number of seconds")), "{err}");
    let (err, _) = refused("single-port = \"yes\"", &[]);
    assert!(err.contains("single-port: a switch: true or false, not a string"), "{err}");
    let (err, _) = refused("config = \"/etc/other.toml\"", &[]);
    assert!(err.contains("config: a configuration file cannot name another"), "{err}");
    let (err, path) = refused("[server]\nworkers = 2", &[]);
    assert!(err.contains(&format!("{path}:5: server: no such setting")), "{err}");
    let (err, path) = refused("max-blksize = = 1", &[]);
    assert!(err.contains(&format!("{path}:5: not valid TOML")), "{err}");
    // A contradiction between the file and the command line.
    let (err, _) = refused("single-port = true", &["--port-range", "30000:30010"]);
    assert!(err.contains("--single-port") && err.contains("--port-range"), "{err}");
    // A file that is not there.
    let (code, _, err) = run(&["--config", "/nonexistent/bootstorm.toml"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/bootstorm.toml: cannot read: No such file"), "{err}");
    // Neither the file nor the command line names a root.
    let f = ConfigFile::new("workers = 1\n");
    let (code, _, err) = run(&["--config", f.arg()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no root: give root = \"DIR\" in the file or --root DIR"), "{err}");
}

#[test]
fn check_says_ok_or_why_not() {
    let root = Root::new();
    let f = ConfigFile::new(&config_text(root.path(), 2, "allow = [\"10.0.0.0/8\"]"));
    let (code, out, err) = run(&["check", "--config", f.arg()]);
    assert_eq!((code, out.trim()), (Some(0), format!("{}: ok", f.arg()).as_str()), "{err}");
    // Flags after `check` are checked with the file, and win as when serving.
    let (code, _, err) = run(&["check", "--config", f.arg(), "--max-blksize", "7"]);
    assert_eq!(code, Some(2), "a bad flag is a usage error: {err}");
    let (code, _, err) = run(&["check", "--config", f.arg(), "--root", "/nonexistent/tftp"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--root /nonexistent/tftp: No such file or directory"), "{err}");
    // What a start would refuse before binding: the root not a directory, an unknown user.
    f.write(&config_text(&root.path().join("small.bin"), 1, ""));
    let (code, _, err) = run(&["check", "--config", f.arg()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("small.bin: not a directory"), "{err}");
    f.write(&config_text(root.path(), 1, "user = \"no-such-user-here\""));
    let (code, _, err) = run(&["check", "--config", f.arg()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no-such-user-here"), "{err}");
    f.write(&config_text(root.path(), 1, "max-windowsize = 0"));
    let (code, out, err) = run(&["check", "--config", f.arg()]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(err.contains(&format!("{}:5: max-windowsize: invalid value '0'", f.arg())), "{err}");
    // Nothing was bound: a check of a file whose port is taken still says ok.
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    f.write(&format!("root = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n", root.path().display()));
    assert_eq!(run(&["check", "--config", f.arg()]).0, Some(0));
}

#[test]
fn the_packaged_file_checks() {
    let dist = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/bootstorm.toml");
    let root = Root::new();
    let (code, out, err) = run(&["check", "--config", dist, "--root", root.path().to_str().unwrap()]);
    assert_eq!((code, out.trim()), (Some(0), format!("{dist}: ok").as_str()), "{err}");
    // Its own root is /srv/tftp, which is not there on a test machine: said so.
    if !std::path::Path::new("/srv/tftp").is_dir() {
        let (code, _, err) = run(&["check", "--config", dist]);
        assert_eq!(code, Some(1));
        assert!(err.contains("--root /srv/tftp"), "{err}");
    }
}

#[test]
fn manpage_is_roff_with_the_flags() {
    let (code, out, err) = run(&["manpage"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(".ie") || out.starts_with(".TH"), "{}", &out[..out.len().min(200)]);
    assert!(out.contains(".TH bootstorm 8"), "{}", &out[..out.len().min(400)]);
    for needle in ["\\-\\-root", "\\-\\-config", "SIGHUP", "bootstorm check"] {
        assert!(out.contains(needle), "the man page lacks {needle}");
    }
    // --help is the server's, as before, with the check command listed.
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--root <DIR>") && out.contains("--config <FILE>") && out.contains("check"), "{out}");
    assert!(!out.contains("manpage"), "hidden: {out}");
}
