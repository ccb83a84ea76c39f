//! The command line: flags to configuration, and the messages of refused combinations.

use super::*;

fn cfg(args: &[&str]) -> Result<Settings, String> {
    let mut v = vec!["bootstorm", "--root", "/srv/tftp"];
    v.extend_from_slice(args);
    let cli = Cli::try_parse_from(v).map_err(|e| e.to_string())?;
    Settings::try_from(cli).map_err(|e| e.to_string())
}

fn server(args: &[&str]) -> ServerConfig {
    cfg(args).unwrap().server
}

#[test]
fn defaults() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.server, ServerConfig { root: "/srv/tftp".into(), ..ServerConfig::default() }, "the library's");
    assert_eq!((c.log_level.as_deref(), c.stats_interval), (None, None));
    let c = c.server;
    assert_eq!(c.listen.len(), 2);
    assert!(c.workers >= 1);
    assert!(c.pin);
    assert_eq!(c.serve.limits.max_blksize, 65464);
    assert_eq!(c.serve.limits.max_windowsize, 64);
    assert_eq!(c.serve.retransmit.patience, Duration::from_secs(6));
    assert_eq!(c.io.max_transfers, 65536);
    assert_eq!(c.io.recv_buffer, 8 << 20);
    assert!(!c.io.single_port);
}

#[test]
fn flags() {
    let c = server(&[
        "-l",
        "127.0.0.1:6969",
        "-l",
        "[::1]:6969",
        "-w",
        "3",
        "--no-pin",
        "--io",
        "epoll",
        "--port-range",
        "30000:30100",
        "--timeout",
        "0.5",
        "--retries",
        "4",
        "--max-blksize",
        "1468",
    ]);
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.workers, 3);
    assert!(!c.pin);
    assert_eq!(c.io.backend, IoBackend::Epoll);
    assert_eq!(c.io.port_range, Some((30000, 30100)));
    assert!(server(&["--single-port"]).io.single_port);
    assert_eq!(c.serve.retransmit.patience, Duration::from_secs(2));
    assert_eq!(c.serve.limits.max_blksize, 1468);
    assert_eq!(c.effective_policy().limits.max_window_bytes, Some(config::BLIND_BUDGET));
    let more = server(&["--single-port", "--blind-budget", "24000"]);
    assert_eq!(more.effective_policy().limits.max_window_bytes, Some(24000));
    assert_eq!(cfg(&["--stats-interval", "5"]).unwrap().stats_interval, Some(Duration::from_secs(5)));
}

#[test]
fn refusals() {
    for bad in [
        &["--max-blksize", "7"][..],
        &["--max-windowsize", "0"],
        &["--timeout", "0"],
        &["--timeout", "-1"],
        &["--grace=-1"],
        &["--workers", "0"],
        &["--port-range", "10:5"],
        &["--port-range", "0:5"],
        &["--rx-buffers", "1000"],
        &["--min-rto", "5000"],
        &["--retries", "0"],
        &["--rate-per-source", "0", "--burst-per-source", "0.5"],
    ] {
        assert!(cfg(bad).is_err(), "{bad:?}");
    }
    assert_eq!(cfg(&["--timeout=-1"]).unwrap_err(), "--timeout must be a non-negative number of seconds");
    assert_eq!(cfg(&["--grace=nan"]).unwrap_err(), "--grace must be a non-negative number of seconds");
}

