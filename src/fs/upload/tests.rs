//! Upload tests: refusals and their errors, both kinds of temporary file, commits that clobber nothing.

use std::path::Path;

use super::file::{Staged, link_via_proc};
use super::*;

const ALL: WritePolicy = WritePolicy { create: true, overwrite: true, mode: 0o644, max_size: 1 << 20 };

/// Each refusal is answered with the same ERROR as when the engine mapped it itself.
#[test]
fn errors_map_to_their_wire_errors() {
    let cases = [
        (UploadError::NotFound, ErrorCode::FILE_NOT_FOUND, "file not found"),
        (UploadError::Denied, ErrorCode::ACCESS_VIOLATION, "access violation"),
        (UploadError::DiskFull, ErrorCode::DISK_FULL, "disk full or upload too large"),
        (UploadError::Exists, ErrorCode::FILE_EXISTS, "file already exists"),
        (UploadError::Io(io::Error::from_raw_os_error(libc::EIO)), ErrorCode::NOT_DEFINED, "cannot write file"),
    ];
    for (e, code, message) in cases {
        assert_eq!((e.code(), e.message()), (code, message), "{e:?}");
        assert_eq!(ErrorCode::from(&e), code);
        assert_eq!(LocalFailure::from(&e).message(), message);
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn commit_replaces_atomically_and_leaves_no_temp() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("cfg"), b"old").unwrap();
    let root = UploadRoot::open(d.path()).unwrap();
    let mut u = root.begin(b"cfg", &ALL, Some(3), false).unwrap();
    u.write(b"new").unwrap();
    assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"old", "untouched until the commit");
    assert_eq!(files(d.path()), ["cfg"], "the upload's file has no name");
    assert_eq!(u.commit().unwrap(), 3);
    assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"new");
    assert_eq!(files(d.path()), ["cfg"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(d.path().join("cfg")).unwrap().permissions().mode() & 0o777, 0o644);
}

/// The mode of an upload is the policy's (`--umask`), whatever the process umask also says.
#[test]
fn uploads_get_the_policy_mode_whatever_the_process_umask() {
    use std::os::unix::fs::PermissionsExt;
    // The usual umask of a service (systemd's UMask= default): it would strip group write.
    // SAFETY: umask only swaps the process's file-creation mask.
    unsafe { libc::umask(0o022) };
    let d = tempfile::tempdir().unwrap();
    let roots =
        [(true, UploadRoot::open(d.path()).unwrap()), (false, UploadRoot::open(d.path()).unwrap().named_only())];
    for ((unnamed, root), name) in roots.iter().zip([&b"a"[..], &b"b"[..]]) {
        let policy = WritePolicy { mode: 0o664, ..ALL };
        let mut u = root.begin(name, &policy, Some(1), false).unwrap();
        u.write(b"x").unwrap();
        u.commit().unwrap();
        let path = d.path().join(std::str::from_utf8(name).unwrap());
        assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o664, "unnamed: {unnamed}");
    }
}

#[test]
fn nothing_exists_before_the_first_data() {
    let d = tempfile::tempdir().unwrap();
    let root = UploadRoot::open(d.path()).unwrap();
    for r in [&root, &UploadRoot::open(d.path()).unwrap().named_only()] {
        let u = r.begin(b"new", &ALL, Some(3), false).unwrap();
        assert!(files(d.path()).is_empty());
        drop(u);
        // An empty upload (DATA 1 with no bytes) is a file too.
        let mut u = r.begin(b"empty", &ALL, Some(0), false).unwrap();
        u.write(b"").unwrap();
        assert_eq!(u.commit().unwrap(), 0);
        assert_eq!(files(d.path()), ["empty"]);
        std::fs::remove_file(d.path().join("empty")).unwrap();
    }
}

#[test]
fn named_fallback_keeps_every_guarantee() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("cfg"), b"old").unwrap();
    let root = UploadRoot::open(d.path()).unwrap().named_only();
    let mut u = root.begin(b"cfg", &ALL, None, false).unwrap();
    u.write(b"new").unwrap();
    let during = files(d.path());
    assert_eq!(during.len(), 2, "a named temporary file beside the target");
    assert!(during[0].starts_with(".bootstorm-") && during[0].len() < 40, "a short name: {during:?}");
    u.commit().unwrap();
    assert_eq!(files(d.path()), ["cfg"]);
    assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"new");
    // Abandoned: removed.
    let mut u = root.begin(b"cfg", &ALL, None, false).unwrap();
    u.write(b"partial").unwrap();
    drop(u);
    assert_eq!(files(d.path()), ["cfg"]);
    // Without overwrite the first to commit wins: see the test below.
}

#[test]
fn names_up_to_name_max() {
    let d = tempfile::tempdir().unwrap();
    for root in [UploadRoot::open(d.path()).unwrap(), UploadRoot::open(d.path()).unwrap().named_only()] {
        for len in [236, 250, 255] {
            let name = vec![b'n'; len];
            for content in [&b"one"[..], b"two"] {
                let mut u = root.begin(&name, &ALL, None, false).unwrap();
                u.write(content).unwrap();
                u.commit().unwrap();
                assert_eq!(std::fs::read(d.path().join(std::str::from_utf8(&name).unwrap())).unwrap(), content);
            }
        }
        assert_eq!(files(d.path()).len(), 3);
        assert!(root.begin(&[b'n'; 256], &ALL, None, false).is_err(), "over NAME_MAX");
    }
}

