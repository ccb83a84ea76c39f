//! Tests that need the operating system's help: a network namespace with a small MTU, and a
//! seccomp filter that denies io_uring the way Docker's default profile does. Both need root
//! (CAP_SYS_ADMIN for the namespace, none for seccomp); the test command runs as root.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use bootstorm::proto::RequestOptions;
use bootstorm::proto::wire::{Mode, Packet};
use common::*;

const SEC: Duration = Duration::from_secs(1);

/// Brings interface `name` up with `mtu` (in the calling thread's network namespace).
fn set_up_with_mtu(name: &str, mtu: i32) {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0");
    let fd = match &sock {
        Ok(s) => std::os::fd::AsRawFd::as_raw_fd(s),
        // Loopback is down in a fresh namespace, but binding the wildcard address works anyway;
        // fall back to a raw socket() if not.
        // SAFETY: plain syscall.
        Err(_) => unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) },
    };
    // SAFETY: plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: each ioctl reads or writes the ifreq we own.
    unsafe {
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0, "SIOCGIFFLAGS");
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req), 0, "SIOCSIFFLAGS");
        req.ifr_ifru.ifru_mtu = mtu;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFMTU, &mut req), 0, "SIOCSIFMTU");
    }
}

fn oack_blksize(c: &Raw, asked: &str) -> u64 {
    c.rrq("big.bin", &[("blksize", asked)]);
    let (p, tid) = c.expect(2 * SEC);
    c.send(tid, b"\x00\x05\x00\x08probe\x00");
    match Packet::decode(&p).unwrap() {
        Packet::Oack(o) => std::str::from_utf8(o.get("blksize").unwrap().1).unwrap().parse().unwrap(),
        other => panic!("{other:?}"),
    }
}

/// blksize is capped by the MTU of the interface the request came in on: 1500 − 32 over IPv4,
/// 1500 − 52 over IPv6, so that no DATA packet is fragmented.
#[test]
fn blksize_capped_by_interface_mtu() {
    for io in ["uring", "epoll"] {
        // A dedicated thread: unshare(CLONE_NEWNET) moves only the calling thread.
        std::thread::spawn(move || {
            // SAFETY: plain syscall; affects this thread only.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare(CLONE_NEWNET) needs root: {}", std::io::Error::last_os_error());
            set_up_with_mtu("lo", 1500);
            let root = Root::new();
            // Spawned from this thread, the server shares its namespace.
            let s = Server::start(root.path(), io, &[]);
            assert_eq!(oack_blksize(&Raw::new(s.v4), "8000"), 1468, "{io} IPv4");
            assert_eq!(oack_blksize(&Raw::new(s.v6), "8000"), 1448, "{io} IPv6");
            assert_eq!(oack_blksize(&Raw::new(s.v4), "1024"), 1024, "{io}: never raised");
            // And the transfer at that size works.
            let got = Raw::new(s.v4).fetch(
                "big.bin",
                Mode::Octet,
                RequestOptions { blksize: Some(9000), ..Default::default() },
            );
            assert_eq!(got.unwrap(), root.file("big.bin"));
        })
        .join()
        .unwrap();
    }
}

const NR_IO_URING_SETUP: u32 = 425;
const NR_IO_URING_ENTER: u32 = 426;
const NR_IO_URING_REGISTER: u32 = 427;

/// A command whose process gets a seccomp filter failing `denied` syscalls with EPERM.
fn denying(denied: &'static [u32]) -> Command {
    let mut cmd = Command::new(bin());
    // SAFETY: the closure runs between fork and exec and only makes prctl calls, which are
    // async-signal-safe; the filter program is built inside it on the stack.
    unsafe {
        cmd.pre_exec(move || {
            const RET_ALLOW: u32 = 0x7fff_0000;
            const RET_ERRNO: u32 = 0x0005_0000;
            let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
            let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
            let ret = (libc::BPF_RET | libc::BPF_K) as u16;
            let mut prog = [libc::sock_filter { code: 0, jt: 0, jf: 0, k: 0 }; 8];
            prog[0] = libc::sock_filter { code: ld, jt: 0, jf: 0, k: 0 };
            let n = denied.len();
            for (i, nr) in denied.iter().enumerate() {
                prog[1 + i] = libc::sock_filter { code: jeq, jt: (n - i) as u8, jf: 0, k: *nr };
            }
            prog[1 + n] = libc::sock_filter { code: ret, jt: 0, jf: 0, k: RET_ALLOW };
            prog[2 + n] = libc::sock_filter { code: ret, jt: 0, jf: 0, k: RET_ERRNO | libc::EPERM as u32 };
            let fprog = libc::sock_fprog { len: (n + 3) as u16, filter: prog.as_mut_ptr() };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const _ as usize, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn falls_back_to_epoll_when_io_uring_is_denied() {
    let root = Root::new();
    for denied in [&[NR_IO_URING_SETUP, NR_IO_URING_ENTER, NR_IO_URING_REGISTER][..], &[NR_IO_URING_ENTER]] {
        let s = Server::start_with(denying(denied), root.path(), "auto", &[]);
        let got =
            Raw::new(s.v4).fetch("big.bin", Mode::Octet, RequestOptions { blksize: Some(1468), ..Default::default() });
        assert_eq!(got.unwrap(), root.file("big.bin"));
        let (st, log) = s.stop();
        assert!(st.success());
        assert!(
            log.contains("io_uring is unusable, running on epoll") && log.contains("backend=epoll"),
            "{denied:?}: {log}"
        );
    }
    // Without the filter, auto picks io_uring.
    let s = Server::start(root.path(), "auto", &[]);
    let (_, log) = s.stop();
    assert!(log.contains("backend=io_uring"), "{log}");
}

#[test]
fn forced_io_uring_fails_clearly_when_denied() {
    let root = Root::new();
    let out = denying(&[NR_IO_URING_SETUP])
        .args(["--root", root.path().to_str().unwrap(), "-l", "127.0.0.1:0", "--io", "uring"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("io_uring is unusable here") && err.contains("--io epoll"), "{err}");
}