#[test]
fn ranges_are_the_real_ones() {
    // Checked as the flag is parsed, with the range the value must be in.
    for (args, range) in [
        (&["--max-blksize", "70000"][..], "70000 is not in 8..=65464"),
        (&["--max-blksize", "7"], "7 is not in 8..=65464"),
        (&["--max-windowsize", "0"], "0 is not in 1..=32768"),
        (&["--max-windowsize", "40000"], "40000 is not in 1..=32768"),
        (&["--retries", "300"], "300 is not in 1..=255"),
        (&["--retries", "0"], "0 is not in 1..=255"),
    ] {
        let e = cfg(args).unwrap_err();
        assert!(e.contains(range) && e.contains(args[0]), "{args:?}: {e}");
    }
    assert_eq!(server(&["--max-blksize", "8", "--max-windowsize", "32768"]).serve.limits.max_blksize, 8);
    assert_eq!(server(&["--retries", "255"]).serve.retransmit.max_retries, 255);
    // Every duration takes fractions.
    assert_eq!(cfg(&["--stats-interval", "0.5"]).unwrap().stats_interval, Some(Duration::from_millis(500)));
    assert_eq!(cfg(&["--stats-interval", "0"]).unwrap().stats_interval, None);
    assert_eq!(cfg(&["--stats-interval=-1"]).unwrap_err(), "--stats-interval must be a non-negative number of seconds");
    // A range of transfer ports that holds a listening port.
    let e = cfg(&["--port-range", "69:70"]).unwrap_err();
    assert_eq!(
        e,
        "--port-range 69:70 includes port 69 of --listen 0.0.0.0:69: a transfer could take the listening port (or \
         find it taken); choose a range that leaves it out"
    );
    let e = cfg(&["-l", "127.0.0.1:30005", "--port-range", "30000:30010"]).unwrap_err();
    assert!(e.contains("--port-range 30000:30010 includes port 30005 of --listen 127.0.0.1:30005"), "{e}");
    assert!(cfg(&["--port-range", "70:80"]).is_ok());
}

#[test]
fn tftpd_hpa_timeouts_are_refused() {
    // tftpd-hpa's -T is in microseconds.
    let e = cfg(&["--timeout", "500000"]).unwrap_err();
    assert_eq!(
        e,
        "--timeout 500000 is in seconds and above 60 s: a first retransmission timeout that long holds a silent \
         client for hours; did you mean --timeout 0.5? tftpd-hpa's -T is in microseconds"
    );
    // Its -t (an idle exit) has no counterpart.
    let e = cfg(&["--timeout", "900"]).unwrap_err();
    assert!(e.starts_with("--timeout 900 is in seconds and above 60 s") && e.contains("tftpd-hpa's -t"), "{e}");
    assert!(cfg(&["--timeout", "60"]).is_ok() && cfg(&["--timeout", "0.01"]).is_ok());
    assert!(cfg(&["--timeout", "60.5"]).unwrap_err().contains("above 60 s"));
}

#[test]
fn listen_forms() {
    let listen = |v: &str| server(&["-l", v]).listen;
    let addrs = |v: &[&str]| -> Vec<SocketAddr> { v.iter().map(|a| a.parse().unwrap()).collect() };
    // Debian's TFTP_ADDRESS=":69": every address, both families.
    assert_eq!(listen(":69"), addrs(&["0.0.0.0:69", "[::]:69"]));
    assert_eq!(listen(":6969"), addrs(&["0.0.0.0:6969", "[::]:6969"]));
    // An address alone: port 69.
    assert_eq!(listen("127.0.0.1"), addrs(&["127.0.0.1:69"]));
    assert_eq!(listen("::1"), addrs(&["[::1]:69"]));
    assert_eq!(listen("[::1]"), addrs(&["[::1]:69"]));
    assert_eq!(listen("[::1]:69"), addrs(&["[::1]:69"]));
    assert_eq!(listen("192.0.2.1:6969"), addrs(&["192.0.2.1:6969"]));
    // A host name: what it resolves to (loopback addresses only, whatever /etc/hosts lists).
    let local = listen("localhost:69");
    assert!(local.contains(&"127.0.0.1:69".parse().unwrap()), "{local:?}");
    assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 69), "{local:?}");
    assert_eq!(listen("localhost").iter().map(SocketAddr::port).collect::<Vec<_>>(), vec![69; local.len()]);
    // Several flags add up; only without --listen may IPv6 be dropped.
    let c = server(&["-l", "127.0.0.1", "-l", ":6969"]);
    assert_eq!(c.listen, addrs(&["127.0.0.1:69", "0.0.0.0:6969", "[::]:6969"]));
    assert!(!c.ipv6_optional, "an address asked for is never dropped");
    assert!(server(&[]).ipv6_optional);
    // An interface name: refused, saying which form is wanted.
    let e = cfg(&["-l", "lo"]).unwrap_err();
    assert!(e.contains("lo is an interface name: give one of its addresses (--listen 192.0.2.1:69)"), "{e}");
    assert!(e.contains(":69 for every address"), "{e}");
    assert!(cfg(&["-l", "lo:6969"]).unwrap_err().contains("lo is an interface name"));
    // Nonsense: the forms accepted.
    for bad in ["", "127.0.0.1:x", ":99999", "[::1]69"] {
        let e = cfg(&["-l", bad]).unwrap_err();
        assert!(e.contains("ADDR:PORT (192.0.2.1:69, [2001:db8::1]:69)"), "{bad:?}: {e}");
    }
    assert!(cfg(&["-l", "no-such-host.invalid"]).unwrap_err().contains("cannot resolve no-such-host.invalid"));
}

