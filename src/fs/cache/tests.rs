//! Cache tests: one mapping per file version, replaced and rewritten files noticed, the sweep.

use super::*;

fn cache(dir: &std::path::Path) -> FileCache {
    FileCache::new(Arc::new(Root::open(dir, true).unwrap()), 8)
}

/// Reads a file version's bytes through a copy (tests only; the server never does this).
fn bytes(v: &FileVersion, netascii: bool) -> Vec<u8> {
    if netascii {
        let len = v.netascii_len().unwrap() as usize;
        let (_chunk, s) = v.netascii_block(0, len).unwrap().unwrap();
        // SAFETY: `_chunk` keeps the scratch alive and unwritten while it is read.
        return unsafe { std::slice::from_raw_parts(s.ptr, s.len) }.to_vec();
    }
    let s = v.raw_slice(0, v.len() as usize).unwrap();
    // SAFETY: the file is not truncated during the test, and the range was bounds-checked.
    unsafe { std::slice::from_raw_parts(s.ptr, s.len) }.to_vec()
}

#[test]
fn shared_then_replaced_by_rename() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"old contents").unwrap();
    let mut c = cache(dir.path());
    let t = Timestamp::ZERO;
    let a = c.get(b"f", t).unwrap();
    let b = c.get(b"f", t).unwrap();
    assert!(Rc::ptr_eq(&a, &b), "one mapping per file per worker");
    std::fs::write(dir.path().join("f.new"), b"new").unwrap();
    std::fs::rename(dir.path().join("f.new"), dir.path().join("f")).unwrap();
    let n = c.get(b"f", t).unwrap();
    assert!(!Rc::ptr_eq(&a, &n));
    assert_eq!(bytes(&n, false), b"new");
    assert_eq!(bytes(&a, false), b"old contents", "in-flight users keep the old version");
}

#[test]
fn rewrite_in_place_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, b"0123456789").unwrap();
    let mut c = cache(dir.path());
    let a = c.get(b"f", Timestamp::ZERO).unwrap();
    std::fs::write(&p, b"short").unwrap();
    let b = c.get(b"f", Timestamp::ZERO).unwrap();
    assert!(!Rc::ptr_eq(&a, &b));
    assert_eq!(b.len(), 5);
    // The old version's slices are bounded by the old length, never past its mapping.
    assert!(a.raw_slice(0, 10).is_some());
    assert!(a.raw_slice(5, 6).is_none());
}

#[test]
fn missing_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cache(dir.path());
    assert!(matches!(c.get(b"nope", Timestamp::ZERO), Err(OpenError::NotFound)));
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    c.get(b"f", Timestamp::ZERO).unwrap();
    std::fs::remove_file(dir.path().join("f")).unwrap();
    assert!(matches!(c.get(b"f", Timestamp::ZERO), Err(OpenError::NotFound)));
    assert!(c.is_empty());
}

#[test]
fn empty_file_and_netascii_view() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    std::fs::write(dir.path().join("text"), b"a\nb\r").unwrap();
    let mut c = cache(dir.path());
    let e = c.get(b"empty", Timestamp::ZERO).unwrap();
    assert!(e.is_empty());
    assert_eq!(e.raw_slice(0, 0).unwrap().len, 0);
    let t = c.get(b"text", Timestamp::ZERO).unwrap();
    assert_eq!(t.netascii_len().unwrap(), 6);
    assert_eq!(bytes(&t, true), b"a\r\nb\r\0");
}

#[test]
fn sweep_keeps_files_in_use() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4 {
        std::fs::write(dir.path().join(i.to_string()), b"x").unwrap();
    }
    let mut c = cache(dir.path());
    let held = c.get(b"0", Timestamp::ZERO).unwrap();
    for i in 1..4 {
        c.get(i.to_string().as_bytes(), Timestamp::ZERO).unwrap();
    }
    c.sweep(Timestamp::ZERO + Duration::from_secs(60), false);
    assert_eq!(c.len(), 1);
    drop(held);
    c.sweep(Timestamp::ZERO + Duration::from_secs(61), true);
    assert!(c.is_empty());
}

fn chmod(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Only files others may read are served by default, as tftpd-hpa running as `nobody` and
/// dnsmasq do: a root-owned 0600 file is refused (ERROR 2), in either transfer mode, and a
/// `chmod` is seen on the next request even while the file is cached.
#[test]
fn private_files_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = (dir.path().join("private"), dir.path().join("public"));
    std::fs::write(&private, b"secret\n").unwrap();
    std::fs::write(&public, b"boot\n").unwrap();
    chmod(&private, 0o600);
    chmod(&public, 0o644);
    let mut c = cache(dir.path());
    let t = Timestamp::ZERO;
    let e = c.get(b"private", t).unwrap_err();
    assert!(matches!(e, OpenError::NotWorldReadable), "{e:?}");
    assert_eq!((e.code(), e.message()), (crate::proto::ErrorCode::ACCESS_VIOLATION, "access violation"));
    assert_eq!(e.to_string(), "not world-readable");
    assert!(c.is_empty(), "a refused file is not mapped");
    assert_eq!(bytes(&c.get(b"public", t).unwrap(), true), b"boot\r\n");
    // Made private while cached: the next request sees it.
    chmod(&public, 0o640);
    assert!(matches!(c.get(b"public", t), Err(OpenError::NotWorldReadable)));
    chmod(&public, 0o604);
    assert_eq!(bytes(&c.get(b"public", t).unwrap(), false), b"boot\n");
    // --serve-private-files.
    c.set_world_readable_only(false);
    let v = c.get(b"private", t).unwrap();
    assert_eq!(bytes(&v, false), b"secret\n");
    assert_eq!(bytes(&v, true), b"secret\r\n");
    // Cached, then the policy again: refused from the cache too.
    c.set_world_readable_only(true);
    assert!(matches!(c.get(b"private", t), Err(OpenError::NotWorldReadable)));
}
