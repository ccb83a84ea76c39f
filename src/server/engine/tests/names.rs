//! How names become files: map file rules, name fixes, per-client views, and a reload that
//! changes them (see `docs/names.md`).

use std::path::Path;

use super::*;
use crate::config::{ClientDir, LookupPolicy, MapFile, StripPrefix};

const A: &str = "192.0.2.10:2000";
const B: &str = "192.0.2.11:2000";

fn rrq(name: &[u8]) -> Vec<u8> {
    [&b"\x00\x01"[..], name, b"\x00octet\x00"].concat()
}

/// The first answer to a read of `name` from `peer`: the bytes of DATA 1, or the ERROR.
fn first(r: &mut Rig, peer: &str, name: &[u8]) -> Result<Vec<u8>, (u16, String)> {
    r.request(peer, &rrq(name));
    let sent = r.io.take();
    assert_eq!(sent.len(), 1, "{}", String::from_utf8_lossy(name));
    let p = &sent[0].3;
    // The transfer is not needed: the next request from the same port replaces it.
    match (p[0], p[1]) {
        (0, 3) => Ok(p[4..].to_vec()),
        _ => Err(error_of(p)),
    }
}

fn write(r: &Rig, rel: &str, contents: &[u8]) {
    let p = r.dir.path().join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

fn lookup(set: impl FnOnce(&mut LookupPolicy)) -> impl FnOnce(&mut ServerConfig) {
    move |c| set(&mut c.serve.lookup)
}

fn map(text: &str) -> Option<MapFile> {
    Some(MapFile::parse(Path::new("test.map"), text.as_bytes().to_vec()).unwrap())
}

/// Two clients: each gets its own override, both get the shared file, and a name found in
/// neither is one miss.
#[test]
fn each_client_sees_its_directory_over_the_shared_tree() {
    let mut r = rig(lookup(|l| l.client_dir = Some(ClientDir::new("clients/{ip}").unwrap())));
    write(&r, "pxelinux.cfg/default", b"shared menu");
    write(&r, "clients/192.0.2.10/pxelinux.cfg/default", b"menu of A");
    write(&r, "clients/C000020B/pxelinux.cfg/default", b"not a view of B: {ip}, not {hexip}");
    assert_eq!(first(&mut r, A, b"pxelinux.cfg/default").unwrap(), b"menu of A");
    assert_eq!(first(&mut r, "192.0.2.11:2001", b"/pxelinux.cfg/default").unwrap(), b"shared menu");
    assert_eq!(first(&mut r, A, b"small").unwrap().len(), 512, "the shared file");
    assert_eq!(first(&mut r, B, b"small").unwrap().len(), 512);
    assert_eq!(first(&mut r, B, b"pxelinux.cfg/01-52-54-00-12-34-56"), Err((1, "file not found".into())));
    assert_eq!(r.counters.get(Counter::ClientViews), 1);
    // The view cannot lead out of the root or into another client's directory.
    assert_eq!(first(&mut r, B, b"../clients/192.0.2.10/pxelinux.cfg/default").unwrap_err().0, 2);
}

/// `{hexip}` and `{mac}` (from the neighbour table); a client without a hardware address (a
/// relayed one) is served the shared tree.
#[test]
fn views_by_hex_address_and_by_mac() {
    let mut r = rig(lookup(|l| l.client_dir = Some(ClientDir::new("{hexip}/{mac}").unwrap())));
    r.engine.macs.set_source(|ip, _| (ip.to_string() == "192.0.2.10").then_some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
    write(&r, "C000020A/52-54-00-ab-cd-ef/small", b"A's own");
    assert_eq!(first(&mut r, A, b"small").unwrap(), b"A's own");
    assert_eq!(first(&mut r, B, b"small").unwrap().len(), 512, "no MAC: no view");
}

/// A name not found as spelled is served as named on disk, only with the flag.
#[test]
fn case_insensitive_lookup_finds_the_name_on_disk() {
    let spelled = b"PXELINUX.CFG/01-52-54-00-AB-CD-EF";
    let mut off = rig(|_| {});
    write(&off, "pxelinux.cfg/01-52-54-00-ab-cd-ef", b"menu");
    assert_eq!(first(&mut off, A, spelled), Err((1, "file not found".into())));
    let mut r = rig(lookup(|l| {
        l.case_insensitive = true;
        l.client_dir = Some(ClientDir::new("c/{ip}").unwrap());
    }));
    write(&r, "pxelinux.cfg/01-52-54-00-ab-cd-ef", b"menu");
    write(&r, "c/192.0.2.11/PXELinux.cfg/01-52-54-00-ab-cd-ef", b"B's menu");
    assert_eq!(first(&mut r, A, spelled).unwrap(), b"menu");
    assert_eq!(first(&mut r, B, spelled).unwrap(), b"B's menu", "the view first, with case ignored too");
    assert_eq!(first(&mut r, A, b"pxelinux.cfg/01-52-54-00-ab-cd-ef").unwrap(), b"menu");
    assert_eq!(first(&mut r, A, b"PXELINUX.CFG/missing"), Err((1, "file not found".into())));
    assert_eq!((r.counters.get(Counter::CaseFixed), r.counters.get(Counter::ClientViews)), (2, 1));
}

/// Prefixes and trailing garbage, each only when configured.
#[test]
fn name_fixes() {
    let garbage = b"pxelinux.0\xff\xff";
    let mut off = rig(|_| {});
    write(&off, "pxelinux.0", b"nbp");
    assert_eq!(first(&mut off, A, garbage).unwrap_err().0, 1);
    assert_eq!(first(&mut off, A, b"/tftpboot/pxelinux.0").unwrap_err().0, 1);
    let mut r = rig(lookup(|l| {
        l.trim_garbage = true;
        l.strip_prefixes = vec![StripPrefix::new("/tftpboot/").unwrap()];
    }));
    write(&r, "pxelinux.0", b"nbp");
    assert_eq!(first(&mut r, A, garbage).unwrap(), b"nbp");
    assert_eq!(first(&mut r, A, b"/tftpboot//pxelinux.0\x7f").unwrap(), b"nbp");
    assert_eq!(first(&mut r, A, b"pxelinux.0").unwrap(), b"nbp");
    assert_eq!(r.counters.get(Counter::NamesFixed), 2);
}

/// Rules run first, on the name as sent; an `a` rule refuses with its message (tftp-hpa's
/// ERROR 2, access violation); `G` rules leave uploads alone.
#[test]
fn map_file_rules_rewrite_and_refuse() {
    let text = "a ^secret.* Go\\ away\nrg \\\\ /\nrG ^/tftpboot/ \nri ^BOOT/ boot/\n";
    let mut r = rig(lookup(|l| l.map_file = map(text)));
    write(&r, "boot/x64/wdsmgfw.efi", b"wds");
    assert_eq!(first(&mut r, A, b"\\boot\\x64\\wdsmgfw.efi").unwrap(), b"wds");
    assert_eq!(first(&mut r, A, b"/tftpboot/BOOT\\x64/wdsmgfw.efi").unwrap(), b"wds");
    assert_eq!(first(&mut r, A, b"secret/key"), Err((2, "Go away".into())));
    assert_eq!(first(&mut r, A, b"/tftpboot/../../etc/passwd").unwrap_err().0, 2, "a rule leads nowhere outside");
    assert_eq!((r.counters.get(Counter::NamesRewritten), r.counters.get(Counter::NamesDenied)), (3, 1));
    // An `a` rule without a message: the server's own.
    let mut bare = rig(lookup(|l| l.map_file = map("a ^secret\n")));
    assert_eq!(first(&mut bare, A, b"secret"), Err((2, "access violation".into())));
}

/// Uploads take rules (per direction) and fixes, never a view.
#[test]
fn uploads_take_rules_and_fixes_but_no_view() {
    let mut r = rig(|c| {
        uploads_in_root(c, true, false);
        c.serve.lookup.map_file = map("rP ^incoming/ up/\n");
        c.serve.lookup.client_dir = Some(ClientDir::new("c/{ip}").unwrap());
    });
    std::fs::create_dir_all(r.dir.path().join("up")).unwrap();
    std::fs::create_dir_all(r.dir.path().join("c/192.0.2.10/up")).unwrap();
    r.request(A, b"\x00\x02incoming/log\x00octet\x00");
    assert_eq!(r.io.take()[0].3, [0, 4, 0, 0], "ACK 0");
    r.data(A, 1, b"hello");
    assert_eq!(r.run_commits(), 1);
    assert_eq!(std::fs::read(r.dir.path().join("up/log")).unwrap(), b"hello");
    assert!(!r.dir.path().join("c/192.0.2.10/up/log").exists());
}

/// A reload brings new rules and views to new requests.
#[test]
fn a_reload_replaces_rules_and_views() {
    let mut r = rig(|_| {});
    write(&r, "c/192.0.2.10/small", b"A's small");
    assert_eq!(first(&mut r, A, b"small").unwrap().len(), 512);
    assert_eq!(first(&mut r, A, b"alias").unwrap_err().0, 1);
    let mut cfg = ServerConfig { root: r.dir.path().to_path_buf(), ..Default::default() };
    cfg.serve.lookup.client_dir = Some(ClientDir::new("c/{ip}").unwrap());
    cfg.serve.lookup.map_file = map("r ^alias$ small\n");
    assert_eq!(ServePolicy::default().differences(&cfg.serve), ["--map-file", "--client-dir"]);
    r.engine.set_policy(Arc::new(cfg.effective_policy()), r.now);
    assert_eq!(first(&mut r, A, b"small").unwrap(), b"A's small");
    assert_eq!(first(&mut r, A, b"alias").unwrap(), b"A's small", "rule, then view");
    assert_eq!(first(&mut r, B, b"alias").unwrap().len(), 512);
}

/// What one request costs with each setting, in the engine with its real file cache (printed;
/// run with `--ignored --nocapture`, under `strace -c` for the system calls).
#[test]
#[ignore = "a measurement, not a check"]
fn lookup_costs() {
    let rules: String =
        (0..49).map(|i| format!("r ^/tftpboot/old{i}/ /new{i}/\n")).chain(["rg \\\\ /\n".into()]).collect();
    let cases: [(&str, Change); 5] = [
        ("off", |_| {}),
        ("50-rule map file", |c| {
            let rules: String =
                (0..49).map(|i| format!("r ^/tftpboot/old{i}/ /new{i}/\n")).chain(["rg \\\\ /\n".into()]).collect();
            c.serve.lookup.map_file = map(&rules);
        }),
        ("views", |c| c.serve.lookup.client_dir = Some(ClientDir::new("clients/{ip}").unwrap())),
        ("case-insensitive", |c| c.serve.lookup.case_insensitive = true),
        ("views + case-insensitive", |c| {
            c.serve.lookup.client_dir = Some(ClientDir::new("clients/{ip}").unwrap());
            c.serve.lookup.case_insensitive = true;
        }),
    ];
    assert_eq!(rules.lines().count(), 50);
    const N: u32 = 20_000;
    // One case alone (`LOOKUP_COST_CASE=views`, say), to count its system calls with strace.
    let only = std::env::var("LOOKUP_COST_CASE").ok();
    for (name, set) in cases {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let mut r = rig(set);
        std::fs::create_dir_all(r.dir.path().join("pxelinux.cfg")).unwrap();
        for i in 0..40 {
            write(&r, &format!("pxelinux.cfg/01-52-54-00-00-00-{i:02x}"), b"m");
        }
        // Directories changed within 2 s are read again by the case-insensitive search.
        std::thread::sleep(Duration::from_millis(2100));
        let what_only = std::env::var("LOOKUP_COST_WHAT").ok();
        for (what, file) in [("hit", &b"small"[..]), ("miss", &b"pxelinux.cfg/C000020A"[..])] {
            if what_only.as_deref().is_some_and(|o| o != what) {
                continue;
            }
            // Two spellings of the mode, so that no request is a repeat of the one before
            // (a repeat is answered by its transfer, without a lookup).
            let reqs = [rrq(file), [&b"\x00\x01"[..], file, b"\x00OCTET\x00"].concat()];
            let start = std::time::Instant::now();
            for i in 0..N {
                r.request(A, &reqs[i as usize % 2]);
                r.io.take();
            }
            assert!(r.counters.get(Counter::DuplicateRequests) == 0);
            let per = start.elapsed() / N;
            println!("{name:>26} {what}: {per:?} per request");
        }
    }
}

/// Records written at info while `f` runs, one line each.
fn records(f: impl FnOnce()) -> Vec<String> {
    super::records::capture(f).1.lines()
}

/// The records name the file as requested (`file`), as resolved (`path`) and what decided it
/// (`lookup`); a name only normalised has no `lookup`.
#[test]
fn records_say_what_decided_the_name() {
    let log = records(|| {
        let mut r = rig(lookup(|l| {
            l.map_file = map("# aliases\nr ^boot/ \n");
            l.client_dir = Some(ClientDir::new("clients/{ip}").unwrap());
        }));
        write(&r, "clients/192.0.2.10/small", b"A's small");
        for name in [&b"boot/small"[..], b"boot/missing", b"small", b"text"] {
            let _ = first(&mut r, A, name);
        }
        // The last transfer ends with the stop.
        r.engine.abort_now(r.now);
        r.advance(Duration::from_millis(1));
    });
    let line = |needle: &str| log.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}: {log:#?}"));
    let fields = |l: &str| l.split_whitespace().map(|w| w.replace('"', "")).collect::<Vec<_>>();
    let served = fields(line("file=boot/small"));
    assert!(
        served.contains(&"path=clients/192.0.2.10/small".into()) && served.contains(&"lookup=rule:2+view".into()),
        "{served:?}"
    );
    let missed = fields(line("file=boot/missing"));
    assert!(missed.contains(&"path=missing".into()) && missed.contains(&"lookup=rule:2".into()), "{missed:?}");
    let view_only = fields(line("file=small"));
    assert!(view_only.contains(&"lookup=view".into()), "{view_only:?}");
    let plain = fields(line("file=text"));
    assert!(plain.iter().all(|f| !f.starts_with("lookup=")), "{plain:?}");
}
