//! `--metrics`: the real binary serves the Prometheus text exposition over HTTP, and its numbers
//! agree with the transfers made (a download, a miss, a size probe); `promtool check metrics`
//! accepts it where promtool is installed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use bootstorm::proto::wire::{self, Mode, Packet};
use bootstorm::proto::{ErrorCode, RequestOptions};
use common::{Raw, Root, bin};

/// `GET /metrics` with a plain TCP stream: the status line and the body.
fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .parse()
        .unwrap()
}

#[test]
fn scrape_counts_transfers_by_outcome_and_passes_promtool() {
    let root = Root::new();
    root.write("pxelinux.0", &common::bytes(3000, 1));
    root.write("other.bin", &common::bytes(100, 2));
    let mut child = Command::new(bin())
        .args(["--root", root.path().to_str().unwrap(), "-l", "127.0.0.1:0", "--workers", "2"])
        .args(["--metrics", "127.0.0.1:0", "--metrics-file-class", "pxe=pxelinux"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bootstorm");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let tftp: SocketAddr = lines.next().and_then(|l| l.strip_prefix("listening on ")?.parse().ok()).unwrap();
    let http: SocketAddr = lines.next().and_then(|l| l.strip_prefix("metrics on ")?.parse().ok()).unwrap();

    let c = Raw::new(tftp);
    assert_eq!(c.fetch("pxelinux.0", Mode::Octet, RequestOptions::default()).unwrap(), root.file("pxelinux.0"));
    assert_eq!(c.fetch("other.bin", Mode::Octet, RequestOptions::default()).unwrap().len(), 100);
    assert_eq!(c.fetch("missing", Mode::Octet, RequestOptions::default()).unwrap_err().0, 1);
    // A size probe: tsize asked, the OACK read, then ERROR 8 as EDK2 sends it.
    let probe = Raw::new(tftp);
    probe.rrq("pxelinux.0", &[("tsize", "0")]);
    let (oack, from) = probe.expect(Duration::from_secs(5));
    assert!(matches!(Packet::decode(&oack), Ok(Packet::Oack(_))));
    let mut buf = [0u8; 64];
    let n = wire::encode_error(ErrorCode(8), b"User aborted the transfer", &mut buf).unwrap();
    probe.send(from, &buf[..n]);

    // The probe's end is recorded when the server reads the ERROR: wait for it.
    let mut body = String::new();
    for _ in 0..100 {
        let (status, b) = scrape(http);
        assert!(status.contains("200"), "{status}");
        body = b;
        if value(&body, "bootstorm_probes_total") == 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = |outcome: &str| {
        value(&body, &format!("bootstorm_transfers_finished_total{{direction=\"read\",outcome=\"{outcome}\"}}"))
    };
    assert_eq!((read("ok"), read("not_found"), read("probe"), read("timeout")), (2.0, 1.0, 1.0, 0.0));
    assert_eq!(value(&body, "bootstorm_ok_total"), 2.0);
    assert_eq!(value(&body, "bootstorm_requests_total"), 4.0);
    assert_eq!(value(&body, "bootstorm_bytes_total"), 3100.0);
    assert_eq!(value(&body, "bootstorm_upload_commits_total"), 0.0);
    assert_eq!(value(&body, "bootstorm_transfer_duration_seconds_count{file_class=\"pxe\"}"), 1.0);
    assert_eq!(value(&body, "bootstorm_transfer_duration_seconds_count{file_class=\"other\"}"), 1.0);
    assert_eq!(value(&body, "bootstorm_negotiated_blksize_bytes_count"), 3.0);
    assert_eq!(value(&body, "bootstorm_active{worker=\"0\"}") + value(&body, "bootstorm_active{worker=\"1\"}"), 0.0);
    assert!(body.contains("bootstorm_io_info{backend="), "{body}");
    assert!(body.contains(&format!("bootstorm_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    assert!(!body.contains("missing") && !body.contains("127.0.0.1"), "no file names or addresses as labels");

    match Command::new("promtool")
        .arg("check")
        .arg("metrics")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut p) => {
            p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && text.trim().is_empty(), "promtool check metrics: {text}\n{body}");
        }
        Err(_) => println!("skipped promtool check metrics: promtool not installed (apt-get install prometheus)"),
    }

    // SAFETY: kill(2) on the PID of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
