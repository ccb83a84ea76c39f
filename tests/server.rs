//! Integration tests: the real `bootstorm` binary on 127.0.0.1 and ::1, driven by real TFTP
//! clients (tftp-hpa, atftp, curl, busybox) and by a packet-level client. Every test that
//! touches the I/O path runs on both backends.

#[macro_use]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use bootstorm::proto::RequestOptions;
use bootstorm::proto::wire::{Mode, Packet, RequestKind};
use common::*;

const SEC: Duration = Duration::from_secs(1);

both_backends!(
    tftp_hpa_octet_and_netascii,
    per_source_rate_limit,
    allow_list_ignores_other_sources,
    atftp_with_options,
    curl_with_and_without_blksize,
    busybox_with_blksize,
    curl_rollover_past_65535_blocks,
    error_codes_for_each_refusal,
    oack_exact_bytes,
    windowed_rollover_blksize_8,
    window_arrives_as_single_datagrams,
    netascii_wire_bytes_and_cr_ending_a_block,
    uefi_size_probe,
    duplicate_acks_never_cause_resends,
    retransmission_after_adaptive_timeout,
    first_answer_resent_once_before_first_ack,
    repeated_request_is_the_same_transfer,
    a_copy_that_waited_in_the_queue_gets_no_answer,
    foreign_port_gets_error_5,
    single_port_mode,
    two_workers_share_load,
    graceful_stop_finishes_transfers,
    stop_releases_the_listening_port_during_the_grace,
    grace_expiry_ends_transfers_with_error,
    truncated_file_does_not_crash,
    send_failure_past_the_send_slots_ends_the_transfer,
    replaced_file_served_new_to_new_clients,
    paths_and_containment,
    busy_is_an_answer,
    a_search_chain_of_misses_is_one_record_and_a_fold,
);

fn tftp_hpa_octet_and_netascii(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let dir = scratch();
    for (name, addr) in [("big.bin", s.v4), ("empty.bin", s.v4), ("exact1024.bin", s.v4), ("vmlinuz", s.v6)] {
        let out = dir.path().join(name);
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        let (_, log) = run(
            Command::new("tftp")
                .args([if addr.is_ipv6() { "-6" } else { "-4" }, &ip, &port])
                .args(["-m", "octet", "-c", "get", name])
                .arg(&out),
            30 * SEC,
        );
        assert_eq!(std::fs::read(&out).unwrap_or_default(), root.file(name), "tftp-hpa {name}: {log}");
    }
    // netascii: translated on the wire, translated back by the client.
    let out = dir.path().join("text.txt");
    let (_, log) = run(
        Command::new("tftp")
            .args(["127.0.0.1", &s.v4.port().to_string(), "-m", "netascii", "-c", "get", "text.txt"])
            .arg(&out),
        30 * SEC,
    );
    assert_eq!(std::fs::read(&out).unwrap(), TEXT, "{log}");
    let (st, log) = s.stop();
    assert!(st.success());
    assert!(log.contains("mode=netascii"), "{log}");
}

fn atftp_with_options(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let dir = scratch();
    let port = s.v4.port().to_string();
    for opts in [
        &["blksize 1468", "tsize 0", "windowsize 16"][..],
        &["blksize 8192", "windowsize 4"],
        &["tsize 0"],
        &["blksize 512", "windowsize 64", "timeout 2"],
    ] {
        let out = dir.path().join("out");
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new("atftp");
        for o in opts {
            cmd.args(["--option", o]);
        }
        let (_, log) = run(cmd.args(["-g", "-r", "big.bin", "-l"]).arg(&out).args(["127.0.0.1", &port]), 30 * SEC);
        assert_eq!(std::fs::read(&out).unwrap_or_default(), root.file("big.bin"), "atftp {opts:?}: {log}");
    }
    let (st, log) = s.stop();
    assert!(st.success());
    assert_eq!(log.matches("outcome=ok").count(), 4, "{log}");
}

fn curl_with_and_without_blksize(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let dir = scratch();
    // curl refuses "tsize 0" in an OACK, so it cannot fetch an empty file with options from an
    // RFC 2349 server; without options it gets the single empty DATA.
    for (url, extra) in [
        (format!("tftp://127.0.0.1:{}/big.bin", s.v4.port()), None),
        (format!("tftp://127.0.0.1:{}/big.bin", s.v4.port()), Some("1428")),
        (format!("tftp://[::1]:{}/big.bin", s.v6.port()), Some("8192")),
        (format!("tftp://127.0.0.1:{}/empty.bin", s.v4.port()), Some("no-options")),
    ] {
        let out = dir.path().join("out");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o"]).arg(&out).arg(&url);
        match extra {
            Some("no-options") => {
                cmd.arg("--tftp-no-options");
            }
            Some(b) => {
                cmd.args(["--tftp-blksize", b]);
            }
            None => {}
        }
        let (ok, log) = run(&mut cmd, 30 * SEC);
        assert!(ok, "curl {url} {extra:?}: {log}");
        let want = if url.ends_with("empty.bin") { root.file("empty.bin") } else { root.file("big.bin") };
        assert_eq!(std::fs::read(&out).unwrap(), want, "curl {url} {extra:?}");
    }
    // A missing file: curl exits with 68, "TFTP: file not found" (the server's ERROR 1).
    let (code, log) = run_code(
        Command::new("curl").args(["-sS", "-o", "/dev/null"]).arg(format!("tftp://127.0.0.1:{}/nope", s.v4.port())),
        30 * SEC,
    );
    assert_eq!(code, Some(68), "{log}");
}

