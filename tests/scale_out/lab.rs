//! The scale-out lab: a client namespace, a router namespace and three instance namespaces, each
//! instance running the real `bootstorm` binary on one shared root. Addresses come from
//! 198.18.0.0/15 and live only inside the namespaces:
//!
//! ```text
//!   client ns                  router ns                      instance ns k (k = 0, 1, 2)
//!   c0 198.18.1.2  ───────────  rc 198.18.1.1
//!   lo: local 198.18.128.0/20   rk 198.18.(10+k).1  ────────  e0 198.18.(10+k).2
//!                                                             lo: the VIP (anycast only)
//! ```
//!
//! The clients bind any address of 198.18.128.0/20 (a local route on the client's loopback),
//! and the router routes that prefix back to the client namespace. The client namespace drops,
//! and counts, every UDP datagram that does not come from the VIP: a PXE client takes answers
//! only from the address it asked.
//!
//! Everything is torn down on drop, even after a panic: the instances are killed by PID first,
//! then the namespaces are deleted.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::netns::Netns;

/// The address every client asks.
pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The first client address (the clients take consecutive addresses from here).
pub(crate) const CLIENT_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 1);
/// How many instances.
pub(crate) const INSTANCES: usize = 3;
/// The resilient nexthop group of the anycast set-up.
const GROUP: u32 = 100;
/// Buckets of the resilient group (a multiple of the instances: an even share each).
const BUCKETS: u32 = 96;

/// Instance `k`'s own address.
pub(crate) fn instance_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 10 + k as u8, 2)
}

/// Runs `program args` inside namespace `ns` (`ip netns exec`), with `stdin` on its standard
/// input; panics with its output unless it succeeds. Returns its standard output.
pub(crate) fn exec(ns: &Netns, program: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", ns.name));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}\n{stdin}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft -f -` inside `ns` with `script`.
pub(crate) fn nft(ns: &Netns, script: &str) {
    exec(ns, "nft", &["-f", "-"], script);
}

/// Sets sysctl `key` (dotted) to `value` inside `ns`: /proc/sys/net is the namespace of the
/// thread that opens it.
pub(crate) fn sysctl(ns: &Netns, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(|| std::fs::write(&path, value)).unwrap_or_else(|e| panic!("{path} = {value} in {}: {e}", ns.name));
}

/// How bootstorm hands out transfer ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ports {
    /// `--single-port`: every transfer on port 69.
    Single,
    /// The default: a new port per transfer.
    PerTransfer,
}

impl Ports {
    /// The name in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Single => "single-port",
            Self::PerTransfer => "port per transfer",
        }
    }
}

/// One bootstorm process in an instance namespace, logging JSON records to a file; killed by
/// PID on drop.
pub(crate) struct Instance {
    child: Option<Child>,
    log: PathBuf,
    /// Set once the process has exited (its status).
    exited: Option<ExitStatus>,
}

