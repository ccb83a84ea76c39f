//! Network namespaces for tests: created with `ip netns add` (with loopback up), entered by one
//! thread at a time with `setns`, deleted on drop, even after a panic. Addresses inside them come
//! from 198.18.0.0/15 and 2001:db8::/32; nothing links them to the host's network.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// `ip netns add` mounts /run/netns on first use; concurrent first uses race, so a test process
/// creates and deletes its namespaces one at a time.
static LOCK: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args` (split on spaces); panics with its output if it fails.
pub fn ip(args: &str) {
    let out = Command::new("ip").args(args.split_whitespace()).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace with loopback up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace named after `prefix`, this process and a counter.
    pub fn new(prefix: &str) -> Self {
        let name = format!("{prefix}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        {
            let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
            ip(&format!("netns add {name}"));
        }
        let ns = Self { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NAME <args>`.
    pub fn ip(&self, args: &str) {
        ip(&format!("-n {} {args}", self.name));
    }

    /// Runs `f` on a thread inside the namespace and returns what it returns (a panic in it
    /// fails the test with its message).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: plain syscall on a descriptor we own; it moves only this thread, which
                // ends when `f` returns.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if !Command::new("ip").args(["netns", "del", &self.name]).status().is_ok_and(|s| s.success()) {
            eprintln!("could not delete network namespace {}", self.name);
        }
    }
}