fn busybox_with_blksize(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let dir = scratch();
    for b in [None, Some("1468"), Some("65464")] {
        let out = dir.path().join("out");
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new("busybox");
        cmd.args(["tftp", "-g", "-r", "big.bin", "-l"]).arg(&out);
        if let Some(b) = b {
            cmd.args(["-b", b]);
        }
        let (ok, log) = run(cmd.args(["127.0.0.1", &s.v4.port().to_string()]), 30 * SEC);
        assert!(ok, "busybox -b {b:?}: {log}");
        assert_eq!(std::fs::read(&out).unwrap(), root.file("big.bin"), "busybox -b {b:?}");
    }
}

fn curl_rollover_past_65535_blocks(io: &str) {
    let root = Root::new();
    // 65,600 blocks of 512: block numbers wrap to 0 once.
    let data = bytes(512 * 65_599 + 100, 9);
    root.write("rollover.bin", &data);
    let s = Server::start(root.path(), io, &[]);
    let dir = scratch();
    let out = dir.path().join("out");
    let (ok, log) = run(
        Command::new("curl")
            .args(["-sS", "-o"])
            .arg(&out)
            .arg(format!("tftp://127.0.0.1:{}/rollover.bin", s.v4.port())),
        120 * SEC,
    );
    assert!(ok, "{log}");
    assert!(std::fs::read(&out).unwrap() == data, "rollover bytes differ");
}

fn error_codes_for_each_refusal(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    for addr in [s.v4, s.v6] {
        let c = Raw::new(addr);
        let cases: [(&[u8], u16); 9] = [
            (b"\x00\x01missing.bin\x00octet\x00", 1),
            (b"\x00\x01../../etc/passwd\x00octet\x00", 2),
            (b"\x00\x01boot\x00octet\x00", 2),
            (b"\x00\x02small.bin\x00octet\x00", 2),
            (b"\x00\x01small.bin\x00mail\x00", 4),
            (b"\x00\x01small.bin\x00binary\x00", 4),
            (b"\x00\x01unterminated", 4),
            (b"\x00\x09\x00\x00", 4),
            (b"\x00\x04\x00\x01", 5),
        ];
        for (pkt, code) in cases {
            c.send(addr, pkt);
            let (p, from) = c.expect(2 * SEC);
            assert_eq!(error_of(&p).0, code, "{:?}", pkt.escape_ascii().to_string());
            assert_eq!(from.ip(), addr.ip(), "reply from the address the request was sent to");
        }
        // An ERROR sent to the server is never answered.
        c.send(addr, b"\x00\x05\x00\x00bye\x00");
        assert!(c.recv(Duration::from_millis(300)).is_none());
    }
    let (st, log) = s.stop();
    assert!(st.success());
    assert_eq!(counter(&log, "not_found"), 2, "{log}");
}

fn oack_exact_bytes(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--max-blksize", "8192", "--max-windowsize", "8"]);
    let c = Raw::new(s.v4);
    // OVMF's first request, with names in mixed case and an unknown option.
    c.rrq("vmlinuz", &[("TSize", "0"), ("blksize", "1468"), ("windowsize", "4"), ("msftwindow", "31416")]);
    let (p, _) = c.expect(2 * SEC);
    assert_eq!(p, b"\x00\x06TSize\x00100000\x00blksize\x001468\x00windowsize\x004\x00");
    // Larger than the server allows: clamped, never raised; timeout echoed exactly.
    let c = Raw::new(s.v4);
    c.rrq("vmlinuz", &[("blksize", "65464"), ("windowsize", "64"), ("timeout", "7")]);
    let (p, _) = c.expect(2 * SEC);
    assert_eq!(p, b"\x00\x06blksize\x008192\x00windowsize\x008\x00timeout\x007\x00");
    // Invalid values are left out; nothing left means no OACK but DATA 1.
    let c = Raw::new(s.v4);
    c.rrq("vmlinuz", &[("blksize", "4"), ("timeout", "0")]);
    let (p, _) = c.expect(2 * SEC);
    assert_eq!(data_of(&p).0, 1);
}

fn windowed_rollover_blksize_8(io: &str) {
    let root = Root::new();
    let data = bytes(600_000, 11);
    root.write("wrap.bin", &data);
    let s = Server::start(root.path(), io, &[]);
    for window in [1, 16] {
        let c = Raw::new(s.v4);
        let got = c
            .fetch(
                "wrap.bin",
                Mode::Octet,
                RequestOptions { blksize: Some(8), windowsize: Some(window), tsize: true, timeout: None },
            )
            .unwrap();
        assert!(got == data, "75,001 blocks of 8 bytes, window {window}");
    }
}

