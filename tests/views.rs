//! Per-client views on a real network: two namespaces joined by a veth pair, the server running
//! in-process in one (its workers started from a thread moved into it), clients on several
//! addresses in the other.
//!
//! Each client gets the file of its own directory where it has one and the shared file
//! otherwise; `{mac}` views take the client's hardware address from the server namespace's
//! neighbour table, which the kernel fills from the client's ARP request; a reload changes the
//! views of new requests. Addresses come from 198.18.0.0/15 and live only inside the
//! namespaces. Needs root (the test command runs as root). And the binary on loopback: a map
//! file changed on disk applies to new requests after SIGHUP.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bootstorm::config::{ClientDir, ServerConfig};
use bootstorm::proto::RequestOptions;
use bootstorm::proto::wire::Mode;
use bootstorm::server::Server;
use common::netns::Netns;
use common::{Raw, Root};

const SERVER: &str = "198.18.9.1";
const SERVER6: &str = "2001:db8:9::1";
const MAC_A: &str = "52:54:00:ab:cd:01";

/// The server's namespace and the clients', joined by `v0` (server, 198.18.9.1/24 and
/// 2001:db8:9::1/64) and `v1` (clients, 198.18.9.2/24, 198.18.9.3/24 and 2001:db8:9::2/64,
/// hardware address [`MAC_A`]).
struct Link {
    server: Netns,
    clients: Netns,
}

impl Link {
    /// `None` where namespaces cannot be made (not root, no `ip`).
    fn new() -> Option<Self> {
        let ok = std::process::Command::new("ip").args(["netns", "list"]).output().is_ok_and(|o| o.status.success());
        // SAFETY: geteuid has no preconditions.
        if !ok || unsafe { libc::geteuid() } != 0 {
            common::cannot_run("network namespaces need root and iproute2");
            return None;
        }
        let l = Self { server: Netns::new("bsview-s"), clients: Netns::new("bsview-c") };
        l.server.ip(&format!("link add v0 type veth peer name v1 netns {}", l.clients.name));
        l.clients.ip(&format!("link set v1 address {MAC_A}"));
        for (ns, dev) in [(&l.server, "v0"), (&l.clients, "v1")] {
            ns.ip(&format!("link set {dev} addrgenmode none"));
            ns.ip(&format!("link set {dev} up"));
        }
        l.server.ip(&format!("addr add {SERVER}/24 dev v0"));
        l.clients.ip("addr add 198.18.9.2/24 dev v1");
        l.clients.ip("addr add 198.18.9.3/24 dev v1");
        l.server.ip(&format!("addr add {SERVER6}/64 dev v0 nodad"));
        l.clients.ip("addr add 2001:db8:9::2/64 dev v1 nodad");
        Some(l)
    }

    /// The server for `cfg`, listening on port 69 of its addresses in the server namespace.
    fn start(&self, mut cfg: ServerConfig) -> Server {
        cfg.listen = vec![format!("{SERVER}:69").parse().unwrap(), format!("[{SERVER6}]:69").parse().unwrap()];
        cfg.workers = 2;
        cfg.pin = false;
        cfg.grace = Duration::from_secs(1);
        self.server.run(|| Server::start(cfg).expect("server starts"))
    }

    /// The bytes of `name` for the client on `from` (`[…]` for IPv6), or the ERROR. The
    /// clients forget the server's hardware address first, so that each request follows an ARP
    /// request (IPv6: a neighbour solicitation) from its own address, as one from a machine
    /// that just booted does: that is how the server's kernel learns the client's hardware
    /// address before the request arrives.
    fn fetch(&self, from: &str, name: &str) -> Result<Vec<u8>, (u16, String)> {
        self.clients.ip("-4 neigh flush dev v1");
        self.clients.ip("-6 neigh flush dev v1");
        let server = if from.starts_with('[') { format!("[{SERVER6}]:69") } else { format!("{SERVER}:69") };
        let server: SocketAddr = server.parse().unwrap();
        self.clients.run(|| Raw::from(&format!("{from}:0"), server).fetch(name, Mode::Octet, RequestOptions::default()))
    }
}

