//! A reload of a real server on 127.0.0.1, both backends, two workers: requests sent after
//! [`Server::reload`] returns are judged by the new policy on every worker.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::*;
use crate::config::{Cidr, IoBackend, IoConfig};
use crate::proto::wire;
use crate::server::StartError;
use crate::server::stats::Counter;

/// Client sockets per source address: enough that the kernel's hash sends some to each worker.
const PORTS: usize = 16;

/// A server of `root` on an ephemeral port of 127.0.0.1 with two workers on `backend`; `None`
/// (outside CI) where io_uring is unusable.
fn start(backend: IoBackend, root: &std::path::Path) -> Option<Server> {
    let cfg = ServerConfig {
        root: root.to_path_buf(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 2,
        pin: false,
        io: IoConfig { backend, ..IoConfig::default() },
        ..ServerConfig::default()
    };
    match Server::start(cfg) {
        Ok(s) => Some(s),
        Err(StartError::Uring(why)) => {
            assert!(std::env::var_os("CI").is_none(), "io_uring is unusable under CI: {why}");
            println!("skipped: io_uring is unusable here: {why}");
            None
        }
        Err(e) => panic!("cannot start: {e}"),
    }
}

/// Requests `f` from [`PORTS`] sockets bound to `ip`, at once; returns how many got its one DATA
/// within `wait` (each acknowledged, so that its transfer ends).
fn served(server: SocketAddr, ip: &str, wait: Duration) -> usize {
    let socks: Vec<UdpSocket> = (0..PORTS).map(|_| UdpSocket::bind((ip, 0)).unwrap()).collect();
    for s in &socks {
        s.send_to(b"\x00\x01f\x00octet\x00", server).unwrap();
    }
    let deadline = Instant::now() + wait;
    let mut n = 0;
    let mut buf = [0u8; 600];
    for s in &socks {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).unwrap();
        if let Ok((len, from)) = s.recv_from(&mut buf) {
            assert_eq!(&buf[..len], b"\x00\x03\x00\x01bootstorm\n", "from {ip}");
            s.send_to(&wire::ack(1), from).unwrap();
            n += 1;
        }
    }
    n
}

/// Requests ignored by each worker so far.
fn ignored(server: &Server) -> Vec<u64> {
    server.counters().iter().map(|c| c.get(Counter::Ignored)).collect()
}

fn reload_end_to_end(backend: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"bootstorm\n").unwrap();
    let Some(server) = start(backend, dir.path()) else { return };
    let addr = server.local_addrs()[0];
    let answer = Duration::from_secs(3);
    let silence = Duration::from_millis(300);
    assert_eq!(served(addr, "127.0.0.2", answer), PORTS);
    assert_eq!(served(addr, "127.0.0.3", answer), PORTS);

    // Only 127.0.0.2 from now on; the workers and listen address asked for cannot change.
    let mut new = server.config();
    new.serve.allow = vec![Cidr::parse("127.0.0.2/32").unwrap()];
    new.workers = 3;
    new.listen = vec!["127.0.0.1:6969".parse().unwrap()];
    let done = server.reload(&new).unwrap();
    let applied: Vec<u64> = server.workers.iter().map(|w| w.control.applied_generation()).collect();
    assert_eq!(applied, [1, 1], "{backend:?}: reload returned before every worker took the policy");
    assert_eq!(done.changed, ["--allow"]);
    assert_eq!(done.not_applied, ["--listen", "--workers"]);
    assert_eq!(served(addr, "127.0.0.3", silence), 0, "{backend:?}: a request from outside the new --allow answered");
    let after = ignored(&server);
    assert_eq!(after.iter().sum::<u64>(), PORTS as u64);
    assert!(after.iter().all(|&n| n > 0), "{backend:?}: a worker saw none of the requests: {after:?}");
    assert_eq!(served(addr, "127.0.0.2", answer), PORTS);
    let in_force = server.config();
    assert_eq!(in_force.serve.allow, new.serve.allow);
    assert_eq!((in_force.workers, &in_force.listen), (2, &vec!["127.0.0.1:0".parse().unwrap()]));

    // A configuration that fails validation changes nothing.
    let mut wrong = new.clone();
    wrong.serve.allow = Vec::new();
    wrong.serve.limits.max_blksize = 0;
    assert_eq!(server.reload(&wrong), Err(ConfigError::MaxBlksize));
    assert_eq!(server.config().serve.allow, new.serve.allow);
    assert_eq!(served(addr, "127.0.0.3", silence), 0, "{backend:?}: the refused reload applied");
    assert_eq!(served(addr, "127.0.0.2", answer), PORTS);

    // The same policy again: nothing changed, nothing fixed differs from what is in force.
    let again = server.reload(&server.config()).unwrap();
    assert_eq!(again, Reloaded::default());
    server.stop();
    server.wait().unwrap();
}

#[test]
fn reload_on_epoll() {
    reload_end_to_end(IoBackend::Epoll);
}

#[test]
fn reload_on_io_uring() {
    reload_end_to_end(IoBackend::Uring);
}

/// An upload policy the upload settings in force do not allow is refused, even where the new
/// configuration's own upload settings (which cannot change) would allow it.
#[test]
fn an_upload_policy_the_upload_settings_in_force_refuse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig {
        root: dir.path().to_path_buf(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 1,
        pin: false,
        io: IoConfig { backend: IoBackend::Epoll, ..IoConfig::default() },
        // Uploads into the root: new files only.
        write: Some(crate::config::WriteConfig {
            dir: None,
            in_served_tree: true,
            overwrite_served_files: false,
            allow_single_port: false,
        }),
        ..ServerConfig::default()
    };
    cfg.serve.upload.create = true;
    let server = Server::start(cfg).unwrap();
    // Replacing files, valid into a directory outside the root, which this server does not use.
    let mut new = server.config();
    new.write = Some(crate::config::WriteConfig {
        dir: Some(elsewhere.path().to_path_buf()),
        in_served_tree: false,
        ..new.write.unwrap()
    });
    new.serve.upload.overwrite = true;
    new.validate().unwrap();
    assert_eq!(server.reload(&new), Err(ConfigError::OverwriteServedUnaccepted));
    assert!(!server.config().serve.upload.overwrite);
    server.stop();
    server.wait().unwrap();
}
