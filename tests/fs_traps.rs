//! Traps in the file system layer and option negotiation, through the real binary: a private
//! file is refused unless `--serve-private-files`, a DHCP file name that is the file's absolute
//! path inside the root is served, and `--refuse-option blksize` answers a request that asks only
//! for blksize with DATA 1 rather than an OACK.

#[macro_use]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bootstorm::proto::RequestOptions;
use bootstorm::proto::wire::Mode;
use common::*;

const SEC: Duration = Duration::from_secs(1);

both_backends!(private_files_need_the_flag, absolute_path_inside_the_root, refused_option_gets_data_1);

/// A root-owned 0600 file (the suite runs as root, which could read it) is refused with ERROR 2
/// in both modes, as tftpd-hpa running as `nobody` and dnsmasq would; `--serve-private-files`
/// serves it.
fn private_files_need_the_flag(io: &str) {
    let root = Root::new();
    root.write("private.cfg", b"password=secret\n");
    std::fs::set_permissions(root.path().join("private.cfg"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = Server::start(root.path(), io, &[]);
    for mode in [Mode::Octet, Mode::Netascii] {
        let c = Raw::new(s.v4);
        let e = c.fetch("private.cfg", mode, RequestOptions::default()).unwrap_err();
        assert_eq!(e, (2, "access violation".to_string()), "{mode:?}");
    }
    // A world-readable file beside it is served as usual.
    assert_eq!(
        Raw::new(s.v4).fetch("small.bin", Mode::Octet, RequestOptions::default()).unwrap(),
        root.file("small.bin")
    );
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
    assert!(log.contains("not_world_readable"), "the refusal's reason is logged: {log}");

    let s = Server::start(root.path(), io, &["--serve-private-files"]);
    let c = Raw::new(s.v4);
    assert_eq!(c.fetch("private.cfg", Mode::Octet, RequestOptions::default()).unwrap(), b"password=secret\n");
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
}

/// dnsmasq's habit: the DHCP file name is the file's full path on the server.
fn absolute_path_inside_the_root(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let c = Raw::new(s.v4);
    let full = format!("{}/boot/grub/grub.cfg", root.path().display());
    assert_eq!(c.fetch(&full, Mode::Octet, RequestOptions::default()).unwrap(), root.file("boot/grub/grub.cfg"));
    // Through the canonical path too, and never out of the root.
    let canonical = std::fs::canonicalize(root.path()).unwrap();
    let c = Raw::new(s.v4);
    let full = format!("{}/vmlinuz", canonical.display());
    assert_eq!(c.fetch(&full, Mode::Octet, RequestOptions::default()).unwrap(), root.file("vmlinuz"));
    let c = Raw::new(s.v4);
    let escape = format!("{}/../../etc/passwd", root.path().display());
    assert_eq!(c.fetch(&escape, Mode::Octet, RequestOptions::default()).unwrap_err().0, 2);
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
}

/// `--refuse-option blksize` (tftpd-hpa's `-r blksize`, dnsmasq's `--tftp-no-blocksize`): a
/// request that asks only for blksize is answered as if it had asked nothing, with DATA 1 of
/// 512 bytes; other options are still granted.
fn refused_option_gets_data_1(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--refuse-option", "blksize"]);
    let c = Raw::new(s.v4);
    c.rrq("vmlinuz", &[("blksize", "1468")]);
    let (p, _) = c.expect(2 * SEC);
    let (block, data) = data_of(&p);
    assert_eq!((block, data.len()), (1, 512), "DATA 1, not an OACK: {:?}", p.escape_ascii().to_string());
    let c = Raw::new(s.v4);
    c.rrq("vmlinuz", &[("blksize", "1468"), ("tsize", "0")]);
    let (p, _) = c.expect(2 * SEC);
    assert_eq!(p, b"\x00\x06tsize\x00100000\x00", "the OACK leaves blksize out");
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
}