fn write(root: &Path, rel: &str, contents: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

/// A tree of shared files with one override for 198.18.9.2 and one for 198.18.9.3.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "pxelinux.cfg/default", b"shared menu");
    write(root, "pxelinux.0", &[7; 3000]);
    write(root, "clients/198.18.9.2/pxelinux.cfg/default", b"menu of .2");
    write(root, "clients/198.18.9.3/pxelinux.cfg/default", b"menu of .3");
    write(root, "clients/52-54-00-ab-cd-01/pxelinux.cfg/default", b"menu of 52-54-00-ab-cd-01");
    dir
}

#[test]
fn each_client_gets_its_override_and_both_get_the_shared_file() {
    let Some(link) = Link::new() else { return };
    let root = tree();
    let mut cfg = ServerConfig { root: root.path().to_path_buf(), ..Default::default() };
    cfg.serve.lookup.client_dir = Some(ClientDir::new("clients/{ip}").unwrap());
    let server = link.start(cfg);
    assert_eq!(link.fetch("198.18.9.2", "pxelinux.cfg/default").unwrap(), b"menu of .2");
    assert_eq!(link.fetch("198.18.9.3", "pxelinux.cfg/default").unwrap(), b"menu of .3");
    for client in ["198.18.9.2", "198.18.9.3"] {
        assert_eq!(link.fetch(client, "pxelinux.0").unwrap(), [7; 3000], "the shared file for {client}");
    }
    assert_eq!(link.fetch("198.18.9.2", "pxelinux.cfg/01-52-54-00-ab-cd-01").unwrap_err().0, 1);
    let views: u64 = server.counters().iter().map(|c| c.get(bootstorm::server::stats::Counter::ClientViews)).sum();
    assert_eq!(views, 2);
    server.stop();
    server.wait().unwrap();
}

#[test]
fn mac_views_read_the_neighbour_table_and_follow_a_reload() {
    let Some(link) = Link::new() else { return };
    let root = tree();
    let cfg = ServerConfig { root: root.path().to_path_buf(), ..Default::default() };
    let server = link.start(cfg.clone());
    assert_eq!(link.fetch("198.18.9.2", "pxelinux.cfg/default").unwrap(), b"shared menu", "no views yet");
    let mut by_mac = cfg;
    by_mac.serve.lookup.client_dir = Some(ClientDir::new("clients/{mac}").unwrap());
    let reloaded = server.reload(&by_mac).unwrap();
    assert_eq!(reloaded.changed, ["--client-dir"], "{reloaded:?}");
    // Both addresses are the same interface, so the same hardware address.
    assert_eq!(link.fetch("198.18.9.2", "pxelinux.cfg/default").unwrap(), b"menu of 52-54-00-ab-cd-01");
    assert_eq!(link.fetch("198.18.9.3", "pxelinux.cfg/default").unwrap(), b"menu of 52-54-00-ab-cd-01");
    assert_eq!(link.fetch("198.18.9.3", "pxelinux.0").unwrap(), [7; 3000]);
    // IPv6: the hardware address from the IPv6 neighbour table.
    assert_eq!(link.fetch("[2001:db8:9::2]", "pxelinux.cfg/default").unwrap(), b"menu of 52-54-00-ab-cd-01");
    server.stop();
    server.wait().unwrap();
}

/// The binary re-reads its map file on SIGHUP: new requests follow the file's new rules, and
/// the reload names `--map-file` as changed.
#[test]
fn sighup_reads_a_changed_map_file_again() {
    let root = Root::new();
    std::fs::create_dir_all(root.path().join("clients/a")).unwrap();
    std::fs::write(root.path().join("clients/a/menu"), b"menu a").unwrap();
    std::fs::create_dir_all(root.path().join("clients/b")).unwrap();
    std::fs::write(root.path().join("clients/b/menu"), b"menu b").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("names.map");
    std::fs::write(&map, "r ^menu$ clients/a/menu\n").unwrap();
    let s = common::Server::start(root.path(), "epoll", &["--map-file", map.to_str().unwrap()]);
    let fetch = || Raw::new(s.v4).fetch("menu", Mode::Octet, RequestOptions::default());
    assert_eq!(fetch().unwrap(), b"menu a");
    std::fs::write(&map, "r ^menu$ clients/b/menu\n").unwrap();
    s.signal(libc::SIGHUP);
    assert!(s.wait_log("changed=--map-file", Duration::from_secs(10)), "{}", s.log());
    assert_eq!(fetch().unwrap(), b"menu b");
    let (status, log) = s.stop();
    assert!(status.success(), "{log}");
}