impl Instance {
    /// Starts bootstorm in `ns` on 0.0.0.0:69 with one worker, JSON records to `log`, and
    /// returns once it listens.
    fn start(ns: &Netns, root: &Path, ports: Ports, grace_secs: u32, log: PathBuf) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, crate::common::bin()])
            .args(["--root", root.to_str().unwrap(), "-l", "0.0.0.0:69", "--workers", "1", "--no-pin"])
            .args(["--log-format", "json", "--grace", &grace_secs.to_string()]);
        if ports == Ports::Single {
            cmd.arg("--single-port");
        }
        // `ip netns exec` execs the server: the child's PID is the server's.
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn bootstorm");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut me = Self { child: Some(child), log, exited: None };
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.starts_with("listening on ") => return me,
                Ok(_) => {}
                Err(_) => {
                    me.kill();
                    panic!("bootstorm did not start in {}: {}", ns.name, me.log());
                }
            }
        }
    }

    /// The server's PID.
    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Everything it has logged.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log records, parsed.
    pub(crate) fn records(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.log().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The outcomes of its `transfer finished` records (`ok`, `timeout`, `client_error`, ...).
    pub(crate) fn outcomes(&self) -> Vec<String> {
        self.records()
            .iter()
            .filter(|r| r.get("msg").is_some_and(|m| m == "transfer finished"))
            .map(|r| r.get("outcome").and_then(|o| o.as_str()).unwrap_or("?").to_string())
            .collect()
    }

    /// Sends `sig` to the server, by its PID.
    pub(crate) fn signal(&self, sig: i32) {
        if self.exited.is_none() && self.pid() > 0 {
            // SAFETY: a signal to our own child, by its PID; it has not been reaped.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// SIGKILL, then reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            self.exited = c.wait().ok();
        }
    }

    /// Waits up to `limit` for the process to exit; returns its status.
    pub(crate) fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while self.exited.is_none() && Instant::now() < end {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.exited = Some(st);
                self.child = None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.exited
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How the router spreads the clients over the instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Balancer {
    /// ECMP anycast: the VIP on every instance's loopback, a resilient nexthop group on the
    /// router, `fib_multipath_hash_policy` 0 (L3) or 1 (L4).
    Anycast { policy: u8 },
    /// A Kubernetes-style Service: the router DNATs VIP:69 to the instances' addresses.
    Service { pick: Pick, helper: bool },
}

/// How a Service picks an instance for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// `numgen inc mod N`: round robin.
    Numgen,
    /// `numgen random mod N`: at random, what kube-proxy's nftables mode writes.
    Random,
    /// `jhash ip saddr . udp sport mod N`: by the client's address and port.
    Jhash,
}

impl Balancer {
    /// The name in the table.
    pub(crate) fn name(self) -> String {
        match self {
            Self::Anycast { policy } => {
                format!("ECMP anycast, hash policy {policy} (L{})", if policy == 0 { 3 } else { 4 })
            }
            Self::Service { pick, helper } => format!(
                "DNAT {}{}",
                match pick {
                    Pick::Numgen => "numgen inc",
                    Pick::Random => "numgen random",
                    Pick::Jhash => "jhash saddr.sport",
                },
                if helper { " + ct helper tftp" } else { "" }
            ),
        }
    }
}

/// The namespaces and what runs in them. Field order is drop order: the instances go first.
pub(crate) struct Lab {
    /// The instances, by index (killed or stopped ones stay, with their logs).
    pub(crate) instances: Vec<Instance>,
    /// The balancer in force.
    pub(crate) balancer: Balancer,
    /// The instances still behind the balancer.
    pub(crate) members: Vec<usize>,
    /// The client namespace.
    pub(crate) client: Netns,
    /// The router namespace.
    pub(crate) router: Netns,
    /// The instance namespaces.
    pub(crate) hosts: Vec<Netns>,
    /// The instances' logs.
    logs: tempfile::TempDir,
}

impl Lab {
    /// Builds the namespaces, the balancer and the client firewall, and starts one instance in
    /// each instance namespace on `root` with `ports`.
    pub(crate) fn new(balancer: Balancer, root: &Path, ports: Ports, grace_secs: u32) -> Self {
        let client = Netns::new("bsso-c");
        let router = Netns::new("bsso-r");
        let hosts: Vec<Netns> = (0..INSTANCES).map(|_| Netns::new("bsso-i")).collect();
        let mut lab = Self {
            instances: Vec::new(),
            balancer,
            members: (0..INSTANCES).collect(),
            client,
            router,
            hosts,
            logs: tempfile::tempdir().unwrap(),
        };
        lab.wire();
        lab.client_firewall();
        match balancer {
            Balancer::Anycast { policy } => lab.anycast(policy),
            Balancer::Service { helper, .. } => lab.service(helper),
        }
        for k in 0..INSTANCES {
            let log = lab.logs.path().join(format!("instance{k}.log"));
            let i = Instance::start(&lab.hosts[k], root, ports, grace_secs, log);
            lab.instances.push(i);
        }
        lab
    }

    /// The links and routes, forwarding on in the router.
    fn wire(&self) {
        let (c, r) = (&self.client, &self.router);
        c.ip(&format!("link add c0 type veth peer name rc netns {}", r.name));
        c.ip("addr add 198.18.1.2/24 dev c0");
        c.ip("link set c0 up");
        c.ip("route add default via 198.18.1.1");
        c.ip("route add local 198.18.128.0/20 dev lo");
        r.ip("addr add 198.18.1.1/24 dev rc");
        r.ip("link set rc up");
        r.ip("route add 198.18.128.0/20 via 198.18.1.2");
        sysctl(r, "net.ipv4.ip_forward", "1");
        for (k, h) in self.hosts.iter().enumerate() {
            let net = 10 + k;
            h.ip(&format!("link add e0 type veth peer name r{k} netns {}", r.name));
            h.ip(&format!("addr add 198.18.{net}.2/24 dev e0"));
            h.ip("link set e0 up");
            h.ip(&format!("route add default via 198.18.{net}.1"));
            r.ip(&format!("addr add 198.18.{net}.1/24 dev r{k}"));
            r.ip(&format!("link set r{k} up"));
        }
    }

    /// Counts UDP datagrams from the VIP and drops, counting, every other one.
    fn client_firewall(&self) {
        nft(
            &self.client,
            &format!(
                "table ip client {{
                    counter from_vip {{}}
                    counter from_elsewhere {{}}
                    chain input {{
                        type filter hook input priority filter; policy accept;
                        meta l4proto udp ip saddr {VIP} counter name \"from_vip\" accept
                        meta l4proto udp counter name \"from_elsewhere\" drop
                    }}
                }}"
            ),
        );
    }

    /// UDP datagrams the clients got from the VIP, and from anywhere else (dropped).
    pub(crate) fn client_counters(&self) -> (u64, u64) {
        let packets = |name: &str| {
            let out = exec(&self.client, "nft", &["list", "counter", "ip", "client", name], "");
            out.split("packets ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no packet count in {out}"))
        };
        (packets("from_vip"), packets("from_elsewhere"))
    }

    /// The VIP on every instance's loopback; the router's route to it over a resilient group.
    fn anycast(&self, policy: u8) {
        sysctl(&self.router, "net.ipv4.fib_multipath_hash_policy", &policy.to_string());
        for (k, h) in self.hosts.iter().enumerate() {
            h.ip(&format!("addr add {VIP}/32 dev lo"));
            self.router.ip(&format!("nexthop add id {} via {} dev r{k}", 10 + k, instance_addr(k)));
        }
        let ids: Vec<String> = (0..INSTANCES).map(|k| (10 + k).to_string()).collect();
        self.router.ip(&format!("nexthop add id {GROUP} group {} type resilient buckets {BUCKETS}", ids.join("/")));
        self.router.ip(&format!("route add {VIP}/32 nhid {GROUP}"));
    }

    /// The Service's rule for the current members (kube-proxy writes a `vmap` of one chain per
    /// endpoint; a `map` of addresses does the same in one rule).
    fn service_rule(&self) -> String {
        let Balancer::Service { pick, .. } = self.balancer else { unreachable!("not a Service") };
        let n = self.members.len();
        let map: Vec<String> =
            self.members.iter().enumerate().map(|(i, &k)| format!("{i} : {}", instance_addr(k))).collect();
        let how = match pick {
            Pick::Numgen => format!("numgen inc mod {n}"),
            Pick::Random => format!("numgen random mod {n}"),
            Pick::Jhash => format!("jhash ip saddr . udp sport mod {n}"),
        };
        format!("add rule ip lb service ip daddr {VIP} udp dport 69 dnat to {how} map {{ {} }}\n", map.join(", "))
    }

    /// The router's DNAT of VIP:69 to the instances, with the TFTP conntrack helper attached to
    /// port 69 when `helper`. The helper rule matches the flow's original destination: at
    /// priority filter the packet's own destination has already been rewritten.
    fn service(&self, helper: bool) {
        let attach = if helper {
            format!("ct original ip daddr {VIP} udp dport 69 ct helper set \"tftp\"")
        } else {
            String::new()
        };
        nft(
            &self.router,
            &format!(
                "table ip lb {{
                    ct helper tftp {{ type \"tftp\" protocol udp; l3proto ip; }}
                    chain helpers {{
                        type filter hook prerouting priority filter; policy accept;
                        {attach}
                    }}
                    chain service {{ type nat hook prerouting priority dstnat; policy accept; }}
                }}
                {}",
                self.service_rule()
            ),
        );
    }

    /// Takes instance `k` out of the balancer, as a health checker would: the anycast route's
    /// nexthop is deleted (a resilient group moves only that nexthop's buckets), or the
    /// Service's rule is rewritten without it in one transaction (established flows keep their
    /// conntrack entries).
    pub(crate) fn withdraw(&mut self, k: usize) {
        self.members.retain(|&m| m != k);
        match self.balancer {
            Balancer::Anycast { .. } => {
                let before = self.buckets();
                self.router.ip(&format!("nexthop del id {}", 10 + k));
                let after = self.buckets();
                let gone = 10 + k as u64;
                assert_eq!(before.len(), after.len(), "the group keeps its buckets");
                for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                    assert!(*a != gone, "bucket {i} still on the withdrawn nexthop");
                    assert!(*b == gone || a == b, "bucket {i} moved from nexthop {b} to {a}: the others' flows moved");
                }
            }
            Balancer::Service { .. } => {
                nft(&self.router, &format!("flush chain ip lb service\n{}", self.service_rule()));
            }
        }
    }

    /// The nexthop of each bucket of the resilient group, by bucket index.
    fn buckets(&self) -> Vec<u64> {
        let out = exec(&self.router, "ip", &["-j", "nexthop", "bucket", "show", "id", &GROUP.to_string()], "");
        let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let mut buckets: Vec<(u64, u64)> = list
            .as_array()
            .expect("a list of buckets")
            .iter()
            .map(|b| (b["bucket"]["index"].as_u64().unwrap(), b["bucket"]["nhid"].as_u64().unwrap()))
            .collect();
        buckets.sort_unstable();
        buckets.into_iter().map(|(_, nh)| nh).collect()
    }

    /// Instance `k`.
    pub(crate) fn instance(&mut self, k: usize) -> &mut Instance {
        &mut self.instances[k]
    }

    /// Transfers each instance served (its `transfer finished` records, whatever the outcome).
    pub(crate) fn spread(&self) -> Vec<usize> {
        self.instances.iter().map(|i| i.outcomes().len()).collect()
    }

    /// The outcomes of every instance's transfers, counted.
    pub(crate) fn outcomes(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for o in self.instances.iter().flat_map(Instance::outcomes) {
            *m.entry(o).or_default() += 1;
        }
        m
    }
}
