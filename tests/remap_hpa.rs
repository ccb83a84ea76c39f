//! bootstorm's map files against the real tftp-hpa: Debian's `in.tftpd` (unpacked from the
//! `tftpd-hpa` package, not installed) and bootstorm started with `--map-file` serve a tree of
//! files whose content is their own path, with the map files of Ironic, xCAT, Foreman and
//! ISPsystem, rule sets that probe single points of the language, and seeded random rule sets.
//! Every name is requested from both over UDP, from two client addresses. bootstorm must answer
//! what its rules and normalisation say (`bootstorm_answer`), and that must be tftp-hpa's answer:
//! the same file or the same ERROR, the map file's messages included, except where the server's
//! normalisation differs from tftp-hpa's chroot (`Known`, listed in docs/remap.md). And
//! `bootstorm map-test` must show each name as the server resolves it.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bootstorm::fs::{PathError, normalize};
use bootstorm::proto::wire::{self, Mode, Packet, RequestKind};
use bootstorm::remap::{Client, Rewrite, Rules};

/// What a request got.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// The file's bytes (every file of the tree fits one DATA packet).
    File(Vec<u8>),
    /// An ERROR: its code, and its message when the message is the map file's (an `a` rule's
    /// or a rewrite failure's), which both servers must then send alike.
    Error(u16, Option<String>),
    /// Nothing within the wait.
    Silence,
}

/// Why bootstorm's answer may differ from tftp-hpa's for a name the rules produced: bootstorm's
/// normalisation and containment, not the map file (see docs/remap.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Known {
    /// A `..` component: bootstorm refuses it; tftp-hpa's chroot clamps it at the root.
    Parent,
    /// A control character: bootstorm refuses it; tftp-hpa looks the name up.
    Control,
    /// A backslash: bootstorm reads it as `/`; tftp-hpa as a character of the name.
    Backslash,
    /// A trailing `/` after a file's name: bootstorm drops it; the kernel refuses it.
    TrailingSlash,
    /// A directory: bootstorm refuses it (ERROR 2); tftp-hpa opens it and fails reading.
    Directory,
    /// tftp-hpa died writing `\x` past the end of its buffer.
    HexOverflow,
}

const FILES: &[&str] = &[
    "pxelinux.0",
    "lpxelinux.0",
    "syslinux.efi",
    "pxelinux.cfg/default",
    "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff",
    "pxelinux.cfg/7F000001",
    "pxelinux.cfg/7F000002",
    "7F000001",
    "127.0.0.1/pxelinux.0",
    "127.0.0.2/pxelinux.0",
    "boot/bootmgr.exe",
    "boot/BCD",
    "Boot/BCD",
    "boot/grub/grub.cfg",
    "tftpboot/pxelinux.0",
    "tftpboot/pxelinux.cfg/default",
    "tftpboot/boot/bootmgr.exe",
    "a",
    "b",
    "x",
    "X",
    "ab",
    "abcd",
    "cd",
    "[ab|c|d]",
    "[a|bcd|]",
    "grub.cfg-01-aa-bb",
    "GRUB.CFG-01-AA-BB",
];

const NAMES: &[&[u8]] = &[
    b"pxelinux.0",
    b"PXELINUX.0",
    b"pxelinux.0\xff",
    b"pxelinux.0\x7f",
    b"lpxelinux.0garbage",
    b"syslinux.efiM-^?",
    b"\\Boot\\BCD",
    b"\\boot\\bootmgr.exe",
    b"bootmgr.exe",
    b"/pxelinux.0",
    b"//pxelinux.0",
    b"/tftpboot/pxelinux.0",
    b"tftpboot/pxelinux.cfg/default",
    b"pxelinux.cfg/01-aa-bb-cc-dd-ee-ff",
    b"pxelinux.cfg/01-AA-BB-CC-DD-EE-FF",
    b"../pxelinux.0",
    b"a/../pxelinux.0",
    b"abcd",
    b"ab",
    b"a",
    b"a/b",
    b"boot/grub/grub.cfg",
    b"GRUB.CFG-01-aa-bb",
    b"grub.cfg-01-aa-bb",
    b"missing",
    b"x",
];

/// Map files in use in the field (docs/remap.md cites where they come from).
fn real_maps() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "ironic",
            br"re ^(/tftpboot/) /tftpboot/\2
