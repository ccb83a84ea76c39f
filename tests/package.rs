//! The Debian package, built from the repository the way a release is (`scripts/deb.sh`, here
//! `--profile dev --no-build` on the debug binary this test run built), checked from outside:
//!
//! - lintian reports no error (its warnings are printed);
//! - the control area: `Depends` computed from the binary's libraries plus adduser, the
//!   conffile `/etc/bootstorm/bootstorm.toml`, a postinst that creates the `tftp` user and
//!   `/srv/tftp` and enables the units, maintainer scripts that parse;
//! - the files: the binary, both systemd units (the service, with the package's drop-in, starting
//!   the packaged binary with the packaged configuration file), the configuration, the man page
//!   (section 8, generated from the command line), the copyright and changelog;
//! - the binary unpacked with `dpkg-deb -x` accepts the packaged configuration file and, with it,
//!   serves a file to tftp-hpa's client on 127.0.0.1.
//!
//! The package is never installed here. Needs cargo-deb, lintian, dpkg-deb and tftp-hpa, which
//! the test command installs.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// The package built once for every test of this file, unpacked: `None` when a tool is missing.
struct Unpacked {
    deb: PathBuf,
    /// `dpkg-deb -x`: the files as installed, under this directory.
    files: tempfile::TempDir,
    /// `dpkg-deb -e`: control, conffiles, md5sums and the maintainer scripts.
    control: tempfile::TempDir,
}

impl Unpacked {
    fn file(&self, path: &str) -> PathBuf {
        self.files.path().join(path.trim_start_matches('/'))
    }

    fn control(&self, name: &str) -> String {
        std::fs::read_to_string(self.control.path().join(name)).unwrap_or_else(|e| panic!("control file {name}: {e}"))
    }
}

fn package() -> Option<&'static Unpacked> {
    static PACKAGE: OnceLock<Option<Unpacked>> = OnceLock::new();
    PACKAGE.get_or_init(build).as_ref()
}

fn build() -> Option<Unpacked> {
    for (tool, args, why) in [
        ("cargo", ["deb", "--version"], "cargo-deb (cargo install cargo-deb --version 3.8.0 --locked)"),
        ("lintian", ["--version", ""], "lintian"),
        ("dpkg-deb", ["--version", ""], "dpkg-deb"),
    ] {
        let args = args.iter().filter(|a| !a.is_empty());
        if !Command::new(tool).args(args).output().is_ok_and(|o| o.status.success()) {
            cannot_run(&format!("needs {why}"));
            return None;
        }
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The binary this run built is the one packaged: deb.sh finds it through cargo's target dir.
    let built = Path::new(bin());
    assert!(built.ends_with("debug/bootstorm"), "unexpected test binary {built:?}");
    let (code, out) = run_code(
        Command::new(repo.join("scripts/deb.sh")).args(["--profile", "dev", "--no-build"]).current_dir(repo),
        Duration::from_secs(300),
    );
    assert_eq!(code, Some(0), "scripts/deb.sh failed:\n{out}");
    let deb = out
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("scripts/deb.sh named no package:\n{out}"));
    assert!(deb.starts_with(built.parent().unwrap().parent().unwrap()), "{deb:?} is not beside {built:?}");

    let files = tempfile::tempdir().unwrap();
    let control = tempfile::tempdir().unwrap();
    for (flag, dir) in [("-x", files.path()), ("-e", control.path())] {
        let (ok, out) = run(Command::new("dpkg-deb").arg(flag).arg(&deb).arg(dir), Duration::from_secs(60));
        assert!(ok, "dpkg-deb {flag} {deb:?}: {out}");
    }
    Some(Unpacked { deb, files, control })
}

#[test]
fn lintian_reports_no_error() {
    let Some(p) = package() else { return };
    // --fail-on error: the exit status says whether any E: tag was emitted.
    let (code, out) = run_code(
        Command::new("lintian").args(["--fail-on", "error", "--tag-display-limit", "0"]).arg(&p.deb),
        Duration::from_secs(300),
    );
    println!("lintian {}:\n{out}", p.deb.display());
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert_eq!(code, Some(0), "lintian failed:\n{out}");
}

#[test]
fn control_area_has_dependencies_conffile_and_user_creation() {
    let Some(p) = package() else { return };
    let control = p.control("control");
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{control}"))
            .to_string()
    };
    assert_eq!(field("Package"), "bootstorm");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    // $auto: the C library the binary links, found by dpkg-shlibdeps; adduser for the postinst.
    let depends = field("Depends");
    assert!(depends.contains("libc6 (>="), "Depends without the C library: {depends}");
    assert!(depends.split(", ").any(|d| d == "adduser"), "Depends without adduser: {depends}");

    let conffiles = p.control("conffiles");
    assert!(conffiles.lines().any(|l| l == "/etc/bootstorm/bootstorm.toml"), "conffiles: {conffiles}");

    let postinst = p.control("postinst");
    for needle in ["adduser --system", "getent passwd tftp", "mkdir -p /srv/tftp", "deb-systemd-helper enable"] {
        assert!(postinst.contains(needle), "postinst without {needle:?}:\n{postinst}");
    }
    for unit in ["bootstorm.service", "bootstorm.socket"] {
        assert!(postinst.contains(unit), "postinst does not enable {unit}:\n{postinst}");
    }
    for script in ["postinst", "prerm", "postrm"] {
        let path = p.control.path().join(script);
        let (ok, out) = run(Command::new("sh").arg("-n").arg(&path), Duration::from_secs(10));
        assert!(ok, "{script} does not parse: {out}");
        assert!(!p.control(script).contains("#DEBHELPER#"), "{script} kept the #DEBHELPER# token");
    }
}

