//! The binary as a drop-in for tftp-hpa's `in.tftpd`: started under that name (a symbolic link,
//! or a copy) or as `bootstorm hpa`, with the command lines the stacks use, it serves; each flag
//! does what tftp-hpa's does; a flag it cannot honour is refused by name. Debian's init script
//! for tftpd-hpa (`tests/hpa/tftpd-hpa.init`, from Debian's tftpd-hpa 5.2+20150808-1.4, which
//! systemd runs through its generated unit where there is no native one) starts it unchanged.
//!
//! Traffic goes only to 127.0.0.1 and ::1, read with tftp-hpa's own client. `BOOTSTORM_BIN`
//! runs these tests against another build (an older one to see them fail).

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bootstorm::proto::wire::{Packet, RequestKind};
use common::{Raw, bytes, cannot_run};

const SEC: Duration = Duration::from_secs(1);

/// The binary under test.
fn bin() -> PathBuf {
    std::env::var_os("BOOTSTORM_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bootstorm")), PathBuf::from)
}

/// A directory holding `in.tftpd` (a symbolic link to the binary, or a copy of it: a program
/// of its own for `start-stop-daemon --exec`) and a served tree every user may read, as the
/// server drops to `nobody` when started as root.
struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    fn new(copy: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = dir.path().join("in.tftpd");
        if copy {
            std::fs::copy(bin(), &program).unwrap();
        } else {
            std::os::unix::fs::symlink(bin(), &program).unwrap();
        }
        let root = dir.path().join("srv");
        std::fs::create_dir_all(root.join("pxelinux.cfg")).unwrap();
        std::fs::write(root.join("pxelinux.0"), bytes(40_000, 7)).unwrap();
        std::fs::write(root.join("pxelinux.cfg/default"), b"default local\n").unwrap();
        std::fs::write(root.join("private.bin"), b"root only").unwrap();
        std::fs::set_permissions(root.join("private.bin"), std::fs::Permissions::from_mode(0o600)).unwrap();
        Self { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("in.tftpd")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    fn root_arg(&self) -> String {
        self.root().to_str().unwrap().to_string()
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.root().join(name)).unwrap()
    }
}

/// Whether tftp-hpa's client is here; says why not when it is not.
fn have_tftp() -> bool {
    let ok = Command::new("tftp").arg("-V").output().is_ok();
    if !ok {
        cannot_run("needs tftp-hpa's tftp client");
    }
    ok
}

/// `name` fetched with tftp-hpa's client (octet); `None` when it fails.
fn get(addr: SocketAddr, name: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got");
    let (ok, _) = common::run(
        Command::new("tftp")
            .args([if addr.is_ipv6() { "-6" } else { "-4" }, &addr.ip().to_string(), &addr.port().to_string()])
            .args(["-m", "octet", "-c", "get", name])
            .arg(&out),
        30 * SEC,
    );
    if ok { std::fs::read(&out).ok() } else { None }
}

/// The `listening on` addresses in `out`, turned into loopback ones (a wildcard address is
/// reached on loopback).
fn listening(out: &str) -> Vec<SocketAddr> {
    out.lines()
        // The init script writes "Starting HPA's tftpd: in.tftpd" without a line end first.
        .filter_map(|l| l.split("listening on ").nth(1)?.trim().parse::<SocketAddr>().ok())
        .map(|mut a| {
            if a.ip().is_unspecified() {
                a.set_ip(if a.is_ipv6() { "::1".parse().unwrap() } else { "127.0.0.1".parse().unwrap() });
            }
            a
        })
        .collect()
}