#[test]
fn unnamed_files_are_checked_at_open_and_leave_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = UploadRoot::open(d.path()).unwrap();
    assert!(root.unnamed, "this kernel and file system link unnamed files");
    assert!(files(d.path()).is_empty(), "the check leaves no file behind");
}

#[test]
fn unnamed_file_linked_through_proc() {
    let d = tempfile::tempdir().unwrap();
    let root = UploadRoot::open(d.path()).unwrap();
    let mut u = root.begin(b"f", &ALL, None, false).unwrap();
    u.write(b"via proc").unwrap();
    let Some(Staged::Unnamed(file)) = &u.file else { panic!("an unnamed file on this file system") };
    file.sync_all().unwrap();
    link_via_proc(file, &u.parent, c"f").unwrap();
    assert!(matches!(link_via_proc(file, &u.parent, c"f"), Err(e) if e.raw_os_error() == Some(libc::EEXIST)));
    assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"via proc");
}

#[test]
fn relation_to_the_served_root() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir(d.path().join("other")).unwrap();
    std::os::unix::fs::symlink(root.join("sub"), d.path().join("sneaky")).unwrap();
    let rel = |p: &Path| UploadRoot::open(p).unwrap().relation_to(&root).unwrap();
    assert_eq!(rel(&root), TreeRelation::Same);
    assert_eq!(rel(&root.join("sub/deeper")), TreeRelation::Inside);
    assert_eq!(rel(&d.path().join("sneaky")), TreeRelation::Inside, "through a symlink");
    assert_eq!(rel(&root.join("sub/../sub")), TreeRelation::Inside);
    assert_eq!(rel(d.path()), TreeRelation::Contains);
    assert_eq!(rel(&d.path().join("other")), TreeRelation::Separate);
}

#[test]
fn aborted_upload_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("cfg"), b"old").unwrap();
    let root = UploadRoot::open(d.path()).unwrap();
    let mut u = root.begin(b"cfg", &ALL, None, false).unwrap();
    u.write(b"partial").unwrap();
    drop(u);
    assert_eq!(files(d.path()), ["cfg"]);
    assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"old");
}

#[test]
fn policy_refusals() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("exists"), b"x").unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
    std::os::unix::fs::symlink("sub", d.path().join("dirlink")).unwrap();
    let root = UploadRoot::open(d.path()).unwrap();
    let no_over = WritePolicy { overwrite: false, ..ALL };
    let no_create = WritePolicy { create: false, ..ALL };
    assert!(matches!(root.begin(b"exists", &no_over, None, false), Err(UploadError::Exists)));
    assert!(matches!(root.begin(b"new", &no_create, None, false), Err(UploadError::NotFound)));
    assert!(matches!(root.begin(b"link", &ALL, None, false), Err(UploadError::Denied)), "symlink target");
    assert!(matches!(root.begin(b"dirlink/x", &ALL, None, false), Err(UploadError::Denied)), "through a symlink");
    assert!(matches!(root.begin(b"sub", &ALL, None, false), Err(UploadError::Denied)), "a directory");
    assert!(matches!(root.begin(b"missing/x", &ALL, None, false), Err(UploadError::NotFound)));
    assert!(matches!(root.begin(b"big", &ALL, Some(2 << 20), false), Err(UploadError::DiskFull)));
    assert!(matches!(root.begin(b"huge", &ALL, Some(u64::MAX / 2), false), Err(UploadError::DiskFull)), "free space");
    assert!(root.begin(b"sub/new", &ALL, None, false).is_ok());
    assert_eq!(files(d.path()), ["dirlink", "exists", "link", "sub"]);
}

#[test]
fn size_limit_while_writing() {
    let d = tempfile::tempdir().unwrap();
    let root = UploadRoot::open(d.path()).unwrap();
    let mut u = root.begin(b"f", &WritePolicy { max_size: 10, ..ALL }, None, false).unwrap();
    u.write(&[0; 8]).unwrap();
    assert!(matches!(u.write(&[0; 8]), Err(UploadError::DiskFull)));
}

#[test]
fn no_replace_loses_to_a_file_that_appeared_meanwhile() {
    let d = tempfile::tempdir().unwrap();
    let root = UploadRoot::open(d.path()).unwrap();
    let p = WritePolicy { overwrite: false, ..ALL };
    let mut a = root.begin(b"f", &p, None, false).unwrap();
    let mut b = root.begin(b"f", &p, None, false).unwrap();
    a.write(b"aaa").unwrap();
    b.write(b"bbb").unwrap();
    a.commit().unwrap();
    assert!(matches!(b.commit(), Err(UploadError::Exists)));
    assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"aaa");
    assert_eq!(files(d.path()), ["f"]);
}

#[test]
fn netascii_upload_is_decoded() {
    let d = tempfile::tempdir().unwrap();
    let root = UploadRoot::open(d.path()).unwrap();
    let mut u = root.begin(b"t", &ALL, None, true).unwrap();
    u.write(b"a\r\nb\r").unwrap();
    u.write(b"\0c\r").unwrap();
    u.commit().unwrap();
    assert_eq!(std::fs::read(d.path().join("t")).unwrap(), b"a\nb\rc\r");
}
