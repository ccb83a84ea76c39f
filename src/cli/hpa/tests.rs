//! tftp-hpa's command line in bootstorm's terms, and what is refused by name.

use super::*;

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// bootstorm's arguments for `args`, as a plain user with umask 022.
fn serve(args: &[&str]) -> Hpa {
    match parse(&os(args), false, 0o022) {
        Ok(HpaCommand::Serve(h)) => h,
        other => panic!("{args:?}: {other:?}"),
    }
}

fn words(h: &Hpa) -> String {
    h.args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

fn refused(args: &[&str]) -> HpaError {
    match parse(&os(args), false, 0o022) {
        Err(e) => e,
        other => panic!("{args:?} accepted: {other:?}"),
    }
}

#[test]
fn invoked_by_name_or_subcommand() {
    assert_eq!(invoked(&os(&["/usr/sbin/in.tftpd", "-L"])), Some(&os(&["-L"])[..]));
    assert_eq!(invoked(&os(&["in.tftpd"])), Some(&[][..]));
    assert_eq!(invoked(&os(&["bootstorm", "hpa", "-L", "-s", "/x"])), Some(&os(&["-L", "-s", "/x"])[..]));
    assert_eq!(invoked(&os(&["bootstorm", "--root", "hpa"])), None);
    assert_eq!(invoked(&os(&["/usr/bin/bootstorm", "check"])), None);
}

#[test]
fn debian_unit_line() {
    // /etc/init.d/tftpd-hpa with the packaged /etc/default/tftpd-hpa.
    let h = serve(&["--listen", "--user", "tftp", "--address", ":69", "--secure", "/srv/tftp"]);
    assert!(h.detach);
    assert_eq!(words(&h), "bootstorm --root /srv/tftp --user tftp", "every address on port 69: the default");
}

#[test]
fn stacks_lines() {
    // xCAT
    let h = serve(&["-4", "-v", "-l", "-s", "/tftpboot"]);
    assert_eq!(words(&h), "bootstorm --root /tftpboot --listen 0.0.0.0:69 --log-requests");
    // Cobbler's containers
    let h = serve(&["-L", "-u", "root", "-s", "/srv/tftpboot"]);
    assert!(!h.detach);
    assert_eq!(words(&h), "bootstorm --root /srv/tftpboot --user root");
    // Grouped flags, values attached, long flags shortened and with `=`.
    let h = serve(&["-Lvvvs", "-B1468", "--addr=127.0.0.1:6969", "--retrans=500000", "--", "/d"]);
    assert_eq!(
        words(&h),
        "bootstorm --root /d --listen 127.0.0.1:6969 --log-requests --log-level debug --max-blksize 1468 \
         --timeout 0.5"
    );
}

#[test]
fn each_flag() {
    let w = |args: &[&str]| {
        let mut v = vec!["-L", "-s", "/d"];
        v.extend_from_slice(args);
        words(&serve(&v))
    };
    let base = "bootstorm --root /d";
    assert_eq!(w(&[]), base);
    assert_eq!(w(&["-6"]), "bootstorm --root /d --listen [::]:69");
    assert_eq!(w(&["-4", "-a", ":69"]), "bootstorm --root /d --listen 0.0.0.0:69");
    assert_eq!(w(&["-a", ":6969"]), "bootstorm --root /d --listen 0.0.0.0:6969 --listen [::]:6969");
    assert_eq!(w(&["-a", "127.0.0.1"]), "bootstorm --root /d --listen 127.0.0.1:69");
    assert_eq!(w(&["-a", "[::1]:6969"]), "bootstorm --root /d --listen [::1]:6969");
    assert_eq!(w(&["-c"]), format!("{base} --allow-write --uploads-in-root --create --umask 000"));
    assert_eq!(
        w(&["-c", "-p"]),
        format!("{base} --allow-write --uploads-in-root --create --umask 022 --serve-private-files")
    );
    assert_eq!(w(&["-c", "-U", "027"]), format!("{base} --allow-write --uploads-in-root --create --umask 027"));
    assert_eq!(w(&["-U", "7"]), format!("{base} --umask 007"));
    assert_eq!(w(&["-p"]), format!("{base} --serve-private-files"));
    assert_eq!(w(&["--verbosity", "1"]), format!("{base} --log-requests"));
    assert_eq!(w(&["-B", "512"]), format!("{base} --max-blksize 512"));
    assert_eq!(w(&["-u", "tftp"]), format!("{base} --user tftp"));
    assert_eq!(w(&["-r", "blksize", "-r", "tsize", "-r", "utimeout"]), format!("{base} --refuse-option blksize,tsize"));
    assert_eq!(w(&["-T", "250000"]), format!("{base} --timeout 0.25"));
    assert_eq!(w(&["-R", "4096:32767"]), format!("{base} --port-range 4096:32767"));
    assert_eq!(w(&["-P", "/run/tftpd.pid"]), format!("{base} --pid-file /run/tftpd.pid"));
    assert_eq!(w(&["-m", "/etc/tftpd.map"]), format!("{base} --map-file /etc/tftpd.map"));
    assert_eq!(w(&["--map-file=/m"]), format!("{base} --map-file /m"));
    // Standalone, the inetd idle timeout does nothing, as in tftp-hpa.
    assert_eq!(w(&["-t", "900"]), base);
}

#[test]
fn root_drops_to_nobody_unless_told() {
    let as_root = |args: &[&str]| match parse(&os(args), true, 0o022) {
        Ok(HpaCommand::Serve(h)) => words(&h),
        other => panic!("{other:?}"),
    };
    assert!(as_root(&["-L", "-s", "/d"]).ends_with("--user nobody"));
    assert!(as_root(&["-L", "-u", "tftp", "-s", "/d"]).ends_with("--user tftp"));
}

#[test]
fn version_and_help() {
    assert_eq!(parse(&os(&["-V"]), false, 0), Ok(HpaCommand::Version));
    assert_eq!(parse(&os(&["--version"]), false, 0), Ok(HpaCommand::Version));
    assert_eq!(parse(&os(&["-h"]), false, 0), Ok(HpaCommand::Help));
    assert!(version("1.0", true).contains("with remap"));
}

#[test]
fn refused_by_name() {
    let flag = |args: &[&str]| refused(args).flag;
    assert_eq!(flag(&["-L", "-s", "-w", "/d"]), "-w");
    assert_eq!(flag(&["-L", "-s", "--systemd", "/d"]), "--systemd");
    assert_eq!(flag(&["-L", "-s", "--ver", "/d"]), "--ver", "ambiguous: --verbose, --verbosity, --version");
    assert_eq!(flag(&["-L", "-s", "-B", "511", "/d"]), "-B");
    assert_eq!(flag(&["-L", "-s", "--blocksize=70000", "/d"]), "--blocksize");
    assert_eq!(flag(&["-L", "-s", "-r", "bigblocks", "/d"]), "-r");
    assert_eq!(flag(&["-L", "-s", "-T", "5", "/d"]), "-T");
    assert_eq!(flag(&["-L", "-s", "-R", "9:1", "/d"]), "-R");
    assert_eq!(flag(&["-L", "-s", "-U", "999", "/d"]), "-U");
    assert_eq!(flag(&["-L", "-s", "-t", "x", "/d"]), "-t");
    assert_eq!(flag(&["-L", "-s", "/d", "-B"]), "-B", "a value is missing");
    assert_eq!(flag(&["-L", "-s", "--create=yes", "/d"]), "--create");
    assert_eq!(flag(&["-L", "-4", "-6", "-s", "/d"]), "-6");
    assert_eq!(flag(&["-L", "-4", "-a", "[::1]:69", "-s", "/d"]), "-a [::1]:69");
    assert_eq!(flag(&["-L", "-a", "eth0:69", "-s", "/d"]).split(' ').next(), Some("-a"));
    assert_eq!(flag(&["-a", "127.0.0.1:69", "-s", "/d"]), "-a", "inetd mode has its socket");
    assert!(refused(&["-L", "-s"]).message.contains("directory"));
    assert!(refused(&["-L", "-s", "/a", "/b"]).message.contains("exactly one directory"));
    assert!(refused(&["-L", "/a", "/b"]).message.contains("one directory"));
    // Without -s, one directory: served as with -s (the root's own path is taken off names).
    assert_eq!(words(&serve(&["-L", "-4", "/a"])), "bootstorm --root /a --listen 0.0.0.0:69");
}

#[test]
fn inetd_mode() {
    // xinetd's `server_args` for Ironic: no -l or -L, the socket on standard input.
    let h = serve(&["-v", "-v", "-v", "-v", "-v", "--map-file", "/tftpboot/map-file", "/tftpboot"]);
    assert_eq!(h.inetd, Some(std::time::Duration::from_secs(900)));
    assert!(!h.detach);
    assert_eq!(words(&h), "bootstorm --root /tftpboot --log-requests --log-level debug --map-file /tftpboot/map-file");
    assert_eq!(serve(&["-t", "5", "-4", "-s", "/d"]).inetd, Some(std::time::Duration::from_secs(5)));
    assert_eq!(serve(&["-L", "-t", "5", "-s", "/d"]).inetd, None);
}