/// A server in the foreground (`-L`), killed by PID when dropped.
struct Foreground {
    child: Child,
    addrs: Vec<SocketAddr>,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Foreground {
    /// Runs `program args` and waits for `listens` `listening on` lines; the exit code and the
    /// output when it exits instead.
    fn start(program: &Path, args: &[&str], listens: usize) -> Result<Self, (Option<i32>, String)> {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("stderr.log");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut out = String::new();
        let end = Instant::now() + 20 * SEC;
        while listening(&out).len() < listens {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => out.push_str(&format!("{line}\n")),
                Err(_) if Instant::now() > end => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err((None, std::fs::read_to_string(&log).unwrap_or_default()));
                }
                Err(_) => {
                    if let Some(st) = child.try_wait().unwrap() {
                        return Err((st.code(), out + &std::fs::read_to_string(&log).unwrap_or_default()));
                    }
                }
            }
        }
        Ok(Self { child, addrs: listening(&out), log, _logdir: logdir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `needle` (the `starting` record follows the `listening on` lines),
    /// or after 10 s.
    fn log_with(&self, needle: &str) -> String {
        let end = Instant::now() + 10 * SEC;
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > end {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the exit status and the log.
    fn stop(mut self) -> (Option<i32>, String) {
        // SAFETY: a signal to our own child, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + 20 * SEC;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code(), self.log());
            }
            assert!(Instant::now() < end, "did not stop: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server that left the foreground, found by the argument only it has, killed by PID when
/// dropped.
struct Detached {
    pid: i32,
    addrs: Vec<SocketAddr>,
}

impl Detached {
    /// Runs `cmd` (which must leave a server behind and exit 0) and finds the server: the
    /// process whose command line holds `marker`. The server's log goes to `log`.
    fn start(cmd: &mut Command, marker: &str, log: &Path) -> Result<Self, (Option<i32>, String)> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn");
        let end = Instant::now() + 30 * SEC;
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            if Instant::now() > end {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The server no longer writes to standard output once listening: this ends.
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let out = out + &std::fs::read_to_string(log).unwrap_or_default();
        if code != Some(0) {
            return Err((code, out));
        }
        let end = Instant::now() + 10 * SEC;
        loop {
            if let Some(pid) = pid_with_arg(marker) {
                return Ok(Self { pid, addrs: listening(&out) });
            }
            if Instant::now() > end {
                return Err((code, format!("no server process left: {out}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn uid(&self) -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    /// SIGTERM, then waits for the process to go.
    fn stop(mut self) {
        let pid = std::mem::replace(&mut self.pid, 0);
        // SAFETY: a signal to the server this test started, by its PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + 20 * SEC;
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(Instant::now() < end, "server {pid} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

/// The process (not a zombie) whose command line has an argument containing `marker`.
fn pid_with_arg(marker: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let mut cmdline = Vec::new();
        std::fs::File::open(e.path().join("cmdline")).ok()?.read_to_end(&mut cmdline).ok()?;
        let hit = cmdline.split(|&b| b == 0).any(|a| String::from_utf8_lossy(a).contains(marker));
        (hit && !is_zombie(pid)).then_some(pid)
    })
}

/// The OACK's options for a request of `name` with `opts`, from the port that answered (the
/// transfer is then abandoned with an ERROR).
fn oack(server: SocketAddr, name: &str, opts: &[(&str, &str)]) -> (Vec<(String, String)>, u16) {
    let c = Raw::new(server);
    c.request(RequestKind::Read, name, bootstorm::proto::wire::Mode::Octet, opts);
    let (p, from) = c.expect(5 * SEC);
    let got = match Packet::decode(&p).unwrap() {
        Packet::Oack(o) => o
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect(),
        Packet::Data { .. } => Vec::new(),
        other => panic!("expected an OACK, got {other:?}"),
    };
    c.send(from, &[0, 5, 0, 0, b'x', 0]);
    (got, from.port())
}

fn opt<'a>(opts: &'a [(String, String)], name: &str) -> Option<&'a str> {
    opts.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn debians_init_script_starts_it_unchanged_and_it_serves() {
    if !have_tftp() {
        return;
    }
    if !Path::new("/lib/lsb/init-functions").exists()
        || Command::new("start-stop-daemon").arg("--version").output().is_err()
    {
        cannot_run("needs lsb-base's /lib/lsb/init-functions and start-stop-daemon");
        return;
    }
    let i = Install::new(true);
    // /etc/default/tftpd-hpa as the package writes it, with this test's directory, a loopback
    // address (port chosen by the kernel, printed on standard output) and a user that exists.
    let defaults = i.dir.path().join("tftpd-hpa.default");
    std::fs::write(
        &defaults,
        format!(
            "# /etc/default/tftpd-hpa\n\nTFTP_USERNAME=\"nobody\"\nTFTP_DIRECTORY=\"{}\"\nTFTP_ADDRESS=\"127.0.0.1:0\"\nTFTP_OPTIONS=\"--secure\"\n",
            i.root().display()
        ),
    )
    .unwrap();
    // The init script, with only its two paths (the program, the defaults file) moved here.
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hpa/tftpd-hpa.init")).unwrap();
    assert!(
        script.contains("--listen --user $TFTP_USERNAME --address $TFTP_ADDRESS \\\n\t\t$TFTP_OPTIONS $TFTP_DIRECTORY")
    );
    let script = script
        .replace("DAEMON=\"/usr/sbin/in.tftpd\"", &format!("DAEMON=\"{}\"", i.program().display()))
        .replace("DEFAULTS=\"/etc/default/tftpd-hpa\"", &format!("DEFAULTS=\"{}\"", defaults.display()));
    let init = i.dir.path().join("tftpd-hpa");
    std::fs::write(&init, script).unwrap();
    let s = Detached::start(
        Command::new("sh").arg(&init).arg("start").env("_SYSTEMCTL_SKIP_REDIRECT", "1"),
        &i.root_arg(),
        &i.dir.path().join("log"),
    )
    .unwrap_or_else(|e| panic!("the init script did not start it: {e:?}"));
    assert_eq!(s.addrs.len(), 1, "{:?}", s.addrs);
    assert_eq!(get(s.addrs[0], "pxelinux.0").as_deref(), Some(&i.file("pxelinux.0")[..]));
    // --secure: a leading slash is the directory's.
    assert_eq!(get(s.addrs[0], "/pxelinux.cfg/default").as_deref(), Some(&b"default local\n"[..]));
    assert_eq!(s.uid(), 65534, "--user nobody");
    s.stop();
}

/// `exec` (an `ExecStart=` value) with systemd's expansion of `env`: `${VAR}` within a word,
/// `$VAR` alone split at whitespace.
fn systemd_expand(exec: &str, env: &[(&str, String)]) -> Vec<String> {
    let value = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for word in exec.split_whitespace() {
        match word.strip_prefix('$').filter(|w| !w.starts_with('{')) {
            Some(name) => out.extend(value(name).split_whitespace().map(str::to_string)),
            None => {
                let mut w = word.to_string();
                for (k, v) in env {
                    w = w.replace(&format!("${{{k}}}"), v);
                }
                out.push(w);
            }
        }
    }
    out
}

#[test]
fn the_shipped_tftpd_hpa_unit_runs_it_with_debians_defaults() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/tftpd-hpa/tftpd-hpa.service")).unwrap();
    assert!(unit.contains("EnvironmentFile=/etc/default/tftpd-hpa"), "{unit}");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart=");
    let i = Install::new(false);
    // /etc/default/tftpd-hpa as Debian's package writes it, with options in tftpd-hpa's terms.
    let env = [
        ("TFTP_USERNAME", "nobody".to_string()),
        ("TFTP_DIRECTORY", i.root_arg()),
        ("TFTP_ADDRESS", "127.0.0.1:0".to_string()),
        ("TFTP_OPTIONS", "--secure --blocksize 1468 -v".to_string()),
    ];
    let argv = systemd_expand(exec, &env);
    assert_eq!(argv[0], "/usr/bin/bootstorm", "{argv:?}");
    let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    let s = Foreground::start(&bin(), &args, 1).unwrap_or_else(|e| panic!("{argv:?}: {e:?}"));
    if have_tftp() {
        assert_eq!(get(s.addrs[0], "pxelinux.0").as_deref(), Some(&i.file("pxelinux.0")[..]), "{}", s.log());
    }
    assert_eq!(opt(&oack(s.addrs[0], "pxelinux.0", &[("blksize", "8192")]).0, "blksize"), Some("1468"));
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(uid_of(s.pid()), 65534, "TFTP_USERNAME");
    }
    let (code, log) = s.stop();
    assert_eq!(code, Some(0), "{log}");
    // The unit itself, where systemd-analyze is here.
    if Command::new("systemd-analyze").arg("--version").output().is_ok() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tftpd-hpa.service"),
            unit.replace("/usr/bin/bootstorm", bin().to_str().unwrap()),
        )
        .unwrap();
        let (code, out) = common::run_code(
            Command::new("systemd-analyze").arg("verify").current_dir(dir.path()).arg("tftpd-hpa.service"),
            30 * SEC,
        );
        assert_eq!((code, out.trim()), (Some(0), ""), "systemd-analyze verify");
    }
}

#[test]
fn the_stacks_command_lines_serve() {
    if !have_tftp() {
        return;
    }
    let i = Install::new(false);
    let root = i.root_arg();
    // xCAT (xcatd): -4 -v -l -s /tftpboot; leaves the foreground once listening.
    let s = Detached::start(
        Command::new(i.program()).args(["-4", "-v", "-l", "-s", &root, "-a", "127.0.0.1:0"]),
        &root,
        &i.dir.path().join("log"),
    )
    .unwrap_or_else(|e| panic!("xCAT's line: {e:?}"));
    assert_eq!(get(s.addrs[0], "pxelinux.0").as_deref(), Some(&i.file("pxelinux.0")[..]), "xCAT's line");
    s.stop();
    // Cobbler's containers: -L -u root -s /srv/tftpboot.
    let s = Foreground::start(&i.program(), &["-L", "-u", "root", "-s", &root, "-a", "127.0.0.1:0"], 1)
        .unwrap_or_else(|e| panic!("Cobbler's line: {e:?}"));
    assert_eq!(get(s.addrs[0], "pxelinux.0").as_deref(), Some(&i.file("pxelinux.0")[..]), "Cobbler's line");
    // The same, as `bootstorm hpa`.
    let h = Foreground::start(&bin(), &["hpa", "-L", "-u", "root", "-s", &root, "-a", "127.0.0.1:0"], 1)
        .unwrap_or_else(|e| panic!("bootstorm hpa: {e:?}"));
    assert_eq!(get(h.addrs[0], "pxelinux.0").as_deref(), Some(&i.file("pxelinux.0")[..]), "bootstorm hpa");
    // Long flags, shortened and with `=`, grouped short ones, as getopt_long takes them.
    let l = Foreground::start(&i.program(), &["-Lvv", "--user=root", "--sec", &root, "--addr", "127.0.0.1:0"], 1)
        .unwrap_or_else(|e| panic!("long flags: {e:?}"));
    assert_eq!(get(l.addrs[0], "pxelinux.cfg/default").as_deref(), Some(&b"default local\n"[..]));
    drop((s, h, l));
    // -l: a server that cannot start says why before the command returns, which exits 1.
    let missing = format!("{root}/missing");
    let (code, out) = Detached::start(
        Command::new(i.program()).args(["-l", "-u", "root", "-s", &missing, "-a", "127.0.0.1:0"]),
        &missing,
        &i.dir.path().join("log-missing"),
    )
    .map(|_| ())
    .expect_err("started with a missing directory");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot open root"), "{out}");
}

#[test]
fn map_files_of_the_stacks() {
    if !have_tftp() {
        return;
    }
    let i = Install::new(false);
    let root = i.root_arg();
    // Ironic (configure-pxe.rst): `-v -v -v -v -v --map-file /tftpboot/map-file /tftpboot`,
    // without -s: its rules make every name absolute beneath the directory.
    let ironic = br"re ^(/tftpboot/) /tftpboot/\2
re ^/tftpboot/ /tftpboot/
re ^(^/) /tftpboot/\1
re ^([^/]) /tftpboot/\1
";
    let map = i.root().join("map-file");
    std::fs::write(&map, String::from_utf8_lossy(ironic).replace("/tftpboot", &root)).unwrap();
    let map = map.to_str().unwrap();
    let s = Foreground::start(
        &i.program(),
        &["-L", "-a", "127.0.0.1:0", "-u", "root", "-v", "-v", "-v", "-v", "-v", "--map-file", map, &root],
        1,
    )
    .unwrap_or_else(|e| panic!("Ironic's line: {e:?}"));
    assert_eq!(get(s.addrs[0], "pxelinux.0").as_deref(), Some(&i.file("pxelinux.0")[..]), "{}", s.log());
    assert_eq!(get(s.addrs[0], &format!("{root}/pxelinux.cfg/default")).as_deref(), Some(&b"default local\n"[..]));
    let log = s.log_with("lookup=rule:");
    assert!(log.contains("lookup=rule:"), "the rule that decided is logged: {log}");
    drop(s);
    // xCAT (AAsn.pm): -4 -v -l -s /tftpboot -m /etc/tftpmapfile4xcat.conf, one rule; and two of
    // a hand-written file's: an alias and a refusal with its message.
    let xcat = i.dir.path().join("tftpmapfile4xcat.conf");
    std::fs::write(&xcat, "rg \\\\ /\nr ^alias$ pxelinux.cfg/default\na ^secret.* no\\ secrets\\ here\n").unwrap();
    let s = Detached::start(
        Command::new(i.program()).args([
            "-4",
            "-v",
            "-l",
            "-s",
            &root,
            "-m",
            xcat.to_str().unwrap(),
            "-a",
            "127.0.0.1:0",
        ]),
        &root,
        &i.dir.path().join("log"),
    )
    .unwrap_or_else(|e| panic!("xCAT's line: {e:?}"));
    assert_eq!(get(s.addrs[0], "pxelinux.cfg\\default").as_deref(), Some(&b"default local\n"[..]));
    assert_eq!(get(s.addrs[0], "alias").as_deref(), Some(&b"default local\n"[..]), "-m: the rule's alias");
    let refused = Raw::new(s.addrs[0]).fetch("secret.bin", bootstorm::proto::wire::Mode::Octet, Default::default());
    assert_eq!(refused, Err((2, "no secrets here".to_string())), "-m: the rule's refusal");
    s.stop();
    // Foreman (puppet-tftp's tftpd.map, TFTP_OPTIONS="--secure --map-file ..."): Windows names
    // and the 0xFF some ROMs append.
    std::fs::create_dir_all(i.root().join("boot")).unwrap();
    std::fs::write(i.root().join("boot/bootmgr.exe"), bytes(3000, 11)).unwrap();
    let foreman = i.dir.path().join("tftpd.map");
    let rules: &[&[u8]] =
        &[b"re ^bootmgr\\.exe boot/bootmgr.exe\nre ^\\\\Boot\\\\ boot/\nrg \\\\ /\nrg (.*)", b"\xff", b"$ \\1\n"];
    std::fs::write(&foreman, rules.concat()).unwrap();
    let s = Foreground::start(
        &i.program(),
        &["-L", "-u", "root", "--secure", "--map-file", foreman.to_str().unwrap(), &root, "-a", "127.0.0.1:0"],
        1,
    )
    .unwrap_or_else(|e| panic!("Foreman's line: {e:?}"));
    assert_eq!(get(s.addrs[0], "bootmgr.exe").as_deref(), Some(&i.file("boot/bootmgr.exe")[..]), "{}", s.log());
    assert_eq!(get(s.addrs[0], "\\Boot\\bootmgr.exe").as_deref(), Some(&i.file("boot/bootmgr.exe")[..]));
    let c = Raw::new(s.addrs[0]);
    c.send(s.addrs[0], &[&[0, 1][..], b"pxelinux.cfg/default\xff\0octet\0"].concat());
    let (p, _) = c.expect(5 * SEC);
    match Packet::decode(&p).unwrap() {
        Packet::Data { block: 1, data } => assert_eq!(data, b"default local\n", "the trailing 0xFF dropped"),
        other => panic!("expected DATA 1, got {other:?}: {}", s.log()),
    }
}

#[test]
fn sighup_reads_the_map_file_again() {
    let i = Install::new(false);
    let map = i.dir.path().join("tftpd.map");
    std::fs::write(&map, "r ^alias$ pxelinux.cfg/default\n").unwrap();
    let s = hpa(&i, &["-u", "root", "-m", map.to_str().unwrap()]);
    let fetch = |name: &str| Raw::new(s.addrs[0]).fetch(name, bootstorm::proto::wire::Mode::Octet, Default::default());
    assert_eq!(fetch("alias").as_deref(), Ok(&b"default local\n"[..]));
    std::fs::write(&map, "r ^alias$ pxelinux.0\n").unwrap();
    // SAFETY: a signal to the server this test started, by its PID.
    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    let log = s.log_with("msg=reloaded");
    assert!(log.contains("--map-file"), "the reload names the map file as changed: {log}");
    assert_eq!(fetch("alias").as_deref(), Ok(&i.file("pxelinux.0")[..]), "{log}");
}

#[test]
fn map_test_agrees_with_the_server() {
    let i = Install::new(false);
    let root = i.root_arg();
    std::fs::write(i.root().join("127.0.0.1.conf"), b"by address\n").unwrap();
    let map = i.dir.path().join("tftpd.map");
    std::fs::write(
        &map,
        "rg \\\\ /\nre ^bootmgr\\.exe pxelinux.0\nr ^/?tftpboot/ /\nr ^alias$ pxelinux.cfg/default\n\
         a ^secret.* no\\ secrets\nr ^byip$ \\i.conf\na ^plain\n",
    )
    .unwrap();
    let names = [
        "pxelinux.0",
        "bootmgr.exe",
        "\\pxelinux.cfg\\default",
        "/tftpboot/pxelinux.0",
        &format!("{root}/pxelinux.0"),
        "alias",
        "secret.bin",
        "byip",
        "plainfile",
        "missing",
        "a/../../x",
    ];
    let mut argv = vec!["--map-test", map.to_str().unwrap(), "--root", &root, "--client", "127.0.0.1"];
    argv.extend(names);
    let (code, out) = one_shot(&bin(), &argv);
    assert_eq!(code, Some(0), "{out}");
    let s = hpa(&i, &["-u", "root", "-m", map.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), names.len(), "{out}");
    for (name, line) in names.iter().zip(lines) {
        let (shown, became) = line.split_once(" -> ").unwrap_or_else(|| panic!("{line}"));
        assert_eq!(shown, name.replace('\\', "\\\\"), "{line}");
        let served = Raw::new(s.addrs[0]).fetch(name, bootstorm::proto::wire::Mode::Octet, Default::default());
        if let Some(refused) = became.strip_prefix("refused: ") {
            let (code, message) = served.expect_err(line);
            match refused.strip_prefix("ERROR 2 ") {
                Some(rest) => {
                    assert_eq!(code, 2, "{line}: {message}");
                    if let Some(quoted) = rest.strip_prefix('"') {
                        assert_eq!(message, quoted.split('"').next().unwrap(), "{line}");
                    }
                }
                None => assert_ne!(code, 1, "{line}: refused, not just missing: {message}"),
            }
        } else {
            let path = became.split(" (").next().unwrap();
            match std::fs::read(i.root().join(path)) {
                Ok(data) => assert!(
                    served.as_deref() == Ok(&data[..]),
                    "{line}: the server gave {:?}",
                    served.map(|d| format!("{} other bytes", d.len()))
                ),
                Err(_) => assert!(
                    served.as_ref().is_err_and(|e| e.0 == 1),
                    "{line}: no such file, but the server gave {:?}",
                    served.map(|d| format!("{} bytes", d.len()))
                ),
            }
        }
    }
}

#[test]
fn inetd_mode_serves_the_socket_on_standard_input_and_exits_when_idle() {
    let i = Install::new(false);
    let root = i.root_arg();
    let map = i.root().join("map-file");
    std::fs::write(&map, format!("r ^([^/]) {root}/\\1\n")).unwrap();
    // inetd's part: the socket, bound, and a request already waiting on it when the server starts.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let c = Raw::new(addr);
    c.rrq("pxelinux.cfg/default", &[]);
    let log = i.dir.path().join("log");
    let started = Instant::now();
    // Ironic's xinetd `server_args`, with -t 1 for a short idle timeout.
    let mut child = Command::new(i.program())
        .args(["-v", "-v", "-v", "-v", "-v", "-t", "1", "-u", "root", "--map-file", map.to_str().unwrap(), &root])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(socket)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (p, from) = c.expect(10 * SEC);
    let log_now = || std::fs::read_to_string(&log).unwrap_or_default();
    match Packet::decode(&p).unwrap() {
        Packet::Data { block: 1, data } => assert_eq!(data, b"default local\n"),
        other => panic!("expected DATA 1, got {other:?}: {}", log_now()),
    }
    c.ack(from, 1);
    // A second request on the same socket, while it runs.
    let again = Raw::new(addr).fetch("pxelinux.0", bootstorm::proto::wire::Mode::Octet, Default::default());
    assert_eq!(again.as_deref(), Ok(&i.file("pxelinux.0")[..]), "{}", log_now());
    // Idle for -t seconds: it exits 0, for inetd to start it again on the next request.
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > 20 * SEC {
            let _ = child.kill();
            panic!("still running after 20 s idle: {}", log_now());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {}", log_now());
    assert!(log_now().contains("no request for the idle timeout"), "{}", log_now());
    // No socket on standard input: refused by name.
    let (code, out) = one_shot(&i.program(), &["-s", &root]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("standard input is not a socket"), "{out}");
}

/// A foreground server on 127.0.0.1 with the directory and `args`.
fn hpa(i: &Install, args: &[&str]) -> Foreground {
    let root = i.root_arg();
    let mut v = vec!["-L", "-a", "127.0.0.1:0"];
    v.extend_from_slice(args);
    v.extend(["-s", &root]);
    Foreground::start(&i.program(), &v, 1).unwrap_or_else(|e| panic!("in.tftpd {v:?}: {e:?}"))
}

#[test]
fn each_flag_does_what_tftp_hpa_does() {
    let i = Install::new(false);
    // -B caps blksize; -r refuses an option.
    let s = hpa(&i, &["-u", "root"]);
    assert_eq!(opt(&oack(s.addrs[0], "pxelinux.0", &[("blksize", "1400")]).0, "blksize"), Some("1400"));
    let s = hpa(&i, &["-u", "root", "-B", "600"]);
    assert_eq!(opt(&oack(s.addrs[0], "pxelinux.0", &[("blksize", "1400")]).0, "blksize"), Some("600"), "-B");
    let s = hpa(&i, &["-u", "root", "-r", "blksize"]);
    let (o, _) = oack(s.addrs[0], "pxelinux.0", &[("blksize", "1400"), ("tsize", "0")]);
    assert_eq!((opt(&o, "blksize"), opt(&o, "tsize")), (None, Some("40000")), "-r blksize");
    // -R: the transfer's port is in the range.
    let s = hpa(&i, &["-u", "root", "-R", "45100:45199"]);
    for _ in 0..3 {
        let (_, port) = oack(s.addrs[0], "pxelinux.0", &[("tsize", "0")]);
        assert!((45100..=45199).contains(&port), "-R: port {port}");
    }
    // -T: the first retransmission timeout, in microseconds; -t does nothing when listening.
    let s = hpa(&i, &["-u", "root", "-T", "250000", "-t", "900"]);
    let log = s.log_with("msg=starting");
    assert!(log.contains(" timeout_ms=250 "), "-T: {log}");
    // -p: files without o+r are served; by default they are not.
    let s = hpa(&i, &["-u", "root"]);
    assert!(
        Raw::new(s.addrs[0]).fetch("private.bin", bootstorm::proto::wire::Mode::Octet, Default::default()).is_err()
    );
    let s = hpa(&i, &["-u", "root", "-p"]);
    assert_eq!(
        Raw::new(s.addrs[0]).fetch("private.bin", bootstorm::proto::wire::Mode::Octet, Default::default()).unwrap(),
        b"root only"
    );
    // -v: each request logged as it arrives.
    let s = hpa(&i, &["-u", "root", "-v"]);
    let _ = oack(s.addrs[0], "pxelinux.0", &[("tsize", "0")]);
    let (_, log) = s.stop();
    assert!(log.contains("msg=request") && log.contains("pxelinux.0"), "-v: {log}");
    // -u: the user it serves as; as root without -u, nobody (tftp-hpa's default).
    let s = hpa(&i, &["-u", "daemon"]);
    assert_eq!(uid_of(s.pid()), 1, "-u daemon");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let s = hpa(&i, &[]);
        assert_eq!(uid_of(s.pid()), 65534, "nobody by default");
    }
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn create_umask_and_pid_file() {
    if !have_tftp() {
        return;
    }
    let i = Install::new(false);
    let upload = tempfile::tempdir().unwrap();
    let src = upload.path().join("new.bin");
    std::fs::write(&src, bytes(5000, 9)).unwrap();
    let put = |addr: SocketAddr, name: &str| {
        common::run(
            Command::new("tftp")
                .args(["-4", &addr.ip().to_string(), &addr.port().to_string(), "-m", "octet", "-c", "put"])
                .arg(&src)
                .arg(name),
            30 * SEC,
        )
    };
    // Without -c, nothing is created.
    let s = hpa(&i, &["-u", "root"]);
    let _ = put(s.addrs[0], "a.bin");
    assert!(!i.root().join("a.bin").exists(), "created without -c");
    // -c: created, mode 0666 (tftp-hpa's umask 0); -U sets the umask.
    let s = hpa(&i, &["-u", "root", "-c"]);
    let (ok, out) = put(s.addrs[0], "b.bin");
    assert!(ok, "-c: {out} {}", s.log());
    assert_eq!(std::fs::read(i.root().join("b.bin")).unwrap(), std::fs::read(&src).unwrap());
    assert_eq!(std::fs::metadata(i.root().join("b.bin")).unwrap().permissions().mode() & 0o777, 0o666);
    let s = hpa(&i, &["-u", "root", "-c", "-U", "027"]);
    let (ok, out) = put(s.addrs[0], "c.bin");
    assert!(ok, "-c -U: {out}");
    assert_eq!(std::fs::metadata(i.root().join("c.bin")).unwrap().permissions().mode() & 0o777, 0o640);
    drop(s);
    // -P: the pid, written once listening, removed at exit.
    let pidfile = upload.path().join("tftpd.pid");
    let s = hpa(&i, &["-u", "root", "-P", pidfile.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), s.pid().to_string());
    let (code, log) = s.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!pidfile.exists(), "the pid file is left: {log}");
}

#[test]
fn addresses_and_families() {
    let i = Install::new(false);
    let root = i.root_arg();
    let start = |args: &[&str], listens| {
        let mut v = vec!["-L", "-u", "root"];
        v.extend_from_slice(args);
        v.extend(["-s", &root]);
        Foreground::start(&i.program(), &v, listens).unwrap_or_else(|e| panic!("{v:?}: {e:?}"))
    };
    let fetch = |a: SocketAddr| {
        Raw::new(a).fetch("pxelinux.cfg/default", bootstorm::proto::wire::Mode::Octet, Default::default()).unwrap()
    };
    // -a :PORT is every address of both families; -4 and -6 keep one.
    let s = start(&["-a", ":0"], 2);
    assert_eq!(s.addrs.iter().filter(|a| a.is_ipv4()).count(), 1, "{:?}", s.addrs);
    let s4 = start(&["-4", "-a", ":0"], 1);
    assert!(s4.addrs[0].is_ipv4(), "{:?}", s4.addrs);
    assert_eq!(fetch(s4.addrs[0]), b"default local\n");
    let s6 = start(&["-6", "-a", "[::1]:0"], 1);
    assert!(s6.addrs[0].is_ipv6(), "{:?}", s6.addrs);
    assert_eq!(fetch(s6.addrs[0]), b"default local\n");
    drop((s, s4, s6));
    // -a ADDR:PORT: that address and port.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = start(&["-a", &format!("127.0.0.1:{port}")], 1);
    assert_eq!(s.addrs, [SocketAddr::from(([127, 0, 0, 1], port))]);
    assert_eq!(fetch(s.addrs[0]), b"default local\n");
}

/// `program args`: its exit code and what it wrote.
fn one_shot(program: &Path, args: &[&str]) -> (Option<i32>, String) {
    common::run_code(Command::new(program).args(args).stdin(Stdio::null()), 20 * SEC)
}

#[test]
fn unsupported_flags_are_refused_by_name() {
    let i = Install::new(false);
    let root = i.root_arg();
    for (args, named) in [
        (&["-L", "-w", "-s", &root][..], "-w"),
        (&["-L", "--systemd", "-s", &root], "--systemd"),
        (&["-L", "-B", "100", "-s", &root], "-B"),
        (&["-L", "-r", "bigblocks", "-s", &root], "-r"),
        (&["-L", "-s", &root, "/other"], "exactly one directory"),
        (&["-L", "-s"], "a directory to serve is required"),
        (&["-L", "-4", "-6", "-s", &root], "-4 and -6"),
    ] {
        for (program, argv) in [(i.program(), args.to_vec()), (bin(), [&["hpa"][..], args].concat())] {
            let (code, out) = one_shot(&program, &argv);
            assert_eq!(code, Some(64), "{argv:?}: {out}");
            assert!(out.contains("in.tftpd: ") && out.contains(named), "{argv:?}: {out}");
        }
    }
}

#[test]
fn version_and_usage() {
    let i = Install::new(false);
    for (program, args) in [(i.program(), vec!["-V"]), (bin(), vec!["hpa", "--version"])] {
        let (code, out) = one_shot(&program, &args);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.starts_with("tftp-hpa 5.2") && out.contains("bootstorm"), "{out}");
    }
    let (code, out) = one_shot(&i.program(), &["-h"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Usage: in.tftpd"), "{out}");
}