re ^/tftpboot/ /tftpboot/
re ^(^/) /tftpboot/\1
re ^([^/]) /tftpboot/\1
"
            .to_vec(),
        ),
        ("xcat", b"rg \\\\ /\n".to_vec()),
        (
            "foreman",
            [
                &b"# Convert backslashes to slashes\nre ^bootmgr\\.exe boot/bootmgr.exe\nre ^\\\\Boot\\\\ boot/\nrg \\\\ /\nrg (.*)"[..],
                b"\xff",
                b"$ \\1\n",
            ]
            .concat(),
        ),
        (
            "ispsystem",
            [
                &b"rg \\\\ /\nri (.*)"[..],
                b"\xff",
                b"$ \\1\nri (.*)M-\\^\\?$ \\1\nri (lpxelinux\\.0).*$ \\1\nri (lpxelinux\\.efi).*$ \\1\n",
                b"ri (syslinux\\.0).*$ \\1\nri (syslinux\\.efi).*$ \\1\n",
            ]
            .concat(),
        ),
    ]
}

/// Rule sets that each decide one point of the language.
fn probe_maps() -> Vec<(&'static str, Vec<u8>)> {
    let m: &[(&str, &str)] = &[
        ("leftmost-longest", "r a|ab X\n"),
        ("posix-groups", "r (a|ab)(c|bcd)(d*) [\\1|\\2|\\3]\n"),
        ("case-of-captures", "r ^(grub.cfg-01-)(.*)$ \\U\\1\\2\n"),
        ("lower-case", "ri ^.*$ \\L\\0\n"),
        ("client-address", "r ^pxelinux.cfg/.* pxelinux.cfg/\\x\nr ^pxelinux.0$ \\i/pxelinux.0\n"),
        ("restart", "r ^x ab\nrs ^a x\n"),
        ("restart-loop", "r ^$ x\nrs a b\nrs b a\n"),
        ("visits", &"r ^\n".repeat(1023)),
        ("visits-exceeded", &"r ^\n".repeat(1025)),
        ("exit", "re ^a x\nr ^x b\n"),
        ("abort-message", "a \\.\\. no\\ climbing\na ^missing$ \\i\\ asked\\ for\\ \\0\n"),
        ("abort-plain", "a ^/\n"),
        ("inverse", "e~ ^a\nr .* x\n"),
        ("abort-inverse", "a~ ^[a-z]\n"),
        ("get-put", "rP .* b\nrG ^a x\n"),
        ("escapes", "r ^x a\\ b\\#c\\\\d\\qe # a comment\nr \\  /\n"),
        ("empty-replacement", "r \\.0$\n"),
        ("trailing-garbage", "r ^(pxelinux\\.0). \\1\n"),
    ];
    m.iter().map(|(n, t)| (*n, t.as_bytes().to_vec())).collect()
}

