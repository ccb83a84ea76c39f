//! Validation of library configurations, built without a command line.

use super::*;
use crate::proto::{RetransmitConfig, RtoBounds};

/// The defaults, serving `/srv/tftp`.
fn base() -> ServerConfig {
    ServerConfig { root: "/srv/tftp".into(), ..Default::default() }
}

/// `base` changed by `f`, validated.
fn check(f: impl FnOnce(&mut ServerConfig)) -> Result<(), ConfigError> {
    let mut c = base();
    f(&mut c);
    c.validate()
}

/// Uploads on, into `dir` (`None`: the root, accepted as in the served tree), new files only.
fn uploads(c: &mut ServerConfig, dir: Option<&str>) {
    c.write = Some(WriteConfig {
        dir: dir.map(PathBuf::from),
        in_served_tree: dir.is_none(),
        overwrite_served_files: false,
        allow_single_port: false,
    });
    c.serve.upload.create = true;
}

/// A change to a configuration.
type Change = fn(&mut ServerConfig);

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

#[test]
fn defaults() {
    let c = ServerConfig::default();
    assert_eq!(c.validate(), Err(ConfigError::NoRoot), "no root is guessed");
    let c = base();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(c.listen, ["0.0.0.0:69".parse::<SocketAddr>().unwrap(), "[::]:69".parse().unwrap()]);
    assert!(c.workers >= 1 && c.pin && c.follow_symlinks);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(c.workers, (cpus / 2).max(1), "half the CPUs: the kernel's share of each block needs the rest");
    let halves: Vec<usize> = [1, 2, 3, 4, 16, 64].into_iter().map(crate::config::default_workers).collect();
    assert_eq!(halves, [1, 1, 1, 2, 8, 32]);
    assert_eq!((c.serve.limits.max_blksize, c.serve.limits.max_windowsize), (65464, 64));
    assert_eq!(c.serve.retransmit, RetransmitConfig::default(), "the protocol's defaults");
    assert_eq!(c.io.recv_buffer, 8 << 20);
    assert!(!c.io.single_port && c.write.is_none() && c.upload_dir().is_none());
    assert_eq!(c.serve.source_limit(), Some(SourceRate { per_second: 100.0, burst: 500.0 }));
    assert_eq!(c.serve.upload.mode, 0o644);
}

