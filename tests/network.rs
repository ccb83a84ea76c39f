//! The request path on the network set-ups people have, packet by packet: two network
//! namespaces joined by a veth pair, the real `bootstorm` binary listening on the wildcard
//! addresses (port 69) in one, a packet-level client in a thread moved into the other.
//!
//! Why: the server ignores requests sent to a broadcast address (RFC 1123 4.2.3.5), and which
//! addresses those are comes from the interfaces. An IPv4 address added without `brd`
//! (`ip addr add 198.18.7.1/24 dev x`) is reported by glibc's `getifaddrs` as its own broadcast
//! address, and a server that trusted that report ignored every request sent to it. These tests
//! build each common set-up (an address with and without a broadcast address, several addresses
//! on one interface, /31 and /32 point-to-point addressing, IPv6 global and link-local) and check
//! that a request to each local address is served, with bytes, error codes and the source address
//! of every reply asserted, and that requests to the directed and the limited broadcast address
//! get no answer. Every case runs on both backends, in the default mode (a new port per
//! transfer) and with `--single-port`.
//!
//! Addresses come from 198.18.0.0/15 and 2001:db8::/32 and live only inside the namespaces,
//! which have no link to the host's network. Needs root (the test command runs as root).

#[macro_use]
mod common;

use std::net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket};
use std::process::Command;
use std::time::Duration;

use bootstorm::proto::wire::Packet;
use common::netns::Netns;
use common::*;

/// How long any one reply may take.
const WAIT: Duration = Duration::from_secs(2);
/// How long a request that must be ignored is watched for an answer.
const SILENCE: Duration = Duration::from_millis(1500);
/// The file every case downloads (3000 bytes: several blocks at any blksize used here).
const FILE: &str = "small.bin";
/// Options of the second download of each check: an OACK, a window of two, the size.
const OPTIONS: &[(&str, &str)] = &[("blksize", "1024"), ("windowsize", "2"), ("tsize", "0")];

both_backends!(
    address_without_broadcast_is_served,
    address_without_broadcast_is_served_single_port,
    broadcast_ignored_address_served,
    broadcast_ignored_address_served_single_port,
    several_addresses_each_answers_from_itself,
    several_addresses_each_answers_from_itself_single_port,
    slash_31_both_ends_are_hosts,
    slash_31_both_ends_are_hosts_single_port,
    slash_32_with_host_route,
    slash_32_with_host_route_single_port,
    ipv6_global_and_link_local,
    ipv6_global_and_link_local_single_port,
);

/// Two namespaces joined by a veth pair: `v0` in the server's, `v1` in the client's, both up,
/// with only the addresses the test adds (no automatic IPv6 link-local address). Deleted on drop.
struct Topology {
    server: Netns,
    client: Netns,
}

impl Topology {
    fn new() -> Self {
        let t = Self { server: Netns::new("bsnet-s"), client: Netns::new("bsnet-c") };
        t.server.ip(&format!("link add v0 type veth peer name v1 netns {}", t.client.name));
        for (ns, dev) in [(&t.server, "v0"), (&t.client, "v1")] {
            ns.ip(&format!("link set {dev} addrgenmode none"));
            ns.ip(&format!("link set {dev} up"));
        }
        t
    }

    /// `ip -n SERVER <args>`.
    fn on_server(&self, args: &str) {
        self.server.ip(args);
    }

    /// `ip -n CLIENT <args>`.
    fn on_client(&self, args: &str) {
        self.client.ip(args);
    }

    /// Starts bootstorm in the server namespace on 0.0.0.0:69 and [::]:69 (the harness adds
    /// 127.0.0.1 and ::1 there too); returns once it has bound every address.
    fn start(&self, root: &Root, io: &str, single_port: bool) -> Server {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server.name, bin()]);
        let mut extra = vec!["-l", "0.0.0.0:69", "-l", "[::]:69"];
        if single_port {
            extra.push("--single-port");
        }
        Server::start_with(cmd, root.path(), io, &extra)
    }

    /// Runs `f` on a thread inside the client namespace and returns what it returns (a panic in
    /// it fails the test with its message).
    fn client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.client.run(f)
    }
}

/// The index of interface `name` in the calling thread's network namespace.
fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

/// A client socket of `to`'s family on any address and port.
fn client_for(to: SocketAddr) -> Raw {
    let bind = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    Raw { sock: UdpSocket::bind(bind).unwrap(), server: to }
}

/// Asserts that a reply to a request sent to `to` came from `to`'s address (and, for IPv6
/// link-local, its scope), from port 69 when `port_69`, else from a new transfer port.
fn assert_from(to: SocketAddr, from: SocketAddr, port_69: bool, what: &str) {
    assert_eq!(from.ip(), to.ip(), "{what}: the reply to a request sent to {to} came from {from}");
    if let (SocketAddr::V6(t), SocketAddr::V6(f)) = (to, from) {
        if t.ip().is_unicast_link_local() {
            assert_eq!(f.scope_id(), t.scope_id(), "{what}: link-local reply from {from}, request sent to {to}");
        }
    }
    if port_69 {
        assert_eq!(from.port(), 69, "{what}: reply to {to} from {from}, not from the listening port");
    } else {
        assert_ne!(from.port(), 69, "{what}: reply to {to} from {from}, not from a new transfer port");
    }
}