/// A window goes out as one send cut by the kernel (UDP GSO) where it can; the client sees
/// the same datagrams either way: one DATA each, in order, from the transfer's address (the
/// listening one in single-port mode, v4 and v6), the last one short.
///
/// How the window left is observed from outside: the client's socket has UDP GRO on, so on
/// loopback the datagrams of one GSO send arrive as one buffer (with their segment size), while
/// datagrams sent one by one arrive one per receive. With GSO the 17 blocks arrive in one
/// receive; with `--no-gso`, in 17.
fn window_arrives_as_single_datagrams(io: &str) {
    let root = Root::new();
    for flags in [&[][..], &["--single-port"], &["--no-gso"]] {
        let gso = flags != ["--no-gso"];
        // With one listening port a window is held to the blind budget (5,000 bytes on the
        // wire): 17 blocks of 260 bytes fit it.
        let blk: usize = if flags == ["--single-port"] { 260 } else { 1000 };
        let data = bytes(16 * blk + blk / 2, 21);
        root.write("w.bin", &data);
        let s = Server::start(root.path(), io, flags);
        for addr in [s.v4, s.v6] {
            let c = Raw::new(addr);
            enable_gro(&c.sock);
            c.rrq("w.bin", &[("blksize", &blk.to_string()), ("windowsize", "17")]);
            let (p, tid, _) = recv_gro(&c.sock, 2 * SEC).expect("no OACK");
            assert!(matches!(Packet::decode(&p).unwrap(), Packet::Oack(_)));
            if flags == ["--single-port"] {
                assert_eq!(tid, addr, "single-port answers from the listening address");
            }
            c.ack(tid, 0);
            let mut block = 1u16;
            // Datagrams per receive.
            let mut grouping = Vec::new();
            while block <= 17 {
                let (buf, from, seg) = recv_gro(&c.sock, 2 * SEC).expect("the window did not arrive");
                assert_eq!(from, tid, "{flags:?}");
                let datagrams: Vec<&[u8]> = match seg {
                    Some(seg) => buf.chunks(seg).collect(),
                    None => vec![&buf[..]],
                };
                grouping.push(datagrams.len());
                for p in datagrams {
                    let want = &data[(usize::from(block) - 1) * blk..(usize::from(block) * blk).min(data.len())];
                    assert_eq!(data_of(p), (block, want.to_vec()), "{flags:?} block {block}");
                    block += 1;
                }
            }
            let want = if gso { vec![17] } else { vec![1; 17] };
            assert_eq!(grouping, want, "{io} {flags:?} {addr}: datagrams per GRO receive (one receive: one GSO send)");
            c.ack(tid, 17);
            assert!(c.recv(Duration::from_millis(300)).is_none(), "nothing after the last ACK");
        }
        let (_, log) = s.stop();
        assert!(log.contains(if gso { "gso=true" } else { "gso=false" }), "{log}");
    }
}

/// Turns on UDP GRO for `sock`: the datagrams of one GSO send then arrive as one buffer, with
/// their segment size in a `UDP_GRO` control message.
fn enable_gro(sock: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: passes a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "this kernel has no UDP GRO: {}", std::io::Error::last_os_error());
}

/// One receive on a socket with GRO on: the buffer, its source, and the segment size when the
/// buffer holds the datagrams of one GSO send (`None`: one datagram). `None` after `timeout`.
fn recv_gro(sock: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr, Option<usize>)> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 70_000];
    // SAFETY: plain data; all-zero is valid.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // Aligned for cmsghdr; room for one UDP_GRO message.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` refers to a live local of the length given.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    assert_eq!(msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC), 0, "receive truncated");
    buf.truncate(n as usize);
    let mut seg = None;
    // SAFETY: walks the control messages the kernel wrote into `control`, within the length it
    // set in `msg`; the CMSG_* helpers stay inside it and the data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                seg = usize::try_from(size).ok().filter(|&s| s > 0);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((buf, sockaddr_of(&name), seg))
}

