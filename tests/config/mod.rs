//! The real binary started from a configuration file: its process, its addresses as printed,
//! its log; and one-shot runs (`check`, `manpage`, refused starts).

#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `BOOTSTORM_BIN` when set (to run these tests against another build,
/// an older one to see them fail), else this build's.
pub fn bin() -> String {
    std::env::var("BOOTSTORM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bootstorm").to_string())
}

/// A configuration file in a directory of its own, written again at will.
pub struct ConfigFile {
    dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstorm.toml");
        let f = Self { dir, path };
        f.write(text);
        f
    }

    /// Replaces the contents at once (a rename), as an editor or a package upgrade does.
    pub fn write(&self, text: &str) {
        let tmp = self.dir.path().join("bootstorm.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// `root = "<root>"` and a loopback listen address with a kernel-chosen port, one worker each
/// per `workers`, then `extra` lines.
pub fn config_text(root: &Path, workers: usize, extra: &str) -> String {
    format!("root = \"{}\"\nlisten = [\"127.0.0.1:0\"]\nworkers = {workers}\nno-pin = true\n{extra}\n", root.display())
}

/// A running server, stopped (killed) by PID when dropped.
pub struct Served {
    child: Child,
    /// The addresses it printed as `listening on`.
    pub addrs: Vec<SocketAddr>,
    stdout: std::sync::mpsc::Receiver<String>,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Served {
    /// Starts the binary with `args` and waits for `listens` "listening on" lines; the exit code
    /// and standard error when it exits instead.
    pub fn start(args: &[&str], listens: usize) -> Result<Self, (Option<i32>, String)> {
        Self::start_env(args, listens, &[])
    }

    /// [`start`](Self::start) with these environment variables set.
    pub fn start_env(args: &[&str], listens: usize, env: &[(&str, &Path)]) -> Result<Self, (Option<i32>, String)> {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("stderr.log");
        let mut child = Command::new(bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn bootstorm");
        let rx = crate::common::stdout_lines(&mut child);
        let addrs = match crate::common::listening(&mut child, &rx, listens, Duration::from_secs(15)) {
            Ok(addrs) => addrs,
            Err(crate::common::NotListening::Exited(st)) => {
                return Err((st.code(), std::fs::read_to_string(&log).unwrap_or_default()));
            }
            Err(crate::common::NotListening::TimedOut) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("bootstorm {args:?} neither served nor exited: {}", std::fs::read_to_string(&log).unwrap());
            }
        };
        Ok(Self { child, addrs, stdout: rx, log, _logdir: logdir })
    }

    /// The next line on standard output that starts with `prefix`, without it.
    pub fn stdout_line(&self, prefix: &str) -> Option<String> {
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.to_string());
            }
        }
        None
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines with `msg=<msg>` (a quoted or a bare message).
    pub fn records(&self, msg: &str) -> Vec<String> {
        let (quoted, bare) = (format!("msg=\"{msg}\""), format!("msg={msg} "));
        self.log().lines().filter(|l| l.contains(&quoted) || l.contains(&bare)).map(str::to_string).collect()
    }

    /// Waits until there are `n` records `msg`; returns the last.
    pub fn wait_records(&self, msg: &str, n: usize, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let r = self.records(msg);
            if r.len() >= n {
                return r[n - 1].clone();
            }
            assert!(Instant::now() < end, "no record {n} of {msg:?} within {timeout:?}: {}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the server, by its PID.
    pub fn signal(&self, sig: i32) {
        // SAFETY: sends a signal to our own child process, by its PID.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` to its end (at most 20 s): exit code, stdout, stderr.
pub fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bootstorm");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bootstorm {args:?} did not end within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (code, out.join().unwrap(), err.join().unwrap())
}

/// The blksize the server at `server` grants a request of `small.bin` for 1400.
pub fn granted_blksize(server: SocketAddr) -> String {
    use bootstorm::proto::wire::Packet;
    let c = crate::common::Raw::new(server);
    c.rrq("small.bin", &[("blksize", "1400")]);
    let (p, _) = c.expect(Duration::from_secs(3));
    match Packet::decode(&p).unwrap() {
        Packet::Oack(opts) => String::from_utf8_lossy(opts.get("blksize").expect("blksize granted").1).into_owned(),
        other => panic!("expected an OACK, got {other:?}"),
    }
}
