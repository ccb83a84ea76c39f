//! The load generator against a real bootstorm server (started in-process from the library):
//! each firmware profile, deliberate loss, a boot storm and uploads, with every byte verified
//! and the JSON report checked.

use std::process::Command;

use bootstorm::config::{ServerConfig, WriteConfig};
use bootstorm::server::Server;

/// A server on a kernel-chosen loopback port with two workers, serving `root` and accepting
/// uploads into `uploads` (new files and replacements).
fn server(root: &std::path::Path, uploads: &std::path::Path) -> Server {
    let mut cfg = ServerConfig {
        root: root.to_path_buf(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 2,
        write: Some(WriteConfig {
            dir: Some(uploads.to_path_buf()),
            in_served_tree: false,
            overwrite_served_files: false,
            allow_single_port: false,
        }),
        ..ServerConfig::default()
    };
    cfg.serve.upload.create = true;
    cfg.serve.upload.overwrite = true;
    Server::start(cfg).unwrap()
}

fn loadgen(server: &Server, root: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--server", &server.local_addrs()[0].to_string(), "--verify", root.to_str().unwrap(), "--json"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "loadgen {args:?} failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap()
}

fn files(dir: &std::path::Path) {
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("kernel"), &data).unwrap();
    std::fs::write(dir.join("boot.0"), &data[..40_000]).unwrap();
    std::fs::write(dir.join("initrd"), &data[..700_000]).unwrap();
}

#[test]
fn profiles_loss_storm_and_uploads() {
    let dir = tempfile::tempdir().unwrap();
    files(dir.path());
    let up = tempfile::tempdir().unwrap();
    let s = server(dir.path(), up.path());

    // Windowed downloads, threads and clients.
    let r = loadgen(
        &s,
        dir.path(),
        &[
            "--file",
            "kernel",
            "--clients",
            "8",
            "--transfers",
            "16",
            "--blksize",
            "1468",
            "--windowsize",
            "16",
            "--threads",
            "2",
        ],
    );
    assert_eq!((r["transfers_ok"].as_u64(), r["transfers_failed"].as_u64()), (Some(16), Some(0)));
    assert_eq!(r["bytes"].as_u64(), Some(16 * 2_000_000));
    assert!(r["goodput_mbps"].as_f64().unwrap() > 0.0 && r["transfer_ms"]["p99"].as_f64().unwrap() > 0.0);
    // Its own CPU time: some, and no more than its two threads could spend (a little over for
    // the main thread and the clock ticks' rounding).
    let busy = r["loadgen_busy"].as_f64().unwrap();
    assert!(busy > 0.0 && busy < 1.5, "loadgen_busy {busy}");
    assert!(r["loadgen_cpu_s"].as_f64().unwrap() > 0.0 && r["loadgen_cpu_s_per_gib"].as_f64().unwrap() > 0.0);

    // UEFI: a size probe then the download, per file.
    let r = loadgen(
        &s,
        dir.path(),
        &["--profile", "uefi", "--file", "boot.0", "--file", "kernel", "--clients", "4", "--transfers", "4"],
    );
    assert_eq!((r["transfers_ok"].as_u64(), r["probes"].as_u64()), (Some(8), Some(8)));

    // PXELINUX: nine configuration misses, then the files.
    let r = loadgen(
        &s,
        dir.path(),
        &["--profile", "pxelinux", "--file", "boot.0", "--file", "initrd", "--clients", "3", "--transfers", "3"],
    );
    assert_eq!((r["transfers_ok"].as_u64(), r["misses"].as_u64()), (Some(6), Some(27)));

    // 5% of DATA dropped on purpose: the server's timeout recovers every block.
    let r = loadgen(
        &s,
        dir.path(),
        &[
            "--file",
            "initrd",
            "--clients",
            "4",
            "--transfers",
            "8",
            "--drop",
            "0.05",
            "--client-timeout",
            "200",
            "--blksize",
            "1468",
        ],
    );
    assert_eq!(r["transfers_ok"].as_u64(), Some(8));
    assert!(r["dropped_on_purpose"].as_u64().unwrap() > 0);

    // A boot storm: 200 clients over half a second, each fetching three files.
    let r = loadgen(
        &s,
        dir.path(),
        &[
            "--storm",
            "200",
            "--ramp",
            "0.5",
            "--profile",
            "grub",
            "--file",
            "boot.0",
            "--file",
            "initrd",
            "--file",
            "kernel",
        ],
    );
    assert_eq!(
        (r["sessions"].as_u64(), r["transfers_ok"].as_u64(), r["transfers_failed"].as_u64()),
        (Some(200), Some(600), Some(0))
    );
    assert!(r["makespan_s"].as_f64().unwrap() > 0.4);

    // Uploads: each client pushes the initrd; the server keeps the last session's copy.
    let r = loadgen(
        &s,
        dir.path(),
        &[
            "--upload",
            "--file",
            "initrd",
            "--clients",
            "4",
            "--transfers",
            "8",
            "--blksize",
            "1468",
            "--windowsize",
            "4",
        ],
    );
    assert_eq!(r["transfers_ok"].as_u64(), Some(8));
    let want = std::fs::read(dir.path().join("initrd")).unwrap();
    for c in 0..4 {
        let p = up.path().join(format!("initrd.{c}"));
        assert!(std::fs::read(&p).unwrap() == want, "{}", p.display());
    }
    s.stop();
    s.wait().unwrap();
}
