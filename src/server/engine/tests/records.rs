//! Records: every request outcome is one record at info, from the engine, captured from a
//! subscriber under test.

use std::sync::Arc;

use super::*;

/// A writer into a shared buffer, for a subscriber under test.
#[derive(Clone, Default)]
pub(super) struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The records written at info and above, one line each (tracing's default field format:
    /// `key=value`, strings of `%` fields unquoted).
    pub(super) fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap()).lines().map(str::to_owned).collect()
    }

    /// The lines whose message is `event`.
    fn events(&self, event: &str) -> Vec<String> {
        self.lines().into_iter().filter(|l| l.contains(&format!(" {event}"))).collect()
    }
}

/// Runs `f` with records at info captured.
pub(super) fn capture<R>(f: impl FnOnce() -> R) -> (R, Captured) {
    let out = Captured::default();
    let w = out.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(move || w.clone())
        .finish();
    let r = tracing::subscriber::with_default(sub, f);
    (r, out)
}

/// Asserts that `line` has every `key=value` of `fields`.
fn has(line: &str, fields: &[&str]) {
    for f in fields {
        assert!(line.split_whitespace().any(|w| w.replace('"', "") == *f), "{f} missing in: {line}");
    }
}

#[test]
fn a_miss_is_one_refused_record_at_info_with_the_request() {
    let (_, log) = capture(|| {
        let mut r = rig(|_| {});
        r.request(CLIENT, b"\x00\x01missing\x00octet\x00tsize\x000\x00blksize\x001408\x00");
    });
    let refused = log.events("request refused");
    assert_eq!(refused.len(), 1, "{:?}", log.lines());
    assert!(refused[0].starts_with(" INFO") || refused[0].contains("INFO"), "{}", refused[0]);
    has(&refused[0], &["client=192.0.2.10:2000", "local=192.0.2.1", "file=missing", "reason=not_found", "code=1"]);
    assert!(refused[0].contains("options=tsize=0 blksize=1408"), "{}", refused[0]);
}