/// The next datagram of the transfer from `tid`; panics on silence or on a packet from anywhere
/// else.
fn next_from(c: &Raw, tid: SocketAddr) -> Vec<u8> {
    let (p, from) = c.recv(WAIT).unwrap_or_else(|| panic!("transfer from {tid}: silence for {WAIT:?}"));
    assert_eq!(from, tid, "transfer from {tid}: a packet came from {from}");
    p
}

/// Downloads [`FILE`] from `c.server` with `opts`, packet by packet, checking the source of
/// every reply; returns the bytes.
fn download(c: &Raw, opts: &[(&str, &str)], single_port: bool, size: usize) -> Vec<u8> {
    let to = c.server;
    c.rrq(FILE, opts);
    let (mut pkt, tid) = c
        .recv(WAIT)
        .unwrap_or_else(|| panic!("RRQ {FILE} {opts:?} sent to {to}: no answer within {WAIT:?} (request ignored)"));
    assert_from(to, tid, single_port, "first reply");
    let (mut blksize, mut window) = (512, 1);
    let oack = match Packet::decode(&pkt) {
        Ok(Packet::Oack(o)) => {
            let val = |k: &str| o.get(k).map(|(_, v)| std::str::from_utf8(v).unwrap().parse::<usize>().unwrap());
            Some((val("blksize"), val("windowsize"), val("tsize")))
        }
        Ok(Packet::Data { .. }) => None,
        other => panic!("RRQ {FILE} {opts:?} sent to {to}: expected OACK or DATA, got {other:?}"),
    };
    if let Some((b, w, tsize)) = oack {
        assert_eq!(tsize, Some(size), "tsize in the OACK from {tid}");
        blksize = b.unwrap_or(blksize);
        window = w.unwrap_or(window);
        c.ack(tid, 0);
        pkt = next_from(c, tid);
    }
    let mut out = Vec::new();
    let mut want = 1u16;
    loop {
        let (block, data) = data_of(&pkt);
        // Anything else is a retransmission of a block already taken.
        if block == want {
            out.extend_from_slice(&data);
            let last = data.len() < blksize;
            if last || usize::from(want) % window == 0 {
                c.ack(tid, want);
            }
            if last {
                return out;
            }
            want += 1;
        }
        pkt = next_from(c, tid);
    }
}

/// Checks, from the client namespace, that requests to `to` are served: a plain download and
/// one with options give the file's bytes, a missing file gives ERROR 1, every reply from `to`'s
/// address.
fn assert_served(to: SocketAddr, single_port: bool, file: &[u8]) {
    for opts in [&[][..], OPTIONS] {
        let got = download(&client_for(to), opts, single_port, file.len());
        assert!(got == file, "{FILE} {opts:?} from {to}: {} bytes, not the file's {}", got.len(), file.len());
    }
    let c = client_for(to);
    c.rrq("missing.bin", &[]);
    let (p, from) = c.recv(WAIT).unwrap_or_else(|| panic!("RRQ missing.bin sent to {to}: no answer within {WAIT:?}"));
    // Errors to a request come from the listening socket in both modes.
    assert_from(to, from, true, "ERROR");
    assert_eq!(error_of(&p).0, 1, "RRQ missing.bin sent to {to}: {:?}", error_of(&p));
}

fn v4(s: &str) -> SocketAddr {
    SocketAddr::new(s.parse::<IpAddr>().unwrap(), 69)
}

/// Case 1: `ip addr add 198.18.7.1/24 dev v0`, no `brd` (what most scripts do); glibc reports
/// the address itself as the interface's broadcast address.
fn plain_address(io: &str, single_port: bool) {
    let t = Topology::new();
    t.on_server("addr add 198.18.7.1/24 dev v0");
    t.on_client("addr add 198.18.7.2/24 brd + dev v1");
    let root = Root::new();
    let file = root.file(FILE);
    let _s = t.start(&root, io, single_port);
    t.client(|| assert_served(v4("198.18.7.1"), single_port, &file));
}

fn address_without_broadcast_is_served(io: &str) {
    plain_address(io, false)
}

fn address_without_broadcast_is_served_single_port(io: &str) {
    plain_address(io, true)
}