/// The address in a `sockaddr_storage` the kernel filled in.
fn sockaddr_of(name: &libc::sockaddr_storage) -> SocketAddr {
    match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large enough for.
            let a = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            SocketAddr::from((u32::from_be(a.sin_addr.s_addr).to_be_bytes(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            SocketAddr::V6(std::net::SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        f => panic!("address family {f}"),
    }
}

fn netascii_wire_bytes_and_cr_ending_a_block(io: &str) {
    let root = Root::new();
    root.write("cr.txt", b"abcdefg\rh\n");
    let s = Server::start(root.path(), io, &[]);
    let c = Raw::new(s.v4);
    c.request(RequestKind::Read, "cr.txt", Mode::Netascii, &[("blksize", "8"), ("tsize", "0")]);
    let (p, tid) = c.expect(2 * SEC);
    assert_eq!(p, b"\x00\x06blksize\x008\x00", "tsize is left out for netascii");
    c.ack(tid, 0);
    let (p, _) = c.expect(2 * SEC);
    assert_eq!(data_of(&p), (1, b"abcdefg\r".to_vec()), "the CR ends block 1");
    c.ack(tid, 1);
    let (p, _) = c.expect(2 * SEC);
    assert_eq!(data_of(&p), (2, b"\0h\r\n".to_vec()), "its NUL starts block 2");
    c.ack(tid, 2);
    // The shared client decodes the sample back to the file.
    let got = Raw::new(s.v4).fetch("text.txt", Mode::Netascii, RequestOptions::default()).unwrap();
    let mut dec = bootstorm::proto::netascii::Decoder::new();
    let mut back = Vec::new();
    dec.decode(&got, |b| back.extend_from_slice(b));
    dec.finish(|b| back.extend_from_slice(b));
    assert_eq!(back, TEXT);
}

fn uefi_size_probe(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let c = Raw::new(s.v4);
    c.rrq("vmlinuz", &[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]);
    let (p, tid) = c.expect(2 * SEC);
    assert!(matches!(Packet::decode(&p).unwrap(), Packet::Oack(_)));
    c.send(tid, b"\x00\x05\x00\x08User aborted the transfer\x00");
    assert!(c.recv(Duration::from_millis(1500)).is_none(), "nothing after the probe's ERROR");
    // EDK2's second request, from the same port, without tsize.
    let got = c.fetch(
        "vmlinuz",
        Mode::Octet,
        RequestOptions { blksize: Some(1468), windowsize: Some(4), ..Default::default() },
    );
    assert_eq!(got.unwrap(), root.file("vmlinuz"));
    let (_, log) = s.stop();
    assert!(log.contains("outcome=probe"), "{log}");
    assert_eq!((counter(&log, "probes"), counter(&log, "ok")), (1, 1), "{log}");
    assert!(!log.contains("outcome=error") && !log.contains("outcome=client_error"), "a probe is not a failure: {log}");
}

fn duplicate_acks_never_cause_resends(io: &str) {
    let root = Root::new();
    // A 3 s timeout: any DATA within the next second is caused by the duplicate ACKs alone.
    let s = Server::start(root.path(), io, &["--timeout", "3", "--min-rto", "3000", "--max-rto", "3000"]);
    let c = Raw::new(s.v4);
    c.rrq("small.bin", &[]);
    let (p, tid) = c.expect(2 * SEC);
    assert_eq!(data_of(&p).0, 1);
    c.ack(tid, 1);
    assert_eq!(data_of(&c.expect(2 * SEC).0).0, 2);
    for _ in 0..10 {
        c.ack(tid, 1);
    }
    assert!(c.recv(SEC).is_none(), "Sorcerer's Apprentice: a duplicate ACK caused a resend");
    c.ack(tid, 2);
    assert_eq!(data_of(&c.expect(2 * SEC).0).0, 3);
    assert!(c.recv(Duration::from_millis(300)).is_none(), "exactly one DATA per new ACK");
}

fn retransmission_after_adaptive_timeout(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--min-rto", "50", "--timeout", "2"]);
    let c = Raw::new(s.v4);
    c.rrq("big.bin", &[]);
    let (_, tid) = c.expect(2 * SEC);
    // A few quick round trips: the RTO adapts from 2 s down to its 50 ms floor.
    for b in 1..=20u16 {
        c.ack(tid, b);
        assert_eq!(data_of(&c.expect(2 * SEC).0).0, b + 1);
    }
    let t0 = Instant::now();
    let (p, _) = c.expect(2 * SEC);
    let waited = t0.elapsed();
    assert_eq!(data_of(&p).0, 21, "the unacknowledged block again");
    assert!(waited >= Duration::from_millis(45) && waited < Duration::from_millis(500), "resent after {waited:?}");
    // Backoff: the next resend waits about twice as long.
    let t1 = Instant::now();
    let _ = c.expect(2 * SEC);
    let second = t1.elapsed();
    assert!(second >= waited + Duration::from_millis(20), "backoff {waited:?} then {second:?}");
}

/// Until the client acknowledges something, the first answer is resent on the timer once, never
/// more; a repeated request is answered once, from the same transfer, and arms that one resend
/// again.
fn first_answer_resent_once_before_first_ack(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--timeout", "0.2", "--retries", "10"]);
    let c = Raw::new(s.v4);
    c.rrq("big.bin", &[]);
    let (p, tid) = c.expect(2 * SEC);
    assert_eq!(data_of(&p).0, 1);
    let (p, from) = c.expect(SEC);
    assert_eq!((data_of(&p).0, from), (1, tid), "DATA 1 once more after the timeout");
    assert!(c.recv(Duration::from_millis(800)).is_none(), "no second timed resend to an unconfirmed client");
    c.rrq("big.bin", &[]);
    let (p, again) = c.expect(2 * SEC);
    assert_eq!((data_of(&p).0, again), (1, tid), "one answer per request, from the same transfer");
    let (p, from) = c.expect(SEC);
    assert_eq!((data_of(&p).0, from), (1, tid), "the repeat arms the one timed resend again");
    assert!(c.recv(Duration::from_millis(500)).is_none());
}

fn repeated_request_is_the_same_transfer(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let c = Raw::new(s.v4);
    c.rrq("small.bin", &[("tsize", "0")]);
    let (a, tid_a) = c.expect(2 * SEC);
    // The client did not see the OACK (lost, say) and asks again.
    c.rrq("small.bin", &[("tsize", "0")]);
    let (b, tid_b) = c.expect(2 * SEC);
    assert_eq!(a, b);
    assert_eq!(tid_a, tid_b, "both answers from one transfer");
    c.ack(tid_a, 0);
    let mut got = Vec::new();
    loop {
        let (p, _) = c.expect(2 * SEC);
        let (block, data) = data_of(&p);
        got.extend_from_slice(&data);
        c.ack(tid_a, block);
        if data.len() < 512 {
            break;
        }
    }
    assert_eq!(got, root.file("small.bin"));
    let (_, log) = s.stop();
    assert_eq!(counter(&log, "duplicate_requests"), 1, "{log}");
    assert_eq!(log.matches("transfer finished").count(), 1, "{log}");
}

/// A client repeats a request the server has not read yet (stopped here with SIGSTOP; in the
/// field, a storm or a CPU taken by something else): the repeat waits in the listening socket's
/// queue behind the original and is a copy of it, which the kernel's arrival time tells. It
/// gets no second answer: a second DATA 1, or a second ERROR that a client keeping its port
/// would take for the answer to its next request.
fn a_copy_that_waited_in_the_queue_gets_no_answer(io: &str) {
    let root = Root::new();
    for extra in [&[][..], &["--single-port"][..]] {
        let s = Server::start(root.path(), io, extra);
        let (reader, misser) = (Raw::new(s.v4), Raw::new(s.v4));
        s.signal(libc::SIGSTOP);
        wait_stopped(s.pid());
        for c in [&reader, &misser] {
            c.rrq(if std::ptr::eq(c, &reader) { "small.bin" } else { "missing.bin" }, &[]);
        }
        std::thread::sleep(Duration::from_millis(50));
        reader.rrq("small.bin", &[]);
        misser.rrq("missing.bin", &[]);
        std::thread::sleep(Duration::from_millis(50));
        s.signal(libc::SIGCONT);
        let (mut got, mut firsts, mut next) = (Vec::new(), 0, 1u16);
        loop {
            let (p, tid) = reader.expect(2 * SEC);
            let (block, data) = data_of(&p);
            firsts += usize::from(block == 1);
            if block == next {
                got.extend_from_slice(&data);
                next += 1;
            }
            reader.ack(tid, block);
            if block + 1 == next && data.len() < 512 {
                break;
            }
        }
        while let Some((p, _)) = reader.recv(Duration::from_millis(300)) {
            firsts += usize::from(data_of(&p).0 == 1);
        }
        assert_eq!(got, root.file("small.bin"), "{extra:?}");
        assert_eq!(firsts, 1, "one DATA 1 ({extra:?})");
        let (p, _) = misser.expect(2 * SEC);
        assert_eq!(error_of(&p).0, 1);
        assert!(misser.recv(Duration::from_millis(300)).is_none(), "one ERROR 1 ({extra:?})");
        let (_, log) = s.stop();
        assert_eq!(counter(&log, "duplicate_requests"), 2, "{extra:?} {log}");
        assert_eq!(log.matches("transfer finished").count(), 1, "{log}");
    }
}

/// Waits until every thread of process `pid` is stopped (a SIGSTOP is delivered to each thread
/// as it next runs).
fn wait_stopped(pid: i32) {
    let end = Instant::now() + 5 * SEC;
    let stopped = || -> Option<bool> {
        let mut all = true;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            all &= state == 'T' || state == 't';
        }
        Some(all)
    };
    while stopped() != Some(true) {
        assert!(Instant::now() < end, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn foreign_port_gets_error_5(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let a = Raw::new(s.v4);
    a.rrq("small.bin", &[]);
    let (_, tid) = a.expect(2 * SEC);
    let intruder = Raw::new(s.v4);
    intruder.ack(tid, 1);
    let (p, from) = intruder.expect(2 * SEC);
    assert_eq!(error_of(&p).0, 5);
    assert_eq!(from, tid);
    // The real client goes on to the end.
    for b in 1..=6u16 {
        a.ack(tid, b);
        let (p, _) = a.expect(2 * SEC);
        if data_of(&p).1.len() < 512 {
            a.ack(tid, b + 1);
            break;
        }
    }
    let (_, log) = s.stop();
    assert!(log.contains("outcome=ok"), "{log}");
    assert_eq!(counter(&log, "foreign"), 1, "{log}");
}

fn single_port_mode(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--single-port"]);
    let c = Raw::new(s.v4);
    c.rrq("small.bin", &[]);
    let (_, from) = c.expect(2 * SEC);
    assert_eq!(from, s.v4, "answers come from the listening port");
    c.send(from, b"\x00\x05\x00\x00done\x00");
    let addr = s.v4;
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                Raw::new(addr).fetch(
                    "big.bin",
                    Mode::Octet,
                    RequestOptions { blksize: Some(1468), windowsize: Some(8), ..Default::default() },
                )
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), root.file("big.bin"));
    }
    let v6 = Raw::new(s.v6).fetch("vmlinuz", Mode::Octet, RequestOptions::default()).unwrap();
    assert_eq!(v6, root.file("vmlinuz"));
}

fn two_workers_share_load(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &[]);
    let addr = s.v4;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let got = Raw::new(addr).fetch(
                        "vmlinuz",
                        Mode::Octet,
                        RequestOptions { blksize: Some(1468), ..Default::default() },
                    );
                    assert_eq!(got.unwrap().len(), 100_000);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (st, log) = s.stop();
    assert!(st.success());
    // At debug the exit report has a record per worker; both must have served some of the 100
    // clients (counted as completed transfers: a client on a loaded machine may repeat its
    // request).
    let ok = |l: &str| l.split(" ok=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok();
    let served: Vec<u64> = log.lines().filter(|l| l.contains("msg=\"worker counters\"")).filter_map(ok).collect();
    assert_eq!(served.len(), 2, "{log}");
    assert_eq!(served.iter().sum::<u64>(), 100);
    assert!(served.iter().all(|&n| n >= 10), "uneven: {served:?}");
}

/// Fetches `name` with a pause before each ACK.
fn slow_fetch(addr: SocketAddr, name: &str, pause: Duration) -> Result<Vec<u8>, (u16, String)> {
    let c = Raw::new(addr);
    c.rrq(name, &[("blksize", "1024")]);
    let (p, tid) = c.expect(2 * SEC);
    assert!(matches!(Packet::decode(&p).unwrap(), Packet::Oack(_)));
    c.ack(tid, 0);
    let mut got = Vec::new();
    let mut next = 1u16;
    loop {
        let (p, _) = c.expect(5 * SEC);
        match Packet::decode(&p).unwrap() {
            // A retransmitted block (the pause outlasted the server's timeout) is acknowledged
            // again, not appended again.
            Packet::Data { block, .. } if block != next => c.ack(tid, block),
            Packet::Data { block, data } => {
                next = next.wrapping_add(1);
                got.extend_from_slice(data);
                std::thread::sleep(pause);
                c.ack(tid, block);
                if data.len() < 1024 {
                    return Ok(got);
                }
            }
            Packet::Error { code, message } => return Err((code.0, String::from_utf8_lossy(message).into())),
            other => panic!("{other:?}"),
        }
    }
}

fn graceful_stop_finishes_transfers(io: &str) {
    let root = Root::new();
    root.write("mid.bin", &bytes(200_000, 5));
    let s = Server::start(root.path(), io, &["--grace", "20"]);
    let addr = s.v4;
    let h = std::thread::spawn(move || slow_fetch(addr, "mid.bin", Duration::from_millis(3)));
    std::thread::sleep(Duration::from_millis(150));
    let t0 = Instant::now();
    let (st, log) = s.stop();
    assert!(st.success(), "exit 0: {log}");
    assert_eq!(h.join().unwrap().unwrap(), root.file("mid.bin"), "the transfer in flight finished");
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert!(log.contains("stopping") && log.contains("outcome=ok"), "{log}");
}

/// On SIGTERM the listening socket is closed at once (every receive armed on it ended), so the
/// port is free for another instance while the transfers in flight finish in the grace period.
fn stop_releases_the_listening_port_during_the_grace(io: &str) {
    let root = Root::new();
    root.write("mid.bin", &bytes(200_000, 7));
    let s = Server::start(root.path(), io, &["--grace", "20"]);
    let addr = s.v4;
    // About 390 blocks at 12 ms each: the transfer outlasts the check below by seconds.
    let h = std::thread::spawn(move || slow_fetch(addr, "mid.bin", Duration::from_millis(12)));
    std::thread::sleep(Duration::from_millis(150));
    s.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    let rebound = loop {
        match std::net::UdpSocket::bind(addr) {
            Ok(sock) => break sock,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{io}: port {addr} still held 2 s after SIGTERM: {e}"),
        }
    };
    drop(rebound);
    assert!(!h.is_finished(), "{io}: the port must be free while the transfer still runs");
    assert_eq!(h.join().unwrap().unwrap(), root.file("mid.bin"), "the transfer in flight finished");
    let (st, log) = s.stop();
    assert!(st.success(), "exit 0: {log}");
}

fn grace_expiry_ends_transfers_with_error(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--grace", "0.5"]);
    let addr = s.v4;
    let h = std::thread::spawn(move || slow_fetch(addr, "big.bin", Duration::from_millis(20)));
    std::thread::sleep(Duration::from_millis(200));
    let (st, log) = s.stop();
    assert!(st.success());
    assert_eq!(h.join().unwrap().unwrap_err(), (0, "server shutting down".into()), "{log}");
}

fn truncated_file_does_not_crash(io: &str) {
    let root = Root::new();
    root.write("shrink.bin", &bytes(2_000_000, 6));
    let s = Server::start(root.path(), io, &[]);
    let addr = s.v4;
    let h = std::thread::spawn(move || slow_fetch(addr, "shrink.bin", Duration::from_millis(2)));
    std::thread::sleep(Duration::from_millis(200));
    // Truncate in place (same inode) while it is being served.
    std::fs::OpenOptions::new().write(true).open(root.path().join("shrink.bin")).unwrap().set_len(0).unwrap();
    let r = h.join().unwrap();
    assert_eq!(r.unwrap_err().0, 0, "the client gets an ERROR");
    // The server is alive and serves the new (empty) contents.
    let got = Raw::new(s.v4).fetch("shrink.bin", Mode::Octet, RequestOptions::default()).unwrap();
    assert!(got.is_empty());
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
    assert!(log.contains("file truncated while being served"), "{log}");
}

/// A DATA send that fails after the backend ran out of send slots still reaches the transfer.
/// With 16 send slots and no GSO, a window of 64 blocks of 512 bytes leaves as 16 queued sends
/// and 48 sent at once (io_uring), or as 64 sent at once (epoll). The file is cut so that the
/// retransmitted window's first 16 blocks still read (they lie on the pages kept) and the rest
/// fault (`EFAULT`): only sends past the slots fail. The client never acknowledges past the
/// blocks it gets, so every window starts at the same block and fails the same way; the
/// transfer must end with ERROR 0 at once, not time out.
fn send_failure_past_the_send_slots_ends_the_transfer(io: &str) {
    const BLK: usize = 512;
    let root = Root::new();
    root.write("cut.bin", &bytes(400 * BLK, 12));
    let s = Server::start(root.path(), io, &["--send-slots", "16", "--no-gso", "--workers", "1"]);
    let c = Raw::new(s.v4);
    c.rrq("cut.bin", &[("blksize", "512"), ("windowsize", "64")]);
    let (p, tid) = c.expect(2 * SEC);
    assert!(matches!(Packet::decode(&p).unwrap(), Packet::Oack(_)));
    c.ack(tid, 0);
    // io_uring sends the 48 blocks past the slots before the 16 it queued: collect them all.
    let mut seen = [false; 65];
    while !seen[1..].iter().all(|&b| b) {
        let (p, _) = c.expect(2 * SEC);
        let block = usize::from(data_of(&p).0);
        assert!((1..=64).contains(&block), "block {block} before the first ACK");
        seen[block] = true;
    }
    // Blocks 65..=80 (offsets 32768..40960) stay readable; block 81 on fault.
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.path().join("cut.bin"))
        .unwrap()
        .set_len(80 * BLK as u64)
        .unwrap();
    c.ack(tid, 64);
    let end = Instant::now() + 3 * SEC;
    let mut data = Vec::new();
    let error = loop {
        let Some((p, _)) = c.recv(end.saturating_duration_since(Instant::now())) else {
            break None;
        };
        match Packet::decode(&p).unwrap() {
            Packet::Data { block, .. } => data.push(block),
            Packet::Error { code, message } => break Some((code.0, String::from_utf8_lossy(message).into_owned())),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        error,
        Some((0, "file changed while being read".to_string())),
        "the failed sends past the slots reached the transfer; DATA seen: {data:?}"
    );
    assert!(data.iter().all(|&b| b <= 80), "no block past the cut arrives: {data:?}");
    // The server goes on serving.
    let got = Raw::new(s.v4).fetch("small.bin", Mode::Octet, RequestOptions::default()).unwrap();
    assert_eq!(got, root.file("small.bin"));
    let (st, log) = s.stop();
    assert!(st.success(), "{log}");
    assert!(log.contains("file truncated while being served"), "{log}");
}

fn replaced_file_served_new_to_new_clients(io: &str) {
    let root = Root::new();
    let old = bytes(300_000, 7);
    let new = bytes(250_000, 8);
    root.write("initrd", &old);
    let s = Server::start(root.path(), io, &[]);
    let addr = s.v4;
    let h = std::thread::spawn(move || slow_fetch(addr, "initrd", Duration::from_millis(1)));
    std::thread::sleep(Duration::from_millis(100));
    root.write("initrd.new", &new);
    std::fs::rename(root.path().join("initrd.new"), root.path().join("initrd")).unwrap();
    let fresh = Raw::new(s.v4).fetch("initrd", Mode::Octet, RequestOptions::default()).unwrap();
    assert!(fresh == new, "new clients get the new file");
    assert!(h.join().unwrap().unwrap() == old, "the transfer in flight finishes with the old bytes");
}

fn paths_and_containment(io: &str) {
    let root = Root::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../../etc/passwd", root.path().join("rel-link")).unwrap();
    std::os::unix::fs::symlink("boot/grub/grub.cfg", root.path().join("good-link")).unwrap();
    let s = Server::start(root.path(), io, &[]);
    let cfg = root.file("boot/grub/grub.cfg");
    for name in ["/boot/grub/grub.cfg", "boot\\grub\\grub.cfg", "\\boot/grub//grub.cfg", "good-link"] {
        assert_eq!(Raw::new(s.v4).fetch(name, Mode::Octet, RequestOptions::default()).unwrap(), cfg, "{name}");
    }
    for name in ["abs-link", "rel-link", "/etc/passwd/../../etc/passwd", "../secret", "/proc/self/root/etc/passwd"] {
        let r = Raw::new(s.v4).fetch(name, Mode::Octet, RequestOptions::default());
        assert!(matches!(r, Err((1 | 2, _))), "{name}: {r:?}");
    }
    let s2 = Server::start(root.path(), io, &["--no-symlinks"]);
    let r = Raw::new(s2.v4).fetch("good-link", Mode::Octet, RequestOptions::default());
    assert_eq!(r.unwrap_err().0, 2);
}

fn busy_is_an_answer(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--max-transfers", "1", "--workers", "1"]);
    let holder = Raw::new(s.v4);
    holder.rrq("big.bin", &[]);
    // The holder acknowledges: a transfer that progresses never gives way to a new request.
    let (_, tid) = holder.expect(2 * SEC);
    holder.ack(tid, 1);
    let _ = holder.expect(2 * SEC);
    let late = Raw::new(s.v4);
    late.rrq("small.bin", &[]);
    let (p, _) = late.expect(2 * SEC);
    assert_eq!(error_of(&p), (0, "server busy, try again".into()));
}

fn per_source_rate_limit(io: &str) {
    let root = Root::new();
    let args = ["--rate-per-source", "1", "--burst-per-source", "5", "--rate-limit-always", "--workers", "1"];
    let s = Server::start(root.path(), io, &args);
    // Twelve new transfers at once from one address (each from its own port): the burst of five
    // is served, the rest get no answer at all.
    let clients: Vec<Raw> = (0..12).map(|_| Raw::from("127.0.0.1:0", s.v4)).collect();
    for c in &clients {
        c.rrq("small.bin", &[]);
    }
    std::thread::sleep(SEC / 2);
    let answered = clients.iter().filter(|c| c.recv(SEC / 50).is_some()).count();
    assert!((5..=6).contains(&answered), "{answered} of 12 answered with a burst of 5 at 1/s");
    // Another address has its own bucket.
    let other = Raw::from("127.0.0.2:0", s.v4);
    assert_eq!(other.fetch("small.bin", Mode::Octet, RequestOptions::default()).unwrap(), root.file("small.bin"));
    let (_, log) = s.stop();
    assert!(counter(&log, "rate_limited") >= 6, "{log}");
}

fn allow_list_ignores_other_sources(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--allow", "127.0.0.2/32", "--workers", "1"]);
    let outsider = Raw::from("127.0.0.1:0", s.v4);
    outsider.rrq("small.bin", &[]);
    assert!(outsider.recv(SEC).is_none(), "a source outside --allow gets no answer");
    let insider = Raw::from("127.0.0.2:0", s.v4);
    assert_eq!(insider.fetch("small.bin", Mode::Octet, RequestOptions::default()).unwrap(), root.file("small.bin"));
    let (_, log) = s.stop();
    assert!(counter(&log, "ignored") >= 1, "{log}");
}

fn a_search_chain_of_misses_is_one_record_and_a_fold(io: &str) {
    let root = Root::new();
    let s = Server::start(root.path(), io, &["--log-level", "info"]);
    // PXELINUX's configuration search: nine misses, then the default.
    root.write("pxelinux.cfg-default", b"default linux\n");
    for name in ["01-52-54-00-12-34-56", "C000025B", "C000025", "C00002", "C0000", "C000", "C00", "C0", "C"] {
        let r = Raw::new(s.v4).fetch(
            &format!("pxelinux.cfg/{name}"),
            Mode::Octet,
            RequestOptions { tsize: true, blksize: Some(1408), ..Default::default() },
        );
        assert_eq!(r.unwrap_err().0, 1);
    }
    let (_, log) = s.stop();
    // At info every miss leaves a trace, but the chain from one client is folded: each worker
    // the kernel hands one of its requests to (a new source port per request) writes one
    // record for its first miss and one fold for the rest, never nine lines.
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("msg=\"request refused\"")).collect();
    assert!((1..=2).contains(&refused.len()), "one record per worker at most (2 workers): {log}");
    assert!(refused.iter().all(|l| l.contains("reason=not_found")), "{log}");
    let folded: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("msg=\"requests folded\""))
        .filter_map(|l| l.split(" count=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(refused.len() as u64 + folded.iter().sum::<u64>(), 9, "every miss is in a record or a fold: {log}");
    assert!(refused.len() + folded.len() <= 4, "{log}");
    assert_eq!(counter(&log, "not_found"), 9, "every miss is counted: {log}");
}