#[test]
fn a_stranger_outside_the_allow_list_is_recorded_as_ignored() {
    let (_, log) = capture(|| {
        let mut r = rig(|c| c.serve.allow = vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        r.request(CLIENT, b"\x00\x01small\x00octet\x00");
        assert!(r.io.take().is_empty(), "no answer");
    });
    let ignored = log.events("request ignored");
    assert_eq!(ignored.len(), 1, "{:?}", log.lines());
    has(&ignored[0], &["client=192.0.2.10:2000", "file=small", "reason=not_allowed"]);
}

#[test]
fn rate_limited_and_busy_requests_are_recorded() {
    let (_, log) = capture(|| {
        let mut r = rig(|c| {
            c.workers = 1;
            c.serve.rate_per_source = Some(SourceRate { per_second: 1.0, burst: 1.0 });
            c.serve.rate_limit_always = true;
        });
        r.request(CLIENT, b"\x00\x01small\x00octet\x00");
        r.request("192.0.2.10:2001", b"\x00\x01small\x00octet\x00");
        let mut b = rig(|c| c.io.max_transfers = 1);
        b.request(CLIENT, b"\x00\x01small\x00octet\x00");
        b.ack(CLIENT, 1); // confirmed: it cannot be evicted
        b.request("192.0.2.11:2000", b"\x00\x01small\x00octet\x00");
    });
    let ignored = log.events("request ignored");
    assert_eq!(ignored.len(), 1, "{:?}", log.lines());
    has(&ignored[0], &["client=192.0.2.10:2001", "reason=rate_limited"]);
    let refused = log.events("request refused");
    assert_eq!(refused.len(), 1, "{:?}", log.lines());
    has(&refused[0], &["client=192.0.2.11:2000", "reason=busy", "code=0"]);
}

#[test]
fn a_pxelinux_search_chain_is_one_record_and_one_fold() {
    let names = ["01-52-54-00-12-34-56", "C000025B", "C000025", "C00002", "C0000", "C000", "C00", "C0", "C"];
    let (_, log) = capture(|| {
        let mut r = rig(|_| {});
        for (i, name) in names.iter().enumerate() {
            let peer = format!("192.0.2.10:{}", 3000 + i);
            let mut req = b"\x00\x01pxelinux.cfg/".to_vec();
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(b"\x00octet\x00tsize\x000\x00");
            r.request(&peer, &req);
            r.advance(Duration::from_millis(20));
        }
        r.advance(Duration::from_secs(3));
    });
    let refused = log.events("request refused");
    assert_eq!(refused.len(), 1, "{:?}", log.lines());
    has(&refused[0], &["file=pxelinux.cfg/01-52-54-00-12-34-56", "reason=not_found"]);
    let folded = log.events("requests folded");
    assert_eq!(folded.len(), 1, "{:?}", log.lines());
    has(
        &folded[0],
        &[
            "client=192.0.2.10",
            "outcome=refused",
            "reason=not_found",
            "count=8",
            "first_file=pxelinux.cfg/C000025B",
            "last_file=pxelinux.cfg/C",
        ],
    );
}

#[test]
fn log_requests_records_each_request_on_arrival() {
    let (_, log) = capture(|| {
        let mut r = rig(|c| c.serve.log_requests = true);
        r.request(CLIENT, b"\x00\x01small\x00octet\x00blksize\x001024\x00");
        let mut quiet = rig(|_| {});
        quiet.request("192.0.2.99:1", b"\x00\x01small\x00octet\x00");
    });
    let requests = log.events("request");
    let requests: Vec<_> = requests.iter().filter(|l| l.ends_with(" request") || l.contains(" request ")).collect();
    assert_eq!(requests.len(), 1, "only with --log-requests: {:?}", log.lines());
    has(requests[0], &["client=192.0.2.10:2000", "local=192.0.2.1", "file=small", "mode=octet", "direction=read"]);
    assert!(requests[0].contains("options=blksize=1024"), "{}", requests[0]);
}

/// The record of a transfer whose client answers the OACK of a request with `options` by
/// ERROR `error`.
fn error_after_oack(options: &[u8], error: &[u8]) -> (Rig, String) {
    let (r, log) = capture(|| {
        let mut r = rig(|_| {});
        let mut req = b"\x00\x01small\x00octet\x00".to_vec();
        req.extend_from_slice(options);
        r.request(CLIENT, &req);
        r.io.take();
        let token = r.engine.token(0);
        r.dgram(Via::Transfer(SockRef(0)), Some(token), CLIENT, error);
        r
    });
    let finished = log.events("transfer finished");
    assert_eq!(finished.len(), 1, "{:?}", log.lines());
    (r, finished[0].clone())
}

#[test]
fn a_size_probe_is_told_from_a_rejected_oack() {
    // EDK2: tsize asked, then ERROR 8 "User aborted the transfer".
    let (r, line) =
        error_after_oack(b"tsize\x000\x00blksize\x001468\x00", b"\x00\x05\x00\x08User aborted the transfer\x00");
    has(&line, &["outcome=probe"]);
    assert_eq!((r.counters.get(Counter::Probes), r.counters.get(Counter::Rejected)), (1, 0));
    // ERROR 8 without tsize asked: the OACK refused.
    let (r, line) = error_after_oack(b"blksize\x001468\x00", b"\x00\x05\x00\x08bad option\x00");
    has(&line, &["outcome=rejected", "code=8", "by=client"]);
    assert!(line.contains("client_message=bad option"), "{line}");
    assert_eq!((r.counters.get(Counter::Probes), r.counters.get(Counter::Rejected)), (0, 1));
    // Another code after tsize: refused too.
    let (r, line) = error_after_oack(b"tsize\x000\x00", b"\x00\x05\x00\x04no\x00");
    has(&line, &["outcome=rejected", "code=4"]);
    assert_eq!(r.counters.get(Counter::Rejected), 1);
}

#[test]
fn the_finished_record_has_what_was_asked_and_granted() {
    let (_, log) = capture(|| {
        let mut r = rig(|_| {});
        r.request(CLIENT, b"\x00\x01small\x00octet\x00tsize\x000\x00blksize\x00600\x00windowsize\x002\x00");
        r.io.take();
        r.ack(CLIENT, 0);
        r.ack(CLIENT, 2);
    });
    let finished = log.events("transfer finished");
    assert_eq!(finished.len(), 1, "{:?}", log.lines());
    let line = &finished[0];
    has(
        line,
        &[
            "client=192.0.2.10:2000",
            "worker=0",
            "file=small",
            "path=small",
            "blksize=600",
            "windowsize=2",
            "tsize=1000",
            "blocks=2",
            "bytes=1000",
            "outcome=ok",
        ],
    );
    assert!(line.contains("options=tsize=0 blksize=600 windowsize=2"), "{line}");
    let ms = line.split_whitespace().find_map(|w| w.strip_prefix("ms=")).unwrap().replace('"', "");
    assert_eq!(ms.split('.').nth(1).map(str::len), Some(3), "three decimals: {ms}");
}

#[test]
fn a_private_file_is_refused_as_not_world_readable_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let private = |r: &Rig| {
        std::fs::set_permissions(r.dir.path().join("small"), std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let (_, log) = capture(|| {
        let mut r = rig(|_| {});
        private(&r);
        r.request(CLIENT, b"\x00\x01small\x00octet\x00");
        assert_eq!(error_of(&r.io.take()[0].3).0, 2);
        let mut open = rig(|c| c.serve.world_readable_only = false);
        private(&open);
        open.request(CLIENT, b"\x00\x01small\x00octet\x00");
        assert_eq!(&open.io.take()[0].3[..4], &[0, 3, 0, 1], "served with --serve-private-files");
    });
    let refused = log.events("request refused");
    assert_eq!(refused.len(), 1, "{:?}", log.lines());
    has(&refused[0], &["file=small", "reason=not_world_readable", "code=2"]);
}