/// Case 2: the same with `brd +`: the address is served; requests to the directed broadcast
/// 198.18.7.255 and to 255.255.255.255 reach the server (its ignored counter says so) and get
/// no answer.
fn with_broadcast_address(io: &str, single_port: bool) {
    let t = Topology::new();
    t.on_server("addr add 198.18.7.1/24 brd + dev v0");
    t.on_client("addr add 198.18.7.2/24 brd + dev v1");
    let root = Root::new();
    let file = root.file(FILE);
    let s = t.start(&root, io, single_port);
    t.client(|| {
        // Bound to its address so that the limited broadcast leaves by v1 without a route.
        let mut c = Raw { sock: UdpSocket::bind("198.18.7.2:0").unwrap(), server: v4("198.18.7.255") };
        c.sock.set_broadcast(true).unwrap();
        c.rrq(FILE, &[]);
        c.server = v4("255.255.255.255");
        c.rrq(FILE, OPTIONS);
        if let Some((p, from)) = c.recv(SILENCE) {
            let kind = Packet::decode(&p).map(|p| p.opcode());
            panic!("a request to a broadcast address was answered from {from}: {kind:?}, {} bytes", p.len());
        }
        assert_served(v4("198.18.7.1"), single_port, &file);
    });
    let (_, log) = s.stop();
    // Each worker's socket gets its own copy of a broadcast, hence at least.
    assert!(counter(&log, "ignored") >= 2, "the broadcasts did not reach the server: {log}");
}

fn broadcast_ignored_address_served(io: &str) {
    with_broadcast_address(io, false)
}

fn broadcast_ignored_address_served_single_port(io: &str) {
    with_broadcast_address(io, true)
}

/// Case 3: several addresses on one interface, with and without `brd`, one secondary: each is
/// served, and every reply comes from the address its request was sent to.
fn several_addresses(io: &str, single_port: bool) {
    let t = Topology::new();
    t.on_server("addr add 198.18.7.1/24 brd + dev v0");
    t.on_server("addr add 198.18.7.3/24 dev v0"); // secondary, no brd
    t.on_server("addr add 198.18.9.1/24 dev v0"); // another prefix, no brd
    t.on_server("addr add 198.18.9.4/24 brd + dev v0"); // its secondary, with brd
    t.on_client("addr add 198.18.7.2/24 brd + dev v1");
    t.on_client("addr add 198.18.9.2/24 brd + dev v1");
    let root = Root::new();
    let file = root.file(FILE);
    let _s = t.start(&root, io, single_port);
    t.client(|| {
        for a in ["198.18.7.1", "198.18.7.3", "198.18.9.1", "198.18.9.4"] {
            assert_served(v4(a), single_port, &file);
        }
    });
}

fn several_addresses_each_answers_from_itself(io: &str) {
    several_addresses(io, false)
}

fn several_addresses_each_answers_from_itself_single_port(io: &str) {
    several_addresses(io, true)
}

/// Case 4: a /31 (RFC 3021): both addresses are hosts, neither a network nor a broadcast
/// address.
fn slash_31(io: &str, single_port: bool) {
    let t = Topology::new();
    t.on_server("addr add 198.18.10.0/31 dev v0");
    t.on_client("addr add 198.18.10.1/31 dev v1");
    let root = Root::new();
    let file = root.file(FILE);
    let _s = t.start(&root, io, single_port);
    t.client(|| assert_served(v4("198.18.10.0"), single_port, &file));
}

fn slash_31_both_ends_are_hosts(io: &str) {
    slash_31(io, false)
}

fn slash_31_both_ends_are_hosts_single_port(io: &str) {
    slash_31(io, true)
}

/// Case 5: a /32 with a host route to the peer, on both ends.
fn slash_32(io: &str, single_port: bool) {
    let t = Topology::new();
    t.on_server("addr add 198.18.11.1/32 dev v0");
    t.on_server("route add 198.18.11.2/32 dev v0");
    t.on_client("addr add 198.18.11.2/32 dev v1");
    t.on_client("route add 198.18.11.1/32 dev v1");
    let root = Root::new();
    let file = root.file(FILE);
    let _s = t.start(&root, io, single_port);
    t.client(|| assert_served(v4("198.18.11.1"), single_port, &file));
}

fn slash_32_with_host_route(io: &str) {
    slash_32(io, false)
}

fn slash_32_with_host_route_single_port(io: &str) {
    slash_32(io, true)
}

/// Case 6: two IPv6 global and two link-local addresses on the server's interface: each is
/// served, every reply from the address (and for link-local, the scope) the request went to.
fn ipv6(io: &str, single_port: bool) {
    let t = Topology::new();
    for a in ["2001:db8::1/64", "2001:db8::3/64", "fe80::1/64", "fe80::3/64"] {
        t.on_server(&format!("-6 addr add {a} dev v0 nodad"));
    }
    for a in ["2001:db8::2/64", "fe80::2/64"] {
        t.on_client(&format!("-6 addr add {a} dev v1 nodad"));
    }
    let root = Root::new();
    let file = root.file(FILE);
    let _s = t.start(&root, io, single_port);
    t.client(|| {
        let scope = ifindex("v1");
        for a in ["2001:db8::1", "2001:db8::3", "fe80::1", "fe80::3"] {
            let ip = a.parse().unwrap();
            let to = SocketAddrV6::new(ip, 69, 0, if a.starts_with("fe80") { scope } else { 0 });
            assert_served(SocketAddr::V6(to), single_port, &file);
        }
    });
}

fn ipv6_global_and_link_local(io: &str) {
    ipv6(io, false)
}

fn ipv6_global_and_link_local_single_port(io: &str) {
    ipv6(io, true)
}