#[test]
fn files_are_where_debian_looks_for_them() {
    let Some(p) = package() else { return };
    let binary = p.file("/usr/bin/bootstorm");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&binary).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755, "{binary:?}");
    for path in [
        "/usr/lib/systemd/system/bootstorm.service",
        "/usr/lib/systemd/system/bootstorm.socket",
        "/etc/bootstorm/bootstorm.toml",
        "/usr/share/doc/bootstorm/copyright",
        "/usr/share/doc/bootstorm/changelog.Debian.gz",
    ] {
        assert!(p.file(path).is_file(), "{path} is not in the package");
    }
    // The shipped files, byte for byte.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (packaged, source) in [
        ("/usr/lib/systemd/system/bootstorm.service", "dist/bootstorm.service"),
        ("/usr/lib/systemd/system/bootstorm.socket", "dist/bootstorm.socket"),
        ("/etc/bootstorm/bootstorm.toml", "dist/bootstorm.toml"),
    ] {
        let shipped = std::fs::read_to_string(p.file(packaged)).unwrap();
        assert_eq!(shipped, std::fs::read_to_string(repo.join(source)).unwrap(), "{packaged} is not {source}");
    }
    // The service starts the binary the package installs, with the packaged configuration file:
    // the ExecStart= in force once the package's drop-ins are read (an empty one resets).
    let exec = effective_exec_start(p);
    let program = exec.split_whitespace().next().expect("a program in ExecStart=");
    assert!(p.file(program).is_file(), "ExecStart={exec}: {program} is not in the package");
    assert!(
        exec.contains("--config /etc/bootstorm/bootstorm.toml"),
        "ExecStart={exec} does not read /etc/bootstorm/bootstorm.toml"
    );

    // The man page: section 8, generated from the command line, so it names every flag.
    let mut man = String::new();
    let gz = std::fs::File::open(p.file("/usr/share/man/man8/bootstorm.8.gz")).expect("the man page");
    let mut gunzip = Command::new("gzip").arg("-dc").stdin(gz).stdout(std::process::Stdio::piped()).spawn().unwrap();
    gunzip.stdout.take().unwrap().read_to_string(&mut man).unwrap();
    assert!(gunzip.wait().unwrap().success());
    let th = man.lines().find(|l| l.starts_with(".TH ")).unwrap_or_else(|| panic!("no .TH line:\n{man}"));
    assert!(th.split_whitespace().nth(2) == Some("8"), "not section 8: {th}");
    for flag in ["root", "listen", "single\\-port"] {
        assert!(man.contains(&format!("\\-\\-{flag}")), "man page without --{flag}");
    }
}

/// The service's command line as systemd reads it: the unit, then its drop-ins by name.
fn effective_exec_start(p: &Unpacked) -> String {
    let mut files = vec![p.file("/usr/lib/systemd/system/bootstorm.service")];
    if let Ok(dir) = std::fs::read_dir(p.file("/usr/lib/systemd/system/bootstorm.service.d")) {
        let mut dropins: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).collect();
        dropins.sort();
        files.extend(dropins);
    }
    let mut exec = String::new();
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            if let Some(value) = line.strip_prefix("ExecStart=") {
                exec = value.trim().to_string();
            }
        }
    }
    assert!(!exec.is_empty(), "no ExecStart= for bootstorm.service");
    exec
}

#[test]
fn unpacked_binary_serves() {
    let Some(p) = package() else { return };
    if Command::new("tftp").arg("-V").output().is_err() {
        cannot_run("needs tftp-hpa's tftp");
        return;
    }
    let root = Root::new();
    let binary = p.file("/usr/bin/bootstorm");
    // With the packaged configuration file, the flags standing in for its root and listen
    // addresses (a flag wins over the file's key).
    let config = p.file("/etc/bootstorm/bootstorm.toml");
    let (ok, out) = run(
        Command::new(&binary).arg("check").arg("--config").arg(&config).arg("--root").arg(root.path()),
        Duration::from_secs(10),
    );
    assert!(ok, "bootstorm check rejects the packaged configuration: {out}");
    let s = Server::start_with(Command::new(&binary), root.path(), "auto", &["--config", config.to_str().unwrap()]);
    let dir = scratch();
    let out = dir.path().join("vmlinuz");
    let (_, log) = run(
        Command::new("tftp")
            .args(["-4", "127.0.0.1", &s.v4.port().to_string(), "-m", "octet", "-c", "get", "vmlinuz"])
            .arg(&out),
        Duration::from_secs(30),
    );
    assert_eq!(std::fs::read(&out).unwrap_or_default(), root.file("vmlinuz"), "tftp-hpa: {log}");
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
}