#[test]
fn lists_take_commas() {
    let c = server(&["--allow", "10.0.0.0/8,192.168.0.0/16", "--allow", "fd00::/8"]);
    assert_eq!(c.serve.allow, [cidr("10.0.0.0/8"), cidr("192.168.0.0/16"), cidr("fd00::/8")]);
    let c = server(&[
        "--allow-write",
        "--create",
        "--upload-dir",
        "/up",
        "--allow",
        "10.0.0.0/8",
        "--allow-write-from",
        "10.1.0.0/16,10.2.0.0/16",
    ]);
    assert_eq!(c.serve.allow_write_from, [cidr("10.1.0.0/16"), cidr("10.2.0.0/16")]);
    assert!(cfg(&["--allow", "10.0.0.0/8,bogus"]).unwrap_err().contains("not an address: bogus"));
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

#[test]
fn refused_options() {
    assert_eq!(server(&[]).serve.limits.refuse, Refused::default());
    let r = server(&["--refuse-option", "blksize"]).serve.limits.refuse;
    assert_eq!(r, Refused { blksize: true, ..Refused::default() });
    let r = server(&["--refuse-option", "tsize,timeout", "--refuse-option", "windowsize"]).serve.limits.refuse;
    assert_eq!(r, Refused { blksize: false, tsize: true, timeout: true, windowsize: true });
    let e = cfg(&["--refuse-option", "mtu"]).unwrap_err();
    assert!(e.contains("blksize, tsize, timeout, windowsize"), "{e}");
}

#[test]
fn max_transfers_is_a_server_total() {
    assert_eq!(server(&[]).io.max_transfers, 65536);
    assert_eq!(server(&["--max-transfers", "100", "-w", "4"]).io.max_transfers, 100, "the total, not per worker");
    let help = Cli::try_parse_from(["bootstorm", "--help"]).unwrap_err().to_string();
    assert!(help.contains("over the whole server"), "{help}");
    assert!(help.contains("IP_FREEBIND") && help.contains(":69 (every"), "{help}");
}

#[test]
fn operator_mistakes() {
    let root = |r: &str, extra: &[&str]| {
        let mut v = vec!["bootstorm", "--root", r];
        v.extend_from_slice(extra);
        Settings::try_from(Cli::try_parse_from(v).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    };
    for r in ["/", "//", "/.", "/tmp/..", "/nonexistent/..", "/nonexistent/../../."] {
        let e = root(r, &[]).unwrap_err();
        assert!(e.contains("--serve-whole-filesystem") && e.contains("whole file system"), "{r}: {e}");
        assert!(root(r, &["--serve-whole-filesystem"]).is_ok(), "{r}");
    }
    assert!(root("/nonexistent", &[]).is_ok() && root("relative/..", &[]).is_ok());
    // Log levels: exactly the five, in any case.
    for bad in ["warning", "bogus", "", "info,bootstorm=trace"] {
        let e = cfg(&["--log-level", bad]).unwrap_err();
        assert!(e.contains("error, warn, info, debug, trace"), "{bad}: {e}");
    }
    assert_eq!(cfg(&["--log-level", "WARN"]).unwrap().log_level.as_deref(), Some("warn"));
    assert_eq!(cfg(&[]).unwrap().log_level, None, "RUST_LOG or info");
    // Contradictions.
    let e = cfg(&["--single-port", "--port-range", "30000:30010"]).unwrap_err();
    assert!(e.contains("--single-port") && e.contains("--port-range"), "{e}");
    let e = cfg(&["--blind-budget", "24000"]).unwrap_err();
    assert!(e.contains("--blind-budget applies only with --single-port or --port-range"), "{e}");
    let e = cfg(&["--single-port", "--blind-budget", "100"]).unwrap_err();
    assert!(e.contains("at least 516"), "{e}");
    let up = ["--allow-write", "--create", "--upload-dir", "/up"];
    let with = |extra: &[&'static str]| cfg(&[&up[..], extra].concat());
    let e = with(&["--allow", "10.0.0.0/8", "--allow-write-from", "192.168.1.0/24"]).unwrap_err();
    assert!(e.contains("--allow-write-from 192.168.1.0/24") && e.contains("(10.0.0.0/8)"), "{e}");
    assert!(with(&["--allow", "10.0.0.0/8", "--allow-write-from", "10.0.0.0/7"]).is_err());
    assert!(with(&["--allow", "10.0.0.0/8", "--allow", "fd00::/8", "--allow-write-from", "fd00:1::/32"]).is_ok());
    assert!(with(&["--allow", "10.0.0.0/8", "--allow-write-from", "10.1.2.3"]).is_ok());
    assert!(with(&["--allow-write-from", "192.168.1.0/24"]).is_ok(), "no --allow: everyone is served");
    let e = cfg(&["-l", "127.0.0.1:69", "-l", "[::1]:69", "-l", "127.0.0.1:69"]).unwrap_err();
    assert!(e.contains("--listen 127.0.0.1:69 is given twice"), "{e}");
    assert!(cfg(&["-l", "127.0.0.1:0", "-l", "127.0.0.1:0"]).is_ok(), "two kernel-chosen ports");
    assert!(cfg(&["-l", "0.0.0.0:69", "-l", "127.0.0.1:69"]).is_ok(), "overlapping, not the same");
}

#[test]
fn upload_flags() {
    let c = server(&["--allow-write", "--create", "--umask", "027", "--max-upload-size", "10M", "--upload-dir", "/up"]);
    assert_eq!(c.upload_dir(), Some(std::path::Path::new("/up")));
    let p = c.serve.upload;
    assert!(p.create && !p.overwrite);
    assert_eq!(p.mode, 0o640);
    assert_eq!(p.max_size, 10 << 20);
    assert!(server(&[]).write.is_none());
    assert!(cfg(&["--allow-write"]).is_err(), "needs --create or --overwrite");
    let e = cfg(&["--allow-write"]).unwrap_err();
    assert!(e.starts_with("--allow-write needs --create (new files) and/or --overwrite"), "the first mistake: {e}");
    assert!(cfg(&["--create"]).is_err(), "needs --allow-write");
    for flag in ["--uploads-in-root", "--overwrite-served-files", "--allow-single-port-uploads"] {
        assert!(cfg(&[flag]).unwrap_err().contains("need --allow-write"), "{flag}");
    }
    assert!(cfg(&["--upload-dir", "/up"]).unwrap_err().contains("need --allow-write"));
    // Uploads stay out of the served tree unless --uploads-in-root says otherwise.
    let e = cfg(&["--allow-write", "--create"]).unwrap_err();
    assert!(e.contains("--upload-dir") && e.contains("--uploads-in-root"), "{e}");
    let c = server(&["--allow-write", "--create", "--uploads-in-root"]);
    assert_eq!(c.upload_dir(), Some(std::path::Path::new("/srv/tftp")));
    assert!(c.write.unwrap().in_served_tree);
    assert!(!server(&["--allow-write", "--create", "--upload-dir", "/up"]).write.unwrap().in_served_tree);
    // Replacing served files needs its own flag, and that flag needs the other two.
    let e = cfg(&["--allow-write", "--uploads-in-root", "--overwrite"]).unwrap_err();
    assert!(e.contains("--overwrite-served-files"), "{e}");
    assert!(cfg(&["--allow-write", "--uploads-in-root", "--overwrite", "--overwrite-served-files"]).is_ok());
    assert!(cfg(&["--allow-write", "--upload-dir", "/up", "--overwrite", "--overwrite-served-files"]).is_err());
    assert!(cfg(&["--allow-write", "--uploads-in-root", "--create", "--overwrite-served-files"]).is_err());
    // Uploads with --single-port only with the risk accepted.
    let e = cfg(&["--single-port", "--allow-write", "--create", "--upload-dir", "/up"]).unwrap_err();
    assert!(e.contains("--allow-single-port-uploads"), "{e}");
    let sp = ["--single-port", "--allow-write", "--create", "--upload-dir", "/up", "--allow-single-port-uploads"];
    assert!(cfg(&sp).is_ok());
    assert!(cfg(&["--umask", "999"]).is_err());
    let c = server(&["--allow-write", "--overwrite", "--upload-dir", "/srv/up"]);
    assert_eq!(c.upload_dir(), Some(std::path::Path::new("/srv/up")));
}

#[test]
fn networks_and_rates() {
    let c = server(&["--allow", "127.0.0.0/8", "--allow", "::1"]);
    assert_eq!(c.serve.allow, [Cidr::parse("127.0.0.0/8").unwrap(), Cidr::parse("::1").unwrap()]);
    assert_eq!(c.serve.source_limit(), Some(SourceRate { per_second: 100.0, burst: 500.0 }));
    assert_eq!(server(&["--rate-per-source", "0"]).serve.source_limit(), None);
    assert!(!c.serve.rate_limit_always, "under pressure only, by default");
    assert!(server(&["--rate-limit-always"]).serve.rate_limit_always);
    assert!(cfg(&["--allow", "10.0.0.0/33"]).is_err());
}

#[test]
fn sizes() {
    assert_eq!(parse_size("8M"), Ok(8 << 20));
    assert_eq!(parse_size("512k"), Ok(512 << 10));
    assert_eq!(parse_size("100"), Ok(100));
    assert!(parse_size("x").is_err());
}

#[test]
fn name_lookup_flags() {
    let c = server(&[]);
    assert!(!c.serve.lookup.is_active(), "off by default");
    let c = server(&[
        "--case-insensitive",
        "--strip-prefix",
        "/tftpboot/",
        "--strip-prefix",
        "boot",
        "--trim-name-garbage",
        "--client-dir",
        "clients/{mac}",
    ]);
    let l = &c.serve.lookup;
    assert!(l.case_insensitive && l.trim_garbage);
    assert_eq!(l.strip_prefixes.iter().map(|p| p.as_bytes()).collect::<Vec<_>>(), [&b"tftpboot"[..], b"boot"]);
    assert_eq!(l.client_dir.as_ref().map(|d| (d.template(), d.needs_mac())), Some(("clients/{mac}", true)));
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map");
    std::fs::write(&map, "rg \\\\ /\nr ^/tftpboot/ /\n").unwrap();
    let c = server(&["--map-file", map.to_str().unwrap()]);
    assert_eq!(c.serve.lookup.map_file.as_ref().map(|m| m.rules().len()), Some(2));
    std::fs::write(&map, "r ^/tftpboot/ /\nx y z\n").unwrap();
    let e = cfg(&["--map-file", map.to_str().unwrap()]).unwrap_err();
    assert!(e.starts_with(&format!("--map-file {}: ", map.display())) && e.contains("line 2"), "{e}");
    let e = cfg(&["--map-file", "/nonexistent/map"]).unwrap_err();
    assert!(e.starts_with("--map-file /nonexistent/map: "), "{e}");
    assert!(cfg(&["--client-dir", "clients"]).unwrap_err().contains("clients"));
    assert!(cfg(&["--strip-prefix", "/../x"]).is_err());
}