#[test]
fn derived_values() {
    let r = retransmit(RtoBounds { initial: Duration::from_millis(500), ..RetransmitConfig::default().rto }, 4);
    assert_eq!(r.patience, Duration::from_secs(2));
    assert_eq!(r.max_silence, crate::proto::sender::MAX_SILENCE);
    let r = retransmit(RtoBounds { initial: Duration::from_secs(20), ..r.rto }, 3);
    assert_eq!((r.patience, r.max_silence), (Duration::from_secs(60), Duration::from_secs(120)));
    // The blind budget follows the port settings and caps a limit set by hand.
    let mut c = base();
    assert_eq!(c.effective_policy().limits.max_window_bytes, None);
    c.io.single_port = true;
    assert_eq!(c.effective_policy().limits.max_window_bytes, Some(BLIND_BUDGET));
    c.io = IoConfig { port_range: Some((30000, 30100)), ..IoConfig::default() };
    assert_eq!(c.effective_policy().limits.max_window_bytes, Some(BLIND_BUDGET));
    c.serve.limits.max_window_bytes = Some(1000);
    assert_eq!(c.effective_policy().limits.max_window_bytes, Some(1000));
    assert_eq!(c.serve.limits.max_window_bytes, Some(1000), "the configuration itself is left alone");
    // A rate of 0 is no limit.
    c.serve.rate_per_source = Some(SourceRate { per_second: 0.0, burst: 500.0 });
    assert_eq!(c.serve.source_limit(), None);
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn refusals() {
    use ConfigError as E;
    let cases: [(Change, ConfigError); 17] = [
        (|c| c.serve.limits.max_blksize = 7, E::MaxBlksize),
        (|c| c.serve.limits.max_blksize = 65465, E::MaxBlksize),
        (|c| c.serve.limits.max_windowsize = 0, E::MaxWindowsize),
        (|c| c.serve.retransmit.rto.initial = Duration::ZERO, E::Timeout),
        (
            |c| c.serve.retransmit.rto.initial = Duration::from_secs(500_000),
            E::TimeoutTooLong(Duration::from_secs(500_000)),
        ),
        (
            |c| c.serve.retransmit.rto.initial = Duration::from_millis(60_001),
            E::TimeoutTooLong(Duration::from_millis(60_001)),
        ),
        (|c| c.serve.retransmit.rto.min = Duration::from_secs(5), E::RtoBounds),
        (|c| c.serve.retransmit.rto.min = Duration::ZERO, E::RtoBounds),
        (|c| c.serve.retransmit.max_retries = 0, E::Retries),
        (|c| c.io.max_transfers = 0, E::MaxTransfers),
        (|c| c.io.rx_buffers = 1000, E::RxBuffers),
        (|c| c.io.send_slots = 8, E::RingSize),
        (|c| c.workers = 0, E::Workers),
        (|c| c.listen.clear(), E::NoListen),
        (|c| c.io.port_range = Some((10, 5)), E::PortRange(10, 5)),
        (
            |c| c.io.port_range = Some((60, 69)),
            E::PortRangeHasListenPort { lo: 60, hi: 69, listen: "0.0.0.0:69".parse().unwrap() },
        ),
        (|c| c.serve.rate_per_source = Some(SourceRate { per_second: 1.0, burst: 0.5 }), E::SourceRate),
    ];
    for (i, (f, want)) in cases.into_iter().enumerate() {
        assert_eq!(check(f), Err(want), "case {i}");
    }
    assert!(check(|c| c.serve.retransmit.rto.min = Duration::from_secs(2)).is_ok(), "min = max");
    let e = check(|c| {
        c.io.single_port = true;
        c.io.port_range = Some((30000, 30010));
    })
    .unwrap_err();
    assert!(e.to_string().contains("--single-port") && e.to_string().contains("--port-range"), "{e}");
    assert_eq!(E::MaxBlksize.to_string(), "--max-blksize must be 8..=65464");
    assert!(check(|c| c.serve.retransmit.rto.initial = MAX_TIMEOUT).is_ok(), "60 s is the bound");
}

#[test]
fn messages_say_the_unit_and_the_habit() {
    use ConfigError as E;
    let e = E::TimeoutTooLong(Duration::from_secs(500_000)).to_string();
    assert_eq!(
        e,
        "--timeout 500000 is in seconds and above 60 s: a first retransmission timeout that long holds a silent \
         client for hours; did you mean --timeout 0.5? tftpd-hpa's -T is in microseconds"
    );
    let e = E::TimeoutTooLong(Duration::from_secs(900)).to_string();
    assert!(e.contains("--timeout 900 is in seconds") && e.contains("tftpd-hpa's -t (exit when idle)"), "{e}");
    let e = E::PortRangeHasListenPort { lo: 69, hi: 70, listen: "[::]:69".parse().unwrap() }.to_string();
    assert!(e.starts_with("--port-range 69:70 includes port 69 of --listen [::]:69"), "{e}");
    // Port 0 asks the kernel for a port, which is never in the way.
    assert!(
        check(|c| {
            c.listen = vec!["127.0.0.1:0".parse().unwrap()];
            c.io.port_range = Some((1, 65535));
        })
        .is_ok()
    );
}

#[test]
fn transfers_and_listen_defaults() {
    let c = base();
    assert_eq!(c.io.max_transfers, DEFAULT_MAX_TRANSFERS, "a server total");
    assert_eq!(DEFAULT_MAX_TRANSFERS, 65536);
    assert!(c.ipv6_optional, "the default listen falls back to IPv4");
}

#[test]
fn operator_mistakes() {
    let root = |r: &str, whole: bool| {
        let mut c = ServerConfig { root: r.into(), serve_whole_filesystem: whole, ..base() };
        c.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.validate()
    };
    for r in ["/", "//", "/.", "/tmp/..", "/nonexistent/..", "/nonexistent/../../."] {
        let e = root(r, false).unwrap_err();
        assert_eq!(e, ConfigError::WholeFilesystem(r.into()));
        let e = e.to_string();
        assert!(e.contains("--serve-whole-filesystem") && e.contains("whole file system"), "{r}: {e}");
        assert_eq!(root(r, true), Ok(()), "{r}");
    }
    assert!(root("/nonexistent", false).is_ok() && root("relative/..", false).is_ok());
    let net = |allow: &[&str], from: &[&str]| {
        check(|c| {
            uploads(c, Some("/up"));
            c.serve.allow = allow.iter().map(|s| cidr(s)).collect();
            c.serve.allow_write_from = from.iter().map(|s| cidr(s)).collect();
        })
    };
    let e = net(&["10.0.0.0/8"], &["192.168.1.0/24"]).unwrap_err().to_string();
    assert!(e.contains("--allow-write-from 192.168.1.0/24") && e.contains("(10.0.0.0/8)"), "{e}");
    let e = net(&["10.0.0.0/8", "fd00::/8"], &["10.0.0.0/7"]).unwrap_err().to_string();
    assert!(e.contains("(10.0.0.0/8, fd00::/8)"), "{e}");
    assert!(net(&["10.0.0.0/8", "fd00::/8"], &["fd00:1::/32"]).is_ok());
    assert!(net(&["10.0.0.0/8"], &["10.1.2.3"]).is_ok());
    assert!(net(&[], &["192.168.1.0/24"]).is_ok(), "no allow list: everyone is served");
    let listen = |l: &[&str]| check(|c| c.listen = l.iter().map(|a| a.parse().unwrap()).collect());
    let e = listen(&["127.0.0.1:69", "[::1]:69", "127.0.0.1:69"]).unwrap_err();
    assert_eq!(e.to_string(), "--listen 127.0.0.1:69 is given twice");
    assert!(listen(&["127.0.0.1:0", "127.0.0.1:0"]).is_ok(), "two kernel-chosen ports");
    assert!(listen(&["0.0.0.0:69", "127.0.0.1:69"]).is_ok(), "overlapping, not the same");
}

#[test]
fn uploads_and_their_risks() {
    use ConfigError as E;
    assert_eq!(check(|c| uploads(c, Some("/up"))), Ok(()));
    assert_eq!(check(|c| uploads(c, None)), Ok(()), "into the root, accepted");
    // Upload settings without uploads.
    assert_eq!(check(|c| c.serve.upload.create = true), Err(E::UploadsOff));
    assert_eq!(check(|c| c.serve.upload.overwrite = true), Err(E::UploadsOff));
    assert_eq!(check(|c| c.serve.allow_write_from = vec![cidr("10.0.0.0/8")]), Err(E::UploadsOff));
    // Uploads that can do nothing, or that go into the root unasked.
    let e = check(|c| {
        uploads(c, Some("/up"));
        c.serve.upload.create = false;
    });
    assert_eq!(e, Err(E::UploadsDoNothing));
    let e = check(|c| {
        uploads(c, None);
        c.write.as_mut().unwrap().in_served_tree = false;
    });
    assert_eq!(e, Err(E::NoUploadDir));
    assert!(
        E::NoUploadDir.to_string().contains("--upload-dir") && E::NoUploadDir.to_string().contains("--uploads-in-root")
    );
    // Replacing served files needs its own acceptance, and that needs the other two.
    let in_root = |overwrite: bool, served: bool| {
        check(|c| {
            uploads(c, None);
            c.serve.upload.overwrite = overwrite;
            c.write.as_mut().unwrap().overwrite_served_files = served;
        })
    };
    assert_eq!(in_root(true, false), Err(E::OverwriteServedUnaccepted));
    assert_eq!(in_root(true, true), Ok(()));
    assert_eq!(in_root(false, true), Err(E::OverwriteServedWithoutOverwrite));
    let e = check(|c| {
        uploads(c, Some("/up"));
        c.serve.upload.overwrite = true;
        c.write.as_mut().unwrap().overwrite_served_files = true;
    });
    assert_eq!(e, Err(E::OverwriteServedOutsideRoot));
    // Uploads on a single port only with the risk accepted.
    let single = |accepted: bool| {
        check(|c| {
            uploads(c, Some("/up"));
            c.io.single_port = true;
            c.write.as_mut().unwrap().allow_single_port = accepted;
        })
    };
    assert_eq!(single(false), Err(E::SinglePortUploads));
    assert_eq!(single(true), Ok(()));
    // Where they go.
    let mut c = base();
    uploads(&mut c, None);
    assert_eq!(c.upload_dir(), Some(Path::new("/srv/tftp")));
    uploads(&mut c, Some("/srv/up"));
    assert_eq!(c.upload_dir(), Some(Path::new("/srv/up")));
}

/// What a reload reports as not applied: each fixed setting by its flag, nothing for the policy.
#[test]
fn fixed_differences_name_each_fixed_setting_by_its_flag() {
    let up = |c: &mut ServerConfig| uploads(c, Some("/srv/up"));
    let changes: [(Change, &str); 23] = [
        (|c| c.root = "/srv/other".into(), "--root"),
        (|c| c.serve_whole_filesystem = true, "--serve-whole-filesystem"),
        (|c| c.listen = vec!["192.0.2.1:69".parse().unwrap()], "--listen"),
        (|c| c.workers += 1, "--workers"),
        (|c| c.pin = false, "--no-pin"),
        (|c| c.grace = Duration::from_secs(1), "--grace"),
        (|c| c.follow_symlinks = false, "--no-symlinks"),
        (|c| c.file_cache = 1, "--file-cache"),
        (|c| c.io.backend = IoBackend::Epoll, "--io"),
        (|c| c.io.gso = false, "--no-gso"),
        (|c| c.io.recv_buffer = 1, "--recv-buffer"),
        (|c| c.io.ring_entries = 64, "--ring-entries"),
        (|c| c.io.rx_buffers = 16, "--rx-buffers"),
        (|c| c.io.send_slots = 16, "--send-slots"),
        (|c| c.io.single_port = true, "--single-port"),
        (|c| c.io.port_range = Some((1000, 2000)), "--port-range"),
        (|c| c.io.blind_budget = 24000, "--blind-budget"),
        (|c| c.io.max_transfers = 1, "--max-transfers"),
        (|c| uploads(c, Some("/srv/up")), "--allow-write"),
        (|c| c.write.as_mut().unwrap().dir = Some("/srv/up2".into()), "--upload-dir"),
        (|c| c.write.as_mut().unwrap().in_served_tree = true, "--uploads-in-root"),
        (|c| c.write.as_mut().unwrap().overwrite_served_files = true, "--overwrite-served-files"),
        (|c| c.write.as_mut().unwrap().allow_single_port = true, "--allow-single-port-uploads"),
    ];
    for (i, (change, flag)) in changes.into_iter().enumerate() {
        // The upload settings are compared between two configurations with uploads.
        let mut from = base();
        if i > 18 {
            up(&mut from);
        }
        let mut to = from.clone();
        change(&mut to);
        assert_eq!(from.fixed_differences(&to), [flag]);
    }
    let mut policy = base();
    policy.serve.allow = vec![Cidr::parse("10.0.0.0/8").unwrap()];
    policy.serve.retransmit.max_retries = 2;
    // Whether --listen was given decides only what the start does with an unbindable [::].
    policy.ipv6_optional = false;
    assert!(base().fixed_differences(&policy).is_empty());
    assert!(base().fixed_differences(&base()).is_empty());
}

/// What a reload reports as changed: each policy setting by its flag, the settings that follow
/// from the timeout and the retries under theirs.
#[test]
fn policy_differences_name_each_setting_by_its_flag() {
    fn rto(c: &mut ServerConfig, f: fn(&mut RtoBounds)) {
        let mut b = c.serve.retransmit.rto;
        f(&mut b);
        c.serve.retransmit = retransmit(b, c.serve.retransmit.max_retries);
    }
    let changes: [(Change, &[&str]); 18] = [
        (|c| c.serve.allow = vec![Cidr::parse("10.0.0.0/8").unwrap()], &["--allow"]),
        (|c| c.serve.allow_write_from = vec![Cidr::parse("10.0.0.0/8").unwrap()], &["--allow-write-from"]),
        (|c| c.serve.limits.max_blksize = 1468, &["--max-blksize"]),
        (|c| c.serve.limits.max_windowsize = 4, &["--max-windowsize"]),
        (|c| c.serve.limits.refuse.tsize = true, &["--refuse-option"]),
        (|c| rto(c, |b| b.initial = Duration::from_secs(2)), &["--timeout"]),
        (|c| rto(c, |b| b.min = Duration::from_millis(50)), &["--min-rto"]),
        (|c| rto(c, |b| b.max = Duration::from_secs(4)), &["--max-rto"]),
        (|c| c.serve.retransmit = retransmit(c.serve.retransmit.rto, 3), &["--retries"]),
        (|c| c.serve.retransmit.max_silence = Duration::from_secs(600), &["retransmit.max_silence"]),
        (|c| c.serve.rate_per_source = Some(SourceRate { per_second: 5.0, burst: 500.0 }), &["--rate-per-source"]),
        (|c| c.serve.rate_per_source = Some(SourceRate { per_second: 100.0, burst: 5.0 }), &["--burst-per-source"]),
        (|c| c.serve.rate_per_source = None, &["--rate-per-source", "--burst-per-source"]),
        (|c| c.serve.rate_limit_always = true, &["--rate-limit-always"]),
        (|c| c.serve.log_requests = true, &["--log-requests"]),
        (|c| c.serve.world_readable_only = false, &["--serve-private-files"]),
        (|c| c.serve.upload.mode = 0o600, &["--umask"]),
        (
            |c| {
                c.serve.upload.create = true;
                c.serve.upload.overwrite = true;
                c.serve.upload.max_size = 1;
            },
            &["--create", "--overwrite", "--max-upload-size"],
        ),
    ];
    for (change, flags) in changes {
        let mut to = base();
        change(&mut to);
        assert_eq!(base().serve.differences(&to.serve), flags);
    }
    assert!(base().serve.differences(&base().serve).is_empty());
}