/// Seeded random rule sets from a small grammar; none loops forever in tftp-hpa 5.2 (whose
/// step limit does not count the repetitions of a `g` rule, so each `g` rule here converges).
fn generated_maps(count: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let patterns = [
        "a",
        "b",
        "x",
        "\\.0",
        "pxelinux",
        "PXE",
        "boot",
        "\\\\",
        "/",
        "cfg",
        "ÿ",
        "\\.\\.",
        "^",
        "$",
        "(a|ab)",
        "(a|ab)(c|bcd)(d*)",
        "[a-z]+",
        "([^/]*)/(.*)",
        "(.*)\\.(.*)",
        ".*",
        "^/",
        "^([^/])",
        "x*",
        "^(.*)$",
        "(.)(.)",
        "[A-Z]",
        "0$",
        "\\\\Boot\\\\",
    ];
    let replacements = [
        "\\0",
        "\\1",
        "\\2",
        "X",
        "\\U\\1",
        "\\L\\0",
        "\\i",
        "\\x",
        "/",
        "",
        "pxelinux.0",
        "boot/",
        "tftpboot/\\1",
        "\\1\\2",
        "a",
        "\\U\\0\\E.",
        "[\\1|\\2|\\3]",
    ];
    let ops = ["r", "ri", "re", "rie", "e", "s", "rs", "a", "e~", "s~", "a~", "rG", "rP", "G", "P", "ei"];
    let globals = [("\\\\", "/"), ("[A-Z]", "\\L\\0"), ("ÿ", ""), ("(a|ab)", "x"), ("\\.", "_"), ("/+", "")];
    (0..count)
        .map(|i| {
            let mut text = String::new();
            for _ in 0..rng.usize(1..=6) {
                if rng.u8(..) < 40 {
                    let (p, r) = globals[rng.usize(..globals.len())];
                    let _ = writeln!(text, "rg {p} {r}");
                    continue;
                }
                let op = ops[rng.usize(..ops.len())];
                let p = patterns[rng.usize(..patterns.len())];
                // tftp-hpa 5.2 crashes on the message of an `a~` rule: it gets none.
                let r = if op == "a~" { "" } else { replacements[rng.usize(..replacements.len())] };
                let _ = writeln!(text, "{op} {p} {r}");
            }
            // `ÿ` stands for the byte 0xFF (Latin-1), which NIC ROMs append.
            let bytes = text.into_bytes().split(|&b| b == 0xc3).enumerate().fold(Vec::new(), |mut v, (k, part)| {
                match (k, part.split_first()) {
                    (0, _) => v.extend_from_slice(part),
                    (_, Some((0xbf, rest))) => {
                        v.push(0xff);
                        v.extend_from_slice(rest);
                    }
                    _ => unreachable!("only ÿ is outside ASCII"),
                }
                v
            });
            (format!("generated-{i}"), bytes)
        })
        .collect()
}

/// Where the unpacked tftp-hpa lives (downloaded once into the test's target directory).
fn hpa_binary() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tftpd-hpa");
    let bin = dir.join("usr/sbin/in.tftpd");
    if bin.exists() {
        return Some(bin);
    }
    std::fs::create_dir_all(&dir).unwrap();
    let ok = |c: &mut Command| c.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    let downloaded = ok(Command::new("apt-get").args(["download", "-q", "tftpd-hpa"]).current_dir(&dir));
    let deb = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension() == Some(OsStr::new("deb")))?;
    if !downloaded || !ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir)) {
        return None;
    }
    bin.exists().then_some(bin)
}

/// A tree of files whose content is their own path, readable by all (tftp-hpa's default).
fn make_tree(root: &Path) {
    for f in FILES {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f.as_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            }
        }
    }
}

/// in.tftpd's exit status when it cannot bind its address (sysexits.h).
const EX_OSERR: i32 = 71;

/// tftp-hpa serving `root` with `map`, in the foreground on 127.0.0.1.
struct Hpa {
    child: Child,
    addr: SocketAddr,
}

impl Hpa {
    fn start(bin: &Path, root: &Path, map: &Path) -> Hpa {
        // The port is picked by binding and closing a probe socket, and readiness is seen by
        // binding it again, so another socket (one of those probes, a transfer of an earlier
        // in.tftpd) can hold it at the instant in.tftpd binds: in.tftpd then exits with
        // EX_OSERR, and a fresh port is tried.
        for _ in 0..5 {
            if let Some(hpa) = Hpa::try_start(bin, root, map) {
                return hpa;
            }
        }
        panic!("in.tftpd could not bind a free port five times: map {}", map.display());
    }

    /// `None` when in.tftpd could not bind the port it was given.
    fn try_start(bin: &Path, root: &Path, map: &Path) -> Option<Hpa> {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(bin)
            .args(["-L", "-u", "nobody", "-s"])
            .arg(root)
            .arg("-m")
            .arg(map)
            .arg("-a")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut hpa = Hpa { child, addr };
        // Listening once the port is taken.
        let deadline = Instant::now() + Duration::from_secs(5);
        while UdpSocket::bind(addr).is_ok() {
            if let Ok(Some(status)) = hpa.child.try_wait() {
                if status.code() == Some(EX_OSERR) {
                    return None;
                }
                panic!("in.tftpd exited at start ({status}): map {}", map.display());
            }
            assert!(Instant::now() < deadline, "in.tftpd does not listen on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(hpa)
    }

    /// The answer to a read request for `name` from `client`.
    fn ask(&self, name: &[u8], client: IpAddr) -> Answer {
        ask(self.addr, name, client)
    }
}

impl Drop for Hpa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer of the server at `server` to a read request for `name` from `client`.
fn ask(server: SocketAddr, name: &[u8], client: IpAddr) -> Answer {
    let sock = UdpSocket::bind((client, 0)).unwrap();
    let mut buf = [0u8; 1024];
    let n = wire::encode_request(RequestKind::Read, name, Mode::Octet, [], &mut buf).unwrap();
    sock.send_to(&buf[..n], server).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut pkt = [0u8; 2048];
    let Ok((len, from)) = sock.recv_from(&mut pkt) else {
        return Answer::Silence;
    };
    match Packet::decode(&pkt[..len]) {
        Ok(Packet::Data { block: 1, data }) => {
            let data = data.to_vec();
            let _ = sock.send_to(&wire::ack(1), from);
            assert!(data.len() < 512, "the tree's files fit one block");
            Answer::File(data)
        }
        Ok(Packet::Error { code, message }) => {
            Answer::Error(code.0, Some(String::from_utf8_lossy(message).into_owned()))
        }
        other => panic!("unexpected answer from {server}: {other:?}"),
    }
}

/// bootstorm's answer to a read request for `name` from `client` under `rules`: the rewrite,
/// then what the server does with a name (normalisation, then the file beneath the root, as
/// `OneRoot` and the file cache do); and, when the answer may differ from tftp-hpa's for a
/// reason outside the map file, which.
///
/// The real server, started with `--map-file`, must give this answer too.
fn bootstorm_answer(rules: &Rules, root: &Path, name: &[u8], client: IpAddr) -> (Answer, Option<Known>) {
    let name = match rules.rewrite(name, &Client { addr: client, write: false }) {
        Rewrite::Denied { message, .. } => return (Answer::Error(2, message), None),
        Rewrite::Name { name, .. } => name,
        Rewrite::Unchanged => name.to_vec(),
    };
    let known = if name.contains(&b'\\') {
        Some(Known::Backslash)
    } else if name.ends_with(b"/") && name.iter().any(|&b| b != b'/') {
        Some(Known::TrailingSlash)
    } else {
        None
    };
    let mut out = [0u8; 512];
    let rel = match normalize(&name, &mut out) {
        Ok(rel) => rel,
        Err(PathError::Empty) => return (Answer::Error(1, None), known),
        Err(PathError::ParentComponent) => return (Answer::Error(2, None), Some(Known::Parent)),
        Err(PathError::ControlCharacter) => return (Answer::Error(2, None), Some(Known::Control)),
        Err(PathError::TooLong) => return (Answer::Error(2, None), known),
    };
    let path = root.join(OsStr::from_bytes(rel));
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => (Answer::Error(2, None), Some(Known::Directory)),
        Ok(_) => (Answer::File(std::fs::read(&path).unwrap()), known),
        Err(_) => (Answer::Error(1, None), known),
    }
}

/// What `bootstorm map-test` prints for each name of `NAMES` under `map` for `client`, against
/// the library's rewrite and the server's normalisation: the failures.
fn map_test_differences(map: &Path, rules: &Rules, client: IpAddr) -> Vec<String> {
    let out = Command::new(common::bin())
        .args(["map-test", "--client", &client.to_string()])
        .arg(map)
        .args(NAMES.iter().map(|n| OsStr::from_bytes(n)))
        .output()
        .unwrap();
    assert!(out.status.success(), "bootstorm map-test failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), NAMES.len(), "one line per name: {text}");
    let mut failures = Vec::new();
    for (name, line) in NAMES.iter().zip(lines) {
        let expected = match rules.rewrite(name, &Client { addr: client, write: false }) {
            Rewrite::Denied { message: Some(m), .. } => format!("refused: ERROR 2 {m:?}"),
            Rewrite::Denied { message: None, .. } => "refused: ERROR 2".to_owned(),
            Rewrite::Name { name, .. } => normalised(&name),
            Rewrite::Unchanged => normalised(name),
        };
        let shown = line.split_once(" -> ").map_or("", |(_, r)| r);
        let shown = shown.rsplit_once(" (rule:").map_or(shown, |(s, _)| s);
        let agrees = match expected.strip_prefix("refused") {
            Some("") => shown.starts_with("refused"),
            _ => shown == expected,
        };
        if !agrees {
            failures.push(format!("map-test {} from {client}: shows {line:?}, expected {expected:?}", map.display()));
        }
    }
    failures
}

/// What the server makes of a rewritten name, as `map-test` shows it: the normalised name, or
/// `refused` (the reason is the server's).
fn normalised(name: &[u8]) -> String {
    let mut out = [0u8; 512];
    match normalize(name, &mut out) {
        Ok(rel) => rel.escape_ascii().to_string(),
        Err(_) => "refused".to_owned(),
    }
}

/// Whether tftp-hpa's answer is bootstorm's: same file, or same ERROR code, and the same
/// message where bootstorm's is the map file's.
fn same(hpa: &Answer, ours: &Answer) -> bool {
    match (hpa, ours) {
        (Answer::Error(a, am), Answer::Error(b, bm)) => a == b && (bm.is_none() || am == bm),
        _ => hpa == ours,
    }
}

fn printable(name: &[u8]) -> String {
    name.escape_ascii().to_string()
}

#[test]
fn map_files_agree_with_tftp_hpa() {
    if !is_root() {
        common::cannot_run("tftp-hpa's -s needs root (chroot)");
        return;
    }
    let Some(bin) = hpa_binary() else {
        common::cannot_run("tftpd-hpa cannot be downloaded (apt-get download tftpd-hpa)");
        return;
    };
    // It links libwrap (the libwrap0 package), which the host may lack.
    if !Command::new(&bin).arg("-V").output().is_ok_and(|o| o.status.success()) {
        common::cannot_run("in.tftpd does not run here (is libwrap0 installed?)");
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    make_tree(&root);
    let mut maps: Vec<(String, Vec<u8>)> = real_maps().into_iter().map(|(n, t)| (n.to_owned(), t)).collect();
    maps.extend(probe_maps().into_iter().map(|(n, t)| (n.to_owned(), t)));
    maps.extend(generated_maps(40, 0x7f7f_2026));
    let clients: [IpAddr; 2] = [[127, 0, 0, 1].into(), [127, 0, 0, 2].into()];
    let (mut requests, mut agreed) = (0, 0);
    let mut known: BTreeMap<Known, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (label, text) in &maps {
        let map = dir.path().join(format!("{label}.map"));
        std::fs::write(&map, text).unwrap();
        let rules = Rules::parse(text).unwrap_or_else(|e| panic!("{label}: {e}"));
        let hpa = Hpa::start(&bin, &root, &map);
        let server = common::Server::start(&root, "epoll", &["--map-file", map.to_str().unwrap()]);
        for &client in &clients {
            failures.extend(map_test_differences(&map, &rules, client));
        }
        for name in NAMES {
            for &client in &clients {
                requests += 1;
                let theirs = hpa.ask(name, client);
                let (expected, why) = bootstorm_answer(&rules, &root, name, client);
                let ours = ask(server.v4, name, client);
                if !same(&ours, &expected) {
                    failures.push(format!(
                        "map {label}, name \"{}\" from {client}: the server answers {ours:?}, the rules and its \
                         normalisation say {expected:?}",
                        printable(name),
                    ));
                    continue;
                }
                // The server's own messages (for ERROR 1, say) are not tftp-hpa's: only the
                // map file's are compared.
                let ours = match (ours, &expected) {
                    (Answer::Error(code, _), Answer::Error(_, None)) => Answer::Error(code, None),
                    (ours, _) => ours,
                };
                // tftp-hpa 5.2 sizes the result of `\x` 8 bytes short and writes past it: its
                // process may die before it answers.
                let why = why
                    .or((theirs == Answer::Silence && text.windows(2).any(|w| w == br"\x"))
                        .then_some(Known::HexOverflow));
                if same(&theirs, &ours) {
                    agreed += 1;
                } else if let Some(why) = why {
                    *known.entry(why).or_default() += 1;
                } else {
                    failures.push(format!(
                        "map {label} ({}), name \"{}\" from {client}: tftp-hpa {theirs:?}, bootstorm {ours:?}",
                        printable(&text[..text.len().min(200)]).replace("\\n", " | "),
                        printable(name),
                    ));
                }
            }
        }
    }
    println!(
        "{requests} requests, {} map files, {:.1} s: {agreed} alike, known differences {known:?}",
        maps.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
    assert!(agreed * 10 >= requests * 8, "most requests are compared strictly: {agreed} of {requests}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
